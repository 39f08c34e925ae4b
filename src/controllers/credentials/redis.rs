//! A changed Redis password rolled out to every Redis and Sentinel without a restart and
//! without a moment in which clients have no password that works:
//!
//! 1. every member accepts both passwords (`ACL SETUSER default on >new` keeps the old one);
//! 2. members authenticate to each other with the new one (`masterauth`, Sentinel's
//!    `auth-pass` for the group and `sentinel-pass` towards the other Sentinels);
//! 3. only then the old one goes (`CONFIG SET requirepass`, on Sentinel `ACL SETUSER default
//!    resetpass`), and the in-use copy takes the new one.
//!
//! Every step is idempotent: an interrupted rollout is picked up again by the next reconcile
//! (a member is asked with the new password first, the old one second). Restarts need nothing:
//! the start scripts read the password from the Secret.

use super::{Guarded, StoreCredentials, Tracked, auth_failed, record};
use crate::context::Context;
use crate::controllers::publish;
use crate::controllers::redis_sentinel::heal::{address, pods};
use crate::controllers::redis_sentinel::names::{APP, REDIS, REDIS_PORT, SENTINEL, SENTINEL_PORT};
use crate::controllers::redis_sentinel::validate::Validated;
use crate::error::Result;
use crate::k8s::conditions::Health;
use crate::stores::redis::{self as store, Endpoint, StoreError};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

/// The Redis password, tracked for rotation when auth is on. Redis keeps no password in its
/// data: only running members hold it.
pub fn store(v: &Validated) -> StoreCredentials {
    let n = &v.names;
    let name = &v.owner.name;
    StoreCredentials {
        app: APP,
        component: REDIS,
        tracked: v
            .password
            .iter()
            .map(|(secret, key)| Tracked {
                key: "password",
                secret: secret.clone(),
                secret_key: key.clone(),
            })
            .collect(),
        statefulsets: vec![n.redis.clone(), n.sentinel.clone()],
        claims: None,
        afresh: format!(
            "delete RedisSentinel {name} and create it again: Redis and Sentinel then start with a new password (the data on kept claims is reused)"
        ),
    }
}

/// What the rollout step leaves the rest of the reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The password to talk to Redis and Sentinel with: the one in the Secret now.
    pub auth: Option<String>,
    /// Why the rollout is not complete: `Reconciling` while it waits, `Stalled` when a member
    /// refuses both passwords.
    pub pending: Option<Health>,
    /// The version of the Secret every member uses, for status.
    pub version: Option<String>,
}

/// One member, by pod and address.
struct Member {
    pod: String,
    ep: Endpoint,
    sentinel: bool,
}

/// Where one member stood with the new password.
enum Reached {
    /// Accepts it (already did, or now does beside the old one).
    Accepts,
    /// Refuses the old password and the new one.
    Refused(String),
    /// Does not answer although its container runs.
    Silent(String),
}

/// Asks with the new password, then with the old one; a member that only knows the old one
/// learns the new one beside it.
async fn accept_both(m: &Member, old: &str, new: &str) -> Result<Reached, StoreError> {
    let with = |pw: &str| Endpoint {
        password: Some(pw.to_string()),
        ..m.ep.clone()
    };
    match store::ping(&with(new)).await {
        Ok(()) => return Ok(Reached::Accepts),
        Err(e) if !e.is_auth() => return Ok(Reached::Silent(e.to_string())),
        Err(_) => {}
    }
    match store::ping(&with(old)).await {
        Ok(()) => {
            let add = format!(">{new}");
            store::command(&with(old), &["ACL", "SETUSER", "default", "on", &add]).await?;
            Ok(Reached::Accepts)
        }
        Err(e) if e.is_auth() => Ok(Reached::Refused(e.to_string())),
        Err(e) => Ok(Reached::Silent(e.to_string())),
    }
}

