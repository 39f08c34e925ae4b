//! `guestbook-operator status [-n NS] KIND/NAME` (also `kubectl guestbook-operator status` when
//! the binary is on PATH as `kubectl-guestbook_operator`): a human summary of one app or store
//! — conditions with their reasons, tiers, stores, master or leader, members and lag, backups
//! and restore checks, recent events.

use crate::crd::common::{BackupStatus, StoreStatus, TierStatus};
use crate::crd::{Guestbook, PatroniCluster, RedisSentinel, VoteApp};
use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::ListParams;
use kube::{Api, Client};
use std::fmt::Write;

/// Prints the summary of `target` (`kind/name`, kinds by name, plural or short name).
pub async fn summary(client: &Client, namespace: &str, target: &str) -> Result<String> {
    let (kind, name) = target.split_once('/').ok_or_else(|| usage(target))?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "redissentinel" | "redissentinels" | "rsen" => "RedisSentinel",
        "patronicluster" | "patroniclusters" | "pgc" => "PatroniCluster",
        "guestbook" | "guestbooks" | "gb" => "Guestbook",
        "voteapp" | "voteapps" | "va" => "VoteApp",
        _ => return Err(usage(target)),
    };
    let mut out = String::new();
    match kind {
        "RedisSentinel" => {
            let o = Api::<RedisSentinel>::namespaced(client.clone(), namespace)
                .get(name)
                .await?;
            let s = o.status.unwrap_or_default();
            header(
                &mut out,
                kind,
                namespace,
                name,
                s.observed_generation,
                o.metadata.generation,
                &s.conditions,
            );
            let master = s
                .master
                .map(|m| format!("{} ({})", m.pod, m.address.unwrap_or_default()));
            line(&mut out, "Master", master.as_deref().unwrap_or("none yet"));
            line(&mut out, "Replicas in sync", &opt(s.replicas_in_sync));
            line(&mut out, "Sentinels agreeing", &opt(s.sentinels_agreeing));
            line(
                &mut out,
                "Last failover",
                &time(s.last_failover_time.as_ref()),
            );
            backup(&mut out, "Last backup", s.last_backup.as_ref());
        }
        "PatroniCluster" => {
            let o = Api::<PatroniCluster>::namespaced(client.clone(), namespace)
                .get(name)
                .await?;
            let s = o.status.unwrap_or_default();
            header(
                &mut out,
                kind,
                namespace,
                name,
                s.observed_generation,
                o.metadata.generation,
                &s.conditions,
            );
            line(
                &mut out,
                "Leader",
                s.leader.as_deref().unwrap_or("none yet"),
            );
            if !s.members.is_empty() {
                let _ = writeln!(
                    out,
                    "Members\n  {:<24} {:<14} {:<12} {:>10} {:>8}",
                    "NAME", "ROLE", "STATE", "LAG", "TIMELINE"
                );
                for m in &s.members {
                    let _ = writeln!(
                        out,
                        "  {:<24} {:<14} {:<12} {:>10} {:>8}",
                        m.name,
                        m.role.as_deref().unwrap_or("-"),
                        m.state.as_deref().unwrap_or("-"),
                        opt(m.lag_bytes),
                        opt(m.timeline)
                    );
                }
            }
            backup(&mut out, "Last backup", s.last_backup.as_ref());
            backup(
                &mut out,
                "Last restore check",
                s.last_restore_check.as_ref(),
            );
            backup(&mut out, "Restored from", s.restored_from.as_ref());
        }
        "Guestbook" => {
            let o = Api::<Guestbook>::namespaced(client.clone(), namespace)
                .get(name)
                .await?;
            let s = o.status.unwrap_or_default();
            header(
                &mut out,
                kind,
                namespace,
                name,
                s.observed_generation,
                o.metadata.generation,
                &s.conditions,
            );
            line(
                &mut out,
                "Entry Service",
                s.entry_service.as_deref().unwrap_or("-"),
            );
            let _ = writeln!(out, "Tiers");
            tier(&mut out, "frontend", s.frontend.as_ref());
            if s.proxy.is_some() {
                tier(&mut out, "proxy", s.proxy.as_ref());
            }
            let _ = writeln!(out, "Stores");
            store(&mut out, "RedisSentinel", s.redis.as_ref());
        }
        _ => {
            let o = Api::<VoteApp>::namespaced(client.clone(), namespace)
                .get(name)
                .await?;
            let s = o.status.unwrap_or_default();
            header(
                &mut out,
                kind,
                namespace,
                name,
                s.observed_generation,
                o.metadata.generation,
                &s.conditions,
            );
            let _ = writeln!(out, "Tiers");
            tier(&mut out, "vote", s.vote.as_ref());
            tier(&mut out, "result", s.result.as_ref());
            if s.worker.is_some() {
                tier(&mut out, "worker", s.worker.as_ref());
            }
            let _ = writeln!(out, "Stores");
            if s.redis.is_some() {
                store(&mut out, "RedisSentinel", s.redis.as_ref());
            }
            store(&mut out, "PatroniCluster", s.postgres.as_ref());
            line(
                &mut out,
                "Queue",
                &s.queue_length
                    .map(|n| format!("{n} votes waiting"))
                    .unwrap_or_else(|| "-".into()),
            );
            line(
                &mut out,
                "Result tier started for primary",
                s.result_primary.as_deref().unwrap_or("-"),
            );
        }
    }
    events(client, namespace, kind, name, &mut out).await?;
    Ok(out)
}

