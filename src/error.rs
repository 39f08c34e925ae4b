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
    /// An object that cannot be built as written (offline rendering reports it this way; the
    /// controllers report it as `Stalled`).
    #[error("{kind} {name}: {message}")]
    Invalid {
        kind: &'static str,
        name: String,
        message: String,
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
    /// Redis or Sentinel did not do what it was asked.
    #[error(transparent)]
    Redis(#[from] crate::stores::redis::StoreError),
    /// Patroni's REST API did not do what it was asked.
    #[error(transparent)]
    Patroni(#[from] crate::stores::patroni::PatroniError),
    /// Children the API server refused; the object's status already says so. `followup` is
    /// how soon the reconcile wanted to look at what it just changed in the data plane.
    #[error("{}", failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Children {
        failures: Vec<ChildFailure>,
        followup: Option<std::time::Duration>,
    },
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
            Error::Invalid { .. } => "invalid",
            Error::Serialize { .. } => "serialize",
            Error::LostLeadership(_) => "lost_leadership",
            Error::Http { .. } => "http",
            Error::Redis(_) => "redis",
            Error::Patroni(_) => "patroni",
            Error::Children { .. } => "child_refused",
            Error::Io { .. } => "io",
            Error::Controller(..) => "controller",
        }
    }

    /// Whether retrying the same request cannot help: the API server refused it as invalid,
    /// forbidden or otherwise wrong (4xx other than conflict and throttling). Such a failure is
    /// `Stalled`; anything else (timeouts, conflicts, 5xx, a store not answering) is transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(s)) => {
                (400..500).contains(&s.code) && s.code != 409 && s.code != 429
            }
            Error::Children { failures, .. } => failures.iter().any(|f| f.error.is_permanent()),
            Error::MissingField { .. } | Error::Serialize { .. } | Error::Invalid { .. } => true,
            _ => false,
        }
    }

    /// When to retry after the `failures`th failure in a row: exponential backoff, except that
    /// a reconcile which changed the data plane beside a refused child looks at its outcome
    /// when it asked to (the refusal's retry is what backs off, not following up a repair).
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let delay = backoff(failures.saturating_sub(1));
        match self {
            Error::Children {
                followup: Some(soon),
                ..
            } => delay.min(*soon),
            _ => delay,
        }
    }

    /// The API server's own words, without our prefix.
    fn server_message(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) => s.message.clone(),
            other => other.to_string(),
        }
    }
}

/// A child the API server refused to apply or delete.
#[derive(Debug)]
pub struct ChildFailure {
    pub kind: crate::k8s::children::ChildKind,
    /// `Kind/name` of the child.
    pub child: String,
    /// `apply` or `prune`.
    pub action: &'static str,
    pub error: Error,
}

impl ChildFailure {
    pub fn new(
        kind: crate::k8s::children::ChildKind,
        name: &str,
        action: &'static str,
        error: Error,
    ) -> Self {
        Self {
            kind,
            child: format!("{}/{name}", kind.api_resource().kind),
            action,
            error,
        }
    }
}

impl std::fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.action == "prune" {
            "deleting"
        } else {
            "applying"
        };
        write!(f, "{verb} {}: {}", self.child, self.error.server_message())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Delay before retrying a failed reconcile: doubles from 1 s per consecutive failure, capped at
/// 5 minutes, so a broken API server or a persistent conflict never becomes a hot loop.
fn backoff(failures: u32) -> Duration {
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

    #[test]
    fn a_refusal_backs_off_but_a_repair_is_followed_up() {
        let refused = |followup| Error::Children {
            failures: Vec::new(),
            followup,
        };
        assert_eq!(refused(None).retry_delay(8), Duration::from_secs(128));
        let soon = Some(Duration::from_secs(2));
        assert_eq!(refused(soon).retry_delay(8), Duration::from_secs(2));
        assert_eq!(refused(soon).retry_delay(1), Duration::from_secs(1));
    }
}
