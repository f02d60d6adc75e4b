#!/usr/bin/env python3
"""hgw side by side with nginx and HAProxy: the benchmark suite behind `tests/bench/run.sh`.

Starts everything itself on 127.0.0.1 ephemeral ports (a small nginx backend, nginx and HAProxy as
proxies with configs generated into a temp dir, hgw-agent + hgw-dataplane, redis-server, the Cloud Gate
emulator), runs the six scenarios of issue 6 and the HTTPS one of issue 11 (scenario 7: scenario 1's load
over TLS), and writes one Markdown report with the goals of issue 14 (and the earlier issues' where
issue 14 sets none) met or missed. Standard library only.

Every scenario repeats (`--runs`, at least 3 outside smoke mode) and reports the median and the spread
(min..max). Runs of the targets of one table are interleaved, so drift on the machine hits them alike.
A benchmark, not a test: nothing here asserts a time; the harness exits non-zero only when a scenario
cannot produce its numbers (smoke mode checks exactly that).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

CONNECTIONS = 64
"""wrk connections in scenarios 1 and 2 (the issue's fixed load)."""
H2_CONNECTIONS = 64
H2_STREAMS = 10
"""h2load: 64 connections with 10 concurrent streams each."""
START_TIMEOUT = 60.0
"""Seconds a process (or 100 dataplanes) may take to come up on a loaded machine."""
POLL = 0.002
"""Seconds between polls of the agent in the propagation scenario."""
RATE = {"limit": 1_000_000_000, "periodTime": 1, "periodTimeUnit": "HOURS"}
"""A limit no run reaches: every request is admitted, only the counting is measured."""
LICENSE_B64 = "aGd3LXRlc3QtbGljZW5zZQ=="
"""The agent checks a license's presence and encoding only (as the end-to-end tests do)."""


class HarnessError(RuntimeError):
    """The harness could not produce a number (a process died, a port never answered)."""


# ---------------------------------------------------------------------------------------------------
# Processes, ports, HTTP


class Proc:
    """A child process with stdout/stderr in files of the work dir, pinned with taskset when asked."""

    def __init__(self, bench: "Bench", label: str, argv: list[str], cores: str | None = None,
                 env: dict[str, str] | None = None, stdout_path: str | None = None):
        self.label = label
        self.stdout_path = stdout_path or os.path.join(bench.work, f"{label}.stdout")
        self.stderr_path = os.path.join(bench.work, f"{label}.stderr")
        if cores is not None:
            argv = ["taskset", "-c", cores] + argv  # taskset execs the program: same pid
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=full_env)
        self.pid = self.popen.pid
        bench.procs.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise HarnessError(f"{self.label} exited ({self.popen.returncode}); stderr:\n{self.stderr_tail()}")

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            with open(self.stderr_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check, timeout: float = START_TIMEOUT, interval: float = 0.05, procs=()):
    """Calls `check` until it answers something truthy; raises after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            proc.check()
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http_json(url: str, method: str = "GET", body=None, context: ssl.SSLContext | None = None,
              timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        return json.loads(resp.read() or b"null")


def http_status(url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def read_addr_file(path: str, proc: Proc) -> dict:
    def read():
        with open(path) as f:
            return json.load(f)
    return wait_until(f"{proc.label} to write {os.path.basename(path)}", read, procs=[proc])


def proc_status_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise HarnessError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its direct children (nginx's and HAProxy's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    pids.append(int(entry))
            except OSError:
                continue
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total / tick


def duration_ms(text: str) -> float:
    """`500ms`, `1s`, `2m` (the agent's humantime forms the bench uses) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)\s*(ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unsupported duration {text!r} (use ms, s or m)")
    return float(match.group(1)) * {"ms": 1, "s": 1000, "m": 60000}[match.group(2)]


def fmt_spread(values: list[float], digits: int = 0) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}..{hi:.{digits}f}"


# ---------------------------------------------------------------------------------------------------
# Definitions


def v4_api(api_id: str, path: str, target: str, *, analytics: bool = False, plan: dict | None = None,
           request_steps: list | None = None) -> dict:
    """A v4 HTTP proxy API (the shape of tests/src/definitions.rs): one path, one endpoint, one plan."""
    return {
        "id": api_id, "name": api_id, "apiVersion": "1.0", "definitionVersion": "4.0.0", "type": "proxy",
        "listeners": [{"type": "http", "paths": [{"path": path}], "entrypoints": [{"type": "http-proxy"}]}],
        "endpointGroups": [{"name": "default-group", "type": "http-proxy", "loadBalancer": {"type": "round-robin"},
                            "endpoints": [{"name": "default", "type": "http-proxy", "weight": 1,
                                           "inheritConfiguration": True, "configuration": {"target": target}}]}],
        "plans": [plan or {"id": f"{api_id}-keyless", "name": "Keyless", "security": {"type": "key-less"},
                           "status": "published", "mode": "standard"}],
        "flows": [{"name": "all", "request": request_steps}] if request_steps else [],
        "analytics": {"enabled": analytics},
    }


def registry_file(definition: dict, key: str | None = None) -> dict:
    """Gravitee's local registry form (apiEvent + subscriptions + apiKeys), for API-key plans in local mode."""
    api_id = definition["id"]
    payload = {"id": api_id, "name": api_id, "definition": json.dumps(definition)}
    doc = {"apiEvent": {"id": f"{api_id}-event", "type": "PUBLISH_API", "properties": {"api_id": api_id},
                        "payload": json.dumps(payload)}}
    if key:
        plan = definition["plans"][0]["id"]
        doc["subscriptions"] = [{"id": f"{api_id}-sub", "api": api_id, "plan": plan, "application": "bench-app",
                                 "status": "ACCEPTED"}]
        doc["apiKeys"] = [{"id": f"{api_id}-key", "key": key, "subscriptions": [f"{api_id}-sub"],
                           "api": api_id, "plan": plan, "application": "bench-app"}]
    return doc


def api_key_plan(api_id: str) -> dict:
    return {"id": f"{api_id}-gold", "name": "Gold", "security": {"type": "API_KEY", "configuration": {}},
            "status": "PUBLISHED"}


TRANSFORM = {"name": "headers", "policy": "transform-headers", "enabled": True, "configuration": {
    "removeHeaders": ["X-Internal"],
    "addHeaders": [{"name": "X-Bench-Plan", "value": "gold"},
                   {"name": "X-Bench-Path", "value": "{#request.path}"}]}}


def rate_limit_step(asynchronous: bool) -> dict:
    config = {"rate": RATE}
    if asynchronous:
        config["async"] = True
    return {"name": "limit", "policy": "rate-limit", "enabled": True, "configuration": config}