fn usage(target: &str) -> Error {
    Error::Invalid {
        kind: "status",
        name: target.to_string(),
        message: "expected KIND/NAME with KIND one of redissentinel (rsen), patronicluster (pgc), guestbook (gb), voteapp (va)".into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn time(t: Option<&Time>) -> String {
    t.map(|t| t.0.to_string()).unwrap_or_else(|| "-".into())
}

fn line(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "{label}: {value}");
}

fn header(
    out: &mut String,
    kind: &str,
    ns: &str,
    name: &str,
    observed: Option<i64>,
    generation: Option<i64>,
    conditions: &[Condition],
) {
    let _ = writeln!(out, "{kind} {ns}/{name}");
    let _ = writeln!(
        out,
        "Generation: {} (status describes {})",
        opt(generation),
        opt(observed)
    );
    let _ = writeln!(out, "Conditions");
    if conditions.is_empty() {
        let _ = writeln!(
            out,
            "  none yet: the operator has not reported on this object"
        );
    }
    for c in conditions {
        let _ = writeln!(
            out,
            "  {:<20} {:<8} {:<24} {}",
            c.type_, c.status, c.reason, c.message
        );
    }
}

fn tier(out: &mut String, name: &str, t: Option<&TierStatus>) {
    let Some(t) = t else {
        let _ = writeln!(out, "  {name:<10} not created yet");
        return;
    };
    let _ = writeln!(
        out,
        "  {name:<10} {}/{} available, {} updated",
        opt(t.available_replicas),
        opt(t.replicas),
        opt(t.updated_replicas)
    );
}

fn store(out: &mut String, kind: &str, s: Option<&StoreStatus>) {
    let Some(s) = s else {
        let _ = writeln!(out, "  {kind:<15} -");
        return;
    };
    let how = if s.owned { "owned" } else { "referenced" };
    let ready = if s.ready { "Ready" } else { "not Ready" };
    let _ = writeln!(
        out,
        "  {kind:<15} {:<24} {ready} ({}), {how}",
        s.name,
        s.reason.as_deref().unwrap_or("no status yet")
    );
}

fn backup(out: &mut String, label: &str, b: Option<&BackupStatus>) {
    let Some(b) = b else {
        line(out, label, "-");
        return;
    };
    let outcome = match b.succeeded {
        Some(true) => "succeeded".to_string(),
        Some(false) => format!("failed: {}", b.message.as_deref().unwrap_or("no message")),
        None => "unknown".to_string(),
    };
    let _ = writeln!(
        out,
        "{label}: {} {} ({} bytes, Job {}) {outcome}",
        time(b.time.as_ref()),
        b.file.as_deref().unwrap_or("-"),
        opt(b.size_bytes),
        b.job.as_deref().unwrap_or("-")
    );
}

async fn events(client: &Client, ns: &str, kind: &str, name: &str, out: &mut String) -> Result<()> {
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind={kind},involvedObject.name={name}"
    ));
    let mut events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items;
    let when = |e: &Event| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or(e.last_timestamp.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    events.sort_by_key(when);
    let _ = writeln!(out, "Events (newest last)");
    if events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in events.iter().rev().take(10).rev() {
        let _ = writeln!(
            out,
            "  {} {:<8} {:<22} {}",
            when(e).map(|t| t.to_string()).unwrap_or_default(),
            e.type_.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("-"),
            e.message.as_deref().unwrap_or_default().replace('\n', " ")
        );
    }
    Ok(())
}
