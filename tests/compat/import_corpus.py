#!/usr/bin/env python3
"""import_corpus.py MIRRORS_DIR

Rebuilds tests/compat/corpus/ from git checkouts of Gravitee's public repositories (Apache-2.0):
MIRRORS_DIR/<owner>+<name>/repo must be a git directory (bare or not) of github.com/<owner>/<name>.
Each HTTP-proxy API definition (v4 `type: proxy` and v2) of the test folders below is copied unchanged to
corpus/<short-repo>/<path with / as __>.json, and corpus/SOURCES.tsv cites repository, path and commit.
Message, native, TCP, gRPC and secret-manager APIs are left out (outside the compatibility issue).
The corpus is committed; this script only says where it came from and refreshes it.
"""
import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

APIM = "gravitee-io/gravitee-api-management"
DIST = "gravitee-apim-distribution/gravitee-apim-distribution-integration-tests/src/test/resources/apis/"
# (repository, path prefix, path fragments to leave out)
SOURCES = [
    (APIM, DIST + "http/", ["/sse/"]),
    (APIM, DIST + "plan/v2-", []),
    (APIM, DIST + "plan/v4-proxy-", []),
    (APIM, DIST + "v4/http/", ["/secrets/", "/sse/", "kafka", "mqtt", "rabbitmq", "solace", "api-product/",
                               "connectionfailure/api-message"]),
    (APIM, DIST + "v4/el/", []),
    (APIM, "gravitee-apim-gateway/gravitee-apim-gateway-handlers/gravitee-apim-gateway-handlers-api/src/test/"
           "resources/", []),
    # The definition parser's own tests: the v2 forms Gravitee reads (endpoints, groups, old shapes).
    (APIM, "gravitee-apim-definition/gravitee-apim-definition-jackson/src/test/resources/io/gravitee/definition/"
           "jackson/api-", []),
]
POLICIES = ["apikey", "assign-attributes", "assign-content", "http-redirect", "jwt", "keyless", "latency", "mock",
            "override-http-method", "transform-status-code", "transformheaders", "url-rewriting",
            "transformqueryparams", "json-validation", "resource-filtering", "xml-json", "json-xml", "retry", "json-to-json"]
for p in POLICIES:
    SOURCES.append((f"gravitee-io/gravitee-policy-{p}", "src/test/resources/apis/", ["message"]))
# The cache policy keeps its test APIs beside its integration tests.
SOURCES.append(("gravitee-io/gravitee-policy-cache", "src/test/resources/io/gravitee/policy/cache/integration/", []))
# The Nashorn `javascript` policy at the version Maven Central serves (the oracle runs that one; later
# versions are published elsewhere): its tests' APIs of that tag.
SOURCES.append(("gravitee-io/gravitee-policy-javascript", "src/test/resources/apis/", [], "1.3.3"))


def git(repo_dir, *args):
    return subprocess.run(["git", "-C", str(repo_dir), *args], check=True, capture_output=True, text=True).stdout


def is_proxy_definition(doc):
    if not isinstance(doc, dict):
        return False
    version = str(doc.get("definitionVersion") or doc.get("gravitee") or "")
    if version.upper() in ("V4", "4.0.0") or "listeners" in doc:
        return doc.get("type", "proxy").lower() == "proxy" and "listeners" in doc
    return "proxy" in doc


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    mirrors = pathlib.Path(sys.argv[1])
    rows = []
    for repo, prefix, skip, *ref in SOURCES:
        ref = ref[0] if ref else "HEAD"
        repo_dir = mirrors / repo.replace("/", "+") / "repo"
        commit = git(repo_dir, "rev-parse", ref + "^{commit}").strip()
        short = repo.split("/")[1].removeprefix("gravitee-").removeprefix("policy-")
        for path in git(repo_dir, "ls-tree", "-r", "--name-only", ref).splitlines():
            if not path.startswith(prefix) or not path.endswith(".json") or any(s in path for s in skip):
                continue
            if "/apis/" not in "/" + path and "/definition/jackson/" not in path and "/integration/" not in path:
                continue
            text = git(repo_dir, "show", f"{ref}:{path}")
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                continue
            if not is_proxy_definition(doc):
                continue
            rel = (path.split("/apis/", 1)[1] if "/apis/" in path else path.rsplit("/", 1)[1]).replace("/", "__")
            dst = CORPUS / short / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(text)
            rows.append((f"{short}/{rel}", repo, path, commit))
    rows.sort()
    with open(CORPUS / "SOURCES.tsv", "w") as out:
        out.write("# file\trepository\tpath\tcommit (all Apache-2.0, copied unchanged)\n")
        for row in rows:
            out.write("\t".join(row) + "\n")
    print(f"{len(rows)} definitions in {CORPUS}")


if __name__ == "__main__":
    main()