# ---------------------------------------------------------------------------------------------------
# The suite


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin_dir
        self.work = tempfile.mkdtemp(prefix="hgw-bench-")
        self.procs: list[Proc] = []
        self.sections: list[str] = []
        self.goals: list[tuple[str, str, str]] = []  # goal, measured, met / missed
        self.cores = os.cpu_count() or 1
        self.layout = core_layout(self.cores)
        with open(os.path.join(self.work, "report.lua"), "w") as f:
            f.write(WRK_LUA)

    # -- infrastructure ---------------------------------------------------------------------------

    def pin(self, role: str) -> str | None:
        return None if self.layout is None else self.layout[role]

    def load_threads(self) -> int:
        cores = self.pin("load")
        if cores is None:
            return 1
        lo, _, hi = cores.partition("-")
        return int(hi) - int(lo) + 1 if hi else 1

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop_all()
        if self.args.keep_work:
            print(f"work dir kept: {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def start_backend(self) -> tuple[int, int]:
        """nginx `return 200 "ok"`, one worker; an HTTP/1.1 port and an h2c port."""
        port, h2_port = free_port(), free_port()
        conf = NGINX_COMMON.format(work=self.work, name="backend") + f"""
http {{
  {NGINX_HTTP_COMMON.format(work=self.work, name="backend")}
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 "ok"; }} }}
  server {{ listen 127.0.0.1:{h2_port} http2; location / {{ return 200 "ok"; }} }}
}}
"""
        proc = self.start_nginx("backend", conf, self.pin("backend"))
        wait_until("the backend", lambda: http_status(f"http://127.0.0.1:{port}/") == 200, procs=[proc])
        return port, h2_port

    def start_nginx(self, name: str, conf: str, cores: str | None) -> Proc:
        os.makedirs(os.path.join(self.work, name), exist_ok=True)
        path = os.path.join(self.work, f"{name}.conf")
        with open(path, "w") as f:
            f.write(conf)
        return Proc(self, name, ["nginx", "-p", os.path.join(self.work, name), "-c", path, "-g", "daemon off;"],
                    cores)

    def start_nginx_proxy(self, backend: int) -> tuple[Proc, int, int]:
        port, h2_port = free_port(), free_port()
        location = f"""location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}"""
        conf = NGINX_COMMON.format(work=self.work, name="nginx-proxy") + f"""
http {{
  {NGINX_HTTP_COMMON.format(work=self.work, name="nginx-proxy")}
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 100000000; }}
  server {{ listen 127.0.0.1:{port} backlog=4096; {location} }}
  server {{ listen 127.0.0.1:{h2_port} http2; {location} }}
}}
"""
        proc = self.start_nginx("nginx-proxy", conf, self.pin("proxy"))
        wait_until("nginx proxy", lambda: http_status(f"http://127.0.0.1:{port}/bench") == 200, procs=[proc])
        return proc, port, h2_port

    def start_haproxy(self, backend: int) -> tuple[Proc, int, int]:
        port, h2_port = free_port(), free_port()
        path = os.path.join(self.work, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  bind 127.0.0.1:{h2_port} proto h2
  default_backend be
backend be
  server s1 127.0.0.1:{backend}
""")
        proc = Proc(self, "haproxy", ["haproxy", "-db", "-f", path], self.pin("proxy"))
        wait_until("haproxy", lambda: http_status(f"http://127.0.0.1:{port}/bench") == 200, procs=[proc])
        return proc, port, h2_port

    def start_redis(self) -> int:
        port = free_port()
        proc = Proc(self, "redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no", "--dir", self.work], self.pin("agent"))
        wait_until("redis", lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                                   text=True).stdout.strip() == "PONG", procs=[proc])
        return port

    def agent_env(self, label: str) -> dict[str, str]:
        # Never the user's state directory; each agent its own, since its reports spool lives there (and
        # a spool is locked by the agent that owns it).
        return {"HGW_STATE_DIR": os.path.join(self.work, f"{label}-state"), "RUST_LOG": "warn"}

    def start_local_agent(self, label: str, apis_dir: str, extra: list[str] = ()) -> tuple[Proc, dict]:
        addr_file = os.path.join(self.work, f"{label}-addr.json")
        argv = [os.path.join(self.bin, "hgw-agent"), "--local-apis", apis_dir, "--reports-file", "/dev/null",
                "--node-listen", "127.0.0.1:0", "--grpc-socket", os.path.join(self.work, f"{label}.sock"),
                "--workers", "1", "--addr-file", addr_file, *extra]
        proc = Proc(self, label, argv, self.pin("agent"), self.agent_env(label))
        return proc, read_addr_file(addr_file, proc)

    def start_dataplane(self, label: str, agent_socket: str, cores: str | None,
                        env: dict[str, str] | None = None, extra: list[str] = ()) -> tuple[Proc, dict]:
        addr_file = os.path.join(self.work, f"{label}-addr.json")
        argv = [os.path.join(self.bin, "hgw-dataplane"), "--agent", f"unix:{agent_socket}", "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0", "--workers", "1", "--id", label, "--addr-file", addr_file, *extra]
        proc = Proc(self, label, argv, cores, {"RUST_LOG": "warn", **(env or {})})
        return proc, read_addr_file(addr_file, proc)

    def start_otlp_sink(self) -> int:
        """An OTLP/HTTP collector stand-in that accepts every export (nginx `return 200` on /v1/traces: an
        empty body is a valid ExportTraceServiceResponse), on the agent's core: the dataplane pays the
        whole cost of recording, batching, encoding and sending its spans, and nothing waits on a slow
        collector."""
        port = free_port()
        conf = NGINX_COMMON.format(work=self.work, name="otlp-sink") + f"""
http {{
  {NGINX_HTTP_COMMON.format(work=self.work, name="otlp-sink")}
  server {{ listen 127.0.0.1:{port} backlog=4096; client_max_body_size 0;
           location / {{ return 200; }} }}
}}
"""
        proc = self.start_nginx("otlp-sink", conf, self.pin("agent"))
        wait_until("the OTLP sink", lambda: http_status(f"http://127.0.0.1:{port}/v1/traces") == 200, procs=[proc])
        return port

    def start_hgw(self, label: str, apis: dict[str, dict], extra_agent: list[str] = (),
                  dp_env: dict[str, str] | None = None, dp_args: list[str] = ()) -> dict:
        """An agent in local mode over `apis` (file name → JSON) and one dataplane on the proxy core."""
        apis_dir = os.path.join(self.work, f"{label}-apis")
        os.makedirs(apis_dir)
        for name, doc in apis.items():
            with open(os.path.join(apis_dir, f"{name}.json"), "w") as f:
                json.dump(doc, f)
        agent, agent_addrs = self.start_local_agent(f"{label}-agent", apis_dir, extra_agent)
        dp, dp_addrs = self.start_dataplane(f"{label}-dp", agent_addrs["grpc_socket"], self.pin("proxy"), dp_env,
                                            dp_args)
        wait_until(f"{label} dataplane ready", lambda: http_status(f"http://{dp_addrs['admin']}/ready") == 200,
                   procs=[agent, dp])
        return {"agent": agent, "dp": dp, "listen": dp_addrs["listen"], "admin": dp_addrs["admin"],
                "node": agent_addrs["node"]}

    # -- load generators --------------------------------------------------------------------------

    def wrk(self, url: str, seconds: float, headers: dict[str, str] | None = None, watch: Proc | None = None) -> dict:
        """One wrk run: requests/s, p50/p99/p99.9 ms, errors, and the CPU share the watched proxy used."""
        argv = ["wrk", f"-t{self.load_threads()}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
                "--timeout", "5s", "-s", os.path.join(self.work, "report.lua")]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        if self.pin("load") is not None:
            argv = ["taskset", "-c", self.pin("load")] + argv
        cpu0, t0 = (cpu_seconds(watch.pid), time.monotonic()) if watch else (0.0, 0.0)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        cpu = (cpu_seconds(watch.pid) - cpu0) / (time.monotonic() - t0) if watch else float("nan")
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            raise HarnessError(f"wrk {url} failed ({out.returncode}): {out.stdout}{out.stderr}")
        rps, p50, p99, p999, errors, requests = (float(x) for x in line.split()[1:])
        if requests == 0 or errors > requests * 0.01:
            raise HarnessError(f"wrk {url}: {errors:.0f} errors in {requests:.0f} requests (wrong status?)")
        return {"rps": rps, "p50": p50, "p99": p99, "p999": p999, "errors": errors, "requests": requests, "cpu": cpu}

    def h2load(self, url: str, seconds: float, watch: Proc | None = None) -> dict:
        log = os.path.join(self.work, "h2load.log")
        threads = self.load_threads()
        argv = ["h2load", f"-t{threads}", f"-c{max(H2_CONNECTIONS, threads)}", f"-m{H2_STREAMS}",
                f"-D{max(1, round(seconds))}", "--warm-up-time=1", "--log-file", log, url]
        if self.pin("load") is not None:
            argv = ["taskset", "-c", self.pin("load")] + argv
        cpu0, t0 = (cpu_seconds(watch.pid), time.monotonic()) if watch else (0.0, 0.0)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        cpu = (cpu_seconds(watch.pid) - cpu0) / (time.monotonic() - t0) if watch else float("nan")
        rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out.stdout)
        counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out.stdout)
        if out.returncode != 0 or not rps or not counts:
            raise HarnessError(f"h2load {url} failed ({out.returncode}): {out.stdout}{out.stderr}")
        done, succeeded = int(counts.group(2)), int(counts.group(3))
        if done == 0 or succeeded < done * 0.99:
            raise HarnessError(f"h2load {url}: {succeeded} of {done} requests succeeded:\n{out.stdout}")
        # The log: start time (µs), status, duration (µs), one request per line (warm-up excluded).
        durations = []
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    durations.append(int(parts[2]) / 1000.0)
        os.unlink(log)
        durations.sort()
        pct = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] if durations else float("nan")
        return {"rps": float(rps.group(1)), "p50": pct(0.50), "p99": pct(0.99), "p999": pct(0.999),
                "errors": done - succeeded, "requests": done, "cpu": cpu}

    def interleaved(self, targets: list[tuple[str, callable]], runs: int) -> dict[str, list[dict]]:
        """Runs every target once per round, `runs` rounds, after one short warm-up each."""
        for name, run in targets:
            self.log(f"  warm-up {name}")
            run(warmup=True)
        results: dict[str, list[dict]] = {name: [] for name, _ in targets}
        for round_ in range(runs):
            for name, run in targets:
                result = run(warmup=False)
                self.log(f"  run {round_ + 1}/{runs} {name}: {result['rps']:.0f} req/s, p99 {result['p99']:.2f} ms, "
                         f"proxy CPU {result['cpu'] * 100:.0f}%")
                results[name].append(result)
        return results

    # -- scenario 1 + 2 + 3: throughput -----------------------------------------------------------

    def throughput(self) -> None:
        a = self.args
        self.log("scenarios 1-3: backend, nginx, HAProxy, hgw")
        backend, backend_h2 = self.start_backend()
        target = f"http://127.0.0.1:{backend}"
        nginx, nginx_port, nginx_h2 = self.start_nginx_proxy(backend)
        haproxy, haproxy_port, haproxy_h2 = self.start_haproxy(backend)
        keys = {name: f"bench-key-{name}" for name in ("key", "key-rl-async", "key-rl-strict")}
        apis = {
            "bench": registry_file(v4_api("bench", "/bench", target)),
            "bench-analytics": registry_file(v4_api("bench-analytics", "/bench-analytics", target, analytics=True)),
            "key": registry_file(v4_api("key", "/key", target, plan=api_key_plan("key"), request_steps=[TRANSFORM]),
                                 keys["key"]),
            "key-rl-async": registry_file(v4_api("key-rl-async", "/key-rl-async", target,
                                                 plan=api_key_plan("key-rl-async"),
                                                 request_steps=[TRANSFORM, rate_limit_step(True)]),
                                          keys["key-rl-async"]),
            "key-rl-strict": registry_file(v4_api("key-rl-strict", "/key-rl-strict", target,
                                                  plan=api_key_plan("key-rl-strict"),
                                                  request_steps=[TRANSFORM, rate_limit_step(False)]),
                                           keys["key-rl-strict"]),
        }
        hgw = self.start_hgw("hgw", apis)
        # Tracing rows: the same key-less API, every API traced (HGW_TRACE_APIS=all), spans sampled by
        # trace id at 1% and 100% and exported over OTLP/HTTP to a sink.
        sink = self.start_otlp_sink()

        def otel(ratio: str) -> dict[str, str]:
            return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": ratio, "OTEL_BSP_SCHEDULE_DELAY": "1000", "HGW_TRACE_APIS": "all"}

        hgw_trace1 = self.start_hgw("hgw-trace1", {"bench": apis["bench"]}, dp_env=otel("0.01"))
        hgw_trace100 = self.start_hgw("hgw-trace100", {"bench": apis["bench"]}, dp_env=otel("1"))
        for stack in (hgw_trace1, hgw_trace100):
            url = f"http://{stack['listen']}/bench"
            wait_until(f"{url} answering 200", lambda: http_status(url) == 200, procs=[stack["agent"], stack["dp"]])
        redis_port = self.start_redis()
        hgw_redis = self.start_hgw("hgw-redis", {"key-rl-strict": apis["key-rl-strict"]},
                                   ["--redis-url", f"redis://127.0.0.1:{redis_port}"])
        for stack, paths in ((hgw, apis), (hgw_redis, {"key-rl-strict": 1})):
            for name in paths:
                url = f"http://{stack['listen']}/{name}"
                headers = {"X-Gravitee-Api-Key": keys[name]} if name in keys else {}
                wait_until(f"{url} answering 200", lambda: http_status(url, headers) == 200,
                           procs=[stack["agent"], stack["dp"]])

        def wrk_target(url, watch, headers=None):
            return lambda warmup: self.wrk(url, a.warmup if warmup else a.duration, headers, watch)

        # Scenario 1.
        self.log("scenario 1: proxy throughput and latency")
        s1 = [
            ("direct (backend)", wrk_target(f"{target}/bench", None)),
            ("hgw-dataplane", wrk_target(f"http://{hgw['listen']}/bench", hgw["dp"])),
            ("hgw-dataplane, analytics on", wrk_target(f"http://{hgw['listen']}/bench-analytics", hgw["dp"])),
            ("hgw-dataplane, tracing 1%", wrk_target(f"http://{hgw_trace1['listen']}/bench", hgw_trace1["dp"])),
            ("hgw-dataplane, tracing 100%", wrk_target(f"http://{hgw_trace100['listen']}/bench", hgw_trace100["dp"])),
            ("nginx", wrk_target(f"http://127.0.0.1:{nginx_port}/bench", nginx)),
            ("HAProxy", wrk_target(f"http://127.0.0.1:{haproxy_port}/bench", haproxy)),
        ]
        r1 = self.interleaved(s1, a.runs)
        self.sections.append(self.proxy_table(
            "1. Proxy throughput and latency (HTTP/1.1)",
            f"wrk -t{self.load_threads()} -c{CONNECTIONS} -d{a.duration:g}s, GET /bench, {a.runs} runs per target "
            "(interleaved). Backend: nginx `return 200 \"ok\"`, one worker. Each proxy has one worker thread "
            "(hgw-dataplane `--workers 1`, nginx `worker_processes 1` with upstream `keepalive 64`, HAProxy "
            "`nbthread 1` with `http-reuse always`); no access logs; hgw's API has analytics off except in the "
            "`analytics on` row (records streamed to the agent, which writes them to /dev/null); the `tracing` rows "
            "are separate dataplanes exporting OpenTelemetry spans (OTLP/HTTP to an nginx sink on the agent's core, "
            "every API traced, `parentbased_traceidratio` 1% or 100%). "
            "`proxy CPU` is the proxy's CPU time over the run (100% = one core busy); `req per CPU-s` = "
            "requests/s ÷ that share, which tells the proxies' cost apart even when the load generator or the "
            "backend is the limit.", r1, base="direct (backend)", peer="nginx"))
        hgw_rps = statistics.median(x["rps"] for x in r1["hgw-dataplane"])
        nginx_rps = statistics.median(x["rps"] for x in r1["nginx"])
        hgw_p99 = statistics.median(x["p99"] for x in r1["hgw-dataplane"])
        nginx_p99 = statistics.median(x["p99"] for x in r1["nginx"])
        on_rps = statistics.median(x["rps"] for x in r1["hgw-dataplane, analytics on"])
        on_p99 = statistics.median(x["p99"] for x in r1["hgw-dataplane, analytics on"])
        # Analytics are on for most Gravitee APIs: the first goal is what those users get.
        self.goal("hgw-dataplane with analytics on ≥ 1.0× nginx requests/s (scenario 1)",
                  f"{on_rps / nginx_rps:.2f}×", on_rps >= nginx_rps)
        self.goal("hgw-dataplane with analytics off ≥ 1.2× nginx requests/s (scenario 1)",
                  f"{hgw_rps / nginx_rps:.2f}×", hgw_rps >= 1.2 * nginx_rps)
        self.goal("hgw-dataplane p99 ≤ nginx p99 (scenario 1, analytics off / on)",
                  f"{hgw_p99:.2f} / {on_p99:.2f} ms vs {nginx_p99:.2f} ms", max(hgw_p99, on_p99) <= nginx_p99)
        self.goal("analytics cost ≤ 10% requests/s (scenario 1)",
                  f"{on_rps / hgw_rps:.2f}× analytics off (cost {(1 - on_rps / hgw_rps) * 100:.0f}%)",
                  on_rps >= 0.9 * hgw_rps)
        traced = {}
        for row, stack in (("hgw-dataplane, tracing 1%", hgw_trace1), ("hgw-dataplane, tracing 100%", hgw_trace100)):
            traced[row] = statistics.median(x["rps"] for x in r1[row]) / hgw_rps
            metrics = urllib.request.urlopen(f"http://{stack['admin']}/metrics", timeout=10).read().decode()
            counts = {name: re.search(rf"^hgw_dataplane_tracing_spans_{name}_total (\d+)", metrics, re.M)
                      for name in ("exported", "dropped")}
            self.log(f"  {row}: {traced[row]:.3f}× untraced requests/s; spans exported "
                     f"{counts['exported'].group(1) if counts['exported'] else '?'}, dropped "
                     f"{counts['dropped'].group(1) if counts['dropped'] else '?'}")
        self.goal("tracing at 1% sampling costs ≤ 3% requests/s (scenario 1)",
                  f"{traced['hgw-dataplane, tracing 1%']:.3f}× untraced (100%: "
                  f"{traced['hgw-dataplane, tracing 100%']:.3f}×)", traced["hgw-dataplane, tracing 1%"] >= 0.97)

        # Scenario 2.
        self.log("scenario 2: policy cost")
        dp_url = f"http://{hgw['listen']}"
        s2 = [
            ("key-less (baseline)", wrk_target(f"{dp_url}/bench", hgw["dp"])),
            ("api-key + transform-headers", wrk_target(f"{dp_url}/key", hgw["dp"], {"X-Gravitee-Api-Key": keys["key"]})),
            ("+ rate-limit async (leased budget, agent memory)",
             wrk_target(f"{dp_url}/key-rl-async", hgw["dp"], {"X-Gravitee-Api-Key": keys["key-rl-async"]})),
            ("+ rate-limit strict (agent memory)",
             wrk_target(f"{dp_url}/key-rl-strict", hgw["dp"], {"X-Gravitee-Api-Key": keys["key-rl-strict"]})),
            ("+ rate-limit strict (Redis)",
             wrk_target(f"http://{hgw_redis['listen']}/key-rl-strict", hgw_redis["dp"],
                        {"X-Gravitee-Api-Key": keys["key-rl-strict"]})),
        ]
        r2 = self.interleaved(s2, a.runs)
        self.sections.append(self.proxy_table(
            "2. Policy cost",
            f"Same load and backend as scenario 1, through hgw-dataplane only. Each row adds to the one above: an "
            "API-key plan (key in `X-Gravitee-Api-Key`) with a `transform-headers` step (remove one header, set "
            "a constant one and one from EL `{#request.path}`), then a `rate-limit` step whose limit is never "
            "reached: `async` (admitted from a budget leased from the agent), strict counted in the agent's "
            "memory, strict counted in Redis (a second agent with `--redis-url`, redis-server on the agent's "
            "core). Agent `--workers 1`.", r2, base="key-less (baseline)", peer=None))
        base = statistics.median(x["rps"] for x in r2["key-less (baseline)"])
        for name in ("api-key + transform-headers", "+ rate-limit async (leased budget, agent memory)",
                     "+ rate-limit strict (agent memory)", "+ rate-limit strict (Redis)"):
            ratio = statistics.median(x["rps"] for x in r2[name]) / base
            # API key + transform-headers is the common plan: ≤ 10%; the rate limits add a counter (≤ 15%).
            limit = 10 if name == "api-key + transform-headers" else 15
            self.goal(f"policy chain costs ≤ {limit}%: {name}", f"{ratio:.2f}× key-less requests/s (cost "
                      f"{(1 - ratio) * 100:.0f}%)", ratio >= 1 - limit / 100)

        # Scenario 3.
        self.log("scenario 3: HTTP/2")

        def h2_target(url, watch):
            return lambda warmup: self.h2load(url, a.warmup if warmup else a.duration, watch)

        s3 = [
            ("direct (backend)", h2_target(f"http://127.0.0.1:{backend_h2}/bench", None)),
            ("hgw-dataplane", h2_target(f"http://{hgw['listen']}/bench", hgw["dp"])),
            ("nginx", h2_target(f"http://127.0.0.1:{nginx_h2}/bench", nginx)),
            ("HAProxy", h2_target(f"http://127.0.0.1:{haproxy_h2}/bench", haproxy)),
        ]
        r3 = self.interleaved(s3, a.runs)
        self.sections.append(self.proxy_table(
            "3. HTTP/2 (h2c, prior knowledge)",
            f"h2load -t{self.load_threads()} -c{H2_CONNECTIONS} -m{H2_STREAMS} -D{a.duration:g} --warm-up-time=1, "
            f"{a.runs} runs per target. Clients speak HTTP/2 to the proxy; the proxies speak HTTP/1.1 with "
            "keep-alive to the same backend as scenario 1 (direct: the backend's own h2c listener). "
            "Percentiles from h2load's per-request log.", r3, base="direct (backend)", peer="nginx"))
        h2_p99 = {name: statistics.median(x["p99"] for x in r3[name]) for name in ("hgw-dataplane", "nginx")}
        self.goal("HTTP/2 p99 ≤ nginx p99 (scenario 3)",
                  f"{h2_p99['hgw-dataplane']:.2f} ms vs {h2_p99['nginx']:.2f} ms",
                  h2_p99["hgw-dataplane"] <= h2_p99["nginx"])
        self.stop_all()

    def proxy_table(self, title: str, how: str, results: dict[str, list[dict]], base: str, peer: str | None) -> str:
        lines = [f"## {title}", "", how, "",
                 "| target | requests/s | spread | p50 ms | p99 ms | p99.9 ms | proxy CPU | req per CPU-s | "
                 f"vs {base} |" + (f" vs {peer} | p99 vs {peer} |" if peer else ""),
                 "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if peer else "")]
        med = lambda name, key: statistics.median(r[key] for r in results[name])
        for name, runs in results.items():
            rps = [r["rps"] for r in runs]
            cpu = med(name, "cpu")
            cpu_text, per_cpu = ("—", "—") if cpu != cpu else (f"{cpu * 100:.0f}%", f"{med(name, 'rps') / cpu:.0f}"
                                                                 if cpu > 0 else "—")
            row = (f"| {name} | {med(name, 'rps'):.0f} | {fmt_spread(rps)} | {med(name, 'p50'):.2f} | "
                   f"{med(name, 'p99'):.2f} | {med(name, 'p999'):.2f} | {cpu_text} | {per_cpu} | "
                   f"{med(name, 'rps') / med(base, 'rps'):.2f}× |")
            if peer:
                row += f" {med(name, 'rps') / med(peer, 'rps'):.2f}× | {med(name, 'p99') / med(peer, 'p99'):.2f}× |"
            lines.append(row)
        errors = sum(r["errors"] for runs in results.values() for r in runs)
        lines += ["", f"Errors over all runs: {errors:.0f}.", ""]
        return "\n".join(lines)

    # -- scenario 7: HTTPS -------------------------------------------------------------------------

    def make_certificate(self) -> tuple[str, str, str]:
        """One self-signed P-256 certificate for 127.0.0.1 and localhost, made once per run with openssl:
        the certificate, its key, and both in one file (HAProxy's `crt`)."""
        cert, key, both = (os.path.join(self.work, name) for name in ("tls-cert.pem", "tls-key.pem", "tls-both.pem"))
        out = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                              "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                              "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], capture_output=True, text=True)
        if out.returncode != 0:
            raise HarnessError(f"openssl req failed: {out.stderr}")
        with open(both, "w") as f, open(cert) as c, open(key) as k:
            f.write(c.read() + k.read())
        return cert, key, both

    def tls(self) -> None:
        """Scenario 1's load over HTTPS: every target terminates TLS with the same certificate and key."""
        a = self.args
        self.log("scenario 7: HTTPS (TLS termination, HTTP/1.1)")
        cert, key, both = self.make_certificate()
        context = ssl.create_default_context(cafile=cert)
        port, backend_tls = free_port(), free_port()
        tls_conf = (f"ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;")
        conf = NGINX_COMMON.format(work=self.work, name="tls-backend") + f"""
http {{
  {NGINX_HTTP_COMMON.format(work=self.work, name="tls-backend")}
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 "ok"; }} }}
  server {{ listen 127.0.0.1:{backend_tls} ssl backlog=4096; {tls_conf} location / {{ return 200 "ok"; }} }}
}}
"""
        backend_proc = self.start_nginx("tls-backend", conf, self.pin("backend"))
        wait_until("the backend", lambda: http_status(f"http://127.0.0.1:{port}/") == 200, procs=[backend_proc])
        target = f"http://127.0.0.1:{port}"

        nginx_port = free_port()
        conf = NGINX_COMMON.format(work=self.work, name="tls-nginx") + f"""
http {{
  {NGINX_HTTP_COMMON.format(work=self.work, name="tls-nginx")}
  upstream backend {{ server 127.0.0.1:{port}; keepalive 64; keepalive_requests 100000000; }}
  server {{ listen 127.0.0.1:{nginx_port} ssl backlog=4096; {tls_conf}
           location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
}}
"""
        nginx = self.start_nginx("tls-nginx", conf, self.pin("proxy"))
        haproxy_port = free_port()
        path = os.path.join(self.work, "tls-haproxy.cfg")
        with open(path, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 4096
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{haproxy_port} ssl crt {both} alpn http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:{port}
""")
        haproxy = Proc(self, "tls-haproxy", ["haproxy", "-db", "-f", path], self.pin("proxy"))
        hgw = self.start_hgw("tls-hgw", {"bench": registry_file(v4_api("bench", "/bench", target))},
                             dp_args=["--tls-cert", cert, "--tls-key", key])
        urls = {
            "direct (backend)": (f"https://127.0.0.1:{backend_tls}/bench", None, backend_proc),
            "hgw-dataplane": (f"https://{hgw['listen']}/bench", hgw["dp"], hgw["dp"]),
            "nginx": (f"https://127.0.0.1:{nginx_port}/bench", nginx, nginx),
            "HAProxy": (f"https://127.0.0.1:{haproxy_port}/bench", haproxy, haproxy),
        }
        negotiated = {}
        for name, (url, _, proc) in urls.items():
            wait_until(f"{name} over HTTPS", lambda: http_status(url, context=context) == 200,
                       procs=[proc] + ([hgw["agent"]] if proc is hgw["dp"] else []))
            host, _, tls_port = url.split("/")[2].rpartition(":")
            with socket.create_connection((host, int(tls_port)), timeout=5) as sock:
                with context.wrap_socket(sock, server_hostname="localhost") as tls_sock:
                    negotiated[name] = f"{tls_sock.version()} {tls_sock.cipher()[0]}"
            self.log(f"  {name}: {negotiated[name]}")

        def wrk_target(url, watch):
            return lambda warmup: self.wrk(url, a.warmup if warmup else a.duration, None, watch)

        results = self.interleaved([(name, wrk_target(url, watch)) for name, (url, watch, _) in urls.items()], a.runs)
        suites = sorted(set(negotiated.values()))
        self.sections.append(self.proxy_table(
            "7. HTTPS (TLS termination, HTTP/1.1)",
            f"Scenario 1 over HTTPS: wrk -t{self.load_threads()} -c{CONNECTIONS} -d{a.duration:g}s, GET /bench, "
            f"{a.runs} runs per target (interleaved), keep-alive (the {CONNECTIONS} handshakes happen once per run). "
            "One self-signed P-256 certificate and key made per run with `openssl req -x509 -newkey ec`, served "
            "by every target: hgw-dataplane `--tls-cert/--tls-key` (rustls), nginx `listen ... ssl` "
            "(`ssl_protocols TLSv1.2 TLSv1.3`), HAProxy `bind ... ssl crt` (`alpn http/1.1`); direct = the "
            "nginx backend's own TLS listener. Proxies speak plain HTTP/1.1 with keep-alive to the backend, as "
            f"in scenario 1, each on one worker thread. Negotiated with wrk's OpenSSL: {', '.join(suites)}.",
            results, base="direct (backend)", peer="nginx"))
        self.stop_all()

    # -- scenario 4: memory ------------------------------------------------------------------------

    def memory(self) -> None:
        a = self.args
        self.log("scenario 4: memory")
        counts = [1, 100, 1000] if a.smoke else [1, 1000, 10000]
        rows = []
        for n in counts:
            dp_rss, agent_rss, dp_anon = [], [], []
            apis_dir = os.path.join(self.work, f"mem-{n}")
            os.makedirs(apis_dir)
            for i in range(n):
                with open(os.path.join(apis_dir, f"api-{i}.json"), "w") as f:
                    json.dump(v4_api(f"api-{i}", f"/svc{i}/v1", "http://127.0.0.1:9"), f)
            for run in range(a.runs):
                agent, addrs = self.start_local_agent(f"mem-{n}-{run}-agent", apis_dir)
                dp, dp_addrs = self.start_dataplane(f"mem-{n}-{run}-dp", addrs["grpc_socket"], self.pin("proxy"))
                node = f"http://{addrs['node']}"

                def acked():
                    view = http_json(f"{node}/_node/dataplanes")
                    return any(d["connected"] and d["apis"] == n and d["ackedVersion"] == view["currentVersion"]
                               for d in view["dataplanes"])
                wait_until(f"a dataplane holding {n} APIs", acked, timeout=START_TIMEOUT * 3, interval=0.2,
                           procs=[agent, dp])
                time.sleep(1.0)  # idle: let start-up buffers go
                dp_rss.append(proc_status_kib(dp.pid) / 1024)
                dp_anon.append(proc_status_kib(dp.pid, "RssAnon") / 1024)
                agent_rss.append(proc_status_kib(agent.pid) / 1024)
                config = http_json(f"http://{dp_addrs['admin']}/config", timeout=60)
                if len(config["apis"]) != n:
                    raise HarnessError(f"dataplane /config shows {len(config['apis'])} APIs, expected {n}")
                dp.stop()
                agent.stop()
            self.log(f"  {n} APIs: dataplane {statistics.median(dp_rss):.1f} MiB, agent "
                     f"{statistics.median(agent_rss):.1f} MiB")
            rows.append((n, dp_rss, agent_rss, dp_anon))
            shutil.rmtree(apis_dir)

        # The agent with many dataplanes.
        fleet = 5 if a.smoke else 100
        agent_rss, dp_rss_all = [], []
        apis_dir = os.path.join(self.work, "fleet-apis")
        os.makedirs(apis_dir)
        with open(os.path.join(apis_dir, "api.json"), "w") as f:
            json.dump(v4_api("api", "/api", "http://127.0.0.1:9"), f)
        for run in range(a.runs):
            agent, addrs = self.start_local_agent(f"fleet-{run}-agent", apis_dir)
            idle_rss = proc_status_kib(agent.pid) / 1024
            dps = [self.start_dataplane(f"fleet-{run}-dp{i}", addrs["grpc_socket"], self.pin("proxy"))[0]
                   for i in range(fleet)]
            node = f"http://{addrs['node']}"

            def all_acked():
                view = http_json(f"{node}/_node/dataplanes")
                return sum(1 for d in view["dataplanes"] if d["connected"] and d["ackedVersion"] == view["currentVersion"]) == fleet
            wait_until(f"{fleet} dataplanes connected", all_acked, timeout=START_TIMEOUT * 2, interval=0.2,
                       procs=[agent])
            time.sleep(1.0)
            agent_rss.append(proc_status_kib(agent.pid) / 1024)
            dp_rss_all.append(statistics.median(proc_status_kib(d.pid) / 1024 for d in dps))
            self.log(f"  agent with {fleet} dataplanes: {agent_rss[-1]:.1f} MiB (idle before: {idle_rss:.1f} MiB)")
            for d in dps:
                d.stop()
            agent.stop()

        lines = ["## 4. Memory (RSS)", "",
                 f"VmRSS from /proc after the dataplane acknowledged the config and 1 s idle, no traffic; "
                 f"{a.runs} runs, each with fresh processes (median, spread min..max). APIs: v4 key-less proxy "
                 "APIs, one context path each (`/svcN/v1`), one file each in the agent's `--local-apis` folder. "
                 "Dataplane and agent `--workers 1`. Of the dataplane's RSS, `RssAnon` is its own memory; the rest "
                 "is file-backed, mostly the binary's code pages (shared by every dataplane of a host through the "
                 "page cache, and dropped under memory pressure).", "",
                 "| APIs deployed | dataplane RSS MiB | spread | of which anonymous MiB | agent RSS MiB | spread |",
                 "|---|---|---|---|---|---|"]
        for n, dp_rss, ag_rss, anon in rows:
            lines.append(f"| {n} | {statistics.median(dp_rss):.1f} | {fmt_spread(dp_rss, 1)} | "
                         f"{statistics.median(anon):.1f} | {statistics.median(ag_rss):.1f} | {fmt_spread(ag_rss, 1)} |")
        lines += ["", f"| connected dataplanes | agent RSS MiB | spread | dataplane RSS MiB (median of the {fleet}) |",
                  "|---|---|---|---|",
                  f"| {fleet} | {statistics.median(agent_rss):.1f} | {fmt_spread(agent_rss, 1)} | "
                  f"{statistics.median(dp_rss_all):.1f} |", ""]
        self.sections.append("\n".join(lines))
        one = statistics.median(rows[0][1])
        self.goal("dataplane idle RSS ≤ 10 MiB with 1 API", f"{one:.1f} MiB", one <= 10)
        big_n, big = rows[-1][0], statistics.median(rows[-1][1])
        self.goal(f"dataplane idle RSS ≤ 64 MiB with 10,000 APIs{' (smoke: ' + str(big_n) + ')' if a.smoke else ''}",
                  f"{big:.1f} MiB", big <= 64)

    # -- scenario 5 + 6: cloud mode ----------------------------------------------------------------

    def start_sim(self) -> dict:
        state = os.path.join(self.work, "sim")
        os.makedirs(state)
        proc = Proc(self, "sim", [os.path.join(self.bin, "hgw-cloudgate-sim"), "--state-dir", state],
                    self.pin("agent"), {"RUST_LOG": "warn"})

        def ready():
            with open(proc.stdout_path) as f:
                line = f.readline()
            return json.loads(line) if line.endswith("\n") else None
        announce = wait_until("the Cloud Gate emulator", ready, procs=[proc])
        context = ssl.create_default_context(cafile=announce["ca"])
        sim = {"proc": proc, "url": announce["url"], "ca": announce["ca"], "token_key": announce["token_key"],
               "ssl": context}
        sim["token"] = self.sim_call(sim, "POST", "/_sim/tokens", {})["token"]
        return sim

    def sim_call(self, sim: dict, method: str, path: str, body=None):
        return http_json(f"{sim['url']}{path}", method, body, sim["ssl"])

    def start_cloud_agent(self, label: str, sim: dict, extra: list[str] = ()) -> tuple[Proc, dict]:
        addr_file = os.path.join(self.work, f"{label}-addr.json")
        argv = [os.path.join(self.bin, "hgw-agent"), "--cloud-gate-url", sim["url"], "--cloud-gate-ca", sim["ca"],
                "--cloud-token-key", sim["token_key"], "--node-listen", "127.0.0.1:0", "--grpc-socket",
                os.path.join(self.work, f"{label}.sock"), "--workers", "1", "--addr-file", addr_file, *extra]
        env = self.agent_env(label)
        env.update({"GRAVITEE_CLOUD_TOKEN": sim["token"], "GRAVITEE_LICENSE_KEY": LICENSE_B64})
        proc = Proc(self, label, argv, self.pin("agent"), env)
        return proc, read_addr_file(addr_file, proc)

    def propagation(self) -> None:
        a = self.args
        self.log("scenario 5: config propagation")
        sim = self.start_sim()
        sizes = [1, 5] if a.smoke else [1, 10, 100]
        rounds = a.runs if a.smoke else max(a.runs, 5)
        rows = []
        for n in sizes:
            definition = v4_api("prop", "/prop", "http://127.0.0.1:9")
            self.sim_call(sim, "PUT", "/_sim/apis", {"definition": definition})
            agent, addrs = self.start_cloud_agent(f"prop-{n}-agent", sim, ["--sync-interval", a.sync_interval])
            # The dataplanes share the machine's cores (100 one-thread processes cannot each get one).
            dps = [self.start_dataplane(f"prop-{n}-dp{i}", addrs["grpc_socket"], None)[0] for i in range(n)]
            node = f"http://{addrs['node']}/_node/dataplanes"

            def acked_by_all(version):
                view = http_json(node)
                acked = [d for d in view["dataplanes"] if d["connected"] and d["ackedVersion"] >= version]
                return len(acked) == n
            wait_until(f"{n} dataplanes on the first config",
                       lambda: acked_by_all(max(1, http_json(node)["currentVersion"])), procs=[agent],
                       interval=0.2)
            totals, waits, afters = [], [], []
            sync_url = f"http://{addrs['node']}/_node/sync"
            interval_ms = duration_ms(a.sync_interval)
            for r in range(rounds):
                before = http_json(node)["currentVersion"]
                definition["name"] = f"prop {n}-{r}"  # a new revision of the same API
                t0 = time.time()
                self.sim_call(sim, "PUT", "/_sim/apis", {"definition": definition})
                version = synced = None
                while True:
                    view = http_json(node)
                    now = time.time()
                    if version is None and view["currentVersion"] > before:
                        version = view["currentVersion"]
                        # The sync that stored the change set nextSyncTime = its end + the interval.
                        synced = min(now, (http_json(sync_url)["nextSyncTime"] - interval_ms) / 1000)
                    if version is not None:
                        acked = sum(1 for d in view["dataplanes"] if d["connected"] and d["ackedVersion"] >= version)
                        if acked == n:
                            break
                    if now > t0 + 60:
                        raise HarnessError(f"propagation to {n} dataplanes did not finish (seen: {version})")
                    time.sleep(POLL)
                totals.append((now - t0) * 1000)
                waits.append((synced - t0) * 1000)
                afters.append((now - synced) * 1000)
                self.log(f"  N={n} round {r + 1}: total {totals[-1]:.0f} ms, after the sync {afters[-1]:.1f} ms")
                # A random pause, so changes land at random points of the sync cycle.
                time.sleep(random.uniform(0.1, interval_ms / 1000))
            rows.append((n, totals, waits, afters))
            for d in dps:
                d.stop()
            agent.stop()
        lines = ["## 5. Config propagation", "",
                 f"Cloud mode against the emulator: agent `--sync-interval {a.sync_interval}` `--workers 1`, N "
                 "dataplanes `--workers 1` on its Unix socket (sharing all cores). Each round publishes a new "
                 "revision of one API (`PUT /_sim/apis`) at t0, then polls the agent's `/_node/dataplanes` every "
                 f"{POLL * 1000:.0f} ms until every dataplane's `ackedVersion` reached the new `currentVersion` "
                 "(`done`). `sync end` is when the sync that saw the change finished (fetched, compiled, stored "
                 "and handed the new version to the push): that sync's `nextSyncTime` on `/_node/sync` minus the "
                 "interval (epoch ms, read once the new version shows). Total = done − t0; poll wait = sync end − "
                 "t0 (the wait for the agent's next poll of the Cloud Gate, up to one interval, plus that sync's "
                 "own calls); after the sync = done − sync end (what the goal is about; resolution ±1 ms for the "
                 f"sync end, one poll of ~{POLL * 1000:.0f} ms plus its own time for done, so it errs high). "
                 f"{rounds} rounds per N.", "",
                 "| dataplanes | total ms (median) | spread | poll wait ms | after the sync ms (median) | spread | max |",
                 "|---|---|---|---|---|---|---|"]
        for n, totals, waits, afters in rows:
            lines.append(f"| {n} | {statistics.median(totals):.0f} | {fmt_spread(totals)} | "
                         f"{statistics.median(waits):.0f} | {statistics.median(afters):.1f} | {fmt_spread(afters, 1)} | "
                         f"{max(afters):.1f} |")
        lines.append("")
        self.sections.append("\n".join(lines))
        n, _, _, afters = rows[-1]
        self.goal(f"propagation to {n} dataplanes ≤ 100 ms after the sync that sees the change"
                  f"{' (smoke)' if a.smoke else ''}", f"{statistics.median(afters):.1f} ms median, "
                  f"{max(afters):.1f} ms max", max(afters) <= 100)
        self.sim = sim

    def analytics(self) -> None:
        a = self.args
        self.log("scenario 6: analytics throughput")
        sim = getattr(self, "sim", None) or self.start_sim()
        definition = v4_api("records", "/records", "http://127.0.0.1:9", analytics=True,
                            request_steps=[{"name": "mock", "policy": "mock", "enabled": True,
                                            "configuration": {"status": 200, "content": "ok"}}])
        self.sim_call(sim, "PUT", "/_sim/apis", {"definition": definition})
        agent, addrs = self.start_cloud_agent("records-agent", sim, ["--sync-interval", "1s",
                                                                     "--reports-flush-interval", "1s"])
        dp, dp_addrs = self.start_dataplane("records-dp", addrs["grpc_socket"], self.pin("proxy"))
        url = f"http://{dp_addrs['listen']}/records"
        wait_until("the records API", lambda: http_status(url) == 200, procs=[agent, dp])
        summary = lambda: self.sim_call(sim, "GET", "/_sim/reports/summary")

        def settle(prev_total: int) -> int:
            """Waits until the received count stops moving for 3 s (flush interval 1 s)."""
            last, since = prev_total, time.monotonic()
            while time.monotonic() - since < 3:
                time.sleep(0.25)
                total = summary()["documentsReceived"]
                if total != last:
                    last, since = total, time.monotonic()
                self.sim_call(sim, "DELETE", "/_sim/reports")  # bounds the emulator's memory
            return last

        rows = []
        settle(0)
        for run in range(a.runs):
            start = summary()["documentsReceived"]
            t0 = time.monotonic()
            # wrk in the background while the sim is sampled (and cleared).
            argv = ["wrk", f"-t{self.load_threads()}", f"-c{CONNECTIONS}", f"-d{max(1, round(a.duration))}s",
                    "--timeout", "5s", "-s", os.path.join(self.work, "report.lua"), url]
            if self.pin("load") is not None:
                argv = ["taskset", "-c", self.pin("load")] + argv
            wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while wrk.poll() is None:
                time.sleep(0.5)
                self.sim_call(sim, "DELETE", "/_sim/reports")
            out, err = wrk.communicate()
            t_load = time.monotonic() - t0
            during = summary()["documentsReceived"] - start
            line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                raise HarnessError(f"wrk failed: {out}{err}")
            rps, _, _, _, errors, requests = (float(x) for x in line.split()[1:])
            total = settle(start + during) - start
            t_all = time.monotonic() - t0 - 3  # minus the settle window
            rows.append({"rps": rps, "sent": requests, "during": during / t_load, "end_to_end": total / t_all,
                         "delivered": total / requests if requests else 0.0})
            self.log(f"  run {run + 1}: {rps:.0f} req/s sent, {during / t_load:.0f} records/s during the load, "
                     f"{total:.0f}/{requests:.0f} delivered")
            if total == 0:
                raise HarnessError("no analytics record reached the emulator's /reports")
        metrics = urllib.request.urlopen(f"http://{dp_addrs['admin']}/metrics", timeout=10).read().decode()
        dropped = re.search(r'hgw_dataplane_analytics_records_dropped_total (\d+)', metrics)
        self.stop_all()
        capacity = self.delivery_capacity()
        self.sections.append("\n".join([
            "## 6. Analytics throughput", "",
            f"Cloud mode: one dataplane (`--workers 1`, on the proxy core) answering a mock API with analytics on, "
            f"wrk -c{CONNECTIONS} for {a.duration:g} s; records go dataplane → agent (gRPC, `--workers 1`, "
            "`--reports-flush-interval 1s`, default batch 1000) → the emulator's `/reports` (gzip NDJSON over "
            "HTTPS), which counts accepted documents (`/_sim/reports/summary`, stored documents cleared every "
            "0.5 s). `during load` = documents counted at the emulator while wrk ran ÷ the run's time; "
            "`end to end` = every document of the run ÷ the time until the last one arrived; `delivered` = "
            "documents ÷ requests wrk counted (wrk does not count the ≤ 64 requests in flight when it stops, "
            f"which the dataplane still answers and reports: slightly above 100% is expected). {a.runs} runs.", "",
            "| requests/s sent | records/s during load | spread | records/s end to end | delivered | "
            "dataplane drops (all runs) |", "|---|---|---|---|---|---|",
            f"| {statistics.median(r['rps'] for r in rows):.0f} | {statistics.median(r['during'] for r in rows):.0f} | "
            f"{fmt_spread([r['during'] for r in rows])} | {statistics.median(r['end_to_end'] for r in rows):.0f} | "
            f"{statistics.median(r['delivered'] for r in rows) * 100:.1f}% | "
            f"{dropped.group(1) if dropped else 'n/a'} |", "", capacity]))

    def delivery_capacity(self) -> str:
        """What one agent delivers to `/reports` when records come faster than one dataplane under wrk
        can make them: `hgw-bench-analytics` pushes batches on two Analytics streams as dataplanes do and
        waits until the emulator holds every record. Returns the table; sets the delivery goal."""
        a = self.args
        records = 20_000 if a.smoke else 200_000
        tool = os.path.join(self.bin, "hgw-bench-analytics")
        patterns = {"ingest": r"^ingest .*?: (\d+) records/s", "delivered": r"^delivered .*?: (\d+) records/s",
                    "cpu_us": r"^agent CPU .*?= ([\d.]+) µs per record", "bytes": r"= ([\d.]+) bytes/record"}
        rows = []
        for run in range(1 if a.smoke else a.runs):
            out = subprocess.run([tool, str(records), "2"], capture_output=True, text=True, timeout=900,
                                 env={**os.environ, "HGW_BIN_DIR": self.bin, "RUST_LOG": "warn"})
            found = {k: re.search(p, out.stdout, re.M) for k, p in patterns.items()}
            if out.returncode != 0 or not all(found.values()):
                raise HarnessError(f"hgw-bench-analytics failed ({out.returncode}):\n{out.stdout}{out.stderr[-3000:]}")
            rows.append({k: float(m.group(1)) for k, m in found.items()})
            self.log(f"  delivery capacity run {run + 1}: {rows[-1]['delivered']:.0f} records/s delivered, "
                     f"{rows[-1]['cpu_us']:.1f} µs of agent CPU per record")
        med = lambda key: statistics.median(r[key] for r in rows)
        self.goal(f"`/reports` delivery ≥ 50k records/s (one agent){' (smoke)' if a.smoke else ''}",
                  f"{med('delivered'):.0f} records/s", med("delivered") >= 50_000)
        return "\n".join([
            f"Delivery capacity: `hgw-bench-analytics {records} 2` (`tests/src/bin/hgw-bench-analytics.rs`) pushes "
            f"{records:,} records on two `hgw.v1.Analytics/Report` streams the way dataplanes do (batches of 500, "
            "up to 8 unacknowledged per stream) into a cloud-mode agent (default flags: spool fsync per group "
            "commit), which uploads them to the emulator's `/reports`; delivered = records ÷ the time until the "
            "emulator holds every one. Agent, emulator and pusher unpinned (both cores). "
            f"{len(rows)} run{'s' if len(rows) > 1 else ''}.", "",
            "| ingest (acknowledged) records/s | delivered end to end records/s | spread | agent CPU µs per record | "
            "gzip bytes per record |", "|---|---|---|---|---|",
            f"| {med('ingest'):.0f} | {med('delivered'):.0f} | {fmt_spread([r['delivered'] for r in rows])} | "
            f"{med('cpu_us'):.1f} | {med('bytes'):.1f} |", ""])

    # -- micro-benchmarks and the report -----------------------------------------------------------

    def micro(self) -> None:
        if not self.args.micro:
            return
        self.log("micro-benchmarks (cargo bench -p hgw-dataplane)")
        out = subprocess.run(["cargo", "bench", "-q", "-p", "hgw-dataplane", "--bench", "hot_paths"],
                             capture_output=True, text=True, cwd=self.args.root)
        if out.returncode != 0:
            raise HarnessError(f"cargo bench failed:\n{out.stderr[-3000:]}")
        self.sections.append("\n".join([
            "## Micro-benchmarks (divan)", "",
            "`cargo bench -p hgw-dataplane --bench hot_paths` (`dataplane/benches/hot_paths.rs`): route lookup "
            "in a table of 10,000 APIs (hit deep in the table, a miss, a host-specific hit) and a request-phase "
            "policy chain (transform-headers with EL, ip-filtering, policy-assign-attributes) on one exchange.",
            "", "```", out.stdout.strip(), "```", ""]))

    def goal(self, goal: str, measured: str, met: bool) -> None:
        self.goals.append((goal, measured, "met" if met else "**missed**"))

    def report(self, started: float) -> str:
        a = self.args
        layout = ("no pinning (one core)" if self.layout is None else
                  f"proxy under test on core {self.layout['proxy']}; agent, redis-server and the emulator on "
                  f"core(s) {self.layout['agent']}; backend on {self.layout['backend']}; load generators on "
                  f"{self.layout['load']} (`taskset`)")
        head = [
            "# hgw benchmarks: side by side with nginx and HAProxy", "",
            f"{'**Smoke run** (harness check only, numbers meaningless). ' if a.smoke else ''}"
            f"{a.note + ' ' if a.note else ''}Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} "
            f"in {(time.monotonic() - started) / 60:.0f} min by:", "",
            "```sh", a.command, "```", "",
            "## Machine", "", machine_description(self.bin), "",
            f"Core layout: {layout}.", "",
            "Each table: median over the runs, spread = min..max of requests/s (or of the value) over the runs.", "",
            "## Goals", "", "| goal | measured | |", "|---|---|---|",
        ]
        head += [f"| {g} | {m} | {ok} |" for g, m, ok in self.goals]
        head.append("")
        return "\n".join(head + self.sections + ([a.notes_md] if a.notes_md else []))


def core_layout(cores: int) -> dict | None:
    """Which cores each role gets: the proxy under test alone on core 0 whenever there are two."""
    if cores >= 4:
        return {"proxy": "0", "agent": "1", "backend": "2", "load": f"3-{cores - 1}" if cores > 4 else "3"}
    if cores == 3:
        return {"proxy": "0", "agent": "1", "backend": "1", "load": "2"}
    if cores == 2:
        return {"proxy": "0", "agent": "1", "backend": "1", "load": "1"}
    return None


def machine_description(bin_dir: str) -> str:
    def run(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip()
        except OSError:
            return "n/a"
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem_kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    load = os.getloadavg()
    return "\n".join([
        f"- CPU: {model}, {os.cpu_count()} logical cores; memory {mem_kib / 1024 / 1024:.1f} GiB",
        f"- Kernel: {platform.system()} {platform.release()}; load average at the end {load[0]:.2f} {load[1]:.2f}",
        f"- hgw: commit {run(['git', 'rev-parse', '--short', 'HEAD'])}, binaries from `{bin_dir}`",
        f"- {run(['rustc', '--version'])}",
        f"- {run(['nginx', '-v'])}; {run(['haproxy', '-v']).splitlines()[0]}",
        f"- {run(['wrk', '-v']).splitlines()[0]}; {run(['h2load', '--version'])}; "
        f"{run(['redis-server', '--version']).split(' sha=')[0]}",
    ])


# Temp paths inside the work dir: nginx's compiled-in ones may not be writable without root.
NGINX_COMMON = """worker_processes 1;
pid {work}/{name}/nginx.pid;
error_log {work}/{name}/error.log warn;
events {{ worker_connections 4096; }}
"""
NGINX_HTTP_COMMON = """access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {work}/{name}/body;
  proxy_temp_path {work}/{name}/proxy;
  fastcgi_temp_path {work}/{name}/fastcgi;
  uwsgi_temp_path {work}/{name}/uwsgi;
  scgi_temp_path {work}/{name}/scgi;"""

# wrk's --latency gives 50/75/90/99 only: p99.9 and the totals come from this done() hook.
WRK_LUA = """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %.3f %d %d\\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    e.status + e.connect + e.read + e.write + e.timeout, summary.requests))
end
"""

SCENARIOS = ("throughput", "memory", "propagation", "analytics", "tls", "micro")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True, help="where hgw-agent, hgw-dataplane, hgw-cloudgate-sim are")
    parser.add_argument("--root", required=True, help="the workspace root")
    parser.add_argument("--smoke", action="store_true", help="a harness check: short runs, small N")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load run (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="runs per target (default 3, at least 3 unless smoke)")
    parser.add_argument("--sync-interval", default="1s", help="agent --sync-interval in scenario 5 (default 1s)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--no-micro", dest="micro", action="store_false", help="skip cargo bench")
    parser.add_argument("--out", required=True, help="the Markdown report")
    parser.add_argument("--note", default="", help="a sentence put at the top of the report")
    parser.add_argument("--notes-file", default="", help="Markdown appended to the report (analysis, profiles)")
    parser.add_argument("--command", default="", help="the command line, as shown in the report")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp dir (logs, configs)")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.warmup, args.runs = min(args.duration, 2.0), 1.0, 1
        args.micro = False
    elif args.runs < 3:
        parser.error("--runs must be at least 3 (the median and spread need them); use --smoke for a check")
    if not args.command:
        args.command = " ".join(["python3"] + sys.argv)
    args.notes_md = open(args.notes_file).read() if args.notes_file else ""
    only = set(args.only.split(","))
    if not only <= set(SCENARIOS):
        parser.error(f"--only takes {SCENARIOS}")
    if "micro" not in only:
        args.micro = False

    bench = Bench(args)
    started = time.monotonic()
    try:
        if "throughput" in only:
            bench.throughput()
        if "memory" in only:
            bench.memory()
        if "propagation" in only:
            bench.propagation()
        if "analytics" in only:
            bench.analytics()
        if "tls" in only:
            bench.tls()
        bench.stop_all()
        bench.micro()
    except (HarnessError, OSError, subprocess.SubprocessError, urllib.error.URLError, KeyError, ValueError) as e:
        print(f"bench: harness failure: {e}", file=sys.stderr)
        print(f"bench: logs in {bench.work}", file=sys.stderr)
        args.keep_work = True
        bench.cleanup()
        return 1
    except KeyboardInterrupt:
        bench.cleanup()
        return 130
    bench.cleanup()
    with open(args.out, "w") as f:
        f.write(bench.report(started))
    print(f"bench: report written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
