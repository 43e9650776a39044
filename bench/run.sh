#!/usr/bin/env bash
# `make bench`: otpgate against what users would pick instead, side by side on loopback,
# in one run, and bench/RESULTS.md from it.
#
#   upstream          nginx answering `ok` itself (the trivial app every proxy forwards to)
#   nginx             nginx as a plain reverse proxy: the floor, no auth at all
#   pingora           a plain pingora proxy (examples/bench_pingora.rs): the engine
#                     otpgate's proxy form runs on, with no gate, so the report tells
#                     otpgate's own cost from the engine's
#   haproxy HS256/ES256   HAProxy checking the JWT itself (jwt_verify: alg, signature, exp)
#   otpgate HS256/ES256/EdDSA   the otpgate proxy, every path protected, a valid token
#   axum, axum+OtpLayer   a bare axum app, and the same app behind the tower layer
#
# Every server gets one worker thread; wrk drives each for BENCH_DURATION with
# BENCH_CONNECTIONS connections. A second pass gives pingora and otpgate EdDSA two worker
# threads each, free to run on every core (wrk and the upstream share them). Then
# `cargo bench --bench http` measures sign-ins over HTTP, Redis commands and round trips
# per sign-in, memory per pending code and cold start, and its lines join the report, and
# so does bench/instructions.sh: instructions per request under callgrind.
#
# Then pingora and the EdDSA gate run back to back BENCH_PAIRS times at each thread count,
# and the median of the pairs' ratios is reported.
#
# BENCH_DURATION (default 10s), BENCH_CONNECTIONS (default 50), BENCH_PAIRS (default 3),
# BENCH_QUICK=1 (a short smoke run: 2s per target, fewer codes).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-50}
if [ "${BENCH_QUICK:-0}" = 1 ]; then DURATION=2s; fi
. bench/lib.sh
# Peers and tools from Debian's packages.
require nginx:nginx haproxy:haproxy wrk:wrk openssl:openssl curl:curl

cargo build --release --quiet --bin otpgate --example bench_app --example bench_pingora
OTPGATE=$TARGET/release/otpgate
BENCH_APP=$TARGET/release/examples/bench_app
BENCH_PINGORA=$TARGET/release/examples/bench_pingora

# Starts a target in the background and remembers its process under the target's name.
declare -A SERVER_PID
serve() { local name=$1; shift; "$@" & pids+=($!); SERVER_PID[$name]=$!; }
# CPU time (utime + stime, in clock ticks) of a process and all its descendants: nginx
# and HAProxy serve from worker processes, the gate and axum from threads of one process.
tree_pids() { echo "$1"; local child; for child in $(pgrep -P "$1"); do tree_pids "$child"; done; }
cpu_ticks() {
  local total=0 pid
  for pid in $(tree_pids "$1"); do
    # Fields after "pid (comm) ": utime and stime are the 12th and 13th.
    [ -r "/proc/$pid/stat" ] && total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
# The server under test gets core 1 to itself; wrk and the upstream share core 0. Every
# peer is measured the same way, and runs vary less than with the scheduler free to mix.
LOAD_CPU=0
SERVER_CPU=$(( $(nproc) > 1 ? 1 : 0 ))
PIN=(taskset -c "$SERVER_CPU")

# --- keys and tokens: the same algorithm and key for every peer --------------------------
HS_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 40)
"$OTPGATE" keygen --alg ES256 --out "$work/es256.pem" >/dev/null
openssl pkey -in "$work/es256.pem" -pubout -out "$work/es256.pub" 2>/dev/null
"$OTPGATE" keygen --alg EdDSA --out "$work/eddsa.pem" >/dev/null

UPSTREAM=$(free_port)
upstream_conf "$UPSTREAM" >"$work/upstream.conf"
serve "upstream" taskset -c "$LOAD_CPU" nginx -p "$work/nginx" -c "$work/upstream.conf"

