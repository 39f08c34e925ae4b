//! Patroni's REST API on port 8008, by pod address.

use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("Patroni at {addr}: {message}")]
pub struct PatroniError {
    pub addr: String,
    pub message: String,
}

/// One member as `GET /cluster` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub name: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub timeline: Option<i64>,
    /// Bytes behind the leader (Patroni reports a number, or "unknown").
    #[serde(default, deserialize_with = "lenient_lag")]
    pub lag: Option<i64>,
    /// A changed setting takes effect only after PostgreSQL restarts.
    #[serde(default)]
    pub pending_restart: bool,
}

fn lenient_lag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_i64())
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Cluster {
    #[serde(default)]
    pub members: Vec<Member>,
}

impl Member {
    /// A streaming standby of the leader, synchronous or not.
    pub fn is_replica(&self) -> bool {
        matches!(
            self.role.as_str(),
            "replica" | "sync_standby" | "quorum_standby"
        )
    }
}

impl Cluster {
    pub fn leader(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.role == "leader" || m.role == "standby_leader")
    }
}

/// One call to the member at `ip`; `Ok(body)` on a 2xx answer.
async fn call(
    ip: &str,
    port: u16,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<String, PatroniError> {
    let addr = format!("{ip}:{port}");
    let err = |message: String| PatroniError {
        addr: addr.clone(),
        message,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut req = client.request(method, format!("http://{addr}{path}"));
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| err(e.to_string()))?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(err(format!("{path} answered {status}: {}", text.trim())))
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    ip: &str,
    port: u16,
    text: &str,
) -> Result<T, PatroniError> {
    serde_json::from_str(text).map_err(|e| PatroniError {
        addr: format!("{ip}:{port}"),
        message: format!("unexpected answer: {e}"),
    })
}

/// `GET /cluster` from the member at `ip`.
pub async fn cluster(ip: &str, port: u16) -> Result<Cluster, PatroniError> {
    let text = call(ip, port, reqwest::Method::GET, "/cluster", None, QUICK).await?;
    parse(ip, port, &text)
}

/// What a member says of itself (`GET /patroni`), live rather than as last written to the DCS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct MemberState {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub pending_restart: bool,
}

/// `GET /patroni` from the member at `ip`.
pub async fn member_state(ip: &str, port: u16) -> Result<MemberState, PatroniError> {
    let text = call(ip, port, reqwest::Method::GET, "/patroni", None, QUICK).await?;
    parse(ip, port, &text)
}

/// `GET /config`: the dynamic configuration Patroni keeps in its DCS.
pub async fn config(ip: &str, port: u16) -> Result<serde_json::Value, PatroniError> {
    let text = call(ip, port, reqwest::Method::GET, "/config", None, QUICK).await?;
    parse(ip, port, &text)
}

/// `PATCH /config`: merges `patch` into the dynamic configuration (a null removes a key).
pub async fn patch_config(
    ip: &str,
    port: u16,
    patch: &serde_json::Value,
) -> Result<(), PatroniError> {
    call(
        ip,
        port,
        reqwest::Method::PATCH,
        "/config",
        Some(patch),
        QUICK,
    )
    .await
    .map(drop)
}

/// `POST /switchover`: the leader hands its role to `candidate` (Patroni demotes it
/// cleanly, so replicas receive all of its WAL first).
pub async fn switchover(
    ip: &str,
    port: u16,
    leader: &str,
    candidate: &str,
) -> Result<(), PatroniError> {
    let body = serde_json::json!({"leader": leader, "candidate": candidate});
    call(
        ip,
        port,
        reqwest::Method::POST,
        "/switchover",
        Some(&body),
        SLOW,
    )
    .await
    .map(drop)
}

/// `POST /restart` on the member at `ip`: restarts its PostgreSQL (not the pod).
pub async fn restart(ip: &str, port: u16) -> Result<(), PatroniError> {
    let body = serde_json::json!({});
    call(
        ip,
        port,
        reqwest::Method::POST,
        "/restart",
        Some(&body),
        SLOW,
    )
    .await
    .map(drop)
}

/// Reads: short, so a dead member does not hold up a reconcile.
const QUICK: Duration = Duration::from_secs(4);
/// Switchover and restart answer once PostgreSQL is back.
const SLOW: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster() {
        let text = r#"{"members": [
            {"name": "db-0", "role": "leader", "state": "running", "host": "10.244.129.2", "port": 5432, "timeline": 1},
            {"name": "db-1", "role": "replica", "state": "streaming", "host": "10.244.130.2", "port": 5432, "timeline": 1, "lag": 0},
            {"name": "db-2", "role": "replica", "state": "starting", "lag": "unknown", "pending_restart": true}
        ], "scope": "db"}"#;
        let c: Cluster = serde_json::from_str(text).unwrap();
        assert_eq!(c.leader().map(|m| m.name.as_str()), Some("db-0"));
        assert_eq!(c.members[1].lag, Some(0));
        assert_eq!(c.members[2].lag, None);
        assert!(c.members[2].pending_restart && !c.members[1].pending_restart);
    }
}
