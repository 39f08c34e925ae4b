//! The RedisSentinel controller. Today: dereference the auth Secret, validate, report status.

use super::{
    Managed, SecretRef, Verdict, check_secret, finish, instrumented, not_yet_managed, referrers,
};
use crate::context::{Context, scoped_api};
use crate::crd::RedisSentinel;
use crate::error::Result;
use crate::k8s::conditions::{Extra, Health};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use std::sync::Arc;

impl Managed for RedisSentinel {
    const KIND: &'static str = "RedisSentinel";
}

/// What the spec points at, as found in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// The user-supplied auth Secret, when the spec names one.
    pub auth_secret: Option<SecretRef>,
}

pub async fn dereference(rs: &RedisSentinel, ctx: &Context) -> Result<World> {
    let mut world = World::default();
    if let (true, Some(secret), Some(ns)) = (
        rs.spec.auth.enabled,
        &rs.spec.auth.existing_secret,
        rs.namespace(),
    ) {
        world.auth_secret = Some(check_secret(ctx, &ns, &secret.name, Some(&secret.key)).await?);
    }
    Ok(world)
}

/// Pure validation of what the schema cannot check.
pub fn validate(rs: &RedisSentinel, world: &World) -> Verdict {
    let ns = rs.namespace().unwrap_or_default();
    let health = match (&rs.spec.auth.existing_secret, world.auth_secret) {
        (Some(s), Some(SecretRef::MissingSecret)) => Health::stalled(
            "SecretNotFound",
            format!(
                "spec.auth.existingSecret: Secret \"{}\" does not exist in namespace \"{ns}\"",
                s.name
            ),
        ),
        (Some(s), Some(SecretRef::MissingKey)) => Health::stalled(
            "SecretKeyNotFound",
            format!(
                "spec.auth.existingSecret: Secret \"{}\" has no key \"{}\"",
                s.name, s.key
            ),
        ),
        _ => not_yet_managed("RedisSentinel"),
    };
    let mut verdict = Verdict::new(health);
    if !rs.spec.auth.enabled {
        verdict = verdict.with(Extra {
            type_: "AuthDisabled",
            status: true,
            reason: "PasswordOff".into(),
            message: "spec.auth.enabled is false: Redis and Sentinel accept clients without a password; only the app's own pods may reach them".into(),
        });
    }
    verdict
}

pub async fn reconcile(rs: Arc<RedisSentinel>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(rs, ctx, |rs, ctx| async move {
        let world = dereference(&rs, &ctx).await?;
        finish(&ctx, rs.as_ref(), validate(&rs, &world), |_| {}).await
    })
    .await
}

/// The controller, also woken when a Secret a RedisSentinel references changes.
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<RedisSentinel> {
    let wc = watcher::Config::default();
    let ctl = Controller::new(scoped_api::<RedisSentinel>(client, namespace), wc.clone());
    let store = ctl.store();
    let secrets = scoped_api::<PartialObjectMeta<Secret>>(client, namespace);
    ctl.watches(secrets, wc, move |secret| {
        let name = secret.name_any();
        referrers(&store, secret.namespace(), |rs| {
            rs.spec
                .auth
                .existing_secret
                .as_ref()
                .is_some_and(|s| s.name == name)
        })
    })
}
