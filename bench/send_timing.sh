#!/usr/bin/env bash
# `make bench-timing`: whether the time a send answer takes tells a known account from an
# unknown one. examples/send_timing.rs (release build) sends codes over HTTP to members and
# to strangers, alternating, for three set-ups (nexudus, generic with a static directory,
# aerocall with reveal_account off), and reports the medians, their difference and the
# Mann-Whitney U test; it fails when a difference reaches 10 µs. The table replaces the
# "Send timing" section of bench/RESULTS.md (kept there by `make bench`).
#
# SEND_TIMING_SAMPLES (default 400): samples of each kind per set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLES=${SEND_TIMING_SAMPLES:-400}
cargo build --release --quiet --example send_timing
status=0
table=$(./target/release/examples/send_timing "$SAMPLES") || status=$?
echo "$table"
if ! grep -q '^| nexudus' <<<"$table"; then
  echo "error: send_timing gave no figures" >&2
  exit 1
fi

kept=$(awk '/^## Send timing/ {exit} {print}' bench/RESULTS.md)
{
  printf '%s\n\n' "$kept"
  echo "## Send timing: known against unknown accounts"
  echo
  echo "Written by \`make bench-timing\` (\`bench/send_timing.sh\`: \`cargo build --release --example send_timing\`,"
  echo "then \`target/release/examples/send_timing $SAMPLES\`) on $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr)."
  echo "Send requests over HTTP/1.1 on loopback to the tower layer (one runtime thread), one"
  echo "keep-alive connection, a member and a stranger per pair in random order, a new identifier"
  echo "for every request (no limit or cooldown applies), a 300 µs pause (spinning) after each request; the"
  echo "round trip of each is timed. Delivery is a counting sender: every member's code reached"
  echo "it, every stranger's was queued and dropped by the outbox worker (the run checks both)."
  echo "p: Mann-Whitney U, two-sided, normal approximation with tie and continuity corrections."
  echo
  echo "$table"
} >bench/RESULTS.md.new
mv bench/RESULTS.md.new bench/RESULTS.md
exit "$status"
