//! The controller manager behind `guestbook-operator run`: probes and metrics, leader
//! election, the four controllers, graceful shutdown.

use crate::context::{Caches, Context, Settings};
use crate::controllers::{self, error_policy};
use crate::error::{Error, Result};
use crate::http::{self, Probe, Readiness};
use crate::k8s::cache::OwnedCaches;
use crate::k8s::monitoring::MonitoringApi;
use crate::k8s::sync::Synced;
use crate::leader::{LeaderElector, Timing};
use crate::metrics::Metrics;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client, Resource};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch only this namespace.
    pub namespace: Option<String>,
    pub http_addr: SocketAddr,
    /// `None` runs without election (a single replica).
    pub leader_election: Option<LeaderElection>,
    pub settings: Settings,
}

#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub timing: Timing,
}

/// Resolves when SIGTERM or SIGINT arrives (or the sender is dropped).
async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn spawn_signal_handler(tx: watch::Sender<bool>) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    futures::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        }
        let _ = tx.send(true);
    });
}

/// Runs until a signal arrives (Ok) or leadership is lost (Err).
pub async fn run(options: Options) -> Result<()> {
    let client = Client::try_default().await?;
    run_with_client(client, options).await
}

pub async fn run_with_client(client: Client, options: Options) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let probe = Arc::new(Probe::default());
    let (tx, rx) = watch::channel(false);
    spawn_signal_handler(tx);
    let (addr, server) = http::serve(
        options.http_addr,
        probe.clone(),
        metrics.clone(),
        shutdown_signal(rx.clone()),
    )
    .await?;
    let server = tokio::spawn(server);
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");

    let mut elector = options.leader_election.as_ref().map(|le| {
        let api: Api<Lease> = Api::namespaced(client.clone(), &le.lease_namespace);
        LeaderElector::new(
            api,
            le.lease_name.clone(),
            le.identity.clone(),
            le.timing.clone(),
        )
    });
    if let Some(e) = elector.as_mut() {
        probe.set(Readiness::Standby);
        tracing::info!(
            lease = e.lease_name(),
            identity = e.identity(),
            "waiting for leadership"
        );
        tokio::select! {
            _ = e.acquire() => tracing::info!(lease = e.lease_name(), identity = e.identity(), "became leader"),
            _ = shutdown_signal(rx.clone()) => {
                let _ = server.await;
                return Ok(());
            }
        }
    }
    metrics.leader.set(1);
    probe.set(Readiness::Starting);
    let identity = options.leader_election.as_ref().map(|l| l.identity.clone());
    let controllers = run_controllers(
        client,
        options.settings.clone(),
        options.namespace.clone(),
        identity,
        metrics.clone(),
        probe.clone(),
        rx.clone(),
    );

    let result = match elector.as_mut() {
        Some(e) => {
            tokio::select! {
                _ = controllers => Ok(()),
                lost = e.keep() => Err(lost),
            }
        }
        None => {
            controllers.await;
            Ok(())
        }
    };
    metrics.leader.set(0);
    if let Some(e) = elector.as_ref()
        && result.is_ok()
    {
        e.release().await;
    }
    if result.is_ok() {
        let _ = server.await;
    }
    result
}

/// Builds the four controllers, shares their caches through the context, and runs them until
/// shutdown. Marks the probe Active once every cache has synced.
async fn run_controllers(
    client: Client,
    settings: Settings,
    namespace: Option<String>,
    identity: Option<String>,
    metrics: Arc<Metrics>,
    probe: Arc<Probe>,
    shutdown: watch::Receiver<bool>,
) {
    let ns = namespace.as_deref();
    let (redis_trigger, redis_requests) = futures::channel::mpsc::unbounded();
    let sync = Synced::default();
    let mut owned = OwnedCaches::default();
    let served = match crate::k8s::monitoring::served(&client).await {
        Ok(served) => served,
        Err(e) => {
            tracing::warn!(error = %e, "API discovery failed; assuming monitoring.coreos.com/v1 is not served until it answers");
            false
        }
    };
    tracing::info!(served, "discovered the Prometheus Operator API");
    let monitoring = Arc::new(MonitoringApi::new(served));
    use controllers::{guestbook as g, patroni_cluster as p, redis_sentinel as r, vote_app as v};
    let m = &monitoring;
    let rs = r::controller(&client, ns, redis_requests, &sync, &mut owned, m);
    let pc = p::controller(&client, ns, &sync, &mut owned, m);
    let gb = g::controller(&client, ns, &sync, &mut owned, m);
    let va = v::controller(&client, ns, &sync, &mut owned, m);
    let interval = settings.api_discovery;
    let discovery = rediscover(
        client.clone(),
        m.clone(),
        interval,
        shutdown_signal(shutdown.clone()),
    );
    // Backup series of a deleted store go at the next scrape: it never reconciles again.
    let (redis_store, patroni_store) = (rs.store(), pc.store());
    metrics.set_exists(Box::new(move |o| {
        use kube::runtime::reflector::ObjectRef;
        match o.kind {
            r::names::KIND => {
                let key = ObjectRef::new(&o.name).within(&o.namespace);
                redis_store.get(&key).is_some()
            }
            p::names::KIND => {
                let key = ObjectRef::new(&o.name).within(&o.namespace);
                patroni_store.get(&key).is_some()
            }
            _ => true,
        }
    }));
    let caches = Caches {
        redis_sentinels: rs.store(),
        patroni_clusters: pc.store(),
        guestbooks: gb.store(),
        vote_apps: va.store(),
        owned,
    };
    let synced = {
        let sync = sync.clone();
        async move {
            sync.wait().await;
            probe.set(Readiness::Active);
            tracing::info!("caches synced, controllers active");
        }
    };
    let reporter = Reporter {
        controller: "guestbook-operator".into(),
        instance: identity,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(
        client,
        settings,
        namespace,
        caches,
        metrics,
        recorder,
        redis_trigger,
        sync,
        monitoring,
    ));
    let stop = || shutdown_signal(shutdown.clone());
    let runs = futures::future::join4(
        drive(rs.graceful_shutdown_on(stop()), r::reconcile, ctx.clone()),
        drive(pc.graceful_shutdown_on(stop()), p::reconcile, ctx.clone()),
        drive(gb.graceful_shutdown_on(stop()), g::reconcile, ctx.clone()),
        drive(va.graceful_shutdown_on(stop()), v::reconcile, ctx.clone()),
    );
    let janitor = controllers::credentials::janitor::run(ctx.clone(), stop());
    futures::future::join4(runs, synced.boxed(), janitor, discovery).await;
}

/// Asks the API server every `interval` whether it serves the monitoring API, until `stop`.
async fn rediscover(
    client: Client,
    monitoring: Arc<MonitoringApi>,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let ask = async {
        loop {
            tokio::time::sleep(interval).await;
            monitoring.rediscover(&client).await;
        }
    };
    tokio::select! {
        () = ask => {}
        () = stop => {}
    }
}

async fn drive<K, F, Fut>(controller: Controller<K>, reconcile: F, ctx: Arc<Context>)
where
    K: controllers::Managed + Resource<DynamicType = ()> + Debug,
    K::Status: crate::k8s::status::KStatus,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: futures::TryFuture<Ok = kube::runtime::controller::Action, Error = Error> + Send + 'static,
{
    controller
        .run(reconcile, error_policy::<K>, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                // Object-level failures are logged by error_policy; these are watch errors.
                tracing::debug!(kind = K::KIND, error = %e, "controller event");
            }
        })
        .await;
}
