#!/usr/bin/env bash
# Load and cost comparison: direct upstream vs nginx reverse proxy vs mcpgate (issue #7).
#
# usage: tests/load/run.sh [all|throughput|memory|instructions|benches|interleaved|pgo]
#   all (default)  throughput + cold-token mixes + peak RSS, 10k idle connections, instructions/request
#   throughput     wrk rounds only (64 connections, 1 connection, SSE, cold-token mixes, HTTPS) + peak RSS
#
# The cold-token mixes run twice: ES256 tokens from the embedded dev issuer, and RS256 tokens from a
# stand-in identity provider (an RSA key made per run, its JWKS served by the upstream nginx).
#   memory         10,000 idle keep-alive connections: mcpgate and nginx RSS, plain HTTP, then HTTPS
#                  with HTTP/1.1 and with HTTP/2 (IDLE_TLS=0: plain only)
#   instructions   callgrind: instructions per request, nginx proxy vs mcpgate, + hot spots
#   benches        the criterion benches (auth, classify_policy), short settings
#   interleaved    64 connections only, nginx and mcpgate alternating for IL_ROUNDS rounds: the
#                  median of per-round ratios, robust to the host's drifts
#   pgo            build the profile-guided binary only (tests/load/pgo.sh), into target/pgo
#
# PGO=1 measures the profile-guided build instead of plain `cargo build --release` (any mode);
# MCPGATE_BIN=path measures that binary and builds nothing.
#
# Knobs (environment): DURATION=10 LAT_DURATION=5 SSE_DURATION=5 ROUNDS=3 CONNS=64 WARMUP=2
#   CG_WARMUP=500 CG_COUNT=2000 IDLE_CONNS=10000 IDLE_HOLD=15 LOADGEN_CPU=0 SERVER_CPU=1
#   IL_ROUNDS=8 IL_DURATION=8 COMPARE_BIN=path (interleaved: a second build in the same rounds)
#   PIN=0 runs every process unpinned (the PGO build in the Dockerfile, whose builder may have one
#   CPU or a restricted cpuset: a training run counts code paths, not time).
#   KEEP_WORK=1 keeps the temporary directory (configs, logs, callgrind dumps).
#
# Every server runs pinned to SERVER_CPU, every load generator to LOADGEN_CPU (unless PIN=0). Every
# process this script starts is recorded and killed by PID on exit; every load loop has a fixed
# duration or count.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODE=${1:-all}

