#!/usr/bin/env bash
# tests/deploy/k8s.sh — the Helm chart and sidecar injection against a real kube-apiserver + etcd
# (tests/k8s/build.sh, cached under ~/.cache/hgw-k8s): helm lint; the chart's rendered objects stored by
# server-side apply; the chart's MutatingWebhookConfiguration registered for real (caBundle) against
# `hgw-agent webhook` on 127.0.0.1; a Pod and a Deployment in a labelled namespace stored with the
# sidecar, an opted-out pod untouched, a labelled pod elsewhere injected, applying twice injects once;
# `hgw-agent inject` gives what the webhook gives (golden) and its output is accepted by the apiserver;
# TokenReview with the chart's agent ServiceAccount, and a real hgw-dataplane joining a real hgw-agent
# (--join-kubernetes) with a `kubectl create token --audience hgw` token, a token for the API refused.
# Sourced by run.sh (counts ok/FAIL); needs target/debug/hgw-agent and the release hgw-dataplane.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
agent_bin=${HGW_AGENT_BIN:-$HGW_ROOT/target/debug/hgw-agent}
dataplane_bin=${HGW_DATAPLANE_BIN:-${HGW_RELEASE_DIR:-$HGW_ROOT/target/release}/hgw-dataplane}
kwork=$(mktemp -d)
join_pids=()
cleanup_k8s() {
  [ -f "$kwork/pids" ] && kill $(cat "$kwork/pids") 2>/dev/null
  [ -n "${webhook_pid:-}" ] && kill "$webhook_pid" 2>/dev/null
  for pid in "${join_pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$kwork"
}
trap cleanup_k8s EXIT

command -v kubectl >/dev/null || apt_install kubectl
command -v go >/dev/null || apt_install golang-go
python3 -c "import yaml" 2>/dev/null || apt_install python3-yaml
log "helm, kube-apiserver + etcd (scripts/tools.sh: cached after the first build; waits for one under way)"
start=$(date +%s)
bash "$HGW_ROOT/scripts/tools.sh" helm k8s || { echo "FAIL - building helm, kube-apiserver and etcd"; exit 1; }
bin=$(bash "$HGW_ROOT/tests/k8s/build.sh")
echo "helm, kube-apiserver and etcd ready in $(( $(date +%s) - start )) s ($bin)" >&2
eval "$(bash "$HGW_ROOT/tests/k8s/up.sh" "$bin" "$kwork")"
k() { kubectl "$@"; }

chart="$HGW_ROOT/deploy/helm/hgw"
check "helm lint is clean" bash -c "helm lint --strict '$chart' --set cloud.token=t --set license.key=l >'$kwork/lint.log' 2>&1 || { cat '$kwork/lint.log'; false; }"

# The webhook's TLS: a CA and a server certificate for 127.0.0.1, made now.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=hgw-test-ca -keyout "$kwork/ca.key" -out "$kwork/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=hgw-injector -keyout "$kwork/tls.key" -out "$kwork/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$kwork/san.ext"
openssl x509 -req -in "$kwork/tls.csr" -CA "$kwork/ca.crt" -CAkey "$kwork/ca.key" -CAcreateserial -days 1 \
  -extfile "$kwork/san.ext" -out "$kwork/tls.crt" 2>/dev/null
"$agent_bin" webhook --listen 127.0.0.1:0 --addr-file "$kwork/webhook.json" --tls-cert "$kwork/tls.crt" \
  --tls-key "$kwork/tls.key" >"$kwork/webhook.log" 2>&1 &
webhook_pid=$!
wait_until 30 test -s "$kwork/webhook.json"
webhook_addr=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["webhook"])' "$kwork/webhook.json")
check "webhook answers over TLS with the test CA" curl -fsS --cacert "$kwork/ca.crt" "https://$webhook_addr/healthz"

