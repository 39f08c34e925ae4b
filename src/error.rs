//! Errors of the operator, each with a stable label for the error metric.

use std::time::Duration;

/// Everything a reconcile or the manager can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// An object came from the cluster without a field the API guarantees.
    #[error("{kind} {name} is missing {field}")]
    MissingField {
        kind: &'static str,
        name: String,
        field: &'static str,
    },
    /// Serialising an object failed.
    #[error("serialising {what}: {source}")]
    Serialize {
        what: String,
        source: serde_json::Error,
    },
    /// Leadership was lost; the manager stops acting.
    #[error("lost leadership of Lease {0}")]
    LostLeadership(String),
    /// Reading a local resource (such as the random source) failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A store (Redis, Sentinel, Patroni) did not do what it was asked.
    #[error("store: {0}")]
    Store(String),
    /// The HTTP server could not start.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
    /// Watching a kind failed for good.
    #[error("controller for {0} stopped: {1}")]
    Controller(&'static str, String),
}

impl Error {
    /// Low-cardinality label for `reconcile_errors_total{reason=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.is_conflict() => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.is_forbidden() => "forbidden",
            Error::Kube(kube::Error::Api(s)) if s.is_not_found() => "not_found",
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "api_unreachable",
            Error::MissingField { .. } => "missing_field",
            Error::Serialize { .. } => "serialize",
            Error::LostLeadership(_) => "lost_leadership",
            Error::Http { .. } => "http",
            Error::Store(_) => "store",
            Error::Io { .. } => "io",
            Error::Controller(..) => "controller",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Delay before retrying a failed reconcile: doubles from 1 s per consecutive failure, capped at
/// 5 minutes, so a broken API server or a persistent conflict never becomes a hot loop.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64
        .checked_shl(failures.min(16))
        .unwrap_or(u64::MAX)
        .min(300);
    Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}
