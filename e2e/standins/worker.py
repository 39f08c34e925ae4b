"""Test stand-in for the image dockersamples/examplevotingapp_worker (.NET, Npgsql 4.1 and
StackExchange.Redis 2.2).

Honours the image's contract, as read in example-voting-app's worker/Program.cs:
- Postgres first: `Server=db;Username=postgres;Password=postgres;` (port 5432, database
  postgres, no SSL, connect timeout 15 s), retried every second while the connect fails (name
  resolution included); then `CREATE TABLE IF NOT EXISTS votes (id VARCHAR(255) NOT NULL
  UNIQUE, vote VARCHAR(255) NOT NULL)`; autocommit, as Npgsql runs without a transaction.
- Then Redis: the name `redis` is resolved once per connect and the first IPv4 address kept;
  a name that does not resolve is fatal. Connects are retried every second to that address.
- Every 100 ms: if the Redis connection has closed, "Reconnecting Redis" (resolve again,
  connect); then `LPOP votes`. A vote: if the Postgres connection is no longer open, reconnect
  and drop the vote it holds; otherwise `INSERT`, and on any database error
  `UPDATE votes SET vote = @vote WHERE id = @id`. No vote: `SELECT 1` as a keep-alive, on the
  *first* Postgres connection (the original's command object stays bound to it).
- Any other error (a Redis error reply such as READONLY or WRONGTYPE, a timeout, a failed
  UPDATE, a failed keep-alive, a payload that is not JSON) ends the process with exit code 1,
  for the kubelet to restart it.
What follows, as in the original: after a failover it keeps popping from the old master's
address until an error; a Postgres that goes away mid-stream costs the vote just popped (the
INSERT fails, the fallback UPDATE fails, the process exits with it); an idle worker exits on
its next keep-alive.

Deliberately not modelled: StackExchange.Redis's own background reconnects and its refusal to
send LPOP to a server it knows to be a replica (here the replica answers READONLY: exit 1
either way), Npgsql's 30 s command timeout, .NET's exception texts.
"""

import json
import socket
import sys
import time
import traceback

import psycopg
import redis

from common import err, log

DB = dict(host="db", port=5432, user="postgres", password="postgres", dbname="postgres")
CREATE_TABLE = """CREATE TABLE IF NOT EXISTS votes (
                      id VARCHAR(255) NOT NULL UNIQUE,
                      vote VARCHAR(255) NOT NULL
                  )"""


def open_db():
    while True:
        try:
            # Npgsql speaks UTF8 whatever the database's encoding (even SQL_ASCII).
            conn = psycopg.connect(
                **DB, sslmode="disable", connect_timeout=15, autocommit=True, client_encoding="UTF8"
            )
            break
        except (OSError, psycopg.Error):
            err("Waiting for db")
            time.sleep(1)
    err("Connected to db")
    conn.execute(CREATE_TABLE)
    return conn


def first_ipv4(hostname):
    # Resolution errors are not caught: the original lets them end the process.
    return socket.getaddrinfo(hostname, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


def open_redis(hostname):
    # By address, as the original does, so a Service that moves is not followed until the next
    # reconnect.
    ip = first_ipv4(hostname)
    log(f"Found redis at {ip}")
    while True:
        err("Connecting to redis")
        conn = redis.Connection(host=ip, port=6379, socket_timeout=5, socket_connect_timeout=5)
        try:
            conn.connect()
            return conn
        except redis.ConnectionError:
            err("Waiting for redis")
            time.sleep(1)


def connected(conn):
    """Whether the server has not closed the connection (StackExchange.Redis's IsConnected,
    which learns of a close from its reader at once)."""
    try:
        conn.can_read(timeout=0)
        return True
    except redis.ConnectionError:
        return False


def lpop(conn):
    conn.send_command("LPOP", "votes")
    return conn.read_response()  # an error reply is raised


def parse(raw):
    vote = json.loads(raw)
    voter_id, choice = vote.get("voter_id"), vote.get("vote")
    if voter_id is None or choice is None:
        # Npgsql refuses a parameter without a value; that error is not a database error.
        raise ValueError(f"vote without voter_id or vote: {raw!r}")
    return str(voter_id), str(choice)


def update_vote(conn, voter_id, choice):
    try:
        conn.execute("INSERT INTO votes (id, vote) VALUES (%s, %s)", (voter_id, choice))
    except psycopg.Error:
        # The original catches every database error here, not only the duplicate key.
        conn.execute("UPDATE votes SET vote = %s WHERE id = %s", (choice, voter_id))


def main():
    try:
        pg = open_db()
        red = open_redis("redis")
        keep_alive_conn = pg
        while True:
            time.sleep(0.1)
            if not connected(red):
                log("Reconnecting Redis")
                red = open_redis("redis")
            raw = lpop(red)
            if raw is not None:
                voter_id, choice = parse(raw)
                log(f"Processing vote for '{choice}' by '{voter_id}'")
                if pg.closed:
                    log("Reconnecting DB")
                    pg = open_db()  # the vote just popped is dropped, as in the original
                else:
                    update_vote(pg, voter_id, choice)
            else:
                keep_alive_conn.execute("SELECT 1")
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        return 1


if __name__ == "__main__":
    sys.exit(main())
