//! PatroniCluster backups, end to end with real PostgreSQL: `pg_dump -Fc` of every database
//! from a replica onto the backup claim, the restore check proving the newest backup restores
//! (and failing loudly for a corrupted one), and a new cluster bootstrapped from the backup
//! holding the same rows, owned by the same application role — roles and databases the
//! operator created from the spec.

use crate::patroni_cluster::{status, superuser_password};
use crate::real::{claim_dir, psql};
use crate::support::{
    Capability, apply_yaml, condition, require, run_job_from, start_with, try_job_from, wait_for,
};
use guestbook_operator::crd::PatroniCluster;
use guestbook_operator::crd::common::BackupStatus;
use guestbook_operator::crd::patroni_cluster::PatroniClusterStatus;
use kube::{Api, Client};
use std::time::Duration;

/// Never fires by itself: the test starts each Job.
const NEVER: &str = "0 0 1 1 *";

fn spec(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {{name: {name}}}\nspec:\n  members: 2\n  storage: {{size: 200Mi}}\n  patroni: {{ttl: 20, loopWait: 2, retryTimeout: 5}}\n  users: [{{name: shop}}]\n  databases: [{{name: shop, owner: shop}}]\n{extra}"
    )
}

/// Runs `sql` in database `shop` as role `shop`, with the password from the cluster's
/// generated user Secret.
async fn as_shop(c: &Client, ns: &str, cluster: &str, ip: std::net::Ipv4Addr, sql: &str) -> String {
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(c.clone(), ns)
        .get(&format!("{cluster}-user-shop"))
        .await
        .expect("the generated user Secret");
    let data = secret.data.expect("data");
    assert_eq!(data["username"].0, b"shop");
    let pw = String::from_utf8(data["password"].0.clone()).expect("utf-8");
    let out = tokio::process::Command::new("psql")
        .args([
            "-h",
            &ip.to_string(),
            "-U",
            "shop",
            "-d",
            "shop",
            "-v",
            "ON_ERROR_STOP=1",
            "-tAc",
            sql,
        ])
        .env("PGPASSWORD", pw)
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .await
        .expect("psql");
    assert!(
        out.status.success(),
        "as shop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The leader's address once `name` is Ready.
async fn ready_leader(c: &Client, ns: &str, name: &str) -> std::net::Ipv4Addr {
    let leader = wait_for(
        &format!("{name} to be Ready"),
        Duration::from_secs(240),
        || async {
            let (s, ..) = condition(c, ns, "PatroniCluster", name, "Ready").await?;
            (s == "True").then_some(())?;
            status(c, ns, name).await?.leader
        },
    )
    .await;
    let selector = format!("app.kubernetes.io/name=patroni,app.kubernetes.io/instance={name}");
    crate::real::pods(c, ns, &selector)
        .await
        .iter()
        .find(|p| crate::real::name(p) == leader)
        .and_then(crate::real::ip)
        .expect("leader address")
}

async fn reported(
    c: &Client,
    ns: &str,
    what: &str,
    pick: impl Fn(PatroniClusterStatus) -> Option<BackupStatus>,
    job: &str,
) -> BackupStatus {
    wait_for(
        &format!("status.{what} to report Job {job}"),
        Duration::from_secs(60),
        || async { pick(status(c, ns, "db").await?).filter(|b| b.job.as_deref() == Some(job)) },
    )
    .await
}

#[tokio::test]
async fn backups_restore_into_a_new_cluster_and_the_restore_check_catches_a_corrupted_one() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let backup = format!(
        "  backup: {{schedule: '{NEVER}', retention: 2, restoreCheckSchedule: '{NEVER}'}}\n"
    );
    let (c, ns, op) = start_with("pgc-backup", &spec("db", &backup)).await;
    let ns = &ns.name;
    let primary = ready_leader(&c, ns, "db").await;
    let pw = superuser_password(&c, ns, "db").await;
    psql(primary, &pw, "CREATE TABLE votes (id int PRIMARY KEY, choice text); INSERT INTO votes SELECT g, CASE WHEN g % 3 = 0 THEN 'cats' ELSE 'dogs' END FROM generate_series(1, 500) g")
        .await
        .expect("write rows");
    // The operator created role and database `shop`; the role owns what it creates.
    as_shop(
        &c,
        ns,
        "db",
        primary,
        "CREATE TABLE orders (n int); INSERT INTO orders SELECT generate_series(1, 42)",
    )
    .await;
    // The replica must have the rows before a backup taken from it can.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A backup: one dump per database, reported in status.
    run_job_from(&c, ns, "db-backup", "db-backup-manual-1").await;
    let taken = reported(
        &c,
        ns,
        "lastBackup",
        |s| s.last_backup,
        "db-backup-manual-1",
    )
    .await;
    let set = taken.file.clone().expect("backup name");
    let dir = claim_dir(&c, ns, "db-backup").await.join(&set);
    for db in ["postgres.dump", "shop.dump", "globals.sql"] {
        assert!(dir.join(db).is_file(), "{db} missing from {dir:?}");
    }
    println!(
        "backup {set}: {} bytes",
        taken.size_bytes.unwrap_or_default()
    );

    // The restore check restores it into a scratch server and says so.
    run_job_from(&c, ns, "db-restore-check", "db-restore-check-1").await;
    let check = reported(
        &c,
        ns,
        "lastRestoreCheck",
        |s| s.last_restore_check,
        "db-restore-check-1",
    )
    .await;
    assert_eq!(check.succeeded, Some(true), "{check:?}");
    assert_eq!(check.file.as_deref(), Some(set.as_str()));

    // A new cluster bootstrapped from that backup holds the same rows.
    let from = format!("  bootstrap: {{fromBackup: {{claimName: db-backup, file: {set}}}}}\n");
    let copy_spec = spec("copy", &from).replace(
        "storage: {size: 200Mi}",
        "storage: {size: 200Mi, whenDeleted: Delete}",
    );
    apply_yaml(&c, ns, &copy_spec)
        .await
        .expect("apply the copy");
    let copy = ready_leader(&c, ns, "copy").await;
    let restored = wait_for(
        "copy's status.restoredFrom",
        Duration::from_secs(120),
        || async { status(&c, ns, "copy").await?.restored_from },
    )
    .await;
    assert_eq!(restored.file.as_deref(), Some(set.as_str()));
    let copy_pw = superuser_password(&c, ns, "copy").await;
    let sum = "SELECT count(*) || ':' || sum(id) || ':' || count(*) FILTER (WHERE choice = 'cats') FROM votes";
    assert_eq!(
        psql(copy, &copy_pw, sum).await,
        psql(primary, &pw, sum).await,
        "votes differ after restore"
    );
    // Same rows in `shop`, readable by the copy's own `shop` role (a password of its own).
    assert_eq!(
        as_shop(&c, ns, "copy", copy, "SELECT count(*) FROM orders").await,
        "42"
    );

    // A corrupted backup: the restore check fails and says which file.
    let dump = dir.join("postgres.dump");
    let bytes = std::fs::read(&dump).expect("read dump");
    std::fs::write(&dump, &bytes[..bytes.len() / 2]).expect("truncate dump");
    let why = try_job_from(&c, ns, "db-restore-check", "db-restore-check-2").await;
    assert!(why.is_err(), "a truncated dump passed the restore check");
    let failed = reported(
        &c,
        ns,
        "lastRestoreCheck",
        |s| s.last_restore_check,
        "db-restore-check-2",
    )
    .await;
    assert_eq!(failed.succeeded, Some(false));
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("postgres.dump")),
        "{failed:?}"
    );
    wait_for(
        "a RestoreCheckFailed condition",
        Duration::from_secs(30),
        || async {
            let (s, _, msg) =
                condition(&c, ns, "PatroniCluster", "db", "RestoreCheckFailed").await?;
            (s == "True").then_some(msg)
        },
    )
    .await;
    // The copy asked for its data to go with it. A new `copy` then starts afresh instead of
    // waiting for the old cluster's leader in the DCS Patroni left behind.
    Api::<PatroniCluster>::namespaced(c.clone(), ns)
        .delete("copy", &Default::default())
        .await
        .expect("delete the copy");
    wait_for(
        "the copy's claims to be deleted",
        Duration::from_secs(120),
        || async {
            let claims =
                Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(c.clone(), ns)
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .filter(|n| n.starts_with("data-copy-"))
                    .count();
            (claims == 0).then_some(())
        },
    )
    .await;
    let fresh = spec("copy", "").replace(
        "storage: {size: 200Mi}",
        "storage: {size: 200Mi, whenDeleted: Delete}",
    );
    apply_yaml(&c, ns, &fresh)
        .await
        .expect("re-create the copy");
    let again = ready_leader(&c, ns, "copy").await;
    let pw_again = superuser_password(&c, ns, "copy").await;
    assert_eq!(
        psql(
            again,
            &pw_again,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'votes'"
        )
        .await
        .as_deref(),
        Ok("0"),
        "the re-created cluster is new, not the old data"
    );
    assert!(
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(c.clone(), ns)
            .get_opt("db-backup")
            .await
            .expect("get")
            .is_some(),
        "the backup claim must stay"
    );
    op.assert_no_reconcile_errors().await;
}
