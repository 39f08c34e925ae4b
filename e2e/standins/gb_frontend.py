"""Test stand-in for the image gb-frontend:v5 (us-docker.pkg.dev/google-samples/containers/gke/
gb-frontend:v5, also tagged gcr.io/google-samples/gb-frontend:v5: PHP 7.4 under Apache with
Predis 2).

Honours the image's contract, as read in GoogleCloudPlatform/kubernetes-engine-samples'
quickstarts/guestbook/php-redis (guestbook.php, Dockerfile, cloudbuild.yaml):
- HTTP on port 80 (fixed), every interface; `/` serves the page.
- `GET /guestbook.php?cmd=set&value=V`: a new client per request to `redis-leader`, port 6379,
  no password; `SET guestbook V`; answers `{"message": "Updated"}`.
- `GET /guestbook.php?cmd=<anything else>`: a new client to `redis-follower`, port 6379;
  `GET guestbook`; answers `{"data": "<value>"}` with the value pasted in unescaped (an absent
  key gives `{"data": ""}`).
- The key is always `guestbook`: the `key` parameter the older kubernetes/examples frontend
  honours (`key=messages`) is ignored by this image.
- With env GET_HOSTS_FROM=env the hosts are env REDIS_LEADER_SERVICE_HOST and
  REDIS_FOLLOWER_SERVICE_HOST instead (the port stays 6379); any other value, or none, means
  the names above.
- A Redis failure is PHP's uncaught-exception fatal error printed into a 200 response
  (display_errors is on), so callers must read the body, not the status.
- Without `cmd`, guestbook.php prints phpinfo(): a 200 HTML page here too.

Deliberately not modelled: the original page and its scripts, phpinfo()'s content, PHP's
notices (a missing `value` stores the empty string without the notice text), PHP's array
parameters, Apache's other behaviour.
"""

import os
import traceback
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common import Handler, page, serve

KEY = "guestbook"


def client(host):
    # Predis' defaults: connect timeout 5 s, no retries.
    return redis.Redis(host=host, port=6379, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))


def hosts():
    """(leader, follower) as guestbook.php chooses them."""
    if os.getenv("GET_HOSTS_FROM") == "env":
        return (
            os.getenv("REDIS_LEADER_SERVICE_HOST", ""),
            os.getenv("REDIS_FOLLOWER_SERVICE_HOST", ""),
        )
    return "redis-leader", "redis-follower"


def php_param(query, name):
    """$_GET[name]: the last occurrence wins."""
    values = query.get(name)
    return values[-1] if values else None


class Frontend(Handler):
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            return self.reply(200, INDEX)
        if url.path != "/guestbook.php":
            return self.reply(404, page("404 Not Found", "<h1>Not Found</h1>"))
        query = parse_qs(url.query, keep_blank_values=True)
        cmd = php_param(query, "cmd")
        if cmd is None:
            return self.reply(200, page("phpinfo()", "<p>phpinfo() is not modelled here.</p>"))
        leader, follower = hosts()
        try:
            if not (leader if cmd == "set" else follower):
                # Predis given PHP's `false` for an unset variable: a connection error.
                raise redis.ConnectionError("no host: GET_HOSTS_FROM=env without the variable")
            if cmd == "set":
                leader_client = client(leader)
                try:
                    leader_client.set(KEY, php_param(query, "value") or "")
                finally:
                    leader_client.close()
                body = '{"message": "Updated"}'
            else:
                follower_client = client(follower)
                try:
                    value = follower_client.get(KEY)
                finally:
                    follower_client.close()
                body = '{"data": "' + (value or b"").decode("utf-8", "replace") + '"}'
        except Exception as e:
            traceback.print_exc()
            # What PHP prints for an uncaught exception with display_errors on (status 200).
            body = (
                f"<br />\n<b>Fatal error</b>:  Uncaught {type(e).__name__}: {e}"
                " in /var/www/html/guestbook.php<br />\n"
            )
        self.reply(200, body, "application/json")


INDEX = page(
    "Guestbook",
    "<h1>Guestbook</h1>\n<p>Stand-in for gb-frontend:v5: "
    "<code>/guestbook.php?cmd=set&amp;value=...</code> and "
    "<code>/guestbook.php?cmd=get</code>.</p>",
)


if __name__ == "__main__":
    serve(Frontend, 80)
