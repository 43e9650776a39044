#!/usr/bin/env bash
# `make bench-flamegraph`: where a proxied, authenticated request's CPU goes, in plain
# pingora (examples/bench_pingora.rs) and in the otpgate proxy, under the same load in one
# run. Writes bench/flamegraphs/{pingora,otpgate}-proxy.svg and, per request, the CPU of
# each and of the gate's own steps (bench/flamegraphs/README.md).
#
# Each server gets one worker thread on core 1; nginx (the app, answering `ok`) and wrk
# (one thread, 50 connections) share core 0. perf samples the server for BENCH_DURATION
# (default 8s) with DWARF call graphs; inferno draws the graphs. perf's own work slows both
# servers alike: read the figures as a ratio between the two, not as absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-8}
. bench/lib.sh
require nginx:nginx wrk:wrk perf:linux-perf
command -v inferno-flamegraph >/dev/null || cargo install --locked --quiet inferno
for tool in inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing and could not be installed" >&2; exit 1; }
done

cargo build --release --quiet --bin otpgate --example bench_pingora
OTPGATE=$TARGET/release/otpgate
BENCH_PINGORA=$TARGET/release/examples/bench_pingora
out=$PWD/bench/flamegraphs
mkdir -p "$out"

UPSTREAM=$(free_port)
upstream_conf "$UPSTREAM" >"$work/upstream.conf"
taskset -c 0 nginx -p "$work/nginx" -c "$work/upstream.conf" & pids+=($!)

"$OTPGATE" keygen --alg EdDSA --out "$work/eddsa.pem" >/dev/null 2>&1
GATE=$(free_port)
gate_conf "$GATE" "$UPSTREAM" "$work/eddsa.pem" >"$work/otpgate.toml"
RUST_LOG=warn taskset -c 1 "$OTPGATE" run --config "$work/otpgate.toml" >"$work/otpgate.log" 2>&1 & pids+=($!)
GATE_PID=$!
PINGORA=$(free_port)
taskset -c 1 "$BENCH_PINGORA" "127.0.0.1:$PINGORA" "127.0.0.1:$UPSTREAM" >"$work/pingora.log" 2>&1 & pids+=($!)
PINGORA_PID=$!
for port in "$UPSTREAM" "$GATE" "$PINGORA"; do wait_port "$port"; done
TOKEN=$("$OTPGATE" token mint bench@example.com --config "$work/otpgate.toml" 2>/dev/null)
load() { taskset -c 0 wrk -t1 -c50 -d"$1" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/"; }

declare -A REQUESTS
profile() { # name pid port
  load 2s "$3" >/dev/null
  perf record -q -F 2000 --call-graph dwarf,16384 -p "$2" -o "$work/$1.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  local perf_pid=$!
  REQUESTS[$1]=$(load "${DURATION}s" "$3" | awk '/requests in/ {print $1}')
  wait "$perf_pid"
  perf script -i "$work/$1.data" 2>/dev/null | inferno-collapse-perf 2>/dev/null >"$work/$1.folded"
  inferno-flamegraph --minwidth 0.2 \
    --title "$1 proxy: one worker thread, an authenticated GET, wrk -c50 (perf, DWARF)" \
    "$work/$1.folded" >"$out/$1-proxy.svg"
}
profile pingora "$PINGORA_PID" "$PINGORA"
profile otpgate "$GATE_PID" "$GATE"

# Per request: all samples, and those under each of the gate's steps (a frame anywhere in
# the stack), as a share of plain pingora's whole request.
python3 - "$work" "${REQUESTS[pingora]}" "${REQUESTS[otpgate]}" >"$out/README.md" <<'EOF'
import sys
work, requests = sys.argv[1], {"pingora": int(sys.argv[2]), "otpgate": int(sys.argv[3])}
steps = [
    ("request_filter: route, token, plan", "OtpFilter::request_filter"),
    ("upstream_request_filter: headers into pingora's request", "OtpFilter::upstream_request_filter"),
    ("the connection guard's own work (head and idle deadlines, caps)", "otpgate::pingora::guard::"),
    ("logging hook: metrics", "OtpProxy as pingora_proxy::proxy_trait::ProxyHttp>::logging"),
    ("upstream_peer", "OtpProxy as pingora_proxy::proxy_trait::ProxyHttp>::upstream_peer"),
    ("per-request state dropped", "drop_in_place<otpgate::pingora::proxy::ProxyCtx>"),
]
GUARD_STEPS = ("rearm", "take_signal", "deadline_passed", "expired", "limits::", "Permit")
def load(name):
    total, under = 0, {label: 0 for label, _ in steps}
    for line in open(f"{work}/{name}.folded"):
        stack, _, count = line.rstrip().rpartition(" ")
        count = int(count)
        total += count
        frames = stack.split(";")
        for label, frame in steps:
            at = [i for i, f in enumerate(frames) if frame in f]
            # The guard wraps the whole connection: only what runs in its own frames, not
            # the reads and the request it passes on, is its work.
            own = frame != "otpgate::pingora::guard::" or at and (
                at[-1] == len(frames) - 1 or any(step in frames[at[-1]] for step in GUARD_STEPS)
            )
            if at and own:
                under[label] += count
    return total, under
pingora, _ = load("pingora")
otpgate, under = load("otpgate")
base = pingora / requests["pingora"]
print("# Flame graphs: plain pingora and the otpgate proxy\n")
print("Written by `make bench-flamegraph` (`bench/flamegraph.sh`): one worker thread each,")
print("an authenticated GET under wrk, perf with DWARF call graphs. perf slows both alike,")
print("so every figure is a share of plain pingora's CPU per request in the same run.\n")
print("- `pingora-proxy.svg`: plain pingora, " + f"{requests['pingora']} requests")
print("- `otpgate-proxy.svg`: the otpgate proxy, " + f"{requests['otpgate']} requests\n")
print("| | CPU per request ÷ pingora's |")
print("|---|---|")
print(f"| otpgate, all of it | {otpgate / requests['otpgate'] / base:.3f} |")
for label, _ in steps:
    print(f"| under {label} | {under[label] / requests['otpgate'] / base:.3f} |")
EOF
cat "$out/README.md"
