"""Plumbing shared by the stock-app stand-ins (test support for guestbook-operator's e2e suite).

None of this is part of an image's contract: it only gets log lines into the pod log as they
happen and gives the web stand-ins one small HTTP server.
"""

import html
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def log(*args):
    print(*args, flush=True)


def err(*args):
    print(*args, file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.0: one request per connection, as gunicorn with --keep-alive 0 answers."""

    def reply(self, status, body, content_type="text/html; charset=utf-8", headers=()):
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left without reading it all (a probe that saw the status)

    def log_message(self, format, *args):
        # The access log goes to stdout, where the images' servers write theirs.
        log("%s - %s" % (self.address_string(), format % args))


def serve(handler, port):
    """Serves on every interface of the pod, as the images' servers do, until killed."""
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    server.daemon_threads = True
    log(f"listening on port {port}")
    server.serve_forever()


def page(title, body):
    """A small HTML page; `body` is already HTML."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
