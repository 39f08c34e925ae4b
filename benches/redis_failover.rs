//! Benchmark: how fast the master Service follows a Sentinel failover, with the operator's
//! default polls. Over a number of forced failovers (SENTINEL FAILOVER), it measures from the
//! moment a Sentinel announces `+switch-master` (seen by our own subscriber) to the moment the
//! master Service's EndpointSlice holds exactly the new master, and prints the figures. Target:
//! within 1 s (tests/e2e/follow.rs asserts it, with the polls set long).
//!
//! Needs the local cluster with its pod runner: `eval "$(e2e/cluster env)"`, then
//! `cargo bench --bench redis_failover` (hack/test-all runs it). Skipped without one, failed
//! instead when GBO_REQUIRE_RUNNER=1.

// Tests are compiled out here, and with them the uses of some imports.
#[path = "../tests/e2e/follow.rs"]
#[allow(dead_code, unused_imports)]
mod follow;
#[path = "../tests/e2e/identity.rs"]
#[allow(dead_code, unused_imports)]
mod identity;
#[path = "../tests/e2e/rbac.rs"]
#[allow(dead_code, unused_imports)]
mod rbac;
#[path = "../tests/e2e/real.rs"]
#[allow(dead_code)]
mod real;
// The suite's support: what it uses here is the operator as a child process, under the chart's
// identity (rbac.rs, identity.rs), and the skip when no pod runner is there.
#[path = "../tests/e2e/support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use support::Capability;

const FAILOVERS: usize = 12;

#[tokio::main]
async fn main() {
    if support::require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let c = support::client().await;
    support::install_crds(&c).await;
    let ns = support::TestNamespace::new(&c, "bench-failover").await;
    let _op = support::Operator::start(&ns.name, "bench", &["--leader-election=false"]);
    support::apply_yaml(&c, &ns.name, &follow::spec("bench"))
        .await
        .expect("RedisSentinel accepted");
    let failovers = follow::forced_failovers(&c, &ns.name, "bench", FAILOVERS).await;
    println!(
        "redis_failover: {} (target: within 1000 ms)",
        follow::summary(&failovers)
    );
}