NGINX=$(free_port)
# nginx as a plain reverse proxy to the upstream, keeping its connections open.
nginx_conf proxy \
  "upstream app { server 127.0.0.1:$UPSTREAM; keepalive 128; keepalive_requests 1000000; }" \
  "server {" \
  "  listen 127.0.0.1:$NGINX;" \
  "  location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }" \
  "}" >"$work/proxy.conf"
serve "nginx" "${PIN[@]}" nginx -p "$work/nginx" -c "$work/proxy.conf"

haproxy_conf() { # alg key port
  cat <<EOF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$3
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny status 401 unless { var(txn.alg) -m str $1 }
  http-request deny status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$2") -m int 1 }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  default_backend app
backend app
  server app 127.0.0.1:$UPSTREAM
EOF
}
HAPROXY_HS=$(free_port)
HAPROXY_ES=$(free_port)
haproxy_conf HS256 "$HS_SECRET" "$HAPROXY_HS" >"$work/haproxy-hs.cfg"
haproxy_conf ES256 "$work/es256.pub" "$HAPROXY_ES" >"$work/haproxy-es.cfg"
serve "haproxy HS256" "${PIN[@]}" haproxy -q -f "$work/haproxy-hs.cfg"
serve "haproxy ES256" "${PIN[@]}" haproxy -q -f "$work/haproxy-es.cfg"

otpgate_conf() { # alg key-line port [threads]
  cat <<EOF
[server]
listen = "127.0.0.1:$3"
upstream = "http://127.0.0.1:$UPSTREAM"
threads = ${4:-1}
[token]
algorithm = "$1"
$2
ttl = "1h"
[[protect]]
prefix = "/"
EOF
}
declare -A GATE_PORT
for alg in HS256 ES256 EdDSA; do
  case $alg in
    HS256) key="secret = \"$HS_SECRET\"" ;;
    ES256) key="private_key = \"$work/es256.pem\"" ;;
    EdDSA) key="private_key = \"$work/eddsa.pem\"" ;;
  esac
  GATE_PORT[$alg]=$(free_port)
  otpgate_conf "$alg" "$key" "${GATE_PORT[$alg]}" >"$work/otpgate-$alg.toml"
  # Its log goes to a file: wrk closing connections at the end of a run is logged.
  RUST_LOG=warn serve "otpgate $alg" "${PIN[@]}" "$OTPGATE" run --config "$work/otpgate-$alg.toml" >"$work/otpgate-$alg.log" 2>&1
done
# The second pass: two worker threads, not pinned, the same key and upstream.
GATE2=$(free_port)
otpgate_conf EdDSA "private_key = \"$work/eddsa.pem\"" "$GATE2" 2 >"$work/otpgate-EdDSA-2.toml"
RUST_LOG=warn serve "otpgate EdDSA, 2 threads" "$OTPGATE" run --config "$work/otpgate-EdDSA-2.toml" >"$work/otpgate-EdDSA-2.log" 2>&1

PINGORA=$(free_port)
serve "pingora" "${PIN[@]}" "$BENCH_PINGORA" "127.0.0.1:$PINGORA" "127.0.0.1:$UPSTREAM" >"$work/pingora.log" 2>&1
PINGORA2=$(free_port)
BENCH_THREADS=2 serve "pingora, 2 threads" "$BENCH_PINGORA" "127.0.0.1:$PINGORA2" "127.0.0.1:$UPSTREAM" >"$work/pingora-2.log" 2>&1

AXUM=$(free_port)
AXUM_LAYER=$(free_port)
serve "axum" "${PIN[@]}" "$BENCH_APP" "127.0.0.1:$AXUM"
serve "axum+OtpLayer" "${PIN[@]}" "$BENCH_APP" "127.0.0.1:$AXUM_LAYER" "$work/otpgate-EdDSA.toml"

for port in "$UPSTREAM" "$NGINX" "$PINGORA" "$PINGORA2" "$HAPROXY_HS" "$HAPROXY_ES" "${GATE_PORT[@]}" "$GATE2" "$AXUM" "$AXUM_LAYER"; do
  wait_port "$port"
