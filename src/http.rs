//! The probe and metrics endpoint: `/healthz`, `/readyz`, `/metrics`.

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// What `/readyz` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Readiness {
    /// Starting, or leader whose caches have not synced yet.
    Starting = 0,
    /// Waiting for the leader Lease; ready to take over.
    Standby = 1,
    /// Leader with every watch cache synced.
    Active = 2,
}

/// State shared by the HTTP handlers and the manager.
#[derive(Default)]
pub struct Probe {
    readiness: AtomicU8,
}

impl Probe {
    pub fn set(&self, r: Readiness) {
        self.readiness.store(r as u8, Ordering::SeqCst);
    }
    pub fn get(&self) -> Readiness {
        match self.readiness.load(Ordering::SeqCst) {
            1 => Readiness::Standby,
            2 => Readiness::Active,
            _ => Readiness::Starting,
        }
    }
}

#[derive(Clone)]
struct AppState {
    probe: Arc<Probe>,
    metrics: Arc<Metrics>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.probe.get() {
        Readiness::Active => (StatusCode::OK, "ok: leader, caches synced"),
        // A standby replica is healthy and ready to take over; it serves nothing else.
        Readiness::Standby => (StatusCode::OK, "ok: standby"),
        Readiness::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: caches not synced",
        ),
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound address (port 0 picks
/// a free one) and the server future.
pub async fn serve(
    addr: SocketAddr,
    probe: Arc<Probe>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { probe, metrics });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Http {
            addr: addr.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Http {
        addr: addr.to_string(),
        source,
    })?;
    let server = async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    };
    Ok((bound, server))
}
