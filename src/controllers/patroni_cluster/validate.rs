//! Pure: what the schema cannot check, against what the spec references as found in the
//! cluster (Secrets, the StorageClass, the claim a bootstrap restores from). Yields the names
//! of every Secret the cluster reads, or the reason it stalls.

use super::names::Names;
use crate::controllers::WAITING_RECHECK;
use crate::crd::PatroniCluster;
use crate::k8s::conditions::{Extra, Health};
use crate::k8s::diagnose::Problem;
use crate::k8s::live::{self, Members};
use crate::k8s::owner::Owner;
use crate::k8s::secrets::SecretRef;
use std::time::Duration;

/// What the spec points at, and what already runs, as found in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// The live member StatefulSet, once it exists: its claims and binaries are what the data
    /// was made with.
    pub members: Option<Members>,
    /// The most telling problem of the member pods (pending claims, unschedulable pods, images
    /// that cannot be pulled), reported instead of "starting".
    pub trouble: Option<Problem>,
    /// Secrets the spec names: (spec field, name, found).
    pub secrets: Vec<(String, String, SecretRef)>,
    /// (name, exists)
    pub storage_class: Option<(String, bool)>,
    /// (name, exists)
    pub bootstrap_claim: Option<(String, bool)>,
    /// resourceVersion of each user's Secret named in the spec ("" for generated ones).
    pub user_secret_versions: Vec<String>,
}

impl World {
    /// The world as an offline build assumes it: everything referenced exists.
    pub fn assumed(pc: &PatroniCluster) -> Self {
        Self {
            user_secret_versions: vec![String::new(); pc.spec.users.len()],
            ..Self::default()
        }
    }
}

/// A PatroniCluster that can be built.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    pub owner: Owner,
    pub names: Names,
    /// Secrets holding `username` and `password` of the superuser and of replication.
    pub superuser_secret: String,
    pub replication_secret: String,
    /// The Secret of each of `spec.users`, in spec order: the spec's, or a generated one.
    pub user_secrets: Vec<String>,
    /// resourceVersion of each user's Secret named in the spec ("" for generated ones).
    pub user_secret_versions: Vec<String>,
}

/// Secrets the spec names explicitly, with the field that names them.
pub fn referenced_secrets(pc: &PatroniCluster) -> Vec<(String, String)> {
    let auth = &pc.spec.auth;
    let mut out = Vec::new();
    if let Some(s) = &auth.superuser_secret_name {
        out.push(("spec.auth.superuserSecretName".to_string(), s.clone()));
    }
    if let Some(s) = &auth.replication_secret_name {
        out.push(("spec.auth.replicationSecretName".to_string(), s.clone()));
    }
    for (i, u) in pc.spec.users.iter().enumerate() {
        if let Some(s) = &u.secret_name {
            out.push((format!("spec.users[{i}].secretName"), s.clone()));
        }
    }
    out
}

/// `Err` carries the `Stalled` health naming the first field at fault.
pub fn validate(pc: &PatroniCluster, owner: Owner, world: &World) -> Result<Validated, Health> {
    let ns = &owner.namespace;
    for (field, name, found) in &world.secrets {
        match found {
            SecretRef::MissingSecret => {
                return Err(Health::stalled(
                    "SecretNotFound",
                    format!("{field}: Secret \"{name}\" does not exist in namespace \"{ns}\""),
                ));
            }
            SecretRef::MissingKey => {
                return Err(Health::stalled(
                    "SecretKeyNotFound",
                    format!("{field}: Secret \"{name}\" has no key \"password\""),
                ));
            }
            SecretRef::Present => {}
        }
    }
    // What runs first: a class that differs from the live claims' is the change at fault,
    // whether or not the new one exists.
    if let Some(m) = &world.members {
        let storage = live::storage_change("spec.storage", Some(&pc.spec.storage), m);
        let version = pc.spec.postgresql.version;
        let major = live::postgres_major_change("spec.postgresql.version", version, m);
        if let Some(stalled) = storage.or(major) {
            return Err(stalled);
        }
    }
    if let Some((class, false)) = &world.storage_class {
        return Err(Health::stalled(
            "StorageClassNotFound",
            format!("spec.storage.storageClassName: StorageClass \"{class}\" does not exist"),
        ));
    }
    if let Some((claim, false)) = &world.bootstrap_claim {
        return Err(Health::stalled(
            "BackupClaimNotFound",
            format!(
                "spec.bootstrap.fromBackup.claimName: PersistentVolumeClaim \"{claim}\" does not exist in namespace \"{ns}\""
            ),
        ));
    }
    let names = Names::of(&owner.name);
    let auth = &pc.spec.auth;
    let user_secrets = pc
        .spec
        .users
        .iter()
        .map(|u| {
            let generated = || format!("{}-user-{}", owner.name, u.name.replace('_', "-"));
            u.secret_name.clone().unwrap_or_else(generated)
        })
        .collect();
    Ok(Validated {
        superuser_secret: auth
            .superuser_secret_name
            .clone()
            .unwrap_or_else(|| names.superuser.clone()),
        replication_secret: auth
            .replication_secret_name
            .clone()
            .unwrap_or_else(|| names.replication.clone()),
        user_secrets,
        user_secret_versions: world.user_secret_versions.clone(),
        names,
        owner,
    })
}

/// Conditions that warn about an accepted spec.
pub fn warnings(pc: &PatroniCluster) -> Vec<Extra> {
    if !pc.spec.auth.stock_app_credentials {
        return Vec::new();
    }
    vec![Extra {
        type_: "InsecureCredentials",
        status: true,
        reason: "StockAppCredentials".into(),
        message: "spec.auth.stockAppCredentials is true: the superuser is postgres/postgres, as the stock voting app requires; only the app's own pods may reach the database".into(),
    }]
}

/// When to look again at an object stalled on `stalled`: after a minute for a StorageClass,
/// which the operator may only read, not watch (so its creation wakes nothing); never for the
/// rest, whose fix arrives as a watch event (the object, its Secrets, its claims).
pub fn recheck(stalled: &Health) -> Option<Duration> {
    (stalled.reason() == "StorageClassNotFound").then_some(WAITING_RECHECK)
}
