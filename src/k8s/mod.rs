//! The Kubernetes side every controller shares: the apply path, caches and watches of what the
//! controllers own, builders' factory, labels, Secrets, pods, kstatus conditions and status
//! writes.

pub mod apply;
pub mod backup_jobs;
pub mod cache;
pub mod children;
pub mod conditions;
pub mod diagnose;
pub mod drift;
pub mod factory;
pub mod labels;
pub mod live;
pub mod monitoring;
pub mod owner;
pub mod pods;
pub mod podspec;
pub mod policy;
pub mod routing;
pub mod secrets;
pub mod status;
pub mod sync;
pub mod watches;

/// The single field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "guestbook-operator";
