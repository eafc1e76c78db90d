#!/usr/bin/env bash
# mcpgate interop suite: real third-party software on both sides of the gateway.
#   authorization servers: oidc-provider (JWT access tokens; a second instance with opaque tokens)
#   upstreams:             @modelcontextprotocol/server-everything, FastMCP (PyPI mcp) notes server
#   clients:               MCP Python SDK, MCP TypeScript SDK, @modelcontextprotocol/conformance
# Everything listens on 127.0.0.1 (server-everything binds all interfaces; it is only sent loopback
# traffic). Bounded: every wait has a timeout; every process started is killed by PID on exit.
#
# Usage: tests/interop/run.sh            (MCPGATE_BIN overrides target/debug/mcpgate)
#        INTEROP_ONLY="components py"    run a subset (components py ts tls conformance)
#        INTEROP_KEEP=1                  keep the temp dir (config, logs) for inspection
#        INTEROP_KEY_ALG=RS256           JWT AS signs with RS256 instead of ES256
# Last line: "N passed, M failed"; exit status non-zero if M > 0.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MCPGATE_BIN="${MCPGATE_BIN:-$ROOT/target/debug/mcpgate}"
ONLY="${INTEROP_ONLY:-components py ts tls conformance}"
KEY_ALG="${INTEROP_KEY_ALG:-ES256}" # signing algorithm of the JWT AS: ES256 or RS256
SUITE_DEADLINE=$((SECONDS + ${INTEROP_TIMEOUT:-600}))

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcpgate-interop.XXXXXX")"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
RESULTS="$WORK/results.txt"
: >"$RESULTS"
PIDS=()

PART_PID=""

cleanup() {
  local pid
  [ -n "$PART_PID" ] && kill -TERM "$PART_PID" 2>/dev/null
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for _ in $(seq 1 30); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null
  done
  if [ "${INTEROP_KEEP:-0}" = 1 ]; then
    echo "# kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "# $*" >&2; }
result() { echo "$*" | tee -a "$RESULTS"; }

finish() {
  local passed failed
  passed=$(grep -c '^PASS ' "$RESULTS")
  failed=$(grep -c '^FAIL ' "$RESULTS")
  if [ "$failed" -gt 0 ] && [ "${INTEROP_KEEP:-0}" != 1 ]; then
    mkdir -p "$HERE/.run"
    rm -rf "$HERE/.run/last"
    cp -r "$WORK" "$HERE/.run/last" 2>/dev/null && echo "# logs of this run: $HERE/.run/last" >&2
  fi
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

# ---------------------------------------------------------------- dependencies
cd "$HERE" || exit 1
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dependencies (npm ci)"
  timeout 300 npm ci --no-audit --no-fund >"$LOGS/npm-ci.log" 2>&1 || { result "FAIL setup/npm_ci: see npm output"; cat "$LOGS/npm-ci.log" >&2; finish; }
fi
if [ ! -x .venv/bin/python ] || [ requirements.txt -nt .venv/.installed ]; then
  log "creating python venv and installing requirements.txt"
  { [ -x .venv/bin/python ] || python3 -m venv .venv; } &&
    timeout 300 .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt >"$LOGS/pip.log" 2>&1 &&
    touch .venv/.installed || { result "FAIL setup/pip_install: see pip output"; cat "$LOGS/pip.log" >&2; finish; }
fi
PY="$HERE/.venv/bin/python"

if [ ! -x "$MCPGATE_BIN" ]; then
  result "FAIL setup/mcpgate_binary: $MCPGATE_BIN not found (build with cargo build, or set MCPGATE_BIN)"
  finish
fi

# ---------------------------------------------------------------- ports and processes
read -r P_AS_JWT P_AS_OPAQUE P_NOTES P_EVERYTHING P_GW P_ADMIN < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)

GW_URL="http://127.0.0.1:$P_GW"
AS_JWT_URL="http://127.0.0.1:$P_AS_JWT"
AS_OPAQUE_URL="http://127.0.0.1:$P_AS_OPAQUE"
NOTES_UPSTREAM="http://127.0.0.1:$P_NOTES/mcp"
EVERYTHING_UPSTREAM="http://127.0.0.1:$P_EVERYTHING/mcp"
CLIENT_SECRET="interop-$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
MCPGATE_INTROSPECTION_SECRET="introspect-$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
MCPGATE_SESSION_SECRET="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
INTEROP_TOKENS_FILE="$WORK/tokens.txt"
: >"$INTEROP_TOKENS_FILE"
GW_ADMIN_URL="http://127.0.0.1:$P_ADMIN"
export MCPGATE_BIN GW_URL GW_ADMIN_URL AS_JWT_URL AS_OPAQUE_URL NOTES_UPSTREAM EVERYTHING_UPSTREAM CLIENT_SECRET \
  MCPGATE_INTROSPECTION_SECRET MCPGATE_SESSION_SECRET INTEROP_TOKENS_FILE

start() { # name, command...
  local name="$1"
  shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  log "started $name (pid $!)"
}

wait_http() { # name, url, timeout-seconds, [expected-status]
  local name="$1" url="$2" limit="$3" want="${4:-200}" code
  local until=$((SECONDS + limit))
  while [ "$SECONDS" -lt "$until" ]; do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true)
    if [ "$want" = any ]; then [ "$code" != 000 ] && [ -n "$code" ] && return 0; fi
    [ "$code" = "$want" ] && return 0
    sleep 0.2
  done
  result "FAIL setup/$name: $url did not answer $want within ${limit}s (last: $code); log tail: $(tail -c 600 "$LOGS/$name.log" | tr '\n' ' ')"
  return 1
}

