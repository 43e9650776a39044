#!/usr/bin/env bash
# A simulated SMS pumping attack against the SMS guard's recommended settings
# (tests/sms_pumping.rs, release build): 10,000 sends to four ranges of one country's mobile
# numbers from 500 client addresses, mixed with 1,000 real users who send and verify, on the
# memory store, on a real redis-server, and through the HTTP front (a trusted proxy naming
# each client in X-Forwarded-For). Prints, per run: the attack's messages that
# reached the SMS sender, the real users refused, and the time on the test's clock from the
# attack's first send to the guard's first refusal and to every attacked range refused.
# The test itself asserts the targets (under 1% of the attack delivered, under 1% of real
# users refused); this script fails when it does or when it printed no figures.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || {
  echo "error: redis-server is missing (the redis-server package)" >&2
  exit 1
}
out=$(cargo test --release --quiet --test sms_pumping -- --nocapture --test-threads 1 2>&1) || {
  echo "$out" >&2
  exit 1
}
figures=$(grep -o 'sms_pumping store=.*' <<<"$out" || true)
if [ -z "$figures" ]; then
  echo "$out" >&2
  echo "error: the attack test printed no figures" >&2
  exit 1
fi
echo "$figures"
