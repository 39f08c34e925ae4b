"""Test stand-in for the image dockersamples/examplevotingapp_vote (Flask under gunicorn).

Honours the image's contract, as read in example-voting-app's vote/app.py and vote/Dockerfile:
- HTTP on port 80 (fixed), every interface; `/` only (GET and POST).
- Labels from env OPTION_A / OPTION_B, default "Cats" / "Dogs".
- Every response sets the cookie `voter_id`: the request's own, or a new random hex id (64
  random bits with the last hex digit cut off, as the original's `hex(...)[2:-1]` does).
- POST with form field `vote` (any value; a missing field is a 400): a new redis-py client per
  request to host `redis`, port 6379, db 0, no password, socket timeout 5 s, then
  `RPUSH votes {"voter_id": ..., "vote": ...}` (json.dumps' spacing). The page is sent only
  after the push returned, so a 200 means the vote is queued; a Redis failure is a 500.

Deliberately not modelled: gunicorn's 4 worker processes (threads here), its worker timeout,
the original page's markup, styles and static files, Flask's handling of other methods.
"""

import json
import os
import random
import socket
import traceback
from html import escape
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

import redis

from common import Handler, log, page, serve

OPTION_A = os.getenv("OPTION_A", "Cats")
OPTION_B = os.getenv("OPTION_B", "Dogs")
HOSTNAME = socket.gethostname()


def new_voter_id():
    # The original drops the last hex digit (a leftover of Python 2's trailing "L").
    return ("%x" % random.getrandbits(64))[:-1]


def voter_id_from(cookie_header):
    try:
        cookie = SimpleCookie(cookie_header or "")
    except CookieError:
        return None
    morsel = cookie.get("voter_id")
    return morsel.value if morsel and morsel.value else None


def render(vote):
    chosen = f"<p>You voted for {escape(vote)}.</p>" if vote else ""
    return page(
        f"{OPTION_A} vs {OPTION_B}!",
        f"<h1>{escape(OPTION_A)} vs {escape(OPTION_B)}!</h1>\n"
        '<form method="POST" action="/">\n'
        f'<button name="vote" value="a">{escape(OPTION_A)}</button>\n'
        f'<button name="vote" value="b">{escape(OPTION_B)}</button>\n'
        f"</form>\n{chosen}\n<p>Processed by container ID {escape(HOSTNAME)}</p>",
    )


class Vote(Handler):
    def do_GET(self):
        self.answer(None)

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/":
            return self.reply(404, page("404 Not Found", "<h1>Not Found</h1>"))
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        if "vote" not in form:
            return self.reply(400, page("400 Bad Request", "<h1>Bad Request</h1>"))
        self.answer(form["vote"][0])

    def answer(self, vote):
        if self.path.split("?", 1)[0] != "/":
            return self.reply(404, page("404 Not Found", "<h1>Not Found</h1>"))
        voter_id = voter_id_from(self.headers.get("Cookie")) or new_voter_id()
        if vote is not None:
            log(f"Received vote for {vote}")
            data = json.dumps({"voter_id": voter_id, "vote": vote})
            # A client per request, as Flask's per-request `g` gives the original: the name
            # `redis` is resolved again for every vote.
            client = redis.Redis(host="redis", db=0, socket_timeout=5)
            try:
                client.rpush("votes", data)
            except Exception:
                traceback.print_exc()
                failed = page("500 Internal Server Error", "<h1>Internal Server Error</h1>")
                return self.reply(500, failed)
            finally:
                client.close()
        self.reply(200, render(vote), headers=[("Set-Cookie", f"voter_id={voter_id}; Path=/")])


if __name__ == "__main__":
    serve(Vote, 80)
