//! A changed superuser or replication password rolled out to a PatroniCluster:
//!
//! 1. a Job changes the roles' passwords on the primary (`ALTER ROLE ... PASSWORD`), logged
//!    in with the password in use (the in-use copy; the new one when an earlier attempt got
//!    that far);
//! 2. once it has succeeded, the in-use copy takes the new passwords and the members' pod
//!    template one more rotation count ([`ROTATION`]), so the existing roll driver replaces
//!    them — replicas first, then a switchover, then the old primary — and each Patroni starts
//!    with the new PATRONI_*_PASSWORD (it reads them only at start);
//! 3. the rotation is complete when every member runs that template.
//!
//! Streaming replicas keep streaming meanwhile (a password is checked at connect only).

use super::{Guarded, StoreCredentials, Tracked, record};
use crate::context::Context;
use crate::controllers::patroni_cluster::jobs::{job_failed, job_succeeded, newest_result};
use crate::controllers::patroni_cluster::names::{APP, PG_GID, PG_PORT, PG_UID, POSTGRES};
use crate::controllers::patroni_cluster::validate::Validated;
use crate::controllers::publish;
use crate::crd::PatroniCluster;
use crate::error::Result;
use crate::k8s::backup_jobs::{self, ScriptPod};
use crate::k8s::cache::ChildCache;
use crate::k8s::children::{Child, ChildKind};
use crate::k8s::conditions::Health;
use crate::k8s::factory::{Factory, fnv};
use crate::k8s::labels;
use crate::k8s::pods::update_revision;
use crate::k8s::podspec::{restricted_pod, secret_env};
use crate::stores::patroni::Cluster;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::Value;

/// Component of the rotation Job's pods.
pub const COMPONENT: &str = "credentials";
/// On the members' pod template: rotations rolled out so far (absent before the first).
pub const ROTATION: &str = "guestbook-operator.dev/credentials-rotation";

/// The superuser's and the replication role's passwords, tracked for rotation.
pub fn store(pc: &PatroniCluster, v: &Validated) -> StoreCredentials {
    let name = &v.owner.name;
    let track = |key, secret: &String| Tracked {
        key,
        secret: secret.clone(),
        secret_key: "password".into(),
    };
    StoreCredentials {
        app: APP,
        component: POSTGRES,
        tracked: vec![
            track("superuser", &v.superuser_secret),
            track("replication", &v.replication_secret),
        ],
        statefulsets: vec![v.names.statefulset.clone()],
        claims: Some(labels::selector_string(&labels::selector(
            APP, name, POSTGRES,
        ))),
        afresh: format!(
            "delete PatroniCluster {name} and its data claims (data-{name}-*: all its data is lost) and create it again{}",
            if pc.spec.users.is_empty() {
                ""
            } else {
                "; a lost role Secret can also be recreated with a new password if that role's password is changed to it by hand"
            }
        ),
    }
}

pub fn job_name(v: &Validated, g: &Guarded) -> String {
    format!("{}-credentials-{}", v.owner.name, &fnv(&g.version)[..8])
}