done

declare -A TOKEN
for alg in HS256 ES256 EdDSA; do
  TOKEN[$alg]=$("$OTPGATE" token mint bench@example.com --config "$work/otpgate-$alg.toml" 2>/dev/null)
done

# --- every peer must refuse a missing token and pass a valid one -------------------------
check() { # name url token expect-without
  local with without
  with=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $3" "$2")
  without=$(curl -s -o /dev/null -w '%{http_code}' "$2")
  if [ "$with" != 200 ] || [ "$without" != "$4" ]; then
    echo "error: $1 answered $with with a token and $without without (expected 200 and $4)" >&2
    exit 1
  fi
}
check "haproxy HS256" "http://127.0.0.1:$HAPROXY_HS/" "${TOKEN[HS256]}" 401
check "haproxy ES256" "http://127.0.0.1:$HAPROXY_ES/" "${TOKEN[ES256]}" 401
for alg in HS256 ES256 EdDSA; do
  check "otpgate $alg" "http://127.0.0.1:${GATE_PORT[$alg]}/" "${TOKEN[$alg]}" 401
done
check "otpgate EdDSA, 2 threads" "http://127.0.0.1:$GATE2/" "${TOKEN[EdDSA]}" 401
check "axum+OtpLayer" "http://127.0.0.1:$AXUM_LAYER/" "${TOKEN[EdDSA]}" 401
# A forged token is refused by every checking peer.
# One signature character changes, well inside it: the last character of base64url also
# carries unused bits, so changing it may decode to the very same signature.
tok=${TOKEN[ES256]}
pos=$((${#tok} - 10))
swap=A; [ "${tok:$pos:1}" = A ] && swap=B
forged="${tok:0:$pos}$swap${tok:$((pos + 1))}"
for port in "$HAPROXY_ES" "${GATE_PORT[ES256]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $forged" "http://127.0.0.1:$port/")
  [ "$code" = 401 ] || { echo "error: port $port accepted a forged token ($code)" >&2; exit 1; }
done

# --- load -------------------------------------------------------------------------------
to_ms() { # wrk latency like 812.00us, 1.20ms, 1.01s -> milliseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000;
    printf "%.3f", n }'
}
declare -A RPS P50 P99 CPU
run() { # name url token
  local out auth=() before after requests
  if [ -n "${3:-}" ]; then auth=(-H "Authorization: Bearer $3"); fi
  before=$(cpu_ticks "${SERVER_PID[$1]}")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${auth[@]}" "$2")
  after=$(cpu_ticks "${SERVER_PID[$1]}")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "error: $1 answered non-2xx under load:" >&2; echo "$out" >&2; exit 1
  fi
  RPS[$1]=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  P50[$1]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  P99[$1]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  # The server's own CPU time per request: steadier than req/s on a shared machine,
  # where the load generator's core sets the pace of the fastest targets.
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  CPU[$1]=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
  printf '%-24s %10s req/s  p50 %7s ms  p99 %7s ms  %6s µs CPU/req\n' "$1" "${RPS[$1]}" "${P50[$1]}" "${P99[$1]}" "${CPU[$1]}"
}

# Warm every server's connections and caches, untimed.
for port in "$NGINX" "$PINGORA" "$PINGORA2" "$HAPROXY_HS" "$HAPROXY_ES" "${GATE_PORT[@]}" "$GATE2" "$AXUM" "$AXUM_LAYER"; do
  wrk -t1 -c"$CONNECTIONS" -d1s -H "Authorization: Bearer ${TOKEN[EdDSA]}" "http://127.0.0.1:$port/" >/dev/null || true
done

ORDER=("upstream" "nginx" "pingora" "haproxy HS256" "haproxy ES256" "otpgate HS256" "otpgate ES256" "otpgate EdDSA" "axum" "axum+OtpLayer")
run "upstream" "http://127.0.0.1:$UPSTREAM/"
run "nginx" "http://127.0.0.1:$NGINX/"
run "pingora" "http://127.0.0.1:$PINGORA/"
run "haproxy HS256" "http://127.0.0.1:$HAPROXY_HS/" "${TOKEN[HS256]}"
run "haproxy ES256" "http://127.0.0.1:$HAPROXY_ES/" "${TOKEN[ES256]}"
run "otpgate HS256" "http://127.0.0.1:${GATE_PORT[HS256]}/" "${TOKEN[HS256]}"
run "otpgate ES256" "http://127.0.0.1:${GATE_PORT[ES256]}/" "${TOKEN[ES256]}"
run "otpgate EdDSA" "http://127.0.0.1:${GATE_PORT[EdDSA]}/" "${TOKEN[EdDSA]}"
# The same request, token included, to both: the difference is the layer's work alone.
run "axum" "http://127.0.0.1:$AXUM/" "${TOKEN[EdDSA]}"
run "axum+OtpLayer" "http://127.0.0.1:$AXUM_LAYER/" "${TOKEN[EdDSA]}"
# Two worker threads on both cores: the same wrk, on core 0 with the upstream.
ORDER2=("pingora, 2 threads" "otpgate EdDSA, 2 threads")
run "pingora, 2 threads" "http://127.0.0.1:$PINGORA2/"
run "otpgate EdDSA, 2 threads" "http://127.0.0.1:$GATE2/" "${TOKEN[EdDSA]}"

# The gate against the same engine, back to back, BENCH_PAIRS times (default 3), both sent
# the same request: each pair's ratio is read within the pair, and their median is the
# figure, so that the machine's drift between two targets' runs weighs less.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
PAIRS=${BENCH_PAIRS:-3}
PAIR_ROWS=()
pairs() { # label base-target gate-target base-url gate-url
  local rps="" cpu="" base="$2 (pairs)" gate="$3 (pairs)"
  SERVER_PID[$base]=${SERVER_PID[$2]}
  SERVER_PID[$gate]=${SERVER_PID[$3]}
  for _ in $(seq "$PAIRS"); do
    run "$base" "$4" "${TOKEN[EdDSA]}"
    run "$gate" "$5" "${TOKEN[EdDSA]}"
    rps+=" $(ratio "${RPS[$gate]}" "${RPS[$base]}")"
    cpu+=" $(ratio "${CPU[$gate]}" "${CPU[$base]}")"
  done
  PAIR_ROWS+=("| $1 | $(median <<<"$rps")× (${rps# }) | $(median <<<"$cpu")× (${cpu# }) |")
}
pairs "1 worker thread" pingora "otpgate EdDSA" "http://127.0.0.1:$PINGORA/" "http://127.0.0.1:${GATE_PORT[EdDSA]}/"
pairs "2 worker threads" "pingora, 2 threads" "otpgate EdDSA, 2 threads" "http://127.0.0.1:$PINGORA2/" "http://127.0.0.1:$GATE2/"

for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

# --- sign-ins over HTTP, memory per pending code, cold start ------------------------------
extra=$(BENCH_QUICK=${BENCH_QUICK:-0} cargo bench --quiet --bench http -- --bench | sed -n '/^|/p')

# --- instructions per request: the same comparisons, counted, not timed ----------------
instructions=$(BENCH_NO_BUILD=1 ./bench/instructions.sh)

# "X× req/s, Y× CPU per request" of target $1 against target $2.
versus() { echo "$(ratio "${RPS[$1]}" "${RPS[$2]}")× req/s, $(ratio "${CPU[$1]}" "${CPU[$2]}")× CPU per request"; }
# The send timing section comes from `make bench-timing`; this run keeps it as it is.
send_timing=$(sed -n '/^## Send timing/,$p' bench/RESULTS.md 2>/dev/null || true)
{
  echo "# Benchmark results"
  echo
  echo "Written by \`make bench\` (\`bench/run.sh\`) on $(date -u +%Y-%m-%d), $(nproc) cores,"
  echo "$(uname -sr). Everything ran on loopback in one run. In the first table each server under"
  echo "test has one worker thread pinned to its own core, wrk (one thread, $CONNECTIONS connections,"
  echo "$DURATION per target) and the upstream sharing the other core. Both axum runs get the same"
  echo "request, token included. Server CPU is the target's own user + system time per request"
  echo "(/proc), all its processes and threads."
  echo "Peers: $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}')."
  echo
  echo "## Authenticated pass-through"
  echo
  echo "| target | req/s | p50 ms | p99 ms | ÷ nginx | ÷ upstream | server CPU µs/req | CPU ÷ nginx |"
  echo "|---|---|---|---|---|---|---|---|"
  for name in "${ORDER[@]}"; do
    echo "| $name | ${RPS[$name]} | ${P50[$name]} | ${P99[$name]} | $(ratio "${RPS[$name]}" "${RPS[nginx]}") | $(ratio "${RPS[$name]}" "${RPS[upstream]}") | ${CPU[$name]} | $(ratio "${CPU[$name]}" "${CPU[nginx]}") |"
  done
  echo
  echo "- otpgate EdDSA ÷ haproxy ES256 (the fastest asymmetric pair HAProxy has): $(ratio "${RPS[otpgate EdDSA]}" "${RPS[haproxy ES256]}")"
  echo "- otpgate ES256 ÷ haproxy ES256: $(ratio "${RPS[otpgate ES256]}" "${RPS[haproxy ES256]}"); otpgate HS256 ÷ haproxy HS256: $(ratio "${RPS[otpgate HS256]}" "${RPS[haproxy HS256]}")"
  echo "- otpgate EdDSA ÷ pingora (the same engine with no gate), 1 thread: $(versus "otpgate EdDSA" pingora); pingora ÷ nginx: $(ratio "${RPS[pingora]}" "${RPS[nginx]}")"
  echo "- axum+OtpLayer ÷ axum: $(versus "axum+OtpLayer" axum); the layer's CPU per request: $(awk -v a="${CPU[axum+OtpLayer]}" -v b="${CPU[axum]}" 'BEGIN { printf "%.2f µs", a - b }')"
  echo "- otpgate EdDSA p99 − nginx p99: $(awk -v a="${P99[otpgate EdDSA]}" -v b="${P99[nginx]}" 'BEGIN { printf "%.3f", a - b }') ms"
  echo
  echo "## Two worker threads"
  echo
  echo "pingora and otpgate EdDSA again, each with two worker threads and not pinned: the"
  echo "machine has $(nproc) cores, so the server's threads, wrk (still on core $LOAD_CPU) and the"
  echo "upstream share them. Server CPU is summed over all the server's threads."
  echo
  echo "| target | req/s | p50 ms | p99 ms | server CPU µs/req |"
  echo "|---|---|---|---|---|"
  for name in "${ORDER2[@]}"; do
    echo "| $name | ${RPS[$name]} | ${P50[$name]} | ${P99[$name]} | ${CPU[$name]} |"
  done
  echo
  echo "- otpgate EdDSA ÷ pingora, 2 threads: $(versus "otpgate EdDSA, 2 threads" "pingora, 2 threads")"
  echo
  echo "## The gate against its engine, in pairs"
  echo
  echo "pingora and otpgate EdDSA run back to back $PAIRS times, both sent the same request"
  echo "(token included), set up as above; each pair gives a ratio, and the median of them is"
  echo "the figure (each pair's in brackets, in order)."
  echo
  echo "| | otpgate ÷ pingora, req/s | otpgate ÷ pingora, CPU per request |"
  echo "|---|---|---|"
  printf '%s\n' "${PAIR_ROWS[@]}"
  echo
  echo "## The gate's own work"
  echo
  echo "| measure | value | baseline (same run) | ratio |"
  echo "|---|---|---|---|"
  echo "$extra"
  echo
  echo "$instructions"
  if [ -n "$send_timing" ]; then
    echo
    echo "$send_timing"
  fi
} >bench/RESULTS.md
echo
cat bench/RESULTS.md
