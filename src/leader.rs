//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! acts. Expiry is judged by how long the Lease has gone unchanged on *our* clock (as client-go
//! does), never by comparing another machine's timestamps with ours.
//!
//! Why our own: kube-runtime has no leader election, and the crates that offer one either
//! decide expiry by comparing the holder's `renewTime` with the local clock (so a skewed clock
//! on either replica yields two leaders or none), or lag kube's major version (a second kube in
//! the dependency tree). This module is small, follows client-go's rules, and is tested
//! against the real API server (tests/e2e/leader.rs).

use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use std::time::{Duration, Instant};

/// Timing of the election.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// The leader gives up if it could not renew for this long (less than `lease_duration`, so
    /// it stops acting before anyone else may start).
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate's view of the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The last Lease record seen (holder, renew time, transitions) and when we first saw it.
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timing: Timing,
    ) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn lease_name(&self) -> &str {
        &self.name
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// One attempt to take or keep the Lease. `Ok(true)` when we hold it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = format!(
            "{holder:?}/{:?}/{:?}",
            spec.renew_time, spec.lease_transitions
        );
        let unchanged_since = match &self.observed {
            Some((seen, since)) if *seen == record => *since,
            _ => {
                self.observed = Some((record, Instant::now()));
                Instant::now()
            }
        };
        let held_by_us = holder.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.timing.lease_duration);
        let expired = holder.is_none() || unchanged_since.elapsed() >= duration;
        if !held_by_us && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!held_by_us);
        let acquired = if held_by_us {
            spec.acquire_time.clone().unwrap_or_else(|| now.clone())
        } else {
            now.clone()
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // replace carries the resourceVersion we read: if another candidate wrote in between,
        // the API server answers Conflict and we lose this round, as we should.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn spec(&self, acquire: MicroTime, renew: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.timing.lease_duration.as_secs()).ok(),
            acquire_time: Some(acquire),
            renew_time: Some(renew),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Waits until we hold the Lease. Errors are logged and retried: a candidate keeps trying.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "leader election attempt failed")
                }
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews until a renewal has failed for `renew_deadline`; then returns the error.
    pub async fn keep(&mut self) -> Error {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => return Error::LostLeadership(self.name.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "renewing the leader Lease failed")
                }
            }
            if last_ok.elapsed() >= self.timing.renew_deadline {
                return Error::LostLeadership(self.name.clone());
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once instead of after it expires.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "released leadership"),
            Err(e) => {
                tracing::warn!(error = %e, lease = %self.name, "could not release the leader Lease")
            }
        }
    }
}