start as-jwt env PORT="$P_AS_JWT" KEY_ALG="$KEY_ALG" RESOURCE_PREFIX="$GW_URL" CLIENT_SECRET="$CLIENT_SECRET" \
  INTROSPECTION_SECRET="$MCPGATE_INTROSPECTION_SECRET" node as/server.mjs
start as-opaque env PORT="$P_AS_OPAQUE" OPAQUE=1 RESOURCE_PREFIX="$GW_URL" CLIENT_SECRET="$CLIENT_SECRET" \
  INTROSPECTION_SECRET="$MCPGATE_INTROSPECTION_SECRET" node as/server.mjs
start notes "$PY" upstream/notes_server.py "$P_NOTES"
start everything env PORT="$P_EVERYTHING" node node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp

ok=1
wait_http as-jwt "$AS_JWT_URL/.well-known/openid-configuration" 30 || ok=0
wait_http as-opaque "$AS_OPAQUE_URL/.well-known/openid-configuration" 30 || ok=0
# any HTTP answer to a bare GET (4xx: no session, wrong Accept) means the upstream is up
wait_http notes "$NOTES_UPSTREAM" 30 any || ok=0
wait_http everything "$EVERYTHING_UPSTREAM" 30 any || ok=0
[ "$ok" = 1 ] || finish

# ---------------------------------------------------------------- gateway config
CONFIG="$WORK/gateway.toml"
cat >"$CONFIG" <<EOF
# generated by tests/interop/run.sh
[server]
listen = "127.0.0.1:$P_GW"
public_url = "$GW_URL"
state_dir = "$WORK/state"

[server.cors]
allowed_origins = ["$GW_URL", "http://localhost:$P_GW"]

[admin]
listen = "127.0.0.1:$P_ADMIN"

[audit]
sink = "file"
file = "$LOGS/audit.jsonl"

[session]
secret_env = "MCPGATE_SESSION_SECRET"

[[issuers]]
id = "as-jwt"
kind = "oidc"
issuer = "$AS_JWT_URL"
algorithms = ["$KEY_ALG"]
leeway = "1s"
refresh_min_interval = "1s"

[[issuers]]
id = "as-opaque"
kind = "oidc"
issuer = "$AS_OPAQUE_URL"
[issuers.introspection]
endpoint = "$AS_OPAQUE_URL/token/introspection"
client_id = "mcpgate-introspect"
client_secret_env = "MCPGATE_INTROSPECTION_SECRET"
cache_ttl = "2s"
inactive_ttl = "1s"
timeout = "2s"

[[routes]]
id = "notes"
path = "/notes/mcp"
upstream = "$NOTES_UPSTREAM"
issuers = ["as-jwt", "as-opaque"]
scopes = ["mcp:tools"]
resource_name = "Interop notes (FastMCP)"
[routes.tools]
"read_note" = ["notes:read"]
"write_note" = ["notes:write"]
"purge_notes" = ["notes:admin"]
"*" = ["mcp:tools"]

[[routes]]
id = "everything"
path = "/everything/mcp"
upstream = "$EVERYTHING_UPSTREAM"
issuers = ["as-jwt"]
scopes = ["mcp:tools"]
[routes.tools]
"*" = ["mcp:tools"]
[routes.prompts]
"*" = ["mcp:tools"]
[routes.resources]
"*" = ["mcp:tools"]

[[routes]]
id = "open"
path = "/open/mcp"
upstream = "$EVERYTHING_UPSTREAM"
issuers = ["as-jwt"]
allow_anonymous = true
[routes.tools]
"*" = []
[routes.prompts]
"*" = []
[routes.resources]
"*" = []
EOF

