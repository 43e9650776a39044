#!/usr/bin/env bash
# `make bench-instructions`: the gate's own cost counted in instructions, which a noisy
# machine does not move. Each server runs under callgrind (valgrind) with one worker
# thread; after a warm-up with counting off, wrk sends it the same authenticated request
# for BENCH_INSTR_DURATION (default 10s) with counting on, and the count is divided by the
# requests wrk saw answered. Userspace only: the kernel's side is the same syscalls per
# request for pingora and the gate (two reads and two writes, one getpeername), and
# callgrind does not see it.
#
#   pingora, otpgate EdDSA   the engine alone, and the gate on it (examples/bench_pingora.rs)
#   pingora + headers        the engine setting the headers the gate sets, with its own
#                            insert_header, deciding nothing (BENCH_HEADERS=1)
#   axum, axum+OtpLayer      a bare axum app, and the same app behind the tower layer
#   axum + headers           the app behind a plain `map_request` that sets those headers
#
# Prints a markdown section on stdout (bench/run.sh puts it in bench/RESULTS.md); the
# annotated profiles stay in bench/instructions/ (callgrind_annotate, kcachegrind).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

require valgrind:valgrind callgrind_control:valgrind callgrind_annotate:valgrind wrk:wrk nginx:nginx python3:python3
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  cargo build --release --quiet --bin otpgate --example bench_app --example bench_pingora >&2
fi
OTPGATE=$TARGET/release/otpgate
BENCH_PINGORA=$TARGET/release/examples/bench_pingora
BENCH_APP=$TARGET/release/examples/bench_app
DURATION=${BENCH_INSTR_DURATION:-10s}
OUT=bench/instructions
mkdir -p "$OUT"

UPSTREAM=$(free_port)
upstream_conf "$UPSTREAM" >"$work/upstream.conf"
nginx -p "$work/nginx" -c "$work/upstream.conf" & pids+=($!)
wait_port "$UPSTREAM"

"$OTPGATE" keygen --alg EdDSA --out "$work/eddsa.pem" >/dev/null 2>&1
GATE=$(free_port)
gate_conf "$GATE" "$UPSTREAM" "$work/eddsa.pem" >"$work/otpgate.toml"
TOKEN=$("$OTPGATE" token mint bench@example.com --config "$work/otpgate.toml" 2>/dev/null)

declare -A REQUESTS
# count name port command...: runs the command under callgrind, counting only while wrk
# measures; leaves $OUT/name.callgrind and REQUESTS[name].
count() {
  local name=$1 port=$2 pid out
  shift 2
  RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --dump-instr=no \
    --callgrind-out-file="$OUT/$name.callgrind" "$@" >"$work/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  wait_port "$port"
  # Warm-up, not counted: connections to the app, caches, the verified-token cache.
  wrk -t1 -c10 -d3s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/" >/dev/null
  callgrind_control --instr=on "$pid" >/dev/null 2>&1
  out=$(wrk -t1 -c10 -d"$DURATION" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/")
  callgrind_control --instr=off "$pid" >/dev/null 2>&1
  if grep -q "Non-2xx" <<<"$out"; then
    echo "error: $name answered non-2xx:" >&2; echo "$out" >&2; exit 1
  fi
  REQUESTS[$name]=$(awk '/requests in/ {print $1}' <<<"$out")
  # SIGTERM: a graceful exit, on which callgrind writes the counts.
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  [ -s "$OUT/$name.callgrind" ] || { echo "error: callgrind wrote nothing for $name" >&2; cat "$work/$name.log" >&2; exit 1; }
}

PINGORA=$(free_port)
count pingora "$PINGORA" "$BENCH_PINGORA" "127.0.0.1:$PINGORA" "127.0.0.1:$UPSTREAM"
PINGORA_HEADERS=$(free_port)
BENCH_HEADERS=1 count pingora-headers "$PINGORA_HEADERS" "$BENCH_PINGORA" "127.0.0.1:$PINGORA_HEADERS" "127.0.0.1:$UPSTREAM"
count otpgate "$GATE" "$OTPGATE" run --config "$work/otpgate.toml"
AXUM=$(free_port)
count axum "$AXUM" "$BENCH_APP" "127.0.0.1:$AXUM"
AXUM_HEADERS=$(free_port)
count axum-headers "$AXUM_HEADERS" "$BENCH_APP" "127.0.0.1:$AXUM_HEADERS" --headers
AXUM_LAYER=$(free_port)
count axum-layer "$AXUM_LAYER" "$BENCH_APP" "127.0.0.1:$AXUM_LAYER" "$work/otpgate.toml"

NAMES=(pingora pingora-headers otpgate axum axum-headers axum-layer)
python3 - "$OUT" "${NAMES[@]}" -- "$(for n in "${NAMES[@]}"; do printf '%s ' "${REQUESTS[$n]}"; done)" <<'PY'
import collections, re, subprocess, sys

out = sys.argv[1]
names = sys.argv[2:sys.argv.index("--")]
counts = dict(zip(names, map(int, sys.argv[-1].split())))
label = {
    "pingora": "pingora", "pingora-headers": "pingora + headers", "otpgate": "otpgate EdDSA",
    "axum": "axum", "axum-headers": "axum + headers", "axum-layer": "axum+OtpLayer",
}

def functions(name):
    """Instructions by function (self cost), from callgrind_annotate."""
    text = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", f"{out}/{name}.callgrind"],
        capture_output=True, text=True, check=True).stdout
    found = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            function = re.sub(r" \[[^\]]*\]$", "", m.group(2)).split(":", 1)[-1]
            found[function] += int(m.group(1).replace(",", ""))
    return found

