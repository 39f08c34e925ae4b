//! Pure: what the schema cannot check, against what the spec references as found in the
//! cluster. Yields what the builder and the heal loop need, or the reason the object stalls.

use super::names::Names;
use crate::controllers::WAITING_RECHECK;
use crate::crd::RedisSentinel;
use crate::k8s::conditions::{Extra, Health};
use crate::k8s::diagnose::Problem;
use crate::k8s::live::{self, Members};
use crate::k8s::owner::Owner;
use crate::k8s::secrets::SecretRef;
use std::time::Duration;

/// What the spec points at, and what already runs, as found in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// The user-supplied auth Secret, when the spec names one.
    pub auth_secret: Option<SecretRef>,
    /// The StorageClass `spec.redis.storage` names: (name, exists).
    pub storage_class: Option<(String, bool)>,
    /// The live Redis StatefulSet, once it exists: its claims hold the data the spec must fit.
    pub members: Option<Members>,
    /// The most telling problem of the Redis and Sentinel pods (pending claims, unschedulable
    /// pods, images that cannot be pulled), reported instead of "starting" or "not reachable".
    pub trouble: Option<Problem>,
}

impl World {
    /// The world as an offline build assumes it: everything referenced exists.
    pub fn assumed(rs: &RedisSentinel) -> Self {
        Self {
            auth_secret: rs
                .spec
                .auth
                .existing_secret
                .as_ref()
                .map(|_| SecretRef::Present),
            ..Self::default()
        }
    }
}

/// A RedisSentinel that can be built.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    pub owner: Owner,
    pub names: Names,
    /// The Secret and key holding the password, when auth is on.
    pub password: Option<(String, String)>,
}

/// `Err` carries the `Stalled` health naming the field at fault.
pub fn validate(rs: &RedisSentinel, owner: Owner, world: &World) -> Result<Validated, Health> {
    let auth = &rs.spec.auth;
    match (&auth.existing_secret, world.auth_secret) {
        (Some(s), Some(SecretRef::MissingSecret)) if auth.enabled => {
            return Err(Health::stalled(
                "SecretNotFound",
                format!(
                    "spec.auth.existingSecret: Secret \"{}\" does not exist in namespace \"{}\"",
                    s.name, owner.namespace
                ),
            ));
        }
        (Some(s), Some(SecretRef::MissingKey)) if auth.enabled => {
            return Err(Health::stalled(
                "SecretKeyNotFound",
                format!(
                    "spec.auth.existingSecret: Secret \"{}\" has no key \"{}\"",
                    s.name, s.key
                ),
            ));
        }
        _ => {}
    }
    // Checked against what runs first: a class or size that differs from the live claims is
    // the change at fault, whether or not the new class exists.
    if let Some(stalled) = world
        .members
        .as_ref()
        .and_then(|m| live::storage_change("spec.redis.storage", rs.spec.redis.storage.as_ref(), m))
    {
        return Err(stalled);
    }
    if let Some((class, false)) = &world.storage_class {
        return Err(Health::stalled(
            "StorageClassNotFound",
            format!("spec.redis.storage.storageClassName: StorageClass \"{class}\" does not exist"),
        ));
    }
    let names = Names::of(&owner.name);
    let password = auth.enabled.then(|| match &auth.existing_secret {
        Some(s) => (s.name.clone(), s.key.clone()),
        None => (names.auth_secret.clone(), "password".to_string()),
    });
    Ok(Validated {
        owner,
        names,
        password,
    })
}

/// Conditions that warn about an accepted spec.
pub fn warnings(rs: &RedisSentinel) -> Vec<Extra> {
    if rs.spec.auth.enabled {
        return Vec::new();
    }
    vec![Extra {
        type_: "AuthDisabled",
        status: true,
        reason: "PasswordOff".into(),
        message: "spec.auth.enabled is false: Redis and Sentinel accept clients without a password; only the app's own pods may reach them".into(),
    }]
}

/// When to look again at an object stalled on `stalled`: after a minute for a StorageClass,
/// which the operator may only read, not watch (so its creation wakes nothing); never for the
/// rest, whose fix arrives as a watch event (the object, its Secrets, its claims).
pub fn recheck(stalled: &Health) -> Option<Duration> {
    (stalled.reason() == "StorageClassNotFound").then_some(WAITING_RECHECK)
}
