#!/usr/bin/env bash
# `make run`: the demo app on 127.0.0.1:3000 and the otpgate proxy in front of it on
# 127.0.0.1:8080, with the default configuration (memory store, console delivery, a key
# generated at start). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bin otpgate --example echo_upstream

./target/debug/examples/echo_upstream &
app=$!
trap 'kill "$app" 2>/dev/null || true' EXIT

cat <<'TRY'

  otpgate is starting on http://127.0.0.1:8080 in front of the demo app on :3000.
  In another terminal:

  1. Ask for a code (it is printed below, by the development console sender):
     curl -s localhost:8080/auth/otp/send -H 'content-type: application/json' -d '{"email":"alice@example.com"}'

  2. Trade it for a token:
     curl -s localhost:8080/auth/otp/verify -H 'content-type: application/json' -d '{"email":"alice@example.com","code":"<the code>"}'

  3. Call a protected path with it; the app answers with the identity it received:
     curl -s localhost:8080/api/me -H 'authorization: Bearer <access_token>'

  4. Without it, or with forged headers, the gate refuses or strips them:
     curl -s localhost:8080/api/me
     curl -s localhost:8080/hello -H 'X-Auth-Subject: admin'

  5. In a browser, open http://127.0.0.1:8080/app/ : the gate's sign-in page asks for an
     email, the code is printed below, and you land back on the app's page, signed in.

TRY

./target/debug/otpgate run --config config/otpgate.toml
