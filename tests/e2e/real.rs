//! Talking to the real processes the pod runner starts behind pods: Redis over RESP, Patroni
//! over its REST API, PostgreSQL through psql, faults through the runner's PID files.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The runner's state directory, or `None` where no runner runs (kind): those tests skip.
pub fn runner_state() -> Option<PathBuf> {
    let dir = std::env::var_os("GBO_PODRUNNER_STATE").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("skipped: GBO_PODRUNNER_STATE is not set (no pod runner behind this cluster)");
    }
    dir
}

/// One Redis command, one reply (as text; arrays joined by newlines). `None` when the server
/// does not answer within 2 s.
pub async fn redis(ip: Ipv4Addr, args: &[&str]) -> Option<String> {
    resp(ip, 6379, None, args).await
}

fn encode(args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req += &format!("${}\r\n{a}\r\n", a.len());
    }
    req
}

/// One command to a Redis or Sentinel at `ip:port`, authenticating first when a password is
/// given. `None` when the server does not answer within 3 s.
pub async fn resp(
    ip: Ipv4Addr,
    port: u16,
    password: Option<&str>,
    args: &[&str],
) -> Option<String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let mut req = String::new();
        if let Some(p) = password {
            req += &encode(&["AUTH", p]);
        }
        req += &encode(args);
        s.write_all(req.as_bytes()).await.ok()?;
        let mut r = BufReader::new(s);
        if password.is_some() {
            let auth = read_reply(&mut r).await?;
            if auth != "OK" {
                return Some(auth);
            }
        }
        read_reply(&mut r).await
    };
    tokio::time::timeout(Duration::from_secs(3), io)
        .await
        .ok()
        .flatten()
}

fn read_reply<'a>(
    r: &'a mut BufReader<tokio::net::TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        r.read_line(&mut line).await.ok()?;
        let line = line.trim_end().to_string();
        // An empty line is a closed connection (a server stopping mid-roll): no reply.
        let (kind, rest) = line.split_at_checked(1)?;
        match kind {
            "+" | ":" => Some(rest.to_string()),
            "-" => Some(format!("ERR {rest}")),
            "$" => {
                let n: i64 = rest.parse().ok()?;
                if n < 0 {
                    return Some(String::new());
                }
                let mut buf = vec![0u8; usize::try_from(n).ok()? + 2];
                tokio::io::AsyncReadExt::read_exact(r, &mut buf)
                    .await
                    .ok()?;
                Some(String::from_utf8_lossy(&buf[..buf.len() - 2]).to_string())
            }
            "*" => {
                let n: i64 = rest.parse().ok()?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(read_reply(r).await?);
                }
                Some(items.join("\n"))
            }
            _ => None,
        }
    })
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
