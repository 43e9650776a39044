"""The app behind nginx and Caddy in otpgate's forward-auth tests (tests/forward_auth.rs).

usage: forward_auth_app.py

A WSGI app on wsgiref's server, which folds header names the way WSGI does: `X_Auth_Subject`
and `X-Auth-Subject` both become HTTP_X_AUTH_SUBJECT, joined with "," when both come. It
listens on a free loopback port, prints "READY <port>" and exits when its standard input
closes.

Every request is answered 200 with JSON:
  {"method", "target" (as received), "path_info", "body" (as text),
   "raw": [[name, value], ...] (the header lines as received),
   "environ": {HTTP_* key: value} (what the app reads)}
and remembered. `GET /__seen` answers the requests remembered since the last
`/__seen`, oldest first, and forgets them.
"""
import json
import os
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

LOCK = threading.Lock()
SEEN = []


def answer(start_response, value):
    body = (json.dumps(value) + "\n").encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/__seen":
        with LOCK:
            seen = list(SEEN)
            SEEN.clear()
        return answer(start_response, seen)
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    request = {
        "method": environ.get("REQUEST_METHOD", ""),
        "body": body.decode("utf-8", "replace"),
        "target": environ.get("RAW_URI", ""),
        "path_info": environ.get("PATH_INFO", ""),
        "raw": environ.get("RAW_HEADERS", []),
        "environ": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
    }
    with LOCK:
        SEEN.append(request)
    return answer(start_response, request)


class Handler(WSGIRequestHandler):
    def get_environ(self):
        environ = super().get_environ()
        # wsgiref keeps neither the raw target nor the header lines: record both.
        words = self.requestline.split(" ")
        environ["RAW_URI"] = words[1] if len(words) == 3 else self.path
        environ["RAW_HEADERS"] = [[k, v] for k, v in self.headers.items()]
        return environ

    def log_message(self, *args):
        pass


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main():
    server = make_server(
        "127.0.0.1", 0, app, server_class=Server, handler_class=Handler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
