//! The stock apps as a browser uses them: votes through the vote page's form with its
//! `voter_id` cookie, the tally from the result page's socket.io `scores` events (Engine.IO 4
//! long-polling, what socket.io 4.7 in the real result image speaks), and the guestbook
//! frontend's `guestbook.php`. Works the same against the real images and against the
//! stand-ins in e2e/standins. Shared by the e2e suite and tests/standins (each uses part of it).
#![allow(dead_code)]

use reqwest::{Client, StatusCode, Url};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Votes per option, as the result page's `scores` event carries them (`{"a":N,"b":M}`).
pub type Tally = BTreeMap<String, u64>;

/// Engine.IO's packet separator in a polling payload.
const SEPARATOR: char = '\x1e';

fn http() -> Client {
    // Never through a proxy from the environment: tests talk to loopback and the pod network only.
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("an HTTP client")
}

fn url(base: &str, path: &str) -> Result<Url, String> {
    Url::parse(base)
        .and_then(|b| b.join(path))
        .map_err(|e| format!("{base}{path}: {e}"))
}

/// `key=value` pairs, percent-encoded as a form or query string.
fn encode(pairs: &[(&str, &str)]) -> String {
    let mut u = Url::parse("http://encode.invalid/").expect("static URL");
    u.query_pairs_mut().extend_pairs(pairs);
    u.query().unwrap_or_default().to_string()
}

/// The voter id a first visit to the vote page at `base` hands out (its `voter_id` cookie), as
/// a browser gets it before voting: votes cast with it can be retried without counting twice.
pub async fn new_voter(base: &str) -> Result<String, String> {
    let resp = http()
        .get(url(base, "/")?)
        .send()
        .await
        .map_err(|e| format!("GET {base}: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("GET {base}: {}", resp.status()));
    }
    voter_cookie(&resp).ok_or_else(|| format!("GET {base}: no voter_id cookie"))
}

fn voter_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("voter_id="))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}

/// Casts `choice` ("a" or "b") on the vote page at `base` (`http://host:port/`) as the voter
/// whose cookie is `voter_id` (a new voter when `None`). Returns the voter id the page set in
/// its cookie. A 200 means the vote is queued in Redis; anything else is an error.
pub async fn vote(base: &str, voter_id: Option<&str>, choice: &str) -> Result<String, String> {
    let mut req = http()
        .post(url(base, "/")?)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(&[("vote", choice)]));
    if let Some(id) = voter_id {
        req = req.header("Cookie", format!("voter_id={id}"));
    }
    let resp = req.send().await.map_err(|e| format!("POST {base}: {e}"))?;
    let status = resp.status();
    let cookie = voter_cookie(&resp);
    if status != StatusCode::OK {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("POST {base}: {status}: {body}"));
    }
    cookie.ok_or_else(|| format!("POST {base}: no voter_id cookie"))
}

/// A socket.io client on Engine.IO 4 long-polling, joined to the main namespace.
pub struct SocketIo {
    http: Client,
    endpoint: Url,
    sid: String,
}

impl SocketIo {
    /// Handshake and namespace connect against the result page at `base`.
    pub async fn connect(base: &str) -> Result<Self, String> {
        let http = http();
        let mut endpoint = url(base, "/socket.io/")?;
        endpoint.set_query(Some("EIO=4&transport=polling"));
        let open = get_text(&http, endpoint.clone()).await?;
        let handshake: serde_json::Value = open
            .strip_prefix('0')
            .and_then(|j| serde_json::from_str(j).ok())
            .ok_or_else(|| format!("not an Engine.IO open packet: {open:?}"))?;
        let sid = handshake["sid"]
            .as_str()
            .ok_or_else(|| format!("no sid in {open:?}"))?
            .to_string();
        endpoint.set_query(Some(&format!(
            "EIO=4&transport=polling&{}",
            encode(&[("sid", &sid)])
        )));
        let s = Self {
            http,
            endpoint,
            sid,
        };
        s.post("40").await?;
        Ok(s)
    }

