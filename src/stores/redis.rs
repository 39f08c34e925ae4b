//! Redis and Sentinel, by pod address: replication state, role changes, Sentinel monitoring,
//! and the `+switch-master` notifications the operator follows failovers by.

use futures::{Stream, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{addr}: {source}")]
    Redis {
        addr: String,
        source: redis::RedisError,
    },
    #[error("{addr}: no answer within {TIMEOUT:?}")]
    Timeout { addr: String },
}

impl StoreError {
    /// The server refused the password (`WRONGPASS`), or wanted one it was not given
    /// (`NOAUTH`): it answers, but not to these credentials. Status must say so, not that the
    /// server cannot be reached.
    pub fn is_auth(&self) -> bool {
        let StoreError::Redis { source, .. } = self else {
            return false;
        };
        source.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(source.code(), Some("NOAUTH" | "WRONGPASS"))
            || ["NOAUTH", "WRONGPASS"]
                .iter()
                .any(|c| source.to_string().contains(c))
    }
}

/// Where a Redis or Sentinel server listens, and its password.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
    pub password: Option<String>,
}

impl Endpoint {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn client(&self) -> Result<redis::Client, StoreError> {
        let err = |source| StoreError::Redis {
            addr: self.addr(),
            source,
        };
        let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        let info = ConnectionAddr::Tcp(self.ip.clone(), self.port)
            .into_connection_info()
            .map_err(err)?
            .set_redis_settings(settings);
        redis::Client::open(info).map_err(err)
    }

    pub async fn connect(&self) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let client = self.client()?;
        match tokio::time::timeout(
            TIMEOUT * 2,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(r) => r.map_err(|source| StoreError::Redis {
                addr: self.addr(),
                source,
            }),
            Err(_) => Err(StoreError::Timeout { addr: self.addr() }),
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        con: &mut MultiplexedConnection,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(TIMEOUT, cmd.query_async::<T>(con)).await {
            Ok(r) => r.map_err(|source| StoreError::Redis {
                addr: self.addr(),
                source,
            }),
            Err(_) => Err(StoreError::Timeout { addr: self.addr() }),
        }
    }
}

/// A server's replication state, from `INFO replication`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    pub is_master: bool,
    /// For a replica: its master.
    pub master_host: Option<String>,
    pub master_port: Option<u16>,
    pub link_up: bool,
    /// For a master: replicas connected and online, by address.
    pub replicas: Vec<ReplicaLink>,
    pub replid: String,
    /// The master's offset, or the offset a replica has processed.
    pub offset: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLink {
    pub ip: String,
    pub online: bool,
    pub offset: i64,
}

/// Parses `INFO replication`.
pub fn parse_replication(text: &str) -> Replication {
    let fields: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .collect();
    let num = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok());
    let is_master = fields.get("role") == Some(&"master");
    let replicas = fields
        .iter()
        .filter(|(k, _)| {
            k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()) && k.len() > 5
        })
        .map(|(_, v)| {
            let kv: BTreeMap<&str, &str> = v.split(',').filter_map(|p| p.split_once('=')).collect();
            ReplicaLink {
                ip: kv.get("ip").map(|s| s.to_string()).unwrap_or_default(),
                online: kv.get("state") == Some(&"online"),
                offset: kv.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0),
            }
        })
        .collect();
    Replication {
        is_master,
        master_host: if is_master {
            None
        } else {
            fields.get("master_host").map(|s| s.to_string())
        },
        master_port: if is_master {
            None
        } else {
            num("master_port").and_then(|p| u16::try_from(p).ok())
        },
        link_up: fields.get("master_link_status") == Some(&"up"),
        replicas,
        replid: fields
            .get("master_replid")
            .map(|s| s.to_string())
            .unwrap_or_default(),
        offset: if is_master {
            num("master_repl_offset")
        } else {
            num("slave_repl_offset").or(num("master_repl_offset"))
        }
        .unwrap_or(0),
    }
}

