#!/usr/bin/env python3
"""diff.py — the differential compatibility run: the same Gravitee API definitions on Gravitee's own gateway
and on hgw, the same requests to both, the answers compared.

    tests/compat/diff.py [--hgw-bin DIR] [--out compat.md] [--json results.json] [--check compat.md] [FILTER...]

- Corpus: tests/compat/corpus/*/*.json (definitions from Gravitee's public repositories; SOURCES.tsv cites
  each). Each is prepared the way Gravitee's gateway test SDK deploys them (GatewayRunner and the
  *ApiDeploymentPreparer classes): `http://localhost:8080` becomes the test backend, a published key-less plan
  is added when the API has none, plans without a status are published. On top of that, for a single run:
  every context path gets a unique prefix `/cNNN` (the corpus reuses `/test`), ids are made unique, and each
  API-key plan gets an accepted subscription with the key `compat-key-0001`.
- Oracle: Gravitee APIM 4.10.9 (gravitee-gw/run.sh, assembled by gravitee-gw/setup.sh) on a folder;
  hgw: `hgw-agent --local-apis` on a copy of the same folder with one supervised `hgw-dataplane`.
- Backend: an echo server here (every answer is JSON: method, path, query, headers and body it received, and
  an `X-Echo` header), so "what the backend received" is part of the compared body.
- Probes per API (each on a fresh connection, Gravitee first, then hgw, so counters stay in step): GET on the
  context path; GET on a sub-path with a query string and a custom header; POST of a JSON body; the same three
  with the API key when the API has an API-key plan; then, with the backend stopped, GET again (upstream down).
- Compared: status; response headers (names and values, except Date/Server/connection framing; the
  X-Gravitee-Transaction-Id/Request-Id values only for presence and equality to each other); the body
  (parsed as JSON when both are JSON, the echo's headers normalised the same way; the echo's answer
  turned into XML by json-xml is read back and compared the same way).
- Output: compat.md (per definition: same / differs (how) / rejected by hgw (reason) / not deployed by
  Gravitee) and optionally a JSON file. --check FILE: exit 1 if a definition marked `same` in FILE is not
  `same` now (the committed table is a ratchet: compatibility may only grow).
"""
import argparse
import http.client
import http.server
import importlib.util
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"
API_KEY = "compat-key-0001"


