# Sourced by bench/run.sh, bench/flamegraph.sh and bench/instructions.sh (from the
# repository root): their tools, a scratch folder removed on exit with every process
# listed in `pids`, loopback ports, the trivial upstream every proxy forwards to, and the
# gate the two profiles run.

SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

# require command:package ...: installs the missing ones from Debian's packages, and stops
# the run, naming the command, if one is still missing.
require() {
  local missing=() tool
  for tool in "$@"; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}..."
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  for tool in "$@"; do
    command -v "${tool%%:*}" >/dev/null || { echo "error: ${tool%%:*} is missing and could not be installed" >&2; exit 1; }
  done
}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.01
  done
  echo "error: nothing listens on port $1" >&2; exit 1
}

# nginx_conf name http-block...: an nginx config with one worker, keeping its files in
# $work/nginx (pid and error log named after `name`), whose http block holds the lines
# given; start it with `nginx -p "$work/nginx" -c FILE`.
nginx_conf() {
  local name=$1
  shift
  mkdir -p "$work/nginx"
  cat <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/$name.pid;
error_log $work/nginx/$name.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
CONF
  printf '  %s\n' "$@"
  echo "}"
}

# upstream_conf port: the trivial upstream, answering `ok` itself on 127.0.0.1:port.
upstream_conf() {
  nginx_conf upstream "server { listen 127.0.0.1:$1; location / { default_type text/plain; return 200 \"ok\"; } }"
}

# gate_conf port upstream-port key: the gate both profiles run (flamegraph.sh,
# instructions.sh): one worker thread, EdDSA with the key file, every path protected.
gate_conf() {
  cat <<CONF
[server]
listen = "127.0.0.1:$1"
upstream = "http://127.0.0.1:$2"
threads = 1
[token]
algorithm = "EdDSA"
private_key = "$3"
ttl = "1h"
[[protect]]
prefix = "/"
CONF
}
