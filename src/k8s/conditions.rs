//! kstatus conditions: `Ready` always present, `Reconciling` and `Stalled` only while true.
//! Transition times carry over unless a condition's status changes, so recomputing the same
//! state yields the same conditions byte for byte.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Where an object stands, as one reconcile concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Everything the spec asks for is in place and serving.
    Ready { reason: String, message: String },
    /// Work is under way or waiting for something expected to happen by itself.
    Progressing { reason: String, message: String },
    /// Cannot make progress until someone changes the spec or the cluster.
    Stalled { reason: String, message: String },
    /// Accepted, but the operator cannot tell yet whether it is ready.
    Unknown { reason: String, message: String },
}

impl Health {
    pub fn reason(&self) -> &str {
        match self {
            Health::Ready { reason, .. }
            | Health::Progressing { reason, .. }
            | Health::Stalled { reason, .. }
            | Health::Unknown { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Health::Ready { message, .. }
            | Health::Progressing { message, .. }
            | Health::Stalled { message, .. }
            | Health::Unknown { message, .. } => message,
        }
    }

    pub fn stalled(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Health::Stalled {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn progressing(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Health::Progressing {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn unknown(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Health::Unknown {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// An extra condition such as a warning (`AuthDisabled`), kept beside the kstatus ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extra {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// The full condition list for `health`, reusing transition times from `previous`.
pub fn compute(
    previous: &[Condition],
    health: &Health,
    generation: Option<i64>,
    extras: &[Extra],
    now: &Time,
) -> Vec<Condition> {
    let ready_status = match health {
        Health::Ready { .. } => "True",
        Health::Progressing { .. } | Health::Stalled { .. } => "False",
        Health::Unknown { .. } => "Unknown",
    };
    let mut out = vec![make(
        previous,
        READY,
        ready_status,
        health.reason(),
        health.message(),
        generation,
        now,
    )];
    match health {
        Health::Progressing { reason, message } => {
            out.push(make(
                previous,
                RECONCILING,
                "True",
                reason,
                message,
                generation,
                now,
            ));
        }
        Health::Stalled { reason, message } => {
            out.push(make(
                previous, STALLED, "True", reason, message, generation, now,
            ));
        }
        _ => {}
    }
    for extra in extras {
        let status = if extra.status { "True" } else { "False" };
        out.push(make(
            previous,
            extra.type_,
            status,
            &extra.reason,
            &extra.message,
            generation,
            now,
        ));
    }
    out
}

fn make(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("test timestamp"))
    }

    #[test]
    fn unknown_has_only_ready() {
        let c = compute(
            &[],
            &Health::unknown("Pending", "m"),
            Some(1),
            &[],
            &t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            (READY, "Unknown")
        );
        assert_eq!(c[0].observed_generation, Some(1));
    }

    #[test]
    fn stalled_sets_ready_false_and_stalled_true() {
        let c = compute(
            &[],
            &Health::stalled("SecretNotFound", "m"),
            Some(2),
            &[],
            &t("2026-01-01T00:00:00Z"),
        );
        let types: Vec<_> = c
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, vec![(READY, "False"), (STALLED, "True")]);
        assert!(find(&c, RECONCILING).is_none());
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let first = compute(
            &[],
            &Health::progressing("A", "a"),
            Some(1),
            &[],
            &t("2026-01-01T00:00:00Z"),
        );
        let again = compute(
            &first,
            &Health::progressing("B", "b"),
            Some(2),
            &[],
            &t("2026-01-02T00:00:00Z"),
        );
        assert_eq!(again[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(again[0].reason, "B");
        let flipped = compute(
            &again,
            &Health::unknown("C", "c"),
            Some(2),
            &[],
            &t("2026-01-03T00:00:00Z"),
        );
        assert_eq!(flipped[0].last_transition_time, t("2026-01-03T00:00:00Z"));
    }
}