def _load_prepare():
    """gravitee-gw/prepare-apis.py (the oracle recipe's definition preparation), as a module."""
    spec = importlib.util.spec_from_file_location("prepare_apis", HERE / "gravitee-gw" / "prepare-apis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PREPARE = _load_prepare()
# Extra GET paths per corpus file (see probes.json), read once.
EXTRA_PROBES = {k: v for k, v in json.loads((HERE / "probes.json").read_text()).items() if k != "_"}
REQUEST_TIMEOUT = 20.0
VOLATILE_HEADERS = {"date", "server", "connection", "keep-alive", "transfer-encoding", "content-length"}
ID_HEADERS = {"x-gravitee-transaction-id", "x-gravitee-request-id"}
# Added by the echo client and the HTTP stack, not by a gateway.
ECHO_IGNORED = {"connection", "keep-alive", "content-length", "transfer-encoding"}


def log(*args):
    print("diff.py:", *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# The backend


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self.read_chunked()
        path, _, query = self.path.partition("?")
        headers = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        doc = {"method": self.command, "path": path, "query": query, "headers": headers,
               "body": body.decode("utf-8", "replace")}
        out = json.dumps(doc, sort_keys=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", "1")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def read_chunked(self):
        data = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer


class EchoServer(http.server.ThreadingHTTPServer):
    """Keeps its connections so that stopping it closes the kept-alive ones too: "backend down" must
    not be answered by a pooled connection's handler thread."""

    daemon_threads = True

    def __init__(self, *args):
        super().__init__(*args)
        self.connections = set()
        self.lock = threading.Lock()

    def process_request(self, request, client_address):
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_all(self):
        with self.lock:
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.connections.clear()


class Backend:
    def __init__(self):
        self.server = EchoServer(("127.0.0.1", 0), Echo)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.server.close_all()


# ---------------------------------------------------------------------------------------------------------------
# Preparing definitions


def is_v4(doc):
    version = str(doc.get("definitionVersion") or doc.get("gravitee") or "").upper()
    return "listeners" in doc or version in ("V4", "4.0.0")


def prepare(index, name, text, backend_port):
    """One corpus file → (registry document, probe facts)."""
    text = text.replace("http://localhost:8080", f"http://127.0.0.1:{backend_port}")
    doc = json.loads(text)
    v4 = is_v4(doc)
    prefix = f"/c{index:03d}"
    api_id = f"compat-{index:03d}"
    doc["id"] = api_id
    entries = []  # (host or None, context path)
    if v4:
        for listener in doc.get("listeners", []):
            for p in listener.get("paths", []) if listener.get("type", "http") == "http" else []:
                p["path"] = prefix + "/" + p.get("path", "/").strip("/")
                entries.append((p.get("host"), p["path"]))
    else:
        proxy = doc.setdefault("proxy", {})
        if proxy.get("virtual_hosts"):
            for vh in proxy["virtual_hosts"]:
                vh["path"] = prefix + "/" + vh.get("path", "/").strip("/")
                entries.append((vh.get("host"), vh["path"]))
        else:
            proxy["context_path"] = prefix + "/" + proxy.get("context_path", "/").strip("/")
            entries.append((None, proxy["context_path"]))
    plans = doc.get("plans")
    if isinstance(plans, dict):
        plans = list(plans.values())
        doc["plans"] = plans
    if not plans:
        if v4:
            doc["plans"] = [{"id": "default_plan", "name": "Default plan", "security": {"type": "key-less"},
                             "mode": "standard", "status": "PUBLISHED"}]
        else:
            doc["plans"] = [{"id": "default_plan", "name": "Default plan", "security": "key_less",
                             "status": "published", "paths": {}}]
    else:
        for plan in plans:
            if not plan.get("status"):
                plan["status"] = "PUBLISHED" if v4 else "published"
    # The oracle recipe's own preparation: a subscription and key per API-key plan, then the registry form.
    plain = {"id": api_id, "state": "STARTED", "definitionVersion": "4.0.0" if v4 else "2.0.0", "definition": doc}
    PREPARE.add_key(plain, API_KEY)
    registry = PREPARE.to_registry(plain)
    facts = {"name": name, "id": api_id, "v4": v4, "entries": entries, "api_key": bool(registry["apiKeys"])}
    return registry, facts


# ---------------------------------------------------------------------------------------------------------------
# The two gateways


class Gravitee:
    def __init__(self, apis_dir, workdir):
        self.port = free_port()
        self.run_dir = workdir / "gravitee-run"
        env = dict(os.environ, GRAVITEE_GW_RUN_DIR=str(self.run_dir), GRAVITEE_GW_ADMIN_PORT=str(free_port()))
        t0 = time.time()
        out = subprocess.run([str(HERE / "gravitee-gw" / "run.sh"), str(apis_dir), str(self.port)], env=env,
                             capture_output=True, text=True)
        self.pid = int(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None
        if out.returncode != 0:
            self.stop()
            raise SystemExit(f"diff.py: Gravitee did not start: {out.stderr[-2000:]}")
        log(f"Gravitee up in {time.time() - t0:.1f}s on {self.port}")

    def deployments(self):
        """api id → None when deployed and started, else why not (from the gateway's log)."""
        result, errors = {}, {}
        for line in (self.run_dir / "gateway.log").read_text(errors="replace").splitlines():
            m = re.search(r"hgw-local-deploy: (.*)", line)
            if m:
                text = m.group(1)
                ids = re.findall(r"compat-\d{3}", text)
                if ids and "deployed api" in text and "NOT" not in text and "undeployed" not in text:
                    result.setdefault(ids[0], None)
                elif ids:
                    result[ids[0]] = text[:300]
                continue
            # Deployed but not started: the API's reactor failed (a policy plugin missing, a bad definition).
            m = re.search(r"\[(compat-\d{3})\] ERROR (\S+) - (.*)", line)
            if m:
                api, message = m.group(1), m.group(3)
                if "Unable to start the new reactor handler" in message:
                    result[api] = "Gravitee could not start it: " + "; ".join(errors.get(api, [message]))[:300]
                else:
                    errors.setdefault(api, []).append(message)
        return result

    def stop(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(self.pid, 0)
                    time.sleep(0.1)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None


class Hgw:
    def __init__(self, apis_dir, workdir, bin_dir, expected):
        self.port = free_port()
        node_port = free_port()
        self.node = f"127.0.0.1:{node_port}"
        state = workdir / "hgw-state"
        state.mkdir()
        args = [str(bin_dir / "hgw-agent"), "--local-apis", str(apis_dir), "--dataplanes", "1",
                "--dataplane-listen", f"127.0.0.1:{self.port}", "--dataplane-bin", str(bin_dir / "hgw-dataplane"),
                "--node-listen", self.node, "--grpc-listen", "127.0.0.1:0",
                "--grpc-socket", str(workdir / "hgw.sock"), "--reports-file", str(workdir / "reports.ndjson")]
        env = dict(os.environ, HGW_STATE_DIR=str(state), HGW_SPOOL_DIR=str(workdir / "spool"),
                   RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.log = open(workdir / "hgw.log", "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"diff.py: hgw-agent exited ({self.proc.returncode}); see {workdir / 'hgw.log'}")
            try:
                apis = self.apis()
                dataplanes = json.loads(get(self.node, "/_node/dataplanes")[2] or b"{}")
                current = dataplanes.get("currentVersion")
                ready = any(d.get("connected") and d.get("ackedVersion") == current
                            for d in dataplanes.get("dataplanes", []))
                if len(apis["deployed"]) + len(apis["rejected"]) + len(apis["skipped"]) >= expected and ready:
                    log(f"hgw up on {self.port}: {len(apis['deployed'])} deployed, {len(apis['rejected'])} rejected")
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        self.stop()
        raise SystemExit("diff.py: hgw did not deploy the corpus within 60 s")

    def apis(self):
        return json.loads(get(self.node, "/_node/apis")[2])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def get(hostport, path):
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------
# Probes and comparison


def probes(facts):
    host, ctx = facts["entries"][0] if facts["entries"] else (None, "/")
    base = ctx.rstrip("/")
    common = {"User-Agent": "hgw-compat/1", "Accept": "*/*"}
    if host:
        common["Host"] = host
    plain = [
        ("GET /", "GET", base + "/", dict(common), None),
        ("GET sub?query", "GET", base + "/a/b?x=1&y=two%20words", dict(common, **{"X-Probe": "1"}), None),
        ("POST json", "POST", base + "/items", dict(common, **{"Content-Type": "application/json"}),
         b'{"hello":"world","n":1}'),
    ]
    for key, paths in EXTRA_PROBES.items():
        if key in facts["name"]:
            plain += [(f"GET {p}", "GET", base + p, dict(common), None) for p in paths]
    out = list(plain)
    if facts["api_key"]:
        out += [(label + " +key", m, p, dict(h, **{"X-Gravitee-Api-Key": API_KEY}), b)
                for label, m, p, h, b in plain]
    return out


def send(port, method, path, headers, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return {"status": r.status, "headers": r.getheaders(), "body": r.read()}
    except (OSError, http.client.HTTPException) as e:
        return {"status": None, "headers": [], "body": f"<{type(e).__name__}: {e}>".encode()}
    finally:
        conn.close()


def normalise_headers(pairs, ignore):
    out = {}
    ids = set()
    for name, value in pairs:
        name = name.lower()
        if name in ignore:
            continue
        if name in ID_HEADERS:
            ids.add(value)
            value = "<id>"
        out.setdefault(name, []).append(value)
    if len(ids) > 1:
        out["<ids>"] = ["transaction and request ids differ"]
    return out


def normalise(answer, gateway_port):
    """Comparable form of an answer; the gateway's own address (the client's Host, which an endpoint
    may propagate) is written `<gateway>`, since the two gateways listen on different ports."""
    gateway = f"127.0.0.1:{gateway_port}"
    answer = dict(answer, body=answer["body"].replace(gateway.encode(), b"<gateway>"),
                  headers=[(k, v.replace(gateway, "<gateway>")) for k, v in answer["headers"]])
    headers = normalise_headers(answer["headers"], VOLATILE_HEADERS)
    body = answer["body"]
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("headers"), dict) and "method" in parsed:  # the echo
        parsed["headers"] = normalise_headers(
            [(k, v) for k, vs in parsed["headers"].items() for v in vs], ECHO_IGNORED)
        return {"status": answer["status"], "headers": headers, "echo": parsed}
    if parsed is not None:
        return {"status": answer["status"], "headers": headers, "json": parsed}
    echo = xml_echo(body)
    if echo is not None:  # the echo's answer turned into XML (json-xml): compared as the echo is
        echo["headers"] = normalise_headers([(k, v) for k, vs in echo["headers"].items() for v in vs], ECHO_IGNORED)
        return {"status": answer["status"], "headers": headers, "xml-echo": echo}
    return {"status": answer["status"], "headers": headers, "body": body.decode("utf-8", "replace")}


def xml_echo(body):
    """The echo's JSON answer as json-xml writes it (`<root><body/><headers><name>value</name>...`),
    read back into the echo's shape, or None when the body is not that."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError):
        return None
    fields = {child.tag: child for child in root}
    if "method" not in fields or "headers" not in fields:
        return None
    out = {name: (fields[name].text or "") for name in ("method", "path", "query", "body") if name in fields}
    headers = {}
    for header in fields["headers"]:
        headers.setdefault(header.tag, []).append(header.text or "")
    out["headers"] = headers
    return out


def not_served(answer):
    """Why Gravitee does not really serve an API it deployed, judging by one answer (None: it does)."""
    body = answer["body"][:400].decode("utf-8", "replace")
    if answer["status"] == 404 and "No context-path matches" in body:
        return "deployed, but Gravitee serves nothing on its context path (404 No context-path matches)"
    if answer["status"] == 500 and ("Cannot invoke" in body or "Exception" in body):
        return "Gravitee fails with an internal error: " + body[:160]
    return None


def differences(g, h):
    """What differs from Gravitee's answer `g` in hgw's `h`, in words."""
    out = []
    if g["status"] != h["status"]:
        out.append(f"status {h['status']} (Gravitee {g['status']})")
    for name in sorted(set(g["headers"]) | set(h["headers"])):
        gv, hv = g["headers"].get(name), h["headers"].get(name)
        if gv != hv:
            out.append(f"header {name}: {short(hv)} (Gravitee {short(gv)})")
    for key in ("echo", "xml-echo", "json", "body"):
        gv, hv = g.get(key), h.get(key)
        if gv == hv:
            continue
        if key in ("echo", "xml-echo") and isinstance(gv, dict) and isinstance(hv, dict):
            for field in ("method", "path", "query", "body"):
                if gv.get(field) != hv.get(field):
                    out.append(f"backend {field}: {short(hv.get(field))} (Gravitee {short(gv.get(field))})")
            gh, hh = gv.get("headers", {}), hv.get("headers", {})
            for name in sorted(set(gh) | set(hh)):
                if gh.get(name) != hh.get(name):
                    out.append(f"backend header {name}: {short(hh.get(name))} (Gravitee {short(gh.get(name))})")
        else:
            out.append(f"{key}: {short(hv)} (Gravitee {short(gv)})")
    return out


def short(v):
    if v is None:
        return "absent"
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 90 else text[:87] + "..."


# ---------------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hgw-bin", default=None, help="folder with hgw-agent and hgw-dataplane (default: "
                    "target/release, else target/debug)")
    ap.add_argument("--out", default=str(HERE / "compat.md"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--check", default=None, help="committed compat.md: fail if a `same` definition regressed")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("filters", nargs="*", help="only corpus files whose name contains one of these")
    a = ap.parse_args()

    bin_dir = pathlib.Path(a.hgw_bin) if a.hgw_bin else next(
        (ROOT / "target" / p for p in ("release", "debug") if (ROOT / "target" / p / "hgw-agent").exists()), None)
    if bin_dir is None:
        raise SystemExit("diff.py: no hgw-agent built (cargo build --release -p hgw-agent -p hgw-dataplane)")
    subprocess.run([str(HERE / "gravitee-gw" / "setup.sh")], check=True, stdout=subprocess.DEVNULL)

    t0 = time.time()
    work = pathlib.Path(tempfile.mkdtemp(prefix="hgw-compat."))
    backend = Backend()
    files = sorted(p for p in CORPUS.glob("*/*.json"))
    files = [f for f in files if not a.filters or any(x in str(f.relative_to(CORPUS)) for x in a.filters)]
    gdir, hdir = work / "apis-gravitee", work / "apis-hgw"
    gdir.mkdir()
    hdir.mkdir()
    facts = []
    for i, f in enumerate(files):
        name = str(f.relative_to(CORPUS))
        registry, fact = prepare(i, name, f.read_text(), backend.port)
        text = json.dumps(registry, indent=1)
        (gdir / f"{fact['id']}.json").write_text(text)
        (hdir / f"{fact['id']}.json").write_text(text)
        facts.append(fact)
    log(f"{len(facts)} definitions prepared in {work}")

    gravitee = hgw = None
    results = []
    try:
        gravitee = Gravitee(gdir, work)
        hgw = Hgw(hdir, work, bin_dir, len(facts))
        gdeploy = gravitee.deployments()
        happs = hgw.apis()
        # Skipped (not for this gateway: other servers, tags, tenant) is probed like deployed: both
        # gateways should then answer 404 alike.
        hdeployed = {d["id"] for d in happs["deployed"]} | {d["id"] for d in happs["skipped"]}
        hrejected = {r["id"]: r["reason"] for r in happs["rejected"]}
        runs = []
        for fact in facts:
            result = {"name": fact["name"], "id": fact["id"], "version": "v4" if fact["v4"] else "v2"}
            results.append(result)
            if fact["id"] not in gdeploy or gdeploy[fact["id"]] is not None:
                result["verdict"] = "not deployed by Gravitee"
                result["detail"] = gdeploy.get(fact["id"]) or "no deploy line"
                continue
            if fact["id"] not in hdeployed:
                result["verdict"] = "rejected by hgw"
                result["detail"] = hrejected.get(fact["id"], "not listed")
                # What Gravitee answers instead, to say what hgw would have to do.
                label, method, path, headers, body = probes(fact)[0]
                g = send(gravitee.port, method, path, headers, body)
                result["gravitee"] = f"{g['status']} {g['body'][:80].decode('utf-8', 'replace')}"
                unserved = not_served(g)
                if unserved:
                    result["verdict"], result["detail"] = "not served by Gravitee", unserved
                continue
            runs.append((fact, result))
        for phase in ("up", "down"):
            if phase == "down":
                backend.stop()
                time.sleep(0.5)
            for fact, result in runs:
                plist = probes(fact)
                if phase == "down":
                    plist = [(label + " (backend down)", m, p, h, b) for label, m, p, h, b in plist
                             if label.startswith("GET /")]
                for label, method, path, headers, body in plist:
                    graw = send(gravitee.port, method, path, headers, body)
                    g = normalise(graw, gravitee.port)
                    h = normalise(send(hgw.port, method, path, headers, body), hgw.port)
                    diff = differences(g, h)
                    result.setdefault("probes", []).append({"probe": label, "same": not diff, "diff": diff,
                                                            "gravitee_status": g["status"],
                                                            "unserved": not_served(graw)})
        for fact, result in runs:
            unserved = [p["unserved"] for p in result["probes"] if not p["probe"].endswith("down)")]
            if unserved and all(unserved):
                result["verdict"], result["detail"] = "not served by Gravitee", unserved[0]
                continue
            bad = [p for p in result["probes"] if not p["same"]]
            result["verdict"] = "same" if not bad else "differs"
            result["detail"] = "; ".join(f"{p['probe']}: {', '.join(p['diff'])}" for p in bad)
    finally:
        if hgw:
            hgw.stop()
        if gravitee:
            gravitee.stop()
        try:
            backend.stop()
        except Exception:
            pass
    elapsed = time.time() - t0
    write_table(results, pathlib.Path(a.out), elapsed)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    log(f"done in {elapsed:.0f}s; table in {a.out}")
    if a.check:
        return check(pathlib.Path(a.check), results)
    return 0


def verdicts_of(table_text):
    out = {}
    for line in table_text.splitlines():
        m = re.match(r"\| `([^`]+)` \| v\d \| ([^|]+) \|", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def check(committed, results):
    before = verdicts_of(committed.read_text()) if committed.exists() else {}
    regressed = [r for r in results if before.get(r["name"]) == "same" and r["verdict"] != "same"]
    for r in regressed:
        log(f"REGRESSION {r['name']}: was same, now {r['verdict']}: {r.get('detail', '')[:400]}")
    return 1 if regressed else 0


def write_table(results, out, elapsed):
    oracle = [r for r in results if not r["verdict"].startswith("not ")]
    same = [r for r in oracle if r["verdict"] == "same"]
    rejected = [r for r in oracle if r["verdict"] == "rejected by hgw"]
    lines = [
        "# Compatibility with Gravitee's own gateway (generated)",
        "",
        "Generated by `tests/compat/diff.py` (see its header for the method): every definition of",
        "`tests/compat/corpus/` (sources in `corpus/SOURCES.tsv`) deployed on Gravitee APIM 4.10.9 and on hgw,",
        "the same probes sent to both, the answers compared. Do not edit by hand.",
        "",
        f"- Definitions: {len(results)}; deployed and served by Gravitee: **{len(oracle)}** (not deployed: "
        f"{sum(r['verdict'] == 'not deployed by Gravitee' for r in results)}, deployed but not served: "
        f"{sum(r['verdict'] == 'not served by Gravitee' for r in results)})",
        f"- Of those, hgw answers exactly as Gravitee on every probe: **{len(same)}** "
        f"({100 * len(same) // max(1, len(oracle))}%); differs: {len(oracle) - len(same) - len(rejected)}; "
        f"rejected by hgw: {len(rejected)}",
        f"- Run time: {elapsed:.0f} s",
        "",
        "| definition | version | verdict | how |",
        "|---|---|---|---|",
    ]
    for r in results:
        detail = (r.get("detail") or "").replace("|", "\\|").replace("\n", " ")
        if len(detail) > 600:
            detail = detail[:597] + "..."
        lines.append(f"| `{r['name']}` | {r['version']} | {r['verdict']} | {detail} |")
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