pub async fn replication(ep: &Endpoint) -> Result<(Replication, i64), StoreError> {
    let mut con = ep.connect().await?;
    let text: String = ep
        .query(&mut con, redis::cmd("INFO").arg("replication"))
        .await?;
    let keys: i64 = ep.query(&mut con, &redis::cmd("DBSIZE")).await?;
    Ok((parse_replication(&text), keys))
}

/// `REPLICAOF host port`, or `REPLICAOF NO ONE` with `None`.
pub async fn replicaof(ep: &Endpoint, master: Option<(&str, u16)>) -> Result<(), StoreError> {
    let mut con = ep.connect().await?;
    let mut cmd = redis::cmd("REPLICAOF");
    match master {
        Some((host, port)) => cmd.arg(host).arg(port),
        None => cmd.arg("NO").arg("ONE"),
    };
    ep.query::<()>(&mut con, &cmd).await
}

/// Blocks writes on a master for `ms` (reads go on), so replicas can catch up before a
/// planned switchover: writes sent meanwhile run after the pause, on what is by then a
/// replica, and fail instead of being acknowledged and lost.
pub async fn pause_writes(ep: &Endpoint, ms: u64) -> Result<(), StoreError> {
    let mut con = ep.connect().await?;
    ep.query::<()>(
        &mut con,
        redis::cmd("CLIENT").arg("PAUSE").arg(ms).arg("WRITE"),
    )
    .await
}

pub async fn unpause(ep: &Endpoint) -> Result<(), StoreError> {
    let mut con = ep.connect().await?;
    ep.query::<()>(&mut con, redis::cmd("CLIENT").arg("UNPAUSE"))
        .await
}

