#!/usr/bin/env python3
"""cache_redis.py — Gravitee's own gateway and hgw sharing one Redis through the cache policy's `cache-redis`
resource (Gravitee's gravitee-resource-cache-redis 4.0.1, the newest Maven Central serves): what one gateway
stored is what the other serves, both ways.

    tests/compat/cache_redis.py [--hgw-bin DIR]

One v4 API (cache policy, scope API, with a `cache-redis` resource in Gravitee 4.x's form, password set, TLS
off) on both gateways (diff.py's harness: gravitee-gw/run.sh and `hgw-agent --local-apis`), a real
`redis-server` with `requirepass`, diff.py's echo backend. The echo's body carries the headers of the request
that reached it (transaction ids included), so an answer served from the other gateway's entry is told from a
second call to the backend by its body alone. Checked: the first gateway's answer is stored under one Redis
key; the second gateway answers it with the same status and body; the key names are the same form on both;
then the other way round. Exits 1 on any difference. Needs redis-server and Gravitee assembled by
gravitee-gw/setup.sh (run here).
"""
import argparse
import importlib.util
import json
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PASSWORD = "compat-redis-pw"


def load_diff():
    spec = importlib.util.spec_from_file_location("compat_diff", HERE / "diff.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DIFF = load_diff()


class Redis:
    def __init__(self, workdir):
        self.port = DIFF.free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit("cache_redis.py: redis-server did not start")

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", PASSWORD, *args],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def keys(self):
        return sorted(k for k in self.cli("--scan", "--pattern", "gravitee:*").splitlines() if k)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def definition(redis_port):
    return {
        "id": "cache-redis", "name": "cache-redis", "apiVersion": "1", "definitionVersion": "4.0.0",
        "type": "proxy",
        "listeners": [{"type": "http", "paths": [{"path": "/cached"}],
                       "entrypoints": [{"type": "http-proxy"}]}],
        "endpointGroups": [{"name": "default", "type": "http-proxy",
                            "endpoints": [{"name": "default", "type": "http-proxy",
                                           "configuration": {"target": "http://localhost:8080/endpoint"}}]}],
        "flows": [{"name": "cache", "enabled": True,
                   "selectors": [{"type": "http", "path": "/", "pathOperator": "STARTS_WITH"}],
                   "request": [{"name": "cache", "policy": "cache", "enabled": True,
                                "configuration": {"cacheName": "redis-cache", "scope": "API",
                                                  "timeToLiveSeconds": 600}}],
                   "response": []}],
        "resources": [{"name": "redis-cache", "type": "cache-redis", "enabled": True,
                       "configuration": {"name": "redis-cache", "releaseCache": False, "maxTotal": 8,
                                         "password": PASSWORD, "timeToLiveSeconds": 0, "timeout": 2000,
                                         "useSsl": False, "sentinelMode": False,
                                         "standalone": {"host": "127.0.0.1", "port": redis_port}}}],
    }


def wait_for_new_key(redis, before, what):
    for _ in range(100):
        new = [k for k in redis.keys() if k not in before]
        if new:
            return new
        time.sleep(0.1)
    return []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hgw-bin", default=str(ROOT / "target" / "debug"))
    a = ap.parse_args()
    subprocess.run([str(HERE / "gravitee-gw" / "setup.sh")], check=True, stdout=subprocess.DEVNULL)
    work = pathlib.Path(tempfile.mkdtemp(prefix="hgw-compat-redis."))
    backend = DIFF.Backend()
    redis = Redis(work)
    gravitee = hgw = None
    failures = []
    try:
        registry, facts = DIFF.prepare(0, "cache-redis", json.dumps(definition(redis.port)), backend.port)
        context = facts["entries"][0][1]
        for side in ("gravitee", "hgw"):
            (work / f"apis-{side}").mkdir()
            (work / f"apis-{side}" / f"{facts['id']}.json").write_text(json.dumps(registry, indent=1))
        gravitee = DIFF.Gravitee(work / "apis-gravitee", work)
        hgw = DIFF.Hgw(work / "apis-hgw", work, pathlib.Path(a.hgw_bin), 1)
        deployed = gravitee.deployments()
        if deployed.get(facts["id"], "not deployed") is not None:
            raise SystemExit(f"cache_redis.py: Gravitee did not deploy the API: {deployed}")
        if not any(d["id"] == facts["id"] for d in hgw.apis()["deployed"]):
            raise SystemExit(f"cache_redis.py: hgw did not deploy the API: {hgw.apis()}")
        ports = {"gravitee": gravitee.port, "hgw": hgw.port}
        for first, second in (("gravitee", "hgw"), ("hgw", "gravitee")):
            path = f"{context}/stored-by-{first}?q=1"
            before = redis.keys()
            stored = DIFF.send(ports[first], "GET", path, {}, None)
            keys = wait_for_new_key(redis, before, first)
            served = DIFF.send(ports[second], "GET", path, {}, None)
            line = f"{first} stores, {second} serves: {first} {stored['status']}, key {keys}, {second} {served['status']}"
            print(line)
            if stored["status"] != 200 or len(keys) != 1:
                failures.append(f"{line}: the first answer was not stored under one key")
            elif (served["status"], served["body"]) != (stored["status"], stored["body"]):
                failures.append(f"{line}: {second} did not serve {first}'s entry:\n  {first}: {stored['body'][:300]!r}"
                                f"\n  {second}: {served['body'][:300]!r}")
        all_keys = redis.keys()
        print(f"keys: {all_keys}")
    finally:
        for gateway in (hgw, gravitee):
            if gateway:
                gateway.stop()
        redis.stop()
        backend.stop()
    if failures:
        print("\n".join(["FAIL"] + failures), file=sys.stderr)
        return 1
    print("ok: each gateway serves what the other stored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
