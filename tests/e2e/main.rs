//! End-to-end tests against a real Kubernetes API server (the cluster in KUBECONFIG: the local
//! control plane from e2e/cluster, or kind). Each test works in a namespace of its own.

mod admission;
mod app_faults;
mod app_lifecycle;
mod apps;
mod apps_client;
mod audit;
mod credentials;
mod follow;
mod identity;
mod leader;
mod network;
mod patroni_backup;
mod patroni_cluster;
mod patroni_roll;
mod real;
mod redis_sentinel;
mod runner;
mod standins;
mod status;
mod support;