/// Waits (up to `within`) until every replica connected to the master at `ep` has processed
/// everything the master has; true when they all caught up.
pub async fn replicas_caught_up(
    ep: &Endpoint,
    want: usize,
    within: Duration,
) -> Result<bool, StoreError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (r, _) = replication(ep).await?;
        let caught = r
            .replicas
            .iter()
            .filter(|l| l.online && l.offset >= r.offset)
            .count();
        if caught >= want {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one Sentinel knows about the master group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentinelView {
    /// The address it names as master, if it monitors the group.
    pub master: Option<(String, u16)>,
    /// Fields of `SENTINEL MASTER` (flags, quorum, num-slaves, num-other-sentinels, ...).
    pub fields: BTreeMap<String, String>,
}

impl SentinelView {
    pub fn failover_in_progress(&self) -> bool {
        self.fields
            .get("flags")
            .is_some_and(|f| f.contains("failover_in_progress") || f.contains("promoted"))
            || self
                .fields
                .get("failover-state")
                .is_some_and(|s| s != "none" && !s.is_empty())
    }

    pub fn number(&self, field: &str) -> Option<i64> {
        self.fields.get(field)?.parse().ok()
    }
}

pub async fn sentinel_view(ep: &Endpoint, group: &str) -> Result<SentinelView, StoreError> {
    let mut con = ep.connect().await?;
    let addr: Option<Vec<String>> = ep
        .query(
            &mut con,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(group),
        )
        .await?;
    let master = addr.and_then(|a| Some((a.first()?.clone(), a.get(1)?.parse().ok()?)));
    let fields = if master.is_some() {
        let flat: Vec<String> = ep
            .query(&mut con, redis::cmd("SENTINEL").arg("master").arg(group))
            .await?;
        flat.chunks(2)
            .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(SentinelView { master, fields })
}

/// Runs one `SENTINEL <args...>`.
pub async fn sentinel(ep: &Endpoint, args: &[&str]) -> Result<(), StoreError> {
    let mut con = ep.connect().await?;
    let mut cmd = redis::cmd("SENTINEL");
    for a in args {
        cmd.arg(*a);
    }
    ep.query::<redis::Value>(&mut con, &cmd).await.map(|_| ())
}

/// A master change announced by a Sentinel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchMaster {
    pub group: String,
    pub old: (String, u16),
    pub new: (String, u16),
}

/// Parses a `+switch-master` message: `<group> <old-ip> <old-port> <new-ip> <new-port>`.
pub fn parse_switch(payload: &str) -> Option<SwitchMaster> {
    let p: Vec<&str> = payload.split_whitespace().collect();
    if p.len() != 5 {
        return None;
    }
    Some(SwitchMaster {
        group: p[0].to_string(),
        old: (p[1].to_string(), p[2].parse().ok()?),
        new: (p[3].to_string(), p[4].parse().ok()?),
    })
}

/// `+switch-master` announcements from one Sentinel, until the connection drops.
pub async fn switch_master(ep: &Endpoint) -> Result<impl Stream<Item = SwitchMaster>, StoreError> {
    let client = ep.client()?;
    let mut pubsub = match tokio::time::timeout(TIMEOUT * 2, client.get_async_pubsub()).await {
        Ok(r) => r.map_err(|source| StoreError::Redis {
            addr: ep.addr(),
            source,
        })?,
        Err(_) => return Err(StoreError::Timeout { addr: ep.addr() }),
    };
    pubsub
        .subscribe("+switch-master")
        .await
        .map_err(|source| StoreError::Redis {
            addr: ep.addr(),
            source,
        })?;
    Ok(pubsub.into_on_message().filter_map(|m| {
        futures::future::ready(
            m.get_payload::<String>()
                .ok()
                .and_then(|p| parse_switch(&p)),
        )
    }))
}

/// `PING`: the server answers to this endpoint's password.
pub async fn ping(ep: &Endpoint) -> Result<(), StoreError> {
    let mut con = ep.connect().await?;
    ep.query::<redis::Value>(&mut con, &redis::cmd("PING"))
        .await
        .map(|_| ())
}

/// Runs one command (`CONFIG SET ...`, `ACL SETUSER ...`) and ignores its reply.
pub async fn command(ep: &Endpoint, args: &[&str]) -> Result<(), StoreError> {
    let Some((name, rest)) = args.split_first() else {
        return Ok(());
    };
    let mut con = ep.connect().await?;
    let mut cmd = redis::cmd(name);
    for a in rest {
        cmd.arg(*a);
    }
    ep.query::<redis::Value>(&mut con, &cmd).await.map(|_| ())
}

/// The length of list `key` (0 when it does not exist): how many votes wait in the queue.
pub async fn list_length(ep: &Endpoint, key: &str) -> Result<i64, StoreError> {
    let mut con = ep.connect().await?;
    ep.query(&mut con, redis::cmd("LLEN").arg(key)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_master() {
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nmin_slaves_good_slaves:2\r\n\
                    slave0:ip=10.244.129.3,port=6379,state=online,offset=1234,lag=0\r\n\
                    slave1:ip=10.244.130.3,port=6379,state=wait_bgsave,offset=0,lag=0\r\n\
                    master_failover_state:no-failover\r\nmaster_replid:abc\r\nmaster_repl_offset:1234\r\n";
        let r = parse_replication(text);
        assert!(r.is_master);
        assert_eq!(r.offset, 1234);
        assert_eq!(r.replid, "abc");
        assert_eq!(r.replicas.len(), 2);
        assert_eq!(r.replicas.iter().filter(|l| l.online).count(), 1);
        assert_eq!(r.replicas[0].ip, "10.244.129.3");
    }

    #[test]
    fn parses_a_replica() {
        let text = "role:slave\nmaster_host:10.244.131.2\nmaster_port:6379\nmaster_link_status:up\nslave_repl_offset:99\nmaster_replid:abc\nmaster_repl_offset:99\n";
        let r = parse_replication(text);
        assert!(!r.is_master);
        assert_eq!(r.master_host.as_deref(), Some("10.244.131.2"));
        assert_eq!(r.master_port, Some(6379));
        assert!(r.link_up);
        assert_eq!(r.offset, 99);
    }

    #[test]
    fn parses_switch_master() {
        let s = parse_switch("cache 10.244.129.2 6379 10.244.130.2 6379").unwrap();
        assert_eq!(s.group, "cache");
        assert_eq!(s.new, ("10.244.130.2".to_string(), 6379));
        assert!(parse_switch("garbage").is_none());
    }
}
