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
}

fn lenient_lag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_i64())
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Cluster {
    #[serde(default)]
    pub members: Vec<Member>,
}

impl Cluster {
    pub fn leader(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.role == "leader" || m.role == "standby_leader")
    }
}

fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(4))
        .build()
}

/// `GET /cluster` from the member at `ip`.
pub async fn cluster(ip: &str, port: u16) -> Result<Cluster, PatroniError> {
    let addr = format!("{ip}:{port}");
    let err = |e: reqwest::Error| PatroniError {
        addr: addr.clone(),
        message: e.to_string(),
    };
    let resp = client()
        .map_err(err)?
        .get(format!("http://{addr}/cluster"))
        .send()
        .await
        .map_err(err)?;
    resp.error_for_status()
        .map_err(err)?
        .json::<Cluster>()
        .await
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster() {
        let text = r#"{"members": [
            {"name": "db-0", "role": "leader", "state": "running", "host": "10.244.129.2", "port": 5432, "timeline": 1},
            {"name": "db-1", "role": "replica", "state": "streaming", "host": "10.244.130.2", "port": 5432, "timeline": 1, "lag": 0},
            {"name": "db-2", "role": "replica", "state": "starting", "lag": "unknown"}
        ], "scope": "db"}"#;
        let c: Cluster = serde_json::from_str(text).unwrap();
        assert_eq!(c.leader().map(|m| m.name.as_str()), Some("db-0"));
        assert_eq!(c.members[1].lag, Some(0));
        assert_eq!(c.members[2].lag, None);
    }
}
