//! The RedisSentinel controller. Today: dereference the auth Secret, validate, report status.

pub mod build;
pub mod conf;

use super::{
    Managed, SecretRef, Verdict, check_secret, finish, instrumented, not_yet_managed, referrers,
};
use crate::context::{Context, scoped_api};
use crate::crd::RedisSentinel;
use crate::error::Result;
use crate::k8s::apply::{self, ChildCache};
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::{Extra, Health};
use crate::k8s::labels;
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

/// The kinds of object a RedisSentinel owns.
pub const CHILD_KINDS: &[ChildKind] = &[
    ChildKind::Secret,
    ChildKind::ConfigMap,
    ChildKind::PersistentVolumeClaim,
    ChildKind::Service,
    ChildKind::NetworkPolicy,
    ChildKind::PodDisruptionBudget,
    ChildKind::StatefulSet,
    ChildKind::CronJob,
];

/// 32 random alphanumerics from the kernel, for a generated password.
fn random_password() -> Result<String> {
    use std::io::Read;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| crate::error::Error::Io {
            what: "/dev/urandom".into(),
            source,
        })?;
    // Rejection sampling keeps every character equally likely.
    let out: String = bytes
        .iter()
        .filter(|b| **b < 248)
        .take(32)
        .map(|b| ALPHABET[usize::from(*b) % 62] as char)
        .collect();
    Ok(out)
}

/// (ready, wanted) pods of a StatefulSet in the cache; wanted from the spec we apply.
fn readiness(cache: &ChildCache, ns: &str, name: &str, wanted: i32) -> (i32, i32) {
    let ready = cache
        .get(ChildKind::StatefulSet, ns, name)
        .and_then(|s| s.data.get("status")?.get("readyReplicas")?.as_i64())
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0);
    (ready, wanted)
}

/// Pure: where the rollout stands, from the StatefulSets' own status.
pub fn rollout(rs: &RedisSentinel, cache: &ChildCache) -> Health {
    let ns = rs.namespace().unwrap_or_default();
    let names = build::Names::of(&rs.name_any());
    let (redis_ready, redis_wanted) = readiness(cache, &ns, &names.redis, rs.spec.redis.replicas);
    let (sentinel_ready, sentinel_wanted) =
        readiness(cache, &ns, &names.sentinel, rs.spec.sentinel.replicas);
    if redis_ready < redis_wanted || sentinel_ready < sentinel_wanted {
        return Health::progressing(
            "PodsStarting",
            format!(
                "{redis_ready}/{redis_wanted} Redis pods and {sentinel_ready}/{sentinel_wanted} Sentinels ready"
            ),
        );
    }
    Health::progressing(
        "ConfiguringReplication",
        "all pods ready; replication and Sentinel monitoring are being configured",
    )
}

pub async fn reconcile(rs: Arc<RedisSentinel>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(rs, ctx, |rs, ctx| async move {
        let world = dereference(&rs, &ctx).await?;
        let verdict = validate(&rs, &world);
        if matches!(verdict.health, Health::Stalled { .. }) {
            return finish(&ctx, rs.as_ref(), verdict, |_| {}).await;
        }
        let ns = rs.namespace().unwrap_or_default();
        let uid = rs.uid().unwrap_or_default();
        let password = random_password()?;
        let children = build::build(&rs, &build::Inputs { generated_password: &password });
        let cache = &ctx.caches.children.redis_sentinel;
        // Comparing against a cache still filling would rewrite what already exists.
        if !cache.wait_until_ready().await {
            return Err(crate::error::Error::Controller(build::KIND, "child caches stopped".into()));
        }
        let mut applied = apply::apply(&ctx.client, cache, &ns, &children).await?;
        apply::prune(&ctx.client, cache, &ns, &uid, &children, &mut applied).await?;
        if !applied.written.is_empty() || !applied.pruned.is_empty() {
            tracing::info!(written = ?applied.written, pruned = ?applied.pruned, "children applied");
        }
        let verdict = Verdict { health: rollout(&rs, cache), extras: verdict.extras };
        let selector = labels::selector(build::APP, &rs.name_any(), "redis")
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let replicas = readiness(cache, &ns, &build::Names::of(&rs.name_any()).redis, 0).0;
        finish(&ctx, rs.as_ref(), verdict, |s| {
            s.selector = Some(selector);
            s.replicas = Some(replicas);
        })
        .await
    })
    .await
}

/// The controller, woken by its children and by Secrets a RedisSentinel references.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
) -> (Controller<RedisSentinel>, ChildCache) {
    let wc = watcher::Config::default();
    let ctl = Controller::new(scoped_api::<RedisSentinel>(client, namespace), wc.clone());
    let store = ctl.store();
    let secrets = scoped_api::<PartialObjectMeta<Secret>>(client, namespace);
    let ctl = ctl.watches(secrets, wc, move |secret| {
        let name = secret.name_any();
        referrers(&store, secret.namespace(), |rs| {
            rs.spec
                .auth
                .existing_secret
                .as_ref()
                .is_some_and(|s| s.name == name)
        })
    });
    apply::watch_children(ctl, client, namespace, build::KIND, CHILD_KINDS)
}