# The chart, rendered and stored for real (server-side apply), its webhook pointing at the local injector.
k create namespace hgw-system >/dev/null
helm template hgw "$chart" -n hgw-system --set cloud.token=test-token --set license.key=dGVzdA== \
  --set gateway.ratelimit.redis.host=redis.hgw-system --set agent.tcp.enabled=true \
  --set tracing.otlpEndpoint=http://otel-collector:4317 \
  --set injector.url="https://$webhook_addr" --set-file injector.tls.cert="$kwork/tls.crt" \
  --set-file injector.tls.key="$kwork/tls.key" --set-file injector.tls.caBundle="$kwork/ca.crt" > "$kwork/chart.yaml"
check "the chart's objects are stored by server-side apply" \
  bash -c "kubectl apply --server-side -n hgw-system -f '$kwork/chart.yaml' >'$kwork/apply.log' 2>&1 || { cat '$kwork/apply.log'; false; }"
for kind in daemonset/hgw-agent deployment/hgw-gateway service/hgw-gateway poddisruptionbudget/hgw-gateway \
  horizontalpodautoscaler/hgw-gateway deployment/hgw-injector secret/hgw-secrets clusterrolebinding/hgw-agent-tokenreview; do
  check "stored: $kind" k get -n hgw-system "$kind"
done
check "registered: the MutatingWebhookConfiguration with its caBundle" \
  bash -c "kubectl get mutatingwebhookconfiguration hgw-injector -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | base64 -d | grep -q 'BEGIN CERTIFICATE'"
# The default rendering (the chart's own CA, in-cluster Service) is valid too.
helm template hgw "$chart" -n hgw-system --set cloud.token=t --set license.key=l > "$kwork/chart-default.yaml"
check "default values: accepted by a server-side dry run" \
  bash -c "kubectl apply --server-side --dry-run=server -n hgw-system -f '$kwork/chart-default.yaml' >'$kwork/dry.log' 2>&1 || { cat '$kwork/dry.log'; false; }"

# HTTPS and the listener's limits on the gateway pool: the Secret mounted where the variables point.
helm template hgw "$chart" -n hgw-system --set cloud.token=t --set license.key=l --set gateway.tls.secretName=gw-tls \
  --set gateway.tls.clientAuth=required --set gateway.tls.truststoreSecretName=gw-ca \
  --set gateway.limits.maxHeaderSize=16384 --set gateway.limits.http2IdleTimeout=5m \
  --set gateway.trustedProxies=10.0.0.0/8 > "$kwork/chart-https.yaml"
check "HTTPS values: accepted by a server-side dry run" \
  bash -c "kubectl apply --server-side --dry-run=server -n hgw-system -f '$kwork/chart-https.yaml' >'$kwork/dry-https.log' 2>&1 || { cat '$kwork/dry-https.log'; false; }"
check "HTTPS values: the gateway reads its certificate, truststore and limits from the mounted Secrets" python3 - "$kwork/chart-https.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
gw = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "hgw-gateway")
pod = gw["spec"]["template"]["spec"]; c = pod["containers"][0]
env = {e["name"]: e.get("value") for e in c["env"]}
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
vols = {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]}
assert env["HGW_TLS_CERT"] == "/etc/hgw/tls/tls.crt" and env["HGW_TLS_KEY"] == "/etc/hgw/tls/tls.key", env
assert env["HGW_TLS_CLIENT_AUTH"] == "required" and env["HGW_TLS_TRUSTSTORE"] == "/etc/hgw/truststore/ca.crt", env
assert env["HGW_MAX_HEADER_SIZE"] == "16384" and env["HGW_HTTP2_IDLE_TIMEOUT"] == "5m", env
assert env["HGW_TRUSTED_PROXIES"] == "10.0.0.0/8", env
assert mounts["tls"] == "/etc/hgw/tls" and vols["tls"] == "gw-tls", (mounts, vols)
assert mounts["truststore"] == "/etc/hgw/truststore" and vols["truststore"] == "gw-ca", (mounts, vols)
assert "HGW_MAX_HEADERS" not in env, "empty limits keep the dataplane's defaults"
PY
check "a misspelt limit is refused at rendering, naming it" \
  bash -c "helm template hgw '$chart' --set cloud.token=t --set license.key=l --set gateway.limits.maxHeadrSize=1 2>&1 | grep -q 'gateway.limits.maxHeadrSize is not a dataplane limit'"

