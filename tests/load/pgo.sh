# Profile-guided optimisation (PGO) of the release binary. Sourced by run.sh, not run by itself:
# `tests/load/run.sh pgo` builds the optimised binary, and `PGO=1 tests/load/run.sh MODE` builds it
# and measures it.
#
# Three steps:
#   1. an instrumented release build (`-Cprofile-generate`);
#   2. a training run of that build, with this harness's upstream, routes and token mixes:
#      the traffic the figures are measured with, plus one-connection traffic, refusals, and
#      HTTPS over HTTP/1.1 and HTTP/2;
#   3. a release build that uses the merged profile (`-Cprofile-use`).
# LLVM then inlines and lays out code by measured frequency instead of guessing: on this
# harness, 20 % fewer instructions per proxied request (tests/load/README.md).
#
# Everything goes under $CARGO_TARGET_DIR/pgo (target/pgo by default), apart from the normal
# release build: generate/ (instrumented), raw/ (profiles), mcpgate.profdata, use/ (the result).

pgo_dir() {
    echo "${CARGO_TARGET_DIR:-$ROOT/target}/pgo"
}

# llvm-profdata has to come from the LLVM major version that rustc uses: the raw profile format
# changes between majors. rustup's llvm-tools component has it; otherwise Debian's llvm-N.
find_profdata() {
    local major tool
    major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
    [[ -n "$major" ]] || die "cannot read rustc's LLVM version"
    for tool in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata "llvm-profdata-$major"; do
        if command -v "$tool" >/dev/null; then
            PROFDATA=$tool
            return
        fi
    done
    log "installing llvm-$major (for llvm-profdata)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$major" >/dev/null
    PROFDATA=llvm-profdata-$major
}

# pgo_build: leaves the optimised binary at $(pgo_dir)/use/release/mcpgate. Needs the upstream
# running (start_upstream) and the RS256 key made, as the measurements do.
pgo_build() {
    local dir flags=${RUSTFLAGS:-}
    dir=$(pgo_dir)
    find_profdata
    command -v h2load >/dev/null && command -v openssl >/dev/null || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client openssl >/dev/null
    }
    log "PGO 1/3: instrumented release build"
    (cd "$ROOT" && RUSTFLAGS="$flags -Cprofile-generate=$dir/raw" \
        cargo build --release --locked -q --target-dir "$dir/generate")
    # RUSTFLAGS instrument build scripts too; only the gateway's own runs belong in the profile.
    rm -rf "$dir/raw" && mkdir -p "$dir/raw"
    cp "$dir/generate/release/mcpgate" "$WORK/mcpgate-instrumented"
    log "PGO 2/3: training run"
    BIN=$WORK/mcpgate-instrumented pgo_train
    "$PROFDATA" merge -o "$dir/mcpgate.profdata" "$dir/raw"
    log "PGO 3/3: release build with the profile"
    (cd "$ROOT" && RUSTFLAGS="$flags -Cprofile-use=$dir/mcpgate.profdata" \
        cargo build --release --locked -q --target-dir "$dir/use")
    log "PGO build done: $dir/use/release/mcpgate"
}

# The mix, by time: hot tokens over 64 connections (the main path, JSON and SSE), the ES256 and
# RS256 cold-token mixes, one connection (the connection parks between requests), requests that
# are refused (bad token: 401; a tool that needs another scope: 403), then the same gateway over
# TLS with HTTP/1.1 and HTTP/2. Code the training never runs is laid out as cold, so every path
# that production traffic takes belongs here.
pgo_train() {
    local u denied='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}'
    start_gateway train
    mint_tokens
    u=http://127.0.0.1:$GW_PORT
    "$PYTHON" "$HERE/mint_tokens.py" "$WORK/state/dev-issuer-key.pem" "$TOKEN" 5000 >"$WORK/tokens-pgo-es256"
    mint_rs256 5000 >"$WORK/tokens-pgo-rs256"
    unmeasured_wrk 64 8 "$u/bench/mcp" TOKEN="$TOKEN"
    unmeasured_wrk 64 3 "$u/bench-sse/mcp" TOKEN="$TOKEN_SSE"
    unmeasured_wrk 64 3 "$u/bench/mcp" TOKEN="$TOKEN" TOKENS_FILE="$WORK/tokens-pgo-es256" COLD_EVERY=10
    unmeasured_wrk 64 3 "$u/bench-rs256/mcp" TOKEN="$TOKEN_RS256" TOKENS_FILE="$WORK/tokens-pgo-rs256" COLD_EVERY=10
    unmeasured_wrk 1 2 "$u/bench/mcp" TOKEN="$TOKEN"
    unmeasured_wrk 1 1 "$u/bench/mcp" TOKEN=not-a-token
    unmeasured_wrk 1 1 "$u/bench/mcp" TOKEN="$TOKEN" BODY="$denied"
    # The instrumented binary writes its profile when it exits normally, so SIGTERM, not KILL.
    stop "$GW_PID"
    pgo_train_tls
    compgen -G "$(pgo_dir)/raw/*.profraw" >/dev/null || die "the training run wrote no profile"
}

pgo_train_tls() {
    local u
    make_cert
    GW_TLS="$WORK/tls-cert.pem $WORK/tls-key.pem" start_gateway train-tls
    u=https://127.0.0.1:$GW_PORT/bench/mcp
    unmeasured_wrk 64 3 "$u" TOKEN="$TOKEN"
    printf '%s' "$BODY" >"$WORK/body.json"
    "${ON_LOADGEN[@]}" h2load -D 3 -c 16 -m 4 -d "$WORK/body.json" \
        -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -H 'accept: application/json, text/event-stream' "$u" >/dev/null
    stop "$GW_PID"
}
