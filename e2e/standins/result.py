"""Test stand-in for the image dockersamples/examplevotingapp_result (Node: express, pg 8.11,
socket.io 4.7 / engine.io 6.5).

Honours the image's contract, as read in example-voting-app's result/server.js, package.json,
package-lock.json and Dockerfile:
- HTTP on env PORT (the image sets PORT=80; an empty PORT means server.js's 4000), every
  interface; `/` serves the page.
- Postgres at `postgres://postgres:postgres@db/postgres`, no SSL: connects are retried every
  second ("Waiting for db"), 1000 times at most ("Giving up", then no scores ever); the first
  connection is kept for the life of the process and never replaced.
- Every second after the previous query finished: `SELECT vote, COUNT(id) AS count FROM votes
  GROUP BY vote`; on success the scores `{"a": 0, "b": 0}` updated by the rows are sent to every
  socket.io client as the event `scores` whose one argument is that object as a JSON string; on
  a query error (such as the table not existing yet) "Error performing query: ..." is logged and
  the next query runs a second later on the same connection.
- The connection itself failing (the server closing it: a restart, a failover that stops the
  old primary, a terminated backend) ends the process with exit code 1: pg's client emits an
  `error` event that nothing listens to once pg-pool has handed the client out, and Node dies
  of it. A server that vanishes without closing the connection leaves the query waiting: the
  tally freezes and nothing is logged.
- socket.io: Engine.IO protocol 4 over HTTP long-polling at `/socket.io/` (handshake, `40`
  namespace connect answered with `40{"sid":...}`, then `42["message",{"text":"Welcome!"}]` as
  the server's connection handler emits, then `42["scores","{\\"a\\":N,\\"b\\":M}"]` every
  second), pings every 25 s, sessions closed 20 s after an unanswered ping.

Deliberately not modelled: the WebSocket transport (the handshake offers no upgrade, so a
browser stays on polling), the original page, its scripts and static files, socket.io's
`subscribe` rooms (accepted, no effect), binary packets, JSONP, CORS, the Engine.IO 3 protocol.
"""

import json
import os
import secrets
import select
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import psycopg

from common import Handler, err, log, page, serve

DSN = "postgres://postgres:postgres@db/postgres"
QUERY = "SELECT vote, COUNT(id) AS count FROM votes GROUP BY vote"
PING_INTERVAL = 25.0
PING_TIMEOUT = 20.0
HANDSHAKE = {"upgrades": [], "pingInterval": 25000, "pingTimeout": 20000, "maxPayload": 1000000}
SEPARATOR = "\x1e"
NEW = object()  # a request without a sid: a handshake