# Workloads. No controllers run here: the default ServiceAccounts are made by hand.
for ns in shop plain; do k create namespace "$ns" >/dev/null; k create serviceaccount default -n "$ns" >/dev/null; done
k label namespace shop hgw.io/inject=enabled >/dev/null
pod() { # name annotations-json labels-json
  printf '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s","annotations":%s,"labels":%s},"spec":{"containers":[{"name":"app","image":"nginx:1.27","ports":[{"containerPort":8080}]}]}}\n' "$1" "$2" "$3"
}
deployment() {
  printf '{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"%s"},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"%s"}},"template":{"metadata":{"labels":{"app":"%s"},"annotations":{"hgw.io/tags":"eu"}},"spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}}}\n' "$1" "$1" "$1"
}
sidecars() { # jsonpath to a pod spec; prints the number of hgw-dataplane containers
  kubectl get "$@" -o json | python3 -c '
import json,sys
o=json.load(sys.stdin); s=o["spec"]
s=s.get("template",{}).get("spec",s) if o["kind"]!="Pod" else s
print(sum(c["name"]=="hgw-dataplane" for c in s.get("initContainers",[])+s.get("containers",[])))'
}
pod web '{}' '{}' > "$kwork/web.json"
deployment shop-web > "$kwork/deploy.json"
pod legacy '{"hgw.io/inject":"disabled"}' '{}' > "$kwork/legacy.json"
k apply --server-side -n shop -f "$kwork/web.json" >/dev/null 2>"$kwork/err" || cat "$kwork/err"
k apply --server-side -n shop -f "$kwork/deploy.json" >/dev/null 2>"$kwork/err" || cat "$kwork/err"
k apply --server-side -n shop -f "$kwork/legacy.json" >/dev/null 2>"$kwork/err" || cat "$kwork/err"
check "labelled namespace: the Pod is stored with the sidecar" test "$(sidecars -n shop pod/web)" = 1
check "labelled namespace: the Deployment is stored with the sidecar" test "$(sidecars -n shop deployment/shop-web)" = 1
check "per-pod override: the Deployment's sidecar has --tags eu" \
  bash -c "kubectl get -n shop deployment/shop-web -o json | grep -q '\"eu\"'"
check "the sidecar has the agent socket (hostPath) and the hgw token (audience hgw)" \
  bash -c "kubectl get -n shop pod/web -o json | python3 -c 'import json,sys; v={x[\"name\"]:x for x in json.load(sys.stdin)[\"spec\"][\"volumes\"]}; sys.exit(0 if v[\"hgw-agent-socket\"][\"hostPath\"][\"path\"]==\"/var/run/hgw\" and v[\"hgw-token\"][\"projected\"][\"sources\"][0][\"serviceAccountToken\"][\"audience\"]==\"hgw\" else 1)'"