/// Before apply: while a rotation is pending, the Job changing the passwords on the primary
/// joins `children`; once it has succeeded, the new passwords are recorded as in use and the
/// members' template carries the next rotation count. Returns the health of a rotation that
/// has not reached the members' restart yet.
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    ctx: &Context,
    pc: &PatroniCluster,
    v: &Validated,
    cache: &ChildCache,
    g: &Guarded,
    has_primary: bool,
    children: &mut Vec<Child>,
) -> Result<Option<Health>> {
    let ns = &v.owner.namespace;
    if g.passwords.is_empty() {
        annotate(children, v, g.rotation);
        return Ok(None);
    }
    if !g.rotating() {
        if g.recorded != g.version {
            record(ctx, ns, g, false, false).await?;
        }
        annotate(children, v, g.rotation);
        return Ok(None);
    }
    let job = job_name(v, g);
    let secrets = changed(g);
    if job_succeeded(cache, ns, &job) {
        record(ctx, ns, g, true, true).await?;
        annotate(children, v, g.rotation + 1);
        let note = format!(
            "Job {job} changed the passwords of {secrets} on the primary; members restart one by one (replicas first, then a switchover) to use them"
        );
        tracing::info!(%note, "credentials rotated");
        publish(
            ctx,
            pc,
            EventType::Normal,
            "CredentialsRotated",
            "Rotate",
            &note,
        )
        .await;
        return Ok(Some(Health::progressing("RotatingCredentials", note)));
    }
    annotate(children, v, g.rotation);
    if job_failed(cache, ns, &job) {
        // Kept (not pruned, not retried): a changed Secret makes a new Job.
        children.push(rotation_job(pc, v, g, &job)?);
        let why = newest_result(ctx, v, COMPONENT)
            .and_then(|r| r.message)
            .unwrap_or_else(|| "no message".into());
        let reason = if why.contains("password authentication failed") {
            "AuthenticationFailed"
        } else {
            "CredentialsRotationFailed"
        };
        return Ok(Some(Health::stalled(
            reason,
            format!(
                "Job {job} could not change the passwords of {secrets} on the primary: {why}; the superuser password in use is in Secret {}. Fix the cause, then delete the Job to retry",
                g.in_use
            ),
        )));
    }
    if !has_primary && cache.get(ChildKind::Job, ns, &job).is_none() {
        return Ok(Some(Health::progressing(
            "RotatingCredentials",
            format!("the passwords of {secrets} changed; waiting for a primary to change them on"),
        )));
    }
    children.push(rotation_job(pc, v, g, &job)?);
    Ok(Some(Health::progressing(
        "RotatingCredentials",
        format!("Job {job} changes the passwords of {secrets} on the primary"),
    )))
}

/// "Secret a and Secret b": the sources whose password changed.
fn changed(g: &Guarded) -> String {
    let names: Vec<String> = g
        .passwords
        .iter()
        .filter(|p| p.changed())
        .map(|p| format!("Secret {}", p.secret))
        .collect();
    names.join(" and ")
}

/// Puts the rotation count on the members' pod template (none before the first rotation, so
/// existing clusters are not rolled by an upgrade of the operator).
fn annotate(children: &mut [Child], v: &Validated, rotation: u32) {
    if rotation == 0 {
        return;
    }
    let sts = children
        .iter_mut()
        .find(|c| c.kind == ChildKind::StatefulSet && c.name == v.names.statefulset);
    let Some(template) = sts.and_then(|c| c.object.pointer_mut("/spec/template/metadata")) else {
        return;
    };
    let Some(meta) = template.as_object_mut() else {
        return;
    };
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(a) = annotations.as_object_mut() {
        a.insert(ROTATION.into(), Value::String(rotation.to_string()));
    }
}

/// The Job changing the superuser's and replication role's passwords on the primary.
fn rotation_job(pc: &PatroniCluster, v: &Validated, g: &Guarded, name: &str) -> Result<Child> {
    let f = Factory::new(&v.owner, APP);
    let env = vec![
        secret_env("SU_USER", &v.superuser_secret, "username"),
        secret_env("NEW_SU", &v.superuser_secret, "password"),
        secret_env("OLD_SU", &g.in_use, "superuser"),
        secret_env("REPL_USER", &v.replication_secret, "username"),
        secret_env("NEW_REPL", &v.replication_secret, "password"),
    ];
    let pod = ScriptPod {
        component: COMPONENT,
        image: &pc.spec.image,
        script: script(pc),
        env,
        claim: None,
        security: restricted_pod(PG_UID, PG_GID),
        read_only_claim: false,
    };
    backup_jobs::job(&f, name, &pod)
}

