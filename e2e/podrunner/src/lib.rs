//! gbo-podrunner: test support for the local cluster. It runs the real programs (redis-server,
//! redis-sentinel, Patroni with PostgreSQL, nginx, CoreDNS, exporters) behind pods whose images
//! it knows, each pod in its own network namespace at the address it reports, and plays the
//! kubelet for them: volumes, environment, /etc files, probes, restarts, status and graceful
//! termination. Not part of the operator.

pub mod env;
pub mod error;
pub mod etc;
pub mod exec;
pub mod fault;
pub mod images;
pub mod ipam;
pub mod lifecycle;
pub mod net;
pub mod objects;
pub mod pod;
pub mod probes;
pub mod runner;
pub mod sandbox;
pub mod settings;
pub mod status;
pub mod volumes;