check "opted-out pod is untouched" bash -c "test \"\$(kubectl get -n shop pod/legacy -o json | python3 -c 'import json,sys; o=json.load(sys.stdin); print(len(o[\"spec\"].get(\"initContainers\",[])), \"hgw.io/injected\" in o[\"metadata\"].get(\"annotations\",{}))')\" = '0 False'"
# Applying the same manifests again (server-side, as a CI pipeline would) must not inject twice.
k apply --server-side -n shop -f "$kwork/web.json" >/dev/null 2>"$kwork/err2"; k apply --server-side -n shop -f "$kwork/deploy.json" >/dev/null 2>>"$kwork/err2"
check "applying twice: the apply succeeds" bash -c "! test -s '$kwork/err2' || { cat '$kwork/err2'; false; }"
check "applying twice: still one sidecar in the Pod" test "$(sidecars -n shop pod/web)" = 1
check "applying twice: still one sidecar in the Deployment" test "$(sidecars -n shop deployment/shop-web)" = 1
# Outside labelled namespaces only pods that ask.
pod asked '{}' '{"hgw.io/inject":"enabled"}' > "$kwork/asked.json"
pod quiet '{}' '{}' > "$kwork/quiet.json"
k apply -n plain -f "$kwork/asked.json" >/dev/null; k apply -n plain -f "$kwork/quiet.json" >/dev/null
check "unlabelled namespace: a pod labelled hgw.io/inject=enabled is injected" test "$(sidecars -n plain pod/asked)" = 1
check "unlabelled namespace: other pods are not" test "$(sidecars -n plain pod/quiet)" = 0

# Golden: `hgw-agent inject` on the same manifests gives what the webhook stored (and is accepted).
"$agent_bin" inject -f "$kwork/web.json" > "$kwork/web-cli.yaml" 2>"$kwork/inject.log"
"$agent_bin" inject -f "$kwork/deploy.json" > "$kwork/deploy-cli.yaml" 2>>"$kwork/inject.log"
check "hgw-agent inject output is accepted by the apiserver" \
  bash -c "kubectl apply --server-side -n plain -f '$kwork/web-cli.yaml' -f '$kwork/deploy-cli.yaml' >/dev/null 2>'$kwork/err3' || { cat '$kwork/err3'; false; }"
normalize() { # the injected parts of a stored object, without what the ServiceAccount plugin adds
  kubectl get "$@" -o json | python3 -c '
import json,sys
o=json.load(sys.stdin)
t=o if o["kind"]=="Pod" else o["spec"]["template"]
s=t["spec"]
def clean(cs):
    out=[]
    for c in cs:
        c=dict(c); c["volumeMounts"]=[m for m in c.get("volumeMounts",[]) if not m["name"].startswith("kube-api-access")]
        out.append(c)
    return out
print(json.dumps({"init":clean(s.get("initContainers",[])),"containers":clean(s["containers"]),
  "volumes":sorted([v for v in s.get("volumes",[]) if not v["name"].startswith("kube-api-access")],key=lambda v:v["name"]),
  "annotations":t["metadata"].get("annotations",{})},sort_keys=True))'
}
check "golden: inject == webhook for the Pod" test "$(normalize -n shop pod/web)" = "$(normalize -n plain pod/web)"
check "golden: inject == webhook for the Deployment" test "$(normalize -n shop deployment/shop-web)" = "$(normalize -n plain deployment/shop-web)"
check "hgw-agent inject is idempotent (its output injected again is unchanged)" \
  bash -c "'$agent_bin' inject -f '$kwork/web-cli.yaml' 2>/dev/null | cmp -s - '$kwork/web-cli.yaml'"
check "a bad override is refused by the webhook with the annotation named" \
  bash -c "kubectl apply -n shop -f - <<<'$(pod badport '{"hgw.io/proxy-port":"eighty"}' '{}')' 2>&1 | grep -q 'hgw.io/proxy-port'"

# ServiceAccount identity: TokenReview with the chart's agent ServiceAccount (ClusterRole tokenreviews:create).
k create serviceaccount web -n shop >/dev/null; k create serviceaccount nobody -n shop >/dev/null
k create token hgw-agent -n hgw-system > "$kwork/agent.token"
k create token nobody -n shop > "$kwork/nobody.token"
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
check "TokenReview: a token from \`kubectl create token --audience hgw\` is accepted, others refused" \
  bash -c "cd '$HGW_ROOT' && HGW_TEST_KUBE_SERVER='$server' HGW_TEST_KUBE_CA='$kwork/pki/certs/apiserver.crt' \
    HGW_TEST_KUBE_AGENT_TOKEN='$kwork/agent.token' HGW_TEST_KUBE_NOBODY_TOKEN='$kwork/nobody.token' \
    HGW_TEST_KUBE_HGW_TOKEN=\$(kubectl create token web -n shop --audience hgw) \
    HGW_TEST_KUBE_API_TOKEN=\$(kubectl create token web -n shop) \
    cargo test -q --locked -p hgw-agent --test tokenreview -- --ignored >'$kwork/tokenreview.log' 2>&1 || { cat '$kwork/tokenreview.log'; false; }"

