//! guestbook-operator: highly available Guestbook and voting apps on Kubernetes, with Redis
//! Sentinel and Patroni PostgreSQL stores.

pub mod cli;
pub mod context;
pub mod controllers;
pub mod crd;
pub mod cron;
pub mod error;
pub mod http;
pub mod k8s;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod stores;
pub mod telemetry;
