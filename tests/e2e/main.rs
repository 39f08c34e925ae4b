//! End-to-end tests against a real Kubernetes API server (the cluster in KUBECONFIG: the local
//! control plane from e2e/cluster, or kind). Each test works in a namespace of its own.

mod admission;
mod app_faults;
mod app_lifecycle;
mod app_perpod;
mod app_routes;
mod apps;
mod apps_client;
mod audit;
mod credentials;
mod drift;
mod follow;
mod gitops;
mod helm;
mod identity;
mod invalid_runtime;
mod leader;
mod monitoring;
mod network;
mod patroni_backup;
mod patroni_cluster;
mod patroni_roll;
mod rbac;
mod real;
mod redis_sentinel;
mod runner;
mod standins;
mod status;
mod support;
