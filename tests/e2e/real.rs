//! Talking to the real processes the pod runner starts behind pods: Redis and Sentinel through
//! the `redis` crate, PostgreSQL through psql; pods, their addresses and EndpointSlices.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value,
};
use std::net::Ipv4Addr;
use std::time::Duration;

/// One Redis command, one reply (as text; arrays joined by newlines). `None` when the server
/// does not answer within 3 s.
pub async fn redis(ip: Ipv4Addr, args: &[&str]) -> Option<String> {
    resp(ip, 6379, None, args).await
}

/// One command to a Redis or Sentinel at `ip:port`, authenticating first when a password is
/// given: the reply as text (arrays joined by newlines, nil as "", an error reply as
/// `ERR <code> <detail>`). `None` when the server does not answer within 3 s or the connection
/// ends first (a server stopping mid-roll).
pub async fn resp(
    ip: Ipv4Addr,
    port: u16,
    password: Option<&str>,
    args: &[&str],
) -> Option<String> {
    let io = async {
        let info = ConnectionAddr::Tcp(ip.to_string(), port)
            .into_connection_info()
            .ok()?
            .set_redis_settings(RedisConnectionInfo::default().set_skip_set_lib_name());
        // The 3 s around it all is the only limit: WAIT blocks for seconds by design.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let mut con = redis::Client::open(info)
            .ok()?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .ok()?;
        if let Some(p) = password {
            let auth = command(&mut con, &["AUTH", p]).await?;
            if auth != "OK" {
                return Some(auth);
            }
        }
        command(&mut con, args).await
    };
    tokio::time::timeout(Duration::from_secs(3), io)
        .await
        .ok()
        .flatten()
}

async fn command(con: &mut MultiplexedConnection, args: &[&str]) -> Option<String> {
    let (name, rest) = args.split_first()?;
    let mut cmd = redis::cmd(name);
    for a in rest {
        cmd.arg(*a);
    }
    // The raw reply: an error reply is an answer the tests look at, not a failure.
    match con.req_packed_command(&cmd).await {
        Ok(v) => Some(text(v)),
        Err(e) => Some(format!(
            "ERR {} {}",
            e.code()?,
            e.detail().unwrap_or_default()
        )),
    }
}

fn text(v: Value) -> String {
    match v {
        Value::Nil => String::new(),
        Value::Okay => "OK".into(),
        Value::Int(n) => n.to_string(),
        Value::SimpleString(s) => s,
        Value::BulkString(b) => String::from_utf8_lossy(&b).to_string(),
        Value::Array(items) | Value::Set(items) => {
            items.into_iter().map(text).collect::<Vec<_>>().join("\n")
        }
        Value::ServerError(e) => format!("ERR {} {}", e.code(), e.details().unwrap_or_default()),
        other => format!("{other:?}"),
    }
}

/// Runs SQL through psql on the host against a pod's address.
pub async fn psql(ip: Ipv4Addr, password: &str, sql: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("psql")
        .args([
            "-h",
            &ip.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Pods matching `selector`, with their IPs, ready or not.
pub async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn ip(p: &Pod) -> Option<Ipv4Addr> {
    p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

pub fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// The ready addresses in the EndpointSlices of Service `service`, sorted.
pub async fn endpoints(client: &Client, ns: &str, service: &str) -> Vec<String> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let slices = api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut out: Vec<String> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    out.sort();
    out
}

/// The host directory behind a claim (the hostpath provisioner's).
pub async fn claim_dir(c: &Client, ns: &str, claim: &str) -> std::path::PathBuf {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let pvc = Api::<PersistentVolumeClaim>::namespaced(c.clone(), ns)
        .get(claim)
        .await
        .expect("claim");
    let pv_name = pvc.spec.and_then(|s| s.volume_name).expect("bound claim");
    let pv = Api::<PersistentVolume>::all(c.clone())
        .get(&pv_name)
        .await
        .expect("volume");
    pv.spec
        .and_then(|s| s.host_path)
        .map(|h| h.path)
        .expect("hostPath volume")
        .into()
}