def js_json(value):
    """JSON as JavaScript's JSON.stringify writes it: no spaces, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Session:
    """One Engine.IO client: its queued packets and whether it joined the main namespace."""

    def __init__(self, sid):
        self.sid = sid
        self.packets = []
        self.joined = False
        self.closed = False
        self.polling = False
        self.last_pong = time.monotonic()
        self.wake = threading.Condition()

    def send(self, packet):
        with self.wake:
            if not self.closed:
                self.packets.append(packet)
                self.wake.notify_all()

    def close(self):
        with self.wake:
            self.closed = True
            self.wake.notify_all()


class Sessions:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_sid = {}

    def open(self):
        session = Session(secrets.token_urlsafe(15))
        with self.lock:
            self.by_sid[session.sid] = session
        return session

    def get(self, sid):
        with self.lock:
            return self.by_sid.get(sid)

    def drop(self, session):
        session.close()
        with self.lock:
            self.by_sid.pop(session.sid, None)

    def emit(self, event, *args):
        """io.sockets.emit: to every client connected to the main namespace."""
        packet = "42" + js_json([event, *args])
        with self.lock:
            joined = [s for s in self.by_sid.values() if s.joined]
        for s in joined:
            s.send(packet)

    def ping_forever(self):
        while True:
            time.sleep(PING_INTERVAL)
            sent = time.monotonic()
            with self.lock:
                sessions = list(self.by_sid.values())
            for s in sessions:
                s.send("2")
            time.sleep(PING_TIMEOUT)
            for s in sessions:
                if s.last_pong < sent:
                    self.drop(s)


SESSIONS = Sessions()


def db_connection():
    for _ in range(1000):
        try:
            # pg speaks UTF8 whatever the database's encoding (even SQL_ASCII).
            return psycopg.connect(DSN, sslmode="disable", autocommit=True, client_encoding="UTF8")
        except (OSError, psycopg.Error):
            err("Waiting for db")
            time.sleep(1)
    err("Giving up")
    return None


def closed_while_idle(conn, seconds):
    """Waits `seconds`; True if the server closed the connection meanwhile (pg's client learns of
    that at once from its socket, query or not)."""
    fd = conn.pgconn.socket
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        try:
            conn.pgconn.consume_input()
            conn.pgconn.is_busy()  # parses what arrived: a FATAL goes to the notice handler
        except psycopg.OperationalError:
            return True
        if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
            return True
        time.sleep(0.05)  # readable yet open: do not spin on a half-read message
    return False


def die(why):
    """What Node does with an uncaught error or an `error` event nothing listens to: print it
    and exit 1."""
    err(why)
    sys.stderr.flush()
    os._exit(1)


def poll_scores():
    try:
        query_forever()
    except Exception as e:
        # An exception in a pg callback is uncaught in Node: the process dies of it.
        die(f"Uncaught {type(e).__name__}: {e}")


def query_forever():
    conn = db_connection()
    if conn is None:
        return
    log("Connected to db")
    # A server ending an idle connection says why in a FATAL message first; pg turns it into
    # the client's `error` event.
    fatal = []
    conn.add_notice_handler(
        lambda d: fatal.append(d.message_primary) if d.severity_nonlocalized == "FATAL" else None
    )
    while True:
        try:
            rows = conn.execute(QUERY).fetchall()
        except psycopg.Error as e:
            # As pg logs a server error: one line.
            err(f"Error performing query: error: {e.diag.message_primary or e}")
            if conn.closed:
                # The failed query was reported to its callback; the socket's end then reaches
                # the client as an `error` event.
                die("Unhandled 'error' event\nError: Connection terminated unexpectedly")
        else:
            votes = {"a": 0, "b": 0}
            for vote, count in rows:
                votes[vote] = int(count)
            SESSIONS.emit("scores", js_json(votes))
        if closed_while_idle(conn, 1.0):
            why = f"error: {fatal[-1]}" if fatal else "Error: Connection terminated unexpectedly"
            die(f"Unhandled 'error' event\n{why}")


class Result(Handler):
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/socket.io/":
            return self.poll(parse_qs(url.query))
        if url.path in ("/", "/index.html"):
            return self.reply(200, INDEX)
        self.reply(404, f"Cannot GET {url.path}\n", "text/plain; charset=utf-8")

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/socket.io/":
            return self.reply(404, f"Cannot POST {url.path}\n", "text/plain; charset=utf-8")
        session = self.session(parse_qs(url.query))
        if session is None:
            return
        if session is NEW:
            return self.error(2, "Bad handshake method")
        length = int(self.headers.get("Content-Length") or 0)
        for packet in self.rfile.read(length).decode("utf-8").split(SEPARATOR):
            self.receive(session, packet)
        self.reply(200, "ok")

    def error(self, code, message):
        self.reply(400, js_json({"code": code, "message": message}), "application/json")

    def session(self, query):
        """The session a request names, after Engine.IO's checks; None once it has answered."""
        if query.get("EIO") != ["4"]:
            self.error(5, "Unsupported protocol version")
            return None
        if query.get("transport") != ["polling"]:
            self.error(0, "Transport unknown")
            return None
        if "sid" not in query:
            return NEW
        session = SESSIONS.get(query["sid"][0])
        if session is None:
            self.error(1, "Session ID unknown")
        return session

    def poll(self, query):
        session = self.session(query)
        if session is None:
            return
        if session is NEW:
            opened = SESSIONS.open()
            return self.packets(["0" + js_json({"sid": opened.sid, **HANDSHAKE})])
        with session.wake:
            overlap = session.polling
            session.polling = True
        if overlap:
            # engine.io closes a session that polls twice at once.
            SESSIONS.drop(session)
            return self.error(3, "Bad request")
        with session.wake:
            while not session.packets and not session.closed:
                session.wake.wait()
            packets, session.packets = session.packets, []
            session.polling = False
        self.packets(packets or ["1"])

    def packets(self, packets):
        self.reply(200, SEPARATOR.join(packets), "text/plain; charset=UTF-8")

    def receive(self, session, packet):
        if packet == "3":
            session.last_pong = time.monotonic()
        elif packet == "1":
            SESSIONS.drop(session)
        elif packet.startswith("40"):
            nsp = packet[2:].split(",", 1)[0] if packet[2:3] == "/" else "/"
            if nsp != "/":
                session.send("44" + nsp + "," + js_json({"message": "Invalid namespace"}))
                return
            session.joined = True
            session.send("40" + js_json({"sid": secrets.token_urlsafe(15)}))
            # server.js's connection handler greets every client.
            session.send("42" + js_json(["message", {"text": "Welcome!"}]))
        elif packet.startswith("41"):
            session.joined = False
        # Client events (`subscribe`) have no effect on what is sent.


INDEX = page(
    "Cats vs Dogs -- Result",
    "<h1>Result</h1>\n<p>Stand-in for examplevotingapp_result: the tally is sent as socket.io "
    "<code>scores</code> events at <code>/socket.io/</code> (long-polling only).</p>",
)


def port():
    # The image's ENV sets PORT=80; server.js falls back to 4000 when PORT is empty.
    return int(os.environ.get("PORT", "80") or "4000")


if __name__ == "__main__":
    threading.Thread(target=SESSIONS.ping_forever, daemon=True).start()
    threading.Thread(target=poll_scores, daemon=True).start()
    serve(Result, port())
