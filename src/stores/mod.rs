//! Data-plane clients: how the operator talks to the stores it runs.

pub mod patroni;
pub mod redis;