DURATION=${DURATION:-10}          # seconds per 64-connection and cold-token round
LAT_DURATION=${LAT_DURATION:-5}   # seconds per 1-connection (latency) round
SSE_DURATION=${SSE_DURATION:-5}   # seconds per SSE round
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}               # seconds of unmeasured load per target before the rounds
CONNS=${CONNS:-64}
COLD_EVERY=${COLD_EVERY:-10}      # 1 request in COLD_EVERY carries a never-seen token
COLD_RPS_MAX=${COLD_RPS_MAX:-30000}  # fresh tokens are minted for at most this rate (wrk warns if short)
CG_WARMUP=${CG_WARMUP:-500}
CG_COUNT=${CG_COUNT:-2000}
CG_CONNS=${CG_CONNS:-"1 16"}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-15}
IL_ROUNDS=${IL_ROUNDS:-8}         # interleaved mode: rounds of nginx, then mcpgate
IL_DURATION=${IL_DURATION:-8}     # interleaved mode: seconds per round and target
LOADGEN_CPU=${LOADGEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
if [[ "${PIN:-1}" == 0 ]]; then
    ON_SERVER=() ON_LOADGEN=()
else
    ON_SERVER=(taskset -c "$SERVER_CPU") ON_LOADGEN=(taskset -c "$LOADGEN_CPU")
fi
PYTHON=${PYTHON:-python3}

WORK=$(mktemp -d /tmp/mcpgate-load.XXXXXX)
RESULTS=$WORK/results.tsv
PIDS=()

log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # The audit log and token files are large and worthless after the run.
    rm -f "$WORK"/*.jsonl "$WORK"/tokens-* "$WORK"/access.log
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Starts a background process, records its PID (taskset and valgrind keep the PID they were given).
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=("$!")
    LAST_PID=$!
}

stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

wait_port() {
    local port=$1 i
    for i in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$port after 30 s"
}

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- tools -------------------------------------------------------------------------------------

install_tools() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v wrk >/dev/null || missing+=(wrk)
    # Callgrind only for the instruction counts: the Dockerfile's PGO build installs no valgrind.
    if [[ "$MODE" == all || "$MODE" == instructions ]]; then
        command -v valgrind >/dev/null || missing+=(valgrind)
    fi
    ((${#ON_SERVER[@]} == 0)) || command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! "$PYTHON" -c 'import cryptography' 2>/dev/null; then
        log "installing the Python cryptography package (token minting)"
        "$PYTHON" -m pip install -q cryptography
    fi
    if [[ "$MODE" == all || "$MODE" == memory ]] && ! "$PYTHON" -c 'import h2' 2>/dev/null; then
        log "installing the Python h2 package (idle HTTP/2 connections)"
        "$PYTHON" -m pip install -q h2
    fi
}

build() {
    local bin
    if [[ -n "${MCPGATE_BIN:-}" && "$MODE" != pgo ]]; then
        bin=$MCPGATE_BIN
    elif [[ "${PGO:-0}" == 1 || "$MODE" == pgo ]]; then
        pgo_build
        bin=$(pgo_dir)/use/release/mcpgate
    else
        log "cargo build --release --locked"
        (cd "$ROOT" && cargo build --release --locked -q)
        bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/mcpgate
    fi
    # A private copy: another build may replace the binary while we measure.
    cp "$bin" "$WORK/mcpgate"
    BIN=$WORK/mcpgate
}

# shellcheck source=tests/load/pgo.sh
source "$HERE/pgo.sh"

# --- servers -----------------------------------------------------------------------------------

BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_events","arguments":{"calendar":"work","limit":10}}}'

# The fast upstream: a fixed JSON-RPC result for POST /mcp, and two SSE events for POST /sse.
write_upstream_conf() {
    local port=$1 dir=$WORK/nginx-up
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
user root;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {
        listen 127.0.0.1:$port;
        location = /mcp {
            default_type application/json;
            return 200 '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}';
        }
        # The JWKS of the stand-in RS256 identity provider (mint_tokens.py --rsa-key).
        location = /rs256/jwks.json {
            default_type application/json;
            alias $WORK/rs256-jwks.json;
        }
        location = /sse {
            default_type text/event-stream;
            return 200 'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p-1","progress":1}}\n\nevent: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}\n\n';
        }
    }
}
EOF
}

# nginx as a plain reverse proxy: keep-alive upstream pool, HTTP/1.1, unbuffered SSE. It writes
# one buffered access-log line per request, as mcpgate writes one audit line per request.
# PX_TLS="CERT KEY": listen with TLS, HTTP/2 and HTTP/1.1 by ALPN (the idle-connection runs).
write_proxy_conf() {
    local port=$1 upstream=$2 dir=$3 master=$4 listen=$1 cert key
    if [[ -n "${PX_TLS:-}" ]]; then
        read -r cert key <<<"$PX_TLS"
        listen="$port ssl http2; ssl_certificate $cert; ssl_certificate_key $key"
    fi
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
master_process $master;
user root;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 30000; }
http {
    access_log $WORK/access.log combined buffer=64k flush=1s;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    upstream mcp {
        server 127.0.0.1:$upstream;
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }
    server {
        listen 127.0.0.1:$listen;
        location / {
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /sse {
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
}

# bench_route ID PATH UPSTREAM ISSUER: a JWT route with the benchmark's tool policy (exact names, globs,
# catch-all).
bench_route() {
    cat <<EOF

[[routes]]
id = "$1"
path = "$2"
upstream = "$3"
issuers = ["$4"]
scopes = ["mcp:tools"]

[routes.tools]
"echo" = []
"get_events" = ["mcp:tools"]
"get_*" = ["mcp:tools"]
"delete_*" = ["bench:admin"]
"list_*" = ["mcp:tools"]
"*" = ["mcp:tools"]
EOF
}

# mcpgate: the dev issuer and a stand-in RS256 identity provider, one route trusting each (the
# RS256 one for the cold-token rounds per algorithm), and an SSE route.
write_gateway_conf() {
    local file=$1 port=$2 admin=$3 upstream=$4 name=$5 header_timeout=${6:-10s} cert key
    {
        cat <<EOF
[server]
listen = "127.0.0.1:$port"
header_read_timeout = "$header_timeout"
# One public_url for every instance: the token's iss and aud derive from it, so one token
# works on the throughput, idle and callgrind instances, whatever port each listens on.
public_url = "http://127.0.0.1:8443"
state_dir = "state"
max_connections = 20000
idle_timeout = "600s"

[admin]
listen = "127.0.0.1:$admin"

[audit]
sink = "file"
file = "audit-$name.jsonl"

[[issuers]]
id = "dev"
kind = "dev"

[[issuers]]
id = "rs256"
issuer = "http://127.0.0.1:$upstream/rs256"
jwks_uri = "http://127.0.0.1:$upstream/rs256/jwks.json"
algorithms = ["RS256"]
EOF
        bench_route bench /bench/mcp "http://127.0.0.1:$upstream/mcp" dev
        bench_route bench-rs256 /bench-rs256/mcp "http://127.0.0.1:$upstream/mcp" rs256
        cat <<EOF

[[routes]]
id = "bench-sse"
path = "/bench-sse/mcp"
upstream = "http://127.0.0.1:$upstream/sse"
issuers = ["dev"]
scopes = ["mcp:tools"]

[routes.tools]
"get_events" = ["mcp:tools"]
"delete_*" = ["bench:admin"]
"*" = ["mcp:tools"]
EOF
        # GW_TLS="CERT KEY": serve HTTPS (the PGO training run).
        if [[ -n "${GW_TLS:-}" ]]; then
            read -r cert key <<<"$GW_TLS"
            printf '\n[server.tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$cert" "$key"
        fi
    } >"$file"
}

start_upstream() {
    UP_PORT=$(free_port)
    write_upstream_conf "$UP_PORT"
    start nginx-up "${ON_SERVER[@]}" nginx -p "$WORK/nginx-up" -c "$WORK/nginx-up/nginx.conf" -g 'daemon off;'
    UP_PID=$LAST_PID
    wait_port "$UP_PORT"
}

start_proxy() {
    PX_PORT=$(free_port)
    write_proxy_conf "$PX_PORT" "$UP_PORT" "$WORK/nginx-px" on
    start nginx-px "${ON_SERVER[@]}" nginx -p "$WORK/nginx-px" -c "$WORK/nginx-px/nginx.conf" -g 'daemon off;'
    PX_PID=$LAST_PID
    wait_port "$PX_PORT"
}

# start_gateway NAME [wrapper...]: a fresh mcpgate with its own ports; sets GW_PORT, GW_ADMIN, GW_PID,
# GW_CONF.
# HEADER_TIMEOUT overrides server.header_read_timeout (default 10s).
start_gateway() {
    local name=$1
    shift
    GW_PORT=$(free_port)
    GW_ADMIN=$(free_port)
    GW_CONF=$WORK/gateway-$name.toml
    write_gateway_conf "$GW_CONF" "$GW_PORT" "$GW_ADMIN" "$UP_PORT" "$name" "${HEADER_TIMEOUT:-10s}"
    start "gateway-$name" "${ON_SERVER[@]}" "$@" "$BIN" --config "$GW_CONF" --log-filter warn
    GW_PID=$LAST_PID
    wait_port "$GW_PORT"
}

mint_tokens() {
    log "minting tokens"
    "$BIN" token --config "$GW_CONF" --route bench --scope mcp:tools --ttl 60m >"$WORK/token"
    "$BIN" token --config "$GW_CONF" --route bench-sse --scope mcp:tools --ttl 60m >"$WORK/token-sse"
    TOKEN=$(cat "$WORK/token")
    TOKEN_SSE=$(cat "$WORK/token-sse")
    TOKEN_RS256=$(mint_rs256 1)
}

# The public URL every instance's config shares (see write_gateway_conf); audiences derive from it.
RS256_AUDIENCE=http://127.0.0.1:8443/bench-rs256/mcp

# mint_rs256 COUNT: RS256 tokens for the bench-rs256 route, the dev token's claims otherwise.
mint_rs256() {
    "$PYTHON" "$HERE/mint_tokens.py" --rs256 "$WORK/rs256-key.pem" "$TOKEN" "$1" \
        "http://127.0.0.1:$UP_PORT/rs256" "$RS256_AUDIENCE"
}

# A request through each target must succeed before any number is taken. (-k: the HTTPS targets
# use the run's own self-signed certificate.)
check_target() {
    local url=$1 token=$2 expect=$3 out
    out=$(curl -k -sS -m 5 -X POST "$url" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
        -d "$BODY" -w '\n%{http_code}')
    [[ "${out##*$'\n'}" == 200 ]] || die "$url answered: $out"
    [[ "$out" == *"$expect"* ]] || die "$url answered without $expect: $out"
}

# --- throughput --------------------------------------------------------------------------------

# Jiffies of all CPUs since boot: the total and the part stolen by the hypervisor (/proc/stat).
cpu_jiffies() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9 }' /proc/stat
}

# CPU time (user + system) that process $1 has used, in clock ticks (/proc/PID/stat).
proc_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# run_wrk PHASE TARGET ROUND URL CONNS SECONDS [ENV=VALUE...]: one wrk run, one line in results.tsv.
# Also records the share of CPU time the hypervisor stole during the run: on a shared VM, rounds
# with steal are slower for reasons that have nothing to do with the target. With CPU_OF=PID, also
# the CPU time that process used per request (µs): unlike req/s, it does not depend on how the
# server core is shared with the upstream.
run_wrk() {
    local phase=$1 target=$2 round=$3 url=$4 conns=$5 secs=$6
    shift 6
    local line total0 stolen0 total1 stolen1 steal ticks0="" cpu=-
    read -r total0 stolen0 < <(cpu_jiffies)
    [[ -z "${CPU_OF:-}" ]] || ticks0=$(proc_ticks "$CPU_OF")
    line=$(env TOKEN="$TOKEN" "$@" "${ON_LOADGEN[@]}" \
        wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s -s "$HERE/wrk.lua" "$url" | grep '^RESULT ') ||
        die "wrk against $url produced no result"
    read -r total1 stolen1 < <(cpu_jiffies)
    steal=$(awk -v t=$((total1 - total0)) -v s=$((stolen1 - stolen0)) 'BEGIN { printf "%.1f", t ? 100 * s / t : 0 }')
    read -r _ reqs dur p50 p99 mean non2xx errs fresh wraps <<<"$line"
    if [[ -n "$ticks0" ]]; then
        cpu=$(awk -v t=$(($(proc_ticks "$CPU_OF") - ticks0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" \
            'BEGIN { printf "%.2f", n ? t * 1e6 / hz / n : 0 }')
    fi
    ((non2xx == 0)) || die "$target: $non2xx non-2xx responses"
    ((errs == 0)) || log "WARN $target: $errs socket errors"
    ((wraps == 0)) || log "WARN $target: fresh tokens ran out and were reused ($wraps wraps)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$target" "$round" "$reqs" "$dur" "$p50" "$p99" "$fresh" "$steal" "$cpu" >>"$RESULTS"
    log "$phase $target round $round: $reqs requests in ${secs}s, p50 ${p50}us p99 ${p99}us${fresh:+, fresh tokens $fresh}, steal ${steal}%${ticks0:+, CPU ${cpu}us/request}"
}

# unmeasured_wrk CONNS SECONDS URL [VAR=value ...]: load whose figures are not kept (warm-up,
# PGO training); refusals are expected in the training.
unmeasured_wrk() {
    local conns=$1 secs=$2 url=$3
    shift 3
    env "$@" "${ON_LOADGEN[@]}" \
        wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s -s "$HERE/wrk.lua" "$url" >/dev/null
}

status_kib() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

throughput() {
    local r
    declare -A url=(
        [direct]="http://127.0.0.1:$UP_PORT/mcp"
        [nginx]="http://127.0.0.1:$PX_PORT/mcp"
        [mcpgate]="http://127.0.0.1:$GW_PORT/bench/mcp"
        [direct-sse]="http://127.0.0.1:$UP_PORT/sse"
        [nginx-sse]="http://127.0.0.1:$PX_PORT/sse"
        [mcpgate-sse]="http://127.0.0.1:$GW_PORT/bench-sse/mcp"
    )
    for t in direct nginx mcpgate; do check_target "${url[$t]}" "$TOKEN" '"text":"ok"'; done
    for t in direct-sse nginx-sse; do check_target "${url[$t]}" "$TOKEN_SSE" 'data: '; done
    check_target "${url[mcpgate-sse]}" "$TOKEN_SSE" 'data: '

    log "warm-up ($WARMUP s per target)"
    for t in direct nginx mcpgate; do
        unmeasured_wrk "$CONNS" "$WARMUP" "${url[$t]}" TOKEN="$TOKEN"
    done

    for r in $(seq 1 "$ROUNDS"); do
        for t in direct nginx mcpgate; do run_wrk c$CONNS "$t" "$r" "${url[$t]}" "$CONNS" "$DURATION"; done
    done
    printf 'rss\tpeak_after_c%s\t%s\t%s\n' "$CONNS" "$(status_kib "$GW_PID" VmHWM)" "$(status_kib "$GW_PID" VmRSS)" >>"$RESULTS"

    for r in $(seq 1 "$ROUNDS"); do
        for t in direct nginx mcpgate; do run_wrk c1 "$t" "$r" "${url[$t]}" 1 "$LAT_DURATION"; done
    done

    local saved=$TOKEN
    TOKEN=$TOKEN_SSE
    for r in $(seq 1 "$ROUNDS"); do
        for t in direct-sse nginx-sse mcpgate-sse; do run_wrk sse-c$CONNS "$t" "$r" "${url[$t]}" "$CONNS" "$SSE_DURATION"; done
    done
    TOKEN=$saved

    # Cold-token mix: enough never-seen tokens for the fastest plausible rate, split per round so
    # no round reuses another's (a reused token would be a cache hit).
    local per_round=$((COLD_RPS_MAX * DURATION / COLD_EVERY))
    log "minting $((per_round * ROUNDS)) fresh tokens for the cold-cache rounds"
    "$PYTHON" "$HERE/mint_tokens.py" "$WORK/state/dev-issuer-key.pem" "$TOKEN" $((per_round * ROUNDS)) >"$WORK/tokens-all"
    split -l "$per_round" -d "$WORK/tokens-all" "$WORK/tokens-round-"
    check_target "${url[mcpgate]}" "$(sed -n '$p' "$WORK/tokens-all")" '"text":"ok"'
    # The cold-token rounds also record mcpgate's CPU time per request: the cost of a fresh token.
    CPU_OF=$GW_PID
    for r in $(seq 1 "$ROUNDS"); do
        run_wrk c$CONNS mcpgate-hot "$r" "${url[mcpgate]}" "$CONNS" "$DURATION"
        run_wrk c$CONNS mcpgate-cold10 "$r" "${url[mcpgate]}" "$CONNS" "$DURATION" \
            TOKENS_FILE="$WORK/tokens-round-$(printf '%02d' $((r - 1)))" COLD_EVERY="$COLD_EVERY"
    done

    # The same mix with RS256 tokens: an RSA-2048 verification costs a fraction of a P-256 one.
    local rs_url="http://127.0.0.1:$GW_PORT/bench-rs256/mcp"
    log "minting $((per_round * ROUNDS)) fresh RS256 tokens"
    mint_rs256 $((per_round * ROUNDS)) >"$WORK/tokens-rs256-all"
    split -l "$per_round" -d "$WORK/tokens-rs256-all" "$WORK/tokens-rs256-round-"
    check_target "$rs_url" "$(sed -n '$p' "$WORK/tokens-rs256-all")" '"text":"ok"'
    saved=$TOKEN
    TOKEN=$TOKEN_RS256
    for r in $(seq 1 "$ROUNDS"); do
        run_wrk c$CONNS mcpgate-rs256-hot "$r" "$rs_url" "$CONNS" "$DURATION"
        run_wrk c$CONNS mcpgate-rs256-cold10 "$r" "$rs_url" "$CONNS" "$DURATION" \
            TOKENS_FILE="$WORK/tokens-rs256-round-$(printf '%02d' $((r - 1)))" COLD_EVERY="$COLD_EVERY"
    done
    TOKEN=$saved
    CPU_OF=
    printf 'rss\tpeak_after_cold\t%s\t%s\n' "$(status_kib "$GW_PID" VmHWM)" "$(status_kib "$GW_PID" VmRSS)" >>"$RESULTS"
}

# HTTPS with HTTP/1.1 at CONNS connections, nginx and mcpgate alternating: each proxy terminates TLS
# itself (the same P-256 certificate) in front of the plain upstream.
https_throughput() {
    local pair="$WORK/tls-cert.pem $WORK/tls-key.pem" r gw_url px_url
    make_cert
    GW_TLS=$pair start_gateway https
    PX_TLS=$pair start_proxy
    gw_url="https://127.0.0.1:$GW_PORT/bench/mcp"
    px_url="https://127.0.0.1:$PX_PORT/mcp"
    check_target "$gw_url" "$TOKEN" '"text":"ok"'
    check_target "$px_url" "$TOKEN" '"text":"ok"'
    unmeasured_wrk "$CONNS" "$WARMUP" "$px_url" TOKEN="$TOKEN"
    unmeasured_wrk "$CONNS" "$WARMUP" "$gw_url" TOKEN="$TOKEN"
    for r in $(seq 1 "$ROUNDS"); do
        run_wrk "https-c$CONNS" nginx-https "$r" "$px_url" "$CONNS" "$DURATION"
        CPU_OF=$GW_PID run_wrk "https-c$CONNS" mcpgate-https "$r" "$gw_url" "$CONNS" "$DURATION"
    done
    stop "$PX_PID"
    stop "$GW_PID"
}

# On this shared VM a target's speed drifts by tens of per cent within minutes, so two 3-round
# medians taken minutes apart can land far from each other. Rounds of nginx and mcpgate back to back,
# compared pairwise, cancel most of that drift; report.py prints the median of the pairs' ratios.
interleaved() {
    local r url nginx_url="http://127.0.0.1:$PX_PORT/mcp" gw_url="http://127.0.0.1:$GW_PORT/bench/mcp"
    local cmp_url="" cmp_pid saved=("$GW_PORT" "$GW_ADMIN" "$GW_CONF" "$GW_PID")
    # COMPARE_BIN=path: a second gateway from that binary in the same rounds (an A/B of two builds).
    if [[ -n "${COMPARE_BIN:-}" ]]; then
        cp "$COMPARE_BIN" "$WORK/mcpgate-compare"
        BIN=$WORK/mcpgate-compare start_gateway compare
        cmp_url="http://127.0.0.1:$GW_PORT/bench/mcp"
        cmp_pid=$GW_PID
        GW_PORT=${saved[0]} GW_ADMIN=${saved[1]} GW_CONF=${saved[2]} GW_PID=${saved[3]}
    fi
    for url in "$gw_url" $cmp_url; do check_target "$url" "$TOKEN" '"text":"ok"'; done
    check_target "$nginx_url" "$TOKEN" '"text":"ok"'
    log "warm-up ($WARMUP s per target)"
    for url in "$nginx_url" "$gw_url" $cmp_url; do
        unmeasured_wrk "$CONNS" "$WARMUP" "$url" TOKEN="$TOKEN"
    done
    for r in $(seq 1 "$IL_ROUNDS"); do
        il_run nginx "$r" "$nginx_url"
        if [[ -z "$cmp_url" ]]; then
            il_run mcpgate "$r" "$gw_url"
        elif ((r % 2)); then
            il_run mcpgate "$r" "$gw_url"
            il_run mcpgate-compare "$r" "$cmp_url"
        else
            il_run mcpgate-compare "$r" "$cmp_url"
            il_run mcpgate "$r" "$gw_url"
        fi
    done
    if [[ -n "$cmp_url" ]]; then
        stop "$cmp_pid"
    fi
}

# il_run TARGET ROUND URL: one measured round of the interleaved mode.
il_run() {
    run_wrk "interleaved-c$CONNS" "$1" "$2" "$3" "$CONNS" "$IL_DURATION"
}

# --- memory with idle connections ------------------------------------------------------------

idle_memory() {
    # A long header timeout: opening 10,000 connections (500 at a time) must not close one that
    # is still waiting for its first request. Once answered, a connection parks, and only
    # idle_timeout applies to it.
    HEADER_TIMEOUT=600s start_gateway idle
    idle_run mcpgate "$GW_PORT" /bench/mcp "$GW_PID" "http://127.0.0.1:$GW_ADMIN/metrics"
    stop "$GW_PID"
    # The same against the nginx proxy's worker process, for comparison.
    start_proxy
    idle_run nginx "$PX_PORT" /mcp "$(pgrep -P "$PX_PID" | head -1)"
    stop "$PX_PID"
    # With TLS terminated by the proxy itself, over HTTP/1.1 and HTTP/2 (IDLE_TLS=0 skips).
    if [[ "${IDLE_TLS:-1}" == 1 ]]; then
        make_cert
        local pair="$WORK/tls-cert.pem $WORK/tls-key.pem" mode
        for mode in h1 h2; do
            GW_TLS=$pair HEADER_TIMEOUT=600s start_gateway "idle-tls-$mode"
            idle_run "mcpgate-tls-$mode" "$GW_PORT" /bench/mcp "$GW_PID" \
                "http://127.0.0.1:$GW_ADMIN/metrics" "--tls=$mode"
            stop "$GW_PID"
            PX_TLS=$pair start_proxy
            idle_run "nginx-tls-$mode" "$PX_PORT" /mcp "$(pgrep -P "$PX_PID" | head -1)" "" "--tls=$mode"
            stop "$PX_PID"
        done
    fi
}

# idle_run NAME PORT PATH SERVER_PID [METRICS_URL] [--tls=h1|h2]: one idle_conns.py run, one line
# in results.tsv.
idle_run() {
    local name=$1 port=$2 path=$3 pid=$4 metrics=${5:-} tls=${6:-} line
    line=$(ulimit -n 20000 && cd "$HERE" && "${ON_LOADGEN[@]}" "$PYTHON" idle_conns.py ${tls:+"$tls"} \
        127.0.0.1 "$port" "$path" "$WORK/token" "$pid" "$IDLE_CONNS" "$IDLE_HOLD" ${metrics:+"$metrics"} |
        grep '^IDLE ') || die "idle connection client failed against $name (see above)"
    log "$name: $line"
    printf 'idle\t%s\t%s\n' "$name" "${line#IDLE }" >>"$RESULTS"
}

# A self-signed P-256 certificate for 127.0.0.1: $WORK/tls-cert.pem and $WORK/tls-key.pem.
make_cert() {
    [[ -f "$WORK/tls-cert.pem" ]] && return
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/tls-key.pem" -out "$WORK/tls-cert.pem" 2>/dev/null
}

# --- instructions per request ------------------------------------------------------------------

# cg_run NAME PID PORT PATH CONNS: zero, COUNT requests, dump; records instructions/request.
cg_run() {
    local name=$1 pid=$2 port=$3 path=$4 conns=$5 dump total
    (cd "$HERE" && "${ON_LOADGEN[@]}" "$PYTHON" cg_client.py 127.0.0.1 "$port" "$path" \
        "$WORK/token" "$pid" "$CG_WARMUP" "$CG_COUNT" "$conns" >/dev/null)
    # The dump file is the newest numbered one.
    dump=$(ls -t "$WORK/cg/$name".*.* | head -1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    [[ -n "$total" ]] || die "no totals in $dump"
    cp "$dump" "$WORK/cg/$name-c$conns.out"
    printf 'instr\t%s\t%s\t%s\t%s\n' "$name" "$conns" "$CG_COUNT" "$total" >>"$RESULTS"
    log "$name c=$conns: $total instructions for $CG_COUNT requests = $((total / CG_COUNT))/request"
}

instructions() {
    mkdir -p "$WORK/cg"
    local cg=(valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$WORK/cg/%q{CGNAME}.%p")
    local c port

    port=$(free_port)
    write_proxy_conf "$port" "$UP_PORT" "$WORK/nginx-cg" off
    start nginx-cg env CGNAME=nginx "${ON_SERVER[@]}" "${cg[@]}" \
        nginx -p "$WORK/nginx-cg" -c "$WORK/nginx-cg/nginx.conf" -g 'daemon off;'
    local ngx=$LAST_PID
    wait_port "$port"
    for c in $CG_CONNS; do cg_run nginx "$ngx" "$port" /mcp "$c"; done
    stop "$ngx"

    start_gateway cg env CGNAME=mcpgate "${cg[@]}"
    for c in $CG_CONNS; do cg_run mcpgate "$GW_PID" "$GW_PORT" /bench/mcp "$c"; done
    stop "$GW_PID"

    # --threshold=100: list every function (the default cuts the list at a cumulative share).
    local out=$HERE/profiles
    mkdir -p "$out"
    annotate() { # annotate FILE LINES [options...]: the first LINES lines of callgrind_annotate
        local file=$1 lines=$2
        shift 2
        callgrind_annotate --threshold=100 "$@" "$file" >"$WORK/annotate.tmp" 2>/dev/null
        sed -n "1,${lines}p" "$WORK/annotate.tmp"
    }
    for c in $CG_CONNS; do
        annotate "$WORK/cg/mcpgate-c$c.out" 150 >"$out/mcpgate-c$c-self.txt"
        annotate "$WORK/cg/mcpgate-c$c.out" 150 --inclusive=yes >"$out/mcpgate-c$c-inclusive.txt"
        annotate "$WORK/cg/mcpgate-c$c.out" 100000 --tree=caller >"$out/mcpgate-c$c-callers.txt"
        annotate "$WORK/cg/nginx-c$c.out" 100 >"$out/nginx-c$c-self.txt"
    done
    log "callgrind profiles written to tests/load/profiles/ (self, inclusive, callers)"
}

# --- syscalls per request ----------------------------------------------------------------------

# count_syscalls NAME PID PORT PATH: strace -c over CG_COUNT requests on 16 warm connections.
count_syscalls() {
    local name=$1 pid=$2 port=$3 path=$4 spid calls
    (cd "$HERE" && "$PYTHON" cg_client.py 127.0.0.1 "$port" "$path" "$WORK/token" 0 0 "$CG_WARMUP" 16 >/dev/null)
    strace -f -c -o "$WORK/strace-$name.txt" -p "$pid" 2>/dev/null &
    spid=$!
    PIDS+=("$spid")
    sleep 1
    (cd "$HERE" && "${ON_LOADGEN[@]}" "$PYTHON" cg_client.py 127.0.0.1 "$port" "$path" \
        "$WORK/token" 0 0 "$CG_COUNT" 16 >/dev/null)
    kill -INT "$spid"
    wait "$spid" 2>/dev/null || true
    calls=$(awk '$NF == "total" { print $4 }' "$WORK/strace-$name.txt")
    [[ -n "$calls" ]] || die "no strace summary for $name"
    mkdir -p "$HERE/profiles"
    cp "$WORK/strace-$name.txt" "$HERE/profiles/syscalls-$name.txt"
    printf 'sys\t%s\t%s\t%s\n' "$name" "$CG_COUNT" "$calls" >>"$RESULTS"
    log "$name: $calls syscalls for $CG_COUNT requests"
}

syscalls() {
    command -v strace >/dev/null || { apt-get install -y -qq strace >/dev/null; }
    start_proxy
    count_syscalls nginx "$(pgrep -P "$PX_PID" | head -1)" "$PX_PORT" /mcp
    stop "$PX_PID"
    start_gateway sys
    count_syscalls mcpgate "$GW_PID" "$GW_PORT" /bench/mcp
    stop "$GW_PID"
}

# --- criterion benches -------------------------------------------------------------------------

benches() {
    local b
    for b in auth classify_policy; do
        log "cargo bench --bench $b"
        (cd "$ROOT" && cargo bench --locked -q --bench "$b" -- --warm-up-time 1 --measurement-time 3 2>/dev/null) |
            tee -a "$WORK/benches.txt" | grep -v '^$' || true
    done
}

# --- main --------------------------------------------------------------------------------------

main() {
    case "$MODE" in
    all | throughput | memory | instructions | benches | interleaved | pgo) ;;
    *) die "unknown mode $MODE (all|throughput|memory|instructions|benches|interleaved|pgo)" ;;
    esac
    if [[ "$MODE" == benches ]]; then
        benches
        return
    fi
    install_tools
    # 10,000 idle connections need the file descriptors; no other mode comes near the default.
    if [[ "$MODE" == all || "$MODE" == memory ]]; then
        ulimit -n 20000
    fi
    "$PYTHON" "$HERE/mint_tokens.py" --rsa-key "$WORK/rs256-key.pem" "$WORK/rs256-jwks.json"
    # Before the build: a PGO build trains against this upstream.
    start_upstream
    build
    if [[ "$MODE" == pgo ]]; then
        return
    fi
    start_gateway main
    mint_tokens
    if [[ "$MODE" == interleaved ]]; then
        start_proxy
        interleaved
        stop "$PX_PID"
    fi
    if [[ "$MODE" == all || "$MODE" == throughput ]]; then
        start_proxy
        throughput
        stop "$PX_PID"
    fi
    stop "$GW_PID"
    if [[ "$MODE" == all || "$MODE" == throughput ]]; then
        https_throughput
    fi
    if [[ "$MODE" == all || "$MODE" == memory ]]; then
        idle_memory
    fi
    if [[ "$MODE" == all || "$MODE" == instructions ]]; then
        instructions
        syscalls
    fi
    "$PYTHON" "$HERE/report.py" "$RESULTS" | tee "$WORK/report.md"
    cp "$WORK/report.md" "$HERE/last-report.md"
}

main