# A real join: hgw-agent checks ServiceAccount tokens with this API server's TokenReview (as the chart's
# agent ServiceAccount); hgw-dataplane joins over TCP with a token from `kubectl create token`.
jw="$kwork/join"; mkdir -p "$jw/apis" "$jw/state"
cp "$HGW_ROOT/deploy/examples/apis/hello.json" "$jw/apis/"
k create token web -n shop --audience hgw > "$jw/hgw.token"
k create token web -n shop > "$jw/api.token"
"$agent_bin" --local-apis "$jw/apis" --reports-file "$jw/reports.ndjson" --state-dir "$jw/state" \
  --grpc-listen 127.0.0.1:0 --node-listen 127.0.0.1:0 --addr-file "$jw/agent.json" \
  --join-kubernetes --kube-api-server "$server" --kube-ca-file "$kwork/pki/certs/apiserver.crt" \
  --kube-token-file "$kwork/agent.token" >"$jw/agent.log" 2>&1 &
join_pids+=($!)
wait_until 30 test -s "$jw/agent.json"
addr() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1])).get(sys.argv[2]) or "")' "$@" 2>/dev/null; }
agent_grpc=$(addr "$jw/agent.json" grpc); agent_pki=$(addr "$jw/agent.json" pki_dir)
dataplane() { # ID TOKEN_FILE: a joining dataplane, its addresses in $jw/ID.json and its log in $jw/ID.log
  "$dataplane_bin" --agent "https://$agent_grpc" --agent-ca "$agent_pki/ca.pem" --join-token-file "$2" --id "$1" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --addr-file "$jw/$1.json" --workers 1 >"$jw/$1.log" 2>&1 &
  join_pids+=($!)
  wait_until 30 test -s "$jw/$1.json"
}
dataplane shop.web.dp-1 "$jw/hgw.token"
dataplane shop.web.dp-2 "$jw/api.token"
joined=$(addr "$jw/shop.web.dp-1.json" listen); refused_admin=$(addr "$jw/shop.web.dp-2.json" admin)
joined_and_serves() {
  wait_until 60 bash -c "curl -fsS http://$joined/hello | grep -q 'Hello from hgw'" \
    && grep -q 'ServiceAccount token accepted' "$jw/agent.log" \
    || { tail -5 "$jw/agent.log" "$jw/shop.web.dp-1.log"; false; }
}
refused_and_not_ready() {
  wait_until 30 grep -q 'ServiceAccount token was refused' "$jw/shop.web.dp-2.log" \
    && ! curl -fsS "http://$refused_admin/ready" >/dev/null 2>&1 \
    && ! grep -q 'certificate from the agent installed' "$jw/shop.web.dp-2.log" \
    || { tail -5 "$jw/shop.web.dp-2.log"; false; }
}
no_token_in_logs() {
  ! grep -qF -e "$(cat "$jw/hgw.token")" -e "$(cat "$jw/api.token")" "$jw/agent.log" "$jw"/shop.web.dp-*.log
}
check "join: hgw-dataplane joins hgw-agent with a \`kubectl create token --audience hgw\` token (TokenReview) and serves" \
  joined_and_serves
check "join: a token without audience hgw is refused (no certificate, the dataplane is not ready)" refused_and_not_ready
check "join: no ServiceAccount token in the agent's or the dataplanes' logs" no_token_in_logs
