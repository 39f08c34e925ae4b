//! The stock app images as the example manifests run them (no command given), reaching their
//! stores by Service name only: vote → `redis` → worker → `db` → result, and gb-frontend's
//! `redis-leader` / `redis-follower`. On the local cluster the pod runner runs the stand-ins of
//! e2e/standins for them, through kube-proxy and CoreDNS as on any cluster; votes and the tally
//! go through the vote and result Services as a browser's would.

use crate::apps_client::{self, Tally};
use crate::real::{ip, pods, psql, ready};
use crate::support::{Capability, TestNamespace, apply_file, client, repo, require, wait_for};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The local cluster's Service range: the only virtual addresses this test may send to (the
/// host's kube-proxy translates them to pod addresses on this machine).
const SERVICE_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 16);

/// The stand-ins the pod runner starts are the installed copies: they must be this checkout's.
fn installed_standins_current() -> Result<(), String> {
    let installed = std::path::Path::new("/var/cache/guestbook-operator/standins/apps");
    for app in ["common", "vote", "worker", "result", "gb_frontend"] {
        let ours = std::fs::read(repo(&format!("e2e/standins/{app}.py")))
            .map_err(|e| format!("e2e/standins/{app}.py: {e}"))?;
        let theirs = std::fs::read(installed.join(format!("{app}.py"))).unwrap_or_default();
        if ours != theirs {
            return Err(format!(
                "{}/{app}.py is not this checkout's (run e2e/standins/install)",
                installed.display()
            ));
        }
    }
    Ok(())
}

fn in_service_range(addr: Ipv4Addr) -> bool {
    let (net, len) = SERVICE_RANGE;
    u32::from(addr) >> (32 - len) == u32::from(net) >> (32 - len)
}

/// `http://<ClusterIP>:<port>/` of Service `name`, refusing any address outside the range.
pub async fn service_base(c: &Client, ns: &str, name: &str) -> String {
    let svc = Api::<Service>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Service {name}: {e}"));
    let spec = svc.spec.expect("Service spec");
    let addr: Ipv4Addr = spec
        .cluster_ip
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("Service {name} has no ClusterIP"));
    assert!(
        in_service_range(addr),
        "Service {name}: {addr} is outside the local Service range; not sending there"
    );
    let port = spec.ports.expect("ports")[0].port;
    format!("http://{addr}:{port}/")
}

/// Retries `attempt` for up to 60 s, saying why each failed try failed; panics with the last
/// error. For requests a person would simply repeat.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("{what} failed, trying again: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("{what} kept failing for 60 s: {e}"),
        }
    }
}

#[tokio::test]
async fn stock_apps_vote_to_tally_and_guestbook_by_service_name() {
    if require(&[Capability::Runner, Capability::ClusterDns])
        .await
        .is_none()
    {
        return;
    }
    let c = client().await;
    installed_standins_current().unwrap_or_else(|e| panic!("{e}"));
    let ns = TestNamespace::new(&c, "standins").await;
    apply_file(&c, &ns.name, "tests/fixtures/standins/apps.yaml").await;

    for app in ["redis", "db", "vote", "result", "worker", "guestbook"] {
        let p = wait_for(
            &format!("a ready {app} pod"),
            Duration::from_secs(120),
            || async {
                let ps = pods(&c, &ns.name, &format!("app={app}")).await;
                ps.into_iter().find(ready)
            },
        )
        .await;
        // Real pods take addresses with 128 added to the third octet; kwok's are simulated.
        let addr = ip(&p).expect("pod IP");
        assert!(
            addr.octets()[2] > 128,
            "{app} runs at {addr}: simulated, not run for real (is the pod runner's image list current?)"
        );
    }

    // Votes through the vote Service: voters as a browser makes them (a first visit sets the
    // cookie), then some of them change their mind. A vote that got no 200 was not queued and
    // is cast again, as a person would; with the same voter id it counts once either way.
    let vote = service_base(&c, &ns.name, "vote").await;
    let mut last = std::collections::BTreeMap::new();
    for i in 0..10 {
        let choice = if i % 4 == 0 { "b" } else { "a" };
        let id = eventually("a voter id", || apps_client::new_voter(&vote)).await;
        eventually("a vote", || apps_client::vote(&vote, Some(&id), choice)).await;
        last.insert(id, choice);
    }
    let voters: Vec<String> = last.keys().take(3).cloned().collect();
    for id in &voters {
        let choice = if last[id] == "a" { "b" } else { "a" };
        eventually("a vote again", || {
            apps_client::vote(&vote, Some(id), choice)
        })
        .await;
        last.insert(id.clone(), choice);
    }
    let mut want = Tally::new();
    for choice in last.values() {
        *want.entry((*choice).to_string()).or_default() += 1;
    }

    // The tally through the result Service, as its page's socket.io client reads it.
    let result = service_base(&c, &ns.name, "result").await;
    // The worker exits on any Redis or Postgres error and the kubelet restarts it with back-off.
    let seen = apps_client::wait_for_tally(&result, &want, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("tally through the result Service: {seen:?}");
    let db = pods(&c, &ns.name, "app=db").await;
    let db_ip = db.iter().find_map(ip).expect("db pod IP");
    assert_eq!(
        psql(db_ip, "postgres", "SELECT count(*) FROM votes").await,
        Ok(last.len().to_string()),
        "one row per voter"
    );

    // The guestbook frontend writes through redis-leader and reads through redis-follower.
    let frontend = service_base(&c, &ns.name, "frontend").await;
    eventually("a guestbook write", || {
        apps_client::guestbook_set(&frontend, "first,second")
    })
    .await;
    let read = eventually("a guestbook read", || apps_client::guestbook_get(&frontend)).await;
    assert_eq!(read, "first,second");
}
