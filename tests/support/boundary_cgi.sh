# The CGI program lighttpd runs for every request in tests/boundary_servers.rs (see
# lighttpd.conf.template): boundary_apps.py's echo app under wsgiref's CGIHandler, which
# logs REQUEST_URI and every HTTP_* variable. The markers the test sends straight to the
# app carry nothing to read and are logged here, sparing a Python start per marker.
case "$REQUEST_URI" in
/__sync/*)
    printf '{"target": "%s", "seen": {}}\n' "$REQUEST_URI" >>"$BOUNDARY_LOG"
    printf 'Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nsync\n'
    exit 0
    ;;
esac
# -S: no site module, nothing the installation adds to every start.
exec "$BOUNDARY_PYTHON" -S "$BOUNDARY_APPS" cgi "$BOUNDARY_LOG"