def where(function):
    """Who runs a function: its crate (the first path segment), or the C library."""
    if function.startswith(("mi_", "_mi_", "__rustc::__rust_")):
        return "allocator (mimalloc)"
    if function.startswith(("__mem", "memcpy", "memmove", "memset")):
        return "memcpy, memmove (libc)"
    crate = re.match(r"<*&?(?:mut )?([A-Za-z0-9_]+)", function)
    crate = crate.group(1) if crate else "?"
    return {
        "otpgate": "otpgate",
        "http": "http, pingora_http (header maps)", "pingora_http": "http, pingora_http (header maps)",
        "bytes": "bytes",
        "tokio": "tokio", "mio": "tokio",
        "core": "Rust core, alloc, std", "alloc": "Rust core, alloc, std", "std": "Rust core, alloc, std",
    }.get(crate, "pingora, other crates" if crate.startswith("pingora") else "other")

total, by_place = {}, {}
for name in names:
    found = functions(name)
    total[name] = sum(found.values()) / counts[name]
    by_place[name] = collections.Counter()
    for function, ir in found.items():
        by_place[name][where(function)] += ir / counts[name]

print("## Instructions per request (callgrind)")
print()
print("Written by `make bench-instructions` (`bench/instructions.sh`). Each server runs under")
print("callgrind with one worker thread; wrk (one thread, 10 connections) sends it the same")
print("authenticated request, token included, and callgrind counts the server's userspace")
print("instructions only while wrk measures. Instruction counts do not move with the")
print("machine's load, so these ratios hold where the timed ones above wander. The kernel's")
print("share is not counted: pingora and the gate make the same syscalls per request.")
print("\"+ headers\": the engine, or the app behind a plain `map_request`, setting the seven headers")
print("the gate sets for this request (request id, X-Forwarded-For and -Proto, the token, subject,")
print("tenant, email) with its own API, and deciding nothing.")
print()
print("| server | requests counted | instructions per request | ÷ bare engine or app | ÷ the same + headers |")
print("|---|---|---|---|---|")
for name, bare, same in [
    ("pingora", "pingora", None), ("pingora-headers", "pingora", None), ("otpgate", "pingora", "pingora-headers"),
    ("axum", "axum", None), ("axum-headers", "axum", None), ("axum-layer", "axum", "axum-headers"),
]:
    versus = f"{total[name] / total[same]:.3f}" if same else "—"
    print(f"| {label[name]} | {counts[name]} | {total[name]:,.0f} | {total[name] / total[bare]:.3f} | {versus} |")
print()
print("Where each request's instructions run (each function's own, by its crate); the last")
print("columns are the gate's and the layer's excess over the engine or the app setting the")
print("same headers:")
print()
print("| where | pingora | pingora + headers | otpgate EdDSA | otpgate − (pingora + headers) | axum | axum + headers | axum+OtpLayer | layer − (axum + headers) |")
print("|---|---|---|---|---|---|---|---|---|")
places = sorted(set().union(*by_place.values()),
                key=lambda k: -(by_place["otpgate"][k] - by_place["pingora-headers"][k]))
for place in places + ["all"]:
    row = {n: (total[n] if place == "all" else by_place[n][place]) for n in names}
    cells = [f"{row[n]:,.0f}" for n in ["pingora", "pingora-headers", "otpgate"]]
    cells.append(f"{row['otpgate'] - row['pingora-headers']:+,.0f}")
    cells += [f"{row[n]:,.0f}" for n in ["axum", "axum-headers", "axum-layer"]]
    cells.append(f"{row['axum-layer'] - row['axum-headers']:+,.0f}")
    print(f"| {'**all**' if place == 'all' else place} | " + " | ".join(cells) + " |")
PY