/// Pure: the rotation Job's script. Passwords and role names go through psql variables,
/// never through the shell or SQL text.
pub fn script(pc: &PatroniCluster) -> String {
    let name = pc.name_any();
    let hosts = (0..pc.spec.members)
        .map(|i| format!("{name}-{i}.{name}-headless"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"set -eu
BIN=/usr/lib/postgresql/{version}/bin
export PGPORT={PG_PORT} PGCONNECT_TIMEOUT=5 PGDATABASE=postgres PGUSER="$SU_USER"
HOSTS="{hosts}"
fail() {{ echo "$1" | tee /dev/termination-log >&2; exit 1; }}
primary() {{
  for h in $HOSTS; do
    r=$("$BIN/psql" -h "$h" -XAtc "SELECT pg_is_in_recovery()" 2>>/tmp/connect.err) || continue
    [ "$r" != f ] || {{ PGHOST="$h"; export PGHOST; return 0; }}
  done
  return 1
}}
# The password in use first; the new one when an earlier attempt already changed it.
export PGPASSWORD="$OLD_SU"
primary || {{ export PGPASSWORD="$NEW_SU"; primary; }} || fail "no primary accepted the superuser password in use or the new one (tried $HOSTS): $(tail -n 1 /tmp/connect.err)"
"$BIN/psql" -X -q -v ON_ERROR_STOP=1 -v su="$SU_USER" -v su_pw="$NEW_SU" -v repl="$REPL_USER" -v repl_pw="$NEW_REPL" -f - >/tmp/alter.log 2>&1 <<'SQL' || fail "changing the passwords on $PGHOST failed: $(tail -n 1 /tmp/alter.log)"
ALTER ROLE :"su" WITH PASSWORD :'su_pw';
ALTER ROLE :"repl" WITH PASSWORD :'repl_pw';
SQL
printf '{{"file":"credentials","source":"%s"}}' "${{PGHOST%%.*}}" > /dev/termination-log
echo "passwords changed on $PGHOST"
"#,
        version = pc.spec.postgresql.version,
    )
}

/// Whether all `want` members run the template carrying `rotation`: only then do all of them
/// use the passwords in use.
pub fn rolled(
    cache: &ChildCache,
    v: &Validated,
    rotation: u32,
    want: i32,
    members: &[&Pod],
) -> bool {
    if rotation == 0 {
        return true;
    }
    let ns = &v.owner.namespace;
    let sts = &v.names.statefulset;
    let carried = cache
        .get(ChildKind::StatefulSet, ns, sts)
        .and_then(|s| {
            let a = s.data.pointer("/spec/template/metadata/annotations")?;
            Some(a.get(ROTATION)?.as_str()? == rotation.to_string())
        })
        .unwrap_or(false);
    let Some(revision) = update_revision(cache, ns, sts).filter(|_| carried) else {
        return false;
    };
    members.len() >= usize::try_from(want).unwrap_or(0)
        && members.iter().all(|p| {
            p.labels()
                .get("controller-revision-hash")
                .map(String::as_str)
                == Some(&revision)
        })
}

/// While members restart for new passwords, a replica still on the old template that does
/// not stream (the old primary after the switchover: it still offers the old replication
/// password) can never become healthy by itself, and the roll driver waits for a healthy
/// cluster: it is replaced at once. Returns what was done.
pub async fn replace_stranded(
    ctx: &Context,
    pc: &PatroniCluster,
    v: &Validated,
    cache: &ChildCache,
    g: &Guarded,
    cluster: Option<&Cluster>,
    pods: &[&Pod],
) -> Result<Option<String>> {
    let ns = &v.owner.namespace;
    let Some(cluster) = cluster.filter(|c| c.leader().is_some()) else {
        return Ok(None);
    };
    if g.rotation == 0 || rolled(cache, v, g.rotation, pc.spec.members, pods) {
        return Ok(None);
    }
    let Some(revision) = update_revision(cache, ns, &v.names.statefulset) else {
        return Ok(None);
    };
    let stranded = pods.iter().find(|p| {
        let name = p.name_any();
        let member = cluster.members.iter().find(|m| m.name == name);
        p.metadata.deletion_timestamp.is_none()
            && p.labels().get("controller-revision-hash") != Some(&revision)
            && member.is_none_or(|m| m.role != "leader" && m.state != "streaming")
    });
    let Some(pod) = stranded else {
        return Ok(None);
    };
    let name = pod.name_any();
    Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .delete(&name, &DeleteParams::default())
        .await?;
    let note = format!(
        "replacing {name}: it still runs with the old passwords and cannot stream from the primary"
    );
    tracing::info!(%note, "credentials rotation");
    publish(ctx, pc, EventType::Normal, "RollingUpdate", "Roll", &note).await;
    Ok(Some(note))
}

/// Pure: the health and status version once the reconcile has acted. A pending rotation (or
/// one whose members are still restarting) is `Reconciling`; the version changes only once
/// every member uses the passwords.
pub fn conclude(
    g: &Guarded,
    pending: Option<Health>,
    rolled: bool,
    health: Health,
) -> (Health, Option<String>) {
    if g.passwords.is_empty() {
        return (health, None);
    }
    let version = (pending.is_none() && rolled).then(|| g.version.clone());
    let health = match (pending, &health) {
        (Some(h @ Health::Stalled { .. }), _) => h,
        (_, Health::Stalled { .. }) => health,
        (Some(h), _) => h,
        (None, _) if !rolled => Health::progressing(
            "RotatingCredentials",
            format!(
                "members restart to use the new passwords: {}",
                health.message()
            ),
        ),
        (None, _) => health,
    };
    (health, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::credentials::Password;

    fn guarded(in_use: &str, current: &str) -> Guarded {
        Guarded {
            in_use: "db-credentials-in-use".into(),
            passwords: vec![Password {
                key: "superuser",
                secret: "su".into(),
                in_use: in_use.into(),
                current: current.into(),
            }],
            version: "7,8".into(),
            recorded: "7,8".into(),
            ..Guarded::default()
        }
    }

    fn ready() -> Health {
        Health::Ready {
            reason: "Healthy".into(),
            message: "all members streaming".into(),
        }
    }

    #[test]
    fn the_version_moves_only_once_every_member_restarted() {
        let g = guarded("a", "a");
        let (h, v) = conclude(&g, None, false, ready());
        assert_eq!(h.reason(), "RotatingCredentials");
        assert!(v.is_none());
        let (h, v) = conclude(&g, None, true, ready());
        assert_eq!(h, ready());
        assert_eq!(v.as_deref(), Some("7,8"));
        let stalled = Health::stalled("AuthenticationFailed", "x");
        let (h, _) = conclude(&g, Some(stalled.clone()), true, ready());
        assert_eq!(h, stalled);
    }

    #[test]
    fn the_template_carries_the_rotation_only_after_the_first() {
        let owner = crate::k8s::owner::Owner {
            kind: "PatroniCluster",
            namespace: "ns".into(),
            name: "db".into(),
            uid: "u".into(),
            reference: Default::default(),
            part_of: "db".into(),
        };
        let v = Validated {
            names: crate::controllers::patroni_cluster::names::Names::of("db"),
            superuser_secret: "su".into(),
            replication_secret: "db-replication".into(),
            user_secrets: Vec::new(),
            user_secret_versions: Vec::new(),
            owner,
        };
        let sts = Child {
            kind: ChildKind::StatefulSet,
            name: "db".into(),
            object: serde_json::json!({"spec": {"template": {"metadata": {"labels": {}}}}}),
            initial: None,
        };
        let mut children = vec![sts];
        annotate(&mut children, &v, 0);
        assert!(
            children[0]
                .object
                .pointer("/spec/template/metadata/annotations")
                .is_none()
        );
        annotate(&mut children, &v, 2);
        assert_eq!(
            children[0].object.pointer(&format!(
                "/spec/template/metadata/annotations/{}",
                ROTATION.replace('/', "~1")
            )),
            Some(&Value::String("2".into()))
        );
    }

    #[test]
    fn the_job_script_keeps_passwords_out_of_the_shell_and_sql_text() {
        let pc: PatroniCluster = serde_yaml_ng::from_str(
            "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {name: db, namespace: ns}\nspec: {members: 2}\n",
        )
        .expect("fixture");
        let s = script(&pc);
        assert!(
            s.contains("HOSTS=\"db-0.db-headless db-1.db-headless\""),
            "{s}"
        );
        assert!(s.contains("ALTER ROLE :\"su\" WITH PASSWORD :'su_pw';"));
        assert!(
            s.contains("<<'SQL'"),
            "quoted heredoc: no shell expansion in SQL"
        );
        assert!(s.contains("export PGPASSWORD=\"$OLD_SU\""));
    }
}