if ! timeout 30 "$MCPGATE_BIN" check --config "$CONFIG" >"$LOGS/check.log" 2>&1; then
  result "FAIL setup/mcpgate_check: $(tr '\n' ' ' <"$LOGS/check.log" | cut -c1-1200)"
  finish
fi
result "PASS setup/mcpgate_check (config with 2 issuers, 3 routes accepted)"

start mcpgate "$MCPGATE_BIN" --config "$CONFIG" --log-format json
MCPGATE_PID="${PIDS[-1]}"
wait_http mcpgate "http://127.0.0.1:$P_ADMIN/readyz" 30 || finish

# ---------------------------------------------------------------- scenarios
run_part() { # name, timeout, command...
  local name="$1" limit="$2"
  shift 2
  local left=$((SUITE_DEADLINE - SECONDS))
  if [ "$left" -le 10 ]; then
    result "FAIL $name/not_run: suite deadline reached"
    return
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  log "running $name (timeout ${limit}s)"
  local before rc tail_pid
  before=$(grep -c '^FAIL ' "$RESULTS")
  # run in the background and `wait`, so a signal to this script is handled at once (EXIT trap);
  # tail shows the lines live, the counting below reads the complete file afterwards
  : >"$LOGS/$name.out"
  timeout --kill-after=5 "$limit" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.stderr" &
  PART_PID=$!
  tail --pid="$PART_PID" -n +1 -f "$LOGS/$name.out" | grep --line-buffered -E '^(PASS|FAIL|#) ' &
  tail_pid=$!
  wait "$PART_PID"
  rc=$?
  PART_PID=""
  wait "$tail_pid"
  grep -E '^(PASS|FAIL) ' "$LOGS/$name.out" >>"$RESULTS"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    result "FAIL $name/timeout: killed after ${limit}s; stderr: $(tail -c 600 "$LOGS/$name.stderr" | tr '\n' ' ')"
  fi
  if [ "$rc" -eq 0 ] && ! grep -q -E '^(PASS|FAIL) ' "$LOGS/$name.out"; then
    result "FAIL $name/script: reported no result at all"
  fi
  if [ "$rc" -ne 0 ] && [ "$(grep -c '^FAIL ' "$RESULTS")" -eq "$before" ]; then
    result "FAIL $name/script: exited $rc without reporting a failure; stderr: $(tail -c 800 "$LOGS/$name.stderr" | tr '\n' ' ')"
  fi
}

for part in $ONLY; do
  case "$part" in
    components) run_part components 90 "$PY" scenarios/components.py ;;
    py) run_part py 240 "$PY" scenarios/gateway_py.py ;;
    ts) run_part ts 120 node scenarios/gateway_ts.mjs ;;
    tls) run_part tls 120 "$PY" scenarios/gateway_tls.py "$CONFIG" "$LOGS" ;;
    conformance) run_part conformance 300 "$PY" scenarios/conformance_compare.py "$WORK/conformance" ;;
    *) result "FAIL setup/unknown_part: $part" ;;
  esac
done

# log hygiene: no access token handed out during the run, and no configured secret, may appear in
# the gateway's log or audit log (tokens are recorded by the scenarios in $INTEROP_TOKENS_FILE)
sleep 0.5
{ cat "$INTEROP_TOKENS_FILE" 2>/dev/null; echo "$MCPGATE_INTROSPECTION_SECRET"; echo "$MCPGATE_SESSION_SECRET"; } | grep -v '^$' >"$WORK/needles.txt"
leaks=""
for f in "$LOGS/mcpgate.log" "$LOGS/audit.jsonl" "$LOGS/mcpgate-tls.log" "$LOGS/audit-tls.jsonl"; do
  [ -f "$f" ] || continue
  n=$(grep -c -F -f "$WORK/needles.txt" "$f")
  [ "$n" -gt 0 ] && leaks="$leaks $(basename "$f"): $n line(s);"
  n=$(grep -c -E 'eyJ[A-Za-z0-9_-]{10,}\.eyJ' "$f")
  [ "$n" -gt 0 ] && leaks="$leaks $(basename "$f"): $n line(s) with a JWT;"
done
if [ -n "$leaks" ]; then
  result "FAIL mcpgate/no_secrets_in_logs:$leaks (grep the kept logs for the tokens in tokens.txt)"
else
  result "PASS mcpgate/no_secrets_in_logs ($(wc -l <"$WORK/needles.txt") tokens/secrets checked against the gateways' logs and audit logs)"
fi

if ! kill -0 "$MCPGATE_PID" 2>/dev/null; then
  result "FAIL mcpgate/alive: the gateway process exited during the suite; log tail: $(tail -c 800 "$LOGS/mcpgate.log" | tr '\n' ' ')"
fi
finish
