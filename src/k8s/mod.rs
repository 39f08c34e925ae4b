//! What every controller shares: kstatus conditions, status writes, labels and object references.

pub mod apply;
pub mod backup_jobs;
pub mod children;
pub mod conditions;
pub mod factory;
pub mod labels;
pub mod status;
pub mod sync;

/// The single field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "guestbook-operator";