/// Rolls the password in the Secret out to every member when it differs from the one in use
/// (see the module doc). Members whose container is down are skipped: they start with the new
/// password.
pub async fn roll_out<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    v: &Validated,
    g: &Guarded,
) -> Result<Rollout> {
    let Some(p) = g.passwords.first() else {
        // Auth off, or the password is unreadable (the guard reports why).
        let auth = match &v.password {
            Some((secret, key)) => {
                crate::k8s::secrets::read(&ctx.client, &v.owner.namespace, secret, key).await?
            }
            None => None,
        };
        return Ok(Rollout {
            auth,
            ..Rollout::default()
        });
    };
    let (old, new) = (p.in_use.as_str(), p.current.as_str());
    let mut out = Rollout {
        auth: Some(new.to_string()),
        ..Rollout::default()
    };
    if !p.changed() {
        if g.recorded != g.version {
            // Same password, another version (the Secret was restored or relabelled).
            record(ctx, &v.owner.namespace, g, false, false).await?;
        }
        out.version = Some(g.version.clone());
        return Ok(out);
    }
    let members = running_members(ctx, v, new);
    let mut refused = Vec::new();
    let mut silent = Vec::new();
    for m in &members {
        match accept_both(m, old, new).await? {
            Reached::Accepts => {}
            Reached::Refused(e) => refused.push((m.pod.clone(), e)),
            Reached::Silent(e) => silent.push(format!("{} ({e})", m.pod)),
        }
    }
    out.version = Some(g.recorded.clone());
    if !refused.is_empty() {
        out.pending = Some(auth_failed(&refused, &p.secret));
        return Ok(out);
    }
    if !silent.is_empty() {
        out.pending = Some(Health::progressing(
            "RotatingCredentials",
            format!(
                "the password in Secret {} is being rolled out; every member accepts both passwords until {} answer",
                p.secret,
                silent.join(", ")
            ),
        ));
        return Ok(out);
    }
    let group = v.owner.name.as_str();
    for m in &members {
        if m.sentinel {
            match store::sentinel(&m.ep, &["SET", group, "auth-pass", new]).await {
                Ok(()) => {}
                // Not monitoring yet: the heal loop's MONITOR sets the new password.
                Err(e) if e.to_string().contains("No such master") => {}
                Err(e) => return Err(e.into()),
            }
            store::sentinel(&m.ep, &["CONFIG", "SET", "sentinel-pass", new]).await?;
        } else {
            store::command(&m.ep, &["CONFIG", "SET", "masterauth", new]).await?;
        }
    }
    for m in &members {
        if m.sentinel {
            let only = format!(">{new}");
            store::command(
                &m.ep,
                &["ACL", "SETUSER", "default", "on", "resetpass", &only],
            )
            .await?;
        } else {
            store::command(&m.ep, &["CONFIG", "SET", "requirepass", new]).await?;
        }
    }
    record(ctx, &v.owner.namespace, g, true, true).await?;
    let (redis, sentinels) = (
        members.iter().filter(|m| !m.sentinel).count(),
        members.iter().filter(|m| m.sentinel).count(),
    );
    let note = format!(
        "the password in Secret {} (version {}) is rolled out to {redis} Redis and {sentinels} Sentinels without a restart; the old one is refused",
        p.secret, g.version
    );
    tracing::info!(%note, "credentials rotated");
    publish(
        ctx,
        obj,
        EventType::Normal,
        "CredentialsRotated",
        "Rotate",
        &note,
    )
    .await;
    out.version = Some(g.version.clone());
    Ok(out)
}

/// Redis and Sentinel pods whose container runs, with `password` on their endpoints.
fn running_members(ctx: &Context, v: &Validated, password: &str) -> Vec<Member> {
    let mut out = Vec::new();
    for (component, port, sentinel) in [(REDIS, REDIS_PORT, false), (SENTINEL, SENTINEL_PORT, true)]
    {
        for p in pods(ctx, v, component) {
            let Some((ip, true)) = address(&p) else {
                continue;
            };
            out.push(Member {
                pod: p.name_any(),
                ep: Endpoint {
                    ip,
                    port: port as u16,
                    password: Some(password.to_string()),
                },
                sentinel,
            });
        }
    }
    out
}

/// The health to report: a pending rollout or refused password wins over what the heal loop
/// concluded (pods refusing the password look unreachable to it).
pub fn health(
    rollout: &Rollout,
    refused: &[(String, String)],
    secret: Option<&str>,
    health: Health,
) -> Health {
    if let Some(h @ Health::Stalled { .. }) = &rollout.pending {
        return h.clone();
    }
    if let (false, Some(secret)) = (refused.is_empty(), secret) {
        return auth_failed(refused, secret);
    }
    match (&rollout.pending, &health) {
        (_, Health::Stalled { .. }) => health,
        (Some(p), _) => p.clone(),
        (None, _) => health,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_password_is_named_not_hidden_behind_no_master() {
        let h = health(
            &Rollout::default(),
            &[("cache-redis-0".into(), "WRONGPASS".into())],
            Some("cache-redis-auth"),
            Health::progressing("NoMaster", "no reachable Redis pod yet"),
        );
        assert_eq!(h.reason(), "AuthenticationFailed");
        assert!(h.message().contains("cache-redis-0"));
        let ok = Health::Ready {
            reason: "Healthy".into(),
            message: String::new(),
        };
        assert_eq!(health(&Rollout::default(), &[], Some("s"), ok.clone()), ok);
    }

    #[test]
    fn a_rollout_under_way_is_reported_as_such() {
        let r = Rollout {
            pending: Some(Health::progressing("RotatingCredentials", "m")),
            ..Rollout::default()
        };
        let ok = Health::Ready {
            reason: "Healthy".into(),
            message: String::new(),
        };
        assert_eq!(
            health(&r, &[], Some("s"), ok).reason(),
            "RotatingCredentials"
        );
        let stalled = Health::stalled("X", "y");
        assert_eq!(health(&r, &[], Some("s"), stalled).reason(), "X");
    }
}
