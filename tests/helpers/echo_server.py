# A tiny HTTP server for thorp.fetch specs: echoes what it got as JSON.
#   python3 echo_server.py   -> prints "ECHO_READY <port>", serves until killed
#   /echo...     {"method","path","headers","body"} with status 200 (or ?status=N)
#   /redirect    302 to /echo           /slow   answers after 3 s
#   /big?n=N     N bytes of "x"
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def handle(self):
        try: super().handle()
        except (ConnectionResetError, BrokenPipeError): pass
    def handle_any(self):
        u = urlparse(self.path); q = parse_qs(u.query)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("latin-1") if n else ""
        if u.path == "/redirect":
            self.send_response(302); self.send_header("Location", "/echo?from=redirect")
            self.send_header("Content-Length", "0"); self.end_headers(); return
        if u.path.startswith("/slow"): time.sleep(3)
        if u.path == "/big": out = b"x" * int(q["n"][0])
        else:
            out = json.dumps({"method": self.command, "path": self.path, "body": body,
                              "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(int(q.get("status", ["200"])[0]))
        self.send_header("Content-Type", "application/json"); self.send_header("X-Echo", "1")
        self.send_header("Content-Length", str(len(out))); self.end_headers()
        if self.command != "HEAD": self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print("ECHO_READY", s.server_address[1], flush=True)
s.serve_forever()
