"""Real Python app servers for otpgate's boundary tests (tests/boundary_servers.rs).

usage: boundary_apps.py KIND LOGFILE [ROOT]
KIND: files    the standard library's http.server (SimpleHTTPRequestHandler over ROOT)
      wsgiref  wsgiref.simple_server running the echo WSGI app below
      werkzeug werkzeug.serving running the same WSGI app
      cgi      one request, as a CGI program (lighttpd's mod_cgi): wsgiref's CGIHandler
               running the same WSGI app

The servers listen on a free loopback port, print "READY <port>" and exit when their
standard input closes. Before answering, each request is appended to LOGFILE as one JSON
line:
  {"target": <the request target as received>, "seen": {<folded name>: <value>}}
where "seen" holds what the app reads: for the WSGI servers and CGI the HTTP_* environ
keys (lowercased, without HTTP_) plus path_info; for http.server the raw headers folded
the way WSGI folds them (lowercase, "-" and "_" alike, repeated names joined by ",").
"""
import json
import os
import posixpath
import re
import sys
import threading
from urllib.parse import unquote

LOCK = threading.Lock()
LOG = None


def record(target, seen):
    with LOCK:
        LOG.write(json.dumps({"target": target, "seen": seen}) + "\n")
        LOG.flush()


def raw_target(handler):
    """The target as the request line carried it: BaseHTTPRequestHandler turns a leading
    `//` into `/` in `self.path`."""
    words = handler.requestline.split(" ")
    return words[1] if len(words) == 3 else handler.path


def fold(headers):
    seen = {}
    for name, value in headers:
        key = name.lower().replace("-", "_")
        seen[key] = f"{seen[key]},{value}" if key in seen else value
    return seen


def route(path_info):
    """Where a lenient router sends PATH_INFO: case-insensitive (Express's default),
    decoding once more, `\\` as `/`, `;params` and NULs dropped, slashes merged, dot
    segments resolved. The more the app forgives, the more a gate mistake shows."""
    path = unquote(path_info).replace("\\", "/").replace("\x00", "")
    path = re.sub(r";[^/]*", "", path)
    path = posixpath.normpath(re.sub(r"/+", "/", "/" + path))
    return path.lower()


def wsgi_app(environ, start_response):
    """Echoes what it read; anything `route` puts under /api/ gets the secret."""
    seen = {k[5:].lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    seen["path_info"] = environ.get("PATH_INFO", "")
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    record(target, seen)
    if route(seen["path_info"]).startswith("/api/"):
        body = "wsgi-secret\n"
    else:
        body = "wsgi-public\n"
    body = (body + json.dumps({"target": target, "seen": seen}) + "\n").encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def serve_files(root):
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def send_head(self):
            record(raw_target(self), fold(self.headers.items()))
            return super().send_head()

        def log_message(self, *args):
            pass

    return ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(Handler, directory=root)
    )


def serve_wsgiref():
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        def get_environ(self):
            environ = super().get_environ()
            # wsgiref keeps no raw target; record the one it received.
            environ["RAW_URI"] = raw_target(self)
            return environ

        def log_message(self, *args):
            pass

    return make_server("127.0.0.1", 0, wsgi_app, handler_class=Handler)


def serve_werkzeug():
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        def make_environ(self):
            environ = super().make_environ()
            environ["RAW_URI"] = raw_target(self)
            return environ

        def log(self, *args):
            pass

    return make_server("127.0.0.1", 0, wsgi_app, threaded=True, request_handler=Handler)


def main():
    global LOG
    kind, logfile = sys.argv[1], sys.argv[2]
    LOG = open(logfile, "a", encoding="utf-8")
    if kind == "cgi":
        from wsgiref.handlers import CGIHandler

        CGIHandler().run(wsgi_app)
        return
    if kind == "files":
        server = serve_files(sys.argv[3])
    elif kind == "wsgiref":
        server = serve_wsgiref()
    elif kind == "werkzeug":
        server = serve_werkzeug()
    else:
        sys.exit(f"unknown kind {kind}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"READY {server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