    async fn post(&self, packet: &str) -> Result<(), String> {
        let resp = self
            .http
            .post(self.endpoint.clone())
            .header("Content-Type", "text/plain;charset=UTF-8")
            .body(packet.to_string())
            .send()
            .await
            .map_err(|e| format!("socket.io POST: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("socket.io POST {packet:?}: {}", resp.status()));
        }
        Ok(())
    }

    /// One long poll: the events (name, arguments) it brought, after answering pings.
    pub async fn poll(&self) -> Result<Vec<(String, Vec<serde_json::Value>)>, String> {
        let payload = get_text(&self.http, self.endpoint.clone()).await?;
        let mut events = Vec::new();
        for packet in payload.split(SEPARATOR) {
            match packet.get(..1) {
                Some("2") => self.post("3").await?,
                Some("1") => return Err(format!("session {} closed by the server", self.sid)),
                Some("4") => {
                    let msg = &packet[1..];
                    if let Some(json) = msg.strip_prefix('2') {
                        let mut v: Vec<serde_json::Value> = serde_json::from_str(json)
                            .map_err(|e| format!("event {packet:?}: {e}"))?;
                        if v.is_empty() {
                            continue;
                        }
                        let name = v.remove(0).as_str().unwrap_or_default().to_string();
                        events.push((name, v));
                    } else if msg.starts_with('4') {
                        return Err(format!("namespace refused: {packet:?}"));
                    }
                }
                _ => {}
            }
        }
        Ok(events)
    }

    /// The next `scores` event.
    pub async fn next_scores(&self, timeout: Duration) -> Result<Tally, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let events = tokio::time::timeout_at(deadline.into(), self.poll())
                .await
                .map_err(|_| format!("no scores within {timeout:?}"))??;
            if let Some(t) = events
                .iter()
                .rev()
                .find_map(|(name, args)| scores(name, args))
            {
                return Ok(t);
            }
        }
        Err(format!("no scores within {timeout:?}"))
    }
}

/// The tally of a `scores` event: one argument, a JSON object as a string.
fn scores(name: &str, args: &[serde_json::Value]) -> Option<Tally> {
    if name != "scores" {
        return None;
    }
    serde_json::from_str(args.first()?.as_str()?).ok()
}

async fn get_text(http: &Client, u: Url) -> Result<String, String> {
    let resp = http
        .get(u.clone())
        .send()
        .await
        .map_err(|e| format!("GET {u}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("GET {u}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("GET {u}: {status}: {body}"));
    }
    Ok(body)
}

/// The tally the result page at `base` shows next.
pub async fn tally(base: &str, timeout: Duration) -> Result<Tally, String> {
    SocketIo::connect(base).await?.next_scores(timeout).await
}

/// Waits until the result page at `base` shows exactly `want` (missing options count 0);
/// on timeout, the error names the last tally seen.
pub async fn wait_for_tally(base: &str, want: &Tally, timeout: Duration) -> Result<Tally, String> {
    let deadline = Instant::now() + timeout;
    let normal = |t: &Tally| -> Tally {
        t.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    };
    let mut last = String::from("no scores at all");
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let io = match SocketIo::connect(base).await {
            Ok(io) => io,
            Err(e) => {
                last = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while Instant::now() < deadline {
            match io.next_scores(left).await {
                Ok(t) if normal(&t) == normal(want) => return Ok(t),
                Ok(t) => last = format!("{t:?}"),
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
    }
    Err(format!(
        "the result page did not show {want:?} within {timeout:?}; last: {last}"
    ))
}

/// Stores `value` through the guestbook frontend at `base` (`guestbook.php?cmd=set`). The
/// frontend answers 200 even when Redis failed (PHP prints the fatal error): only its
/// `{"message": "Updated"}` means stored.
pub async fn guestbook_set(base: &str, value: &str) -> Result<(), String> {
    let mut u = url(base, "/guestbook.php")?;
    u.set_query(Some(&encode(&[
        ("cmd", "set"),
        ("key", "messages"),
        ("value", value),
    ])));
    let body = get_text(&http(), u).await?;
    if body.trim() == r#"{"message": "Updated"}"# {
        Ok(())
    } else {
        Err(format!("guestbook set: {body}"))
    }
}

/// The stored value, read through the guestbook frontend at `base` (`guestbook.php?cmd=get`).
/// The frontend pastes the value into its JSON unescaped, so it is cut out of the text.
pub async fn guestbook_get(base: &str) -> Result<String, String> {
    let mut u = url(base, "/guestbook.php")?;
    u.set_query(Some(&encode(&[("cmd", "get"), ("key", "messages")])));
    let body = get_text(&http(), u).await?;
    body.trim()
        .strip_prefix(r#"{"data": ""#)
        .and_then(|b| b.strip_suffix(r#""}"#))
        .map(str::to_string)
        .ok_or_else(|| format!("guestbook get: {body}"))
}
