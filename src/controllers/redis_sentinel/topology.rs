//! Pure: from what every Redis and Sentinel reports, decide which pod is the master and what
//! to change so that everyone agrees. Deterministic (the same observation gives the same
//! plan), conservative (nothing during a failover, one Sentinel reset at a time, never an
//! empty node over one with data).

use super::names::{ROLE_MASTER, ROLE_REPLICA};
use crate::crd::redis_sentinel::RedisSentinelSpec;
use crate::stores::redis::{Replication, SentinelView};
use std::cmp::Reverse;

/// One Redis pod as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisNode {
    pub pod: String,
    pub ordinal: i32,
    pub ip: String,
    /// `None` when it could not be reached.
    pub replication: Option<Replication>,
    pub keys: i64,
    /// The role label the pod carries now.
    pub role_label: Option<String>,
}

impl RedisNode {
    fn has_data(&self) -> bool {
        self.keys > 0 || self.replication.as_ref().is_some_and(|r| r.offset > 0)
    }
}

/// One Sentinel pod as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentinelNode {
    pub pod: String,
    pub ip: String,
    pub view: Option<SentinelView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `REPLICAOF NO ONE` on this pod.
    Promote { pod: String },
    /// `REPLICAOF <master>` on this pod.
    Follow { pod: String },
    /// `SENTINEL MONITOR` (plus settings) on a Sentinel that monitors nothing.
    Monitor { sentinel: String },
    /// `SENTINEL REMOVE` then MONITOR on a Sentinel that watches a stale address.
    Remonitor { sentinel: String },
    /// `SENTINEL SET` of the settings that differ from the spec.
    Configure {
        sentinel: String,
        settings: Vec<(String, String)>,
    },
    /// `SENTINEL RESET` on a Sentinel that remembers replicas or Sentinels that are gone.
    Reset { sentinel: String },
    /// Set the pod's role label (the master Service follows it).
    Label { pod: String, role: &'static str },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The pod that is (or is about to be) the master.
    pub master: Option<String>,
    pub steps: Vec<Step>,
    /// Why the master was chosen, when the choice was not obvious (recorded as an event).
    pub decision: Option<String>,
    /// A reason to change nothing now (a failover under way).
    pub hold: Option<String>,
}

/// Sentinel settings the spec asks for.
pub fn sentinel_settings(spec: &RedisSentinelSpec) -> Vec<(String, String)> {
    let s = &spec.sentinel;
    vec![
        ("quorum".into(), s.effective_quorum().to_string()),
        (
            "down-after-milliseconds".into(),
            s.down_after_milliseconds.to_string(),
        ),
        ("failover-timeout".into(), s.failover_timeout.to_string()),
        ("parallel-syncs".into(), s.parallel_syncs.to_string()),
    ]
}

/// The master by rank when nothing else decides: data first, then most replicas, then
/// furthest replication offset, then lowest ordinal.
fn rank<'a>(nodes: impl Iterator<Item = &'a RedisNode>) -> Option<&'a RedisNode> {
    nodes.min_by_key(|n| {
        let r = n.replication.as_ref();
        (
            Reverse(n.has_data()),
            Reverse(
                r.map(|r| r.replicas.iter().filter(|l| l.online).count())
                    .unwrap_or(0),
            ),
            Reverse(r.map(|r| r.offset).unwrap_or(0)),
            n.ordinal,
        )
    })
}

/// The outcome of choosing a master.
enum Choice<'a> {
    Master(&'a RedisNode, Option<String>),
    /// Leave things alone for now, for this reason.
    Hold(String),
}

fn choose_master<'a>(
    redis: &'a [RedisNode],
    sentinels: &[SentinelNode],
    quorum: i32,
) -> Choice<'a> {
    let reachable: Vec<&RedisNode> = redis.iter().filter(|n| n.replication.is_some()).collect();
    // What the Sentinels agree on wins when that node really is a master.
    let mut votes: Vec<(&str, i32)> = Vec::new();
    for s in sentinels {
        if let Some((ip, _)) = s.view.as_ref().and_then(|v| v.master.as_ref()) {
            match votes.iter_mut().find(|(a, _)| *a == ip.as_str()) {
                Some((_, n)) => *n += 1,
                None => votes.push((ip.as_str(), 1)),
            }
        }
    }
    votes.sort_by_key(|(a, n)| (Reverse(*n), *a));
    if let Some((ip, n)) = votes.first()
        && *n >= quorum
        && let Some(node) = redis.iter().find(|r| r.ip == *ip)
    {
        // A quorum of Sentinels names a master that is one of our pods: Sentinel owns
        // failover. If that master is down or not (yet) a master, we wait for Sentinel to
        // act instead of racing it with a promotion of our own.
        return match &node.replication {
            Some(r) if r.is_master => Choice::Master(node, None),
            Some(_) => Choice::Hold(format!(
                "Sentinels name {} as master but it reports itself a replica; waiting for Sentinel",
                node.pod
            )),
            None => Choice::Hold(format!(
                "master {} is unreachable; waiting for Sentinel to fail over",
                node.pod
            )),
        };
    }
    let masters: Vec<&RedisNode> = reachable
        .iter()
        .copied()
        .filter(|n| n.replication.as_ref().is_some_and(|r| r.is_master))
        .collect();
    // No Sentinel quorum knows a current pod as master: first start, Sentinels that lost
    // their state, or every pod replaced. Then the operator decides.
    let chosen = match masters.len() {
        1 => (Some(masters[0]), None),
        0 => {
            let best = rank(reachable.iter().copied());
            let why = best.map(|b| format!("no Redis pod is master; promoting {} (furthest replication offset among reachable replicas)", b.pod));
            (best, why)
        }
        _ => {
            let best = rank(masters.iter().copied());
            let all_empty =
                masters.iter().all(|m| !m.has_data()) && reachable.iter().all(|n| !n.has_data());
            let why = if all_empty {
                None // first start: nothing to choose between
            } else {
                best.map(|b| {
                    let names: Vec<&str> = masters.iter().map(|m| m.pod.as_str()).collect();
                    format!(
                        "{} pods claim to be master ({}); keeping {} (it holds data, has the most replicas and the furthest offset), the others become its replicas",
                        masters.len(),
                        names.join(", "),
                        b.pod
                    )
                })
            };
            (best, why)
        }
    };
    match chosen {
        (Some(m), why) => Choice::Master(m, why),
        (None, _) => Choice::Hold("no Redis pod is reachable".into()),
    }
}

/// The plan for one reconcile.
pub fn plan(spec: &RedisSentinelSpec, redis: &[RedisNode], sentinels: &[SentinelNode]) -> Plan {
    if let Some(s) = sentinels.iter().find(|s| {
        s.view
            .as_ref()
            .is_some_and(SentinelView::failover_in_progress)
    }) {
        return Plan {
            hold: Some(format!("Sentinel {} reports a failover in progress", s.pod)),
            ..Plan::default()
        };
    }
    let (master, decision) = match choose_master(redis, sentinels, spec.sentinel.effective_quorum())
    {
        Choice::Master(m, why) => (m, why),
        Choice::Hold(why) => {
            return Plan {
                hold: Some(why),
                ..Plan::default()
            };
        }
    };
    let mut steps = Vec::new();
    if !master.replication.as_ref().is_some_and(|r| r.is_master) {
        steps.push(Step::Promote {
            pod: master.pod.clone(),
        });
    }
    for n in redis.iter().filter(|n| n.pod != master.pod) {
        let Some(r) = &n.replication else { continue };
        if r.is_master || r.master_host.as_deref() != Some(master.ip.as_str()) {
            steps.push(Step::Follow { pod: n.pod.clone() });
        }
    }
    let want = sentinel_settings(spec);
    let expected_replicas = i64::from(spec.redis.replicas - 1);
    let expected_sentinels = i64::from(spec.sentinel.replicas - 1);
    let mut disruptive = false;
    for s in sentinels {
        let Some(view) = &s.view else { continue };
        match &view.master {
            None => steps.push(Step::Monitor {
                sentinel: s.pod.clone(),
            }),
            Some((ip, _)) if *ip != master.ip => {
                // One Sentinel at a time, so a quorum always remains.
                if !disruptive {
                    steps.push(Step::Remonitor {
                        sentinel: s.pod.clone(),
                    });
                    disruptive = true;
                }
            }
            Some(_) => {
                let differ: Vec<(String, String)> = want
                    .iter()
                    .filter(|(k, v)| view.fields.get(k) != Some(v))
                    .cloned()
                    .collect();
                if !differ.is_empty() {
                    steps.push(Step::Configure {
                        sentinel: s.pod.clone(),
                        settings: differ,
                    });
                }
                // Sentinels never forget a replica or Sentinel; after pods move, old
                // addresses linger. Counts below the expected are discovery still under way.
                let stale = view
                    .number("num-slaves")
                    .is_some_and(|n| n > expected_replicas)
                    || view
                        .number("num-other-sentinels")
                        .is_some_and(|n| n > expected_sentinels);
                if stale && !disruptive {
                    steps.push(Step::Reset {
                        sentinel: s.pod.clone(),
                    });
                    disruptive = true;
                }
            }
        }
    }
    for n in redis {
        let role = if n.pod == master.pod {
            ROLE_MASTER
        } else {
            ROLE_REPLICA
        };
        if n.role_label.as_deref() != Some(role) {
            steps.push(Step::Label {
                pod: n.pod.clone(),
                role,
            });
        }
    }
    Plan {
        master: Some(master.pod.clone()),
        steps,
        decision,
        hold: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::redis::ReplicaLink;
    use std::collections::BTreeMap;

    fn spec() -> RedisSentinelSpec {
        RedisSentinelSpec::default()
    }

    fn master(pod: &str, ordinal: i32, ip: &str, offset: i64, online: &[&str]) -> RedisNode {
        RedisNode {
            pod: pod.into(),
            ordinal,
            ip: ip.into(),
            keys: if offset > 0 { 1 } else { 0 },
            replication: Some(Replication {
                is_master: true,
                offset,
                replicas: online
                    .iter()
                    .map(|i| ReplicaLink {
                        ip: i.to_string(),
                        online: true,
                        offset,
                    })
                    .collect(),
                ..Replication::default()
            }),
            role_label: None,
        }
    }

    fn replica(pod: &str, ordinal: i32, ip: &str, of: &str, offset: i64) -> RedisNode {
        RedisNode {
            pod: pod.into(),
            ordinal,
            ip: ip.into(),
            keys: 0,
            replication: Some(Replication {
                is_master: false,
                master_host: Some(of.into()),
                master_port: Some(6379),
                link_up: true,
                offset,
                ..Replication::default()
            }),
            role_label: None,
        }
    }

    fn sentinel(pod: &str, master: Option<&str>, fields: &[(&str, &str)]) -> SentinelNode {
        SentinelNode {
            pod: pod.into(),
            ip: format!("10.0.9.{}", pod.len()),
            view: Some(SentinelView {
                master: master.map(|m| (m.to_string(), 6379)),
                fields: fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            }),
        }
    }

    fn healthy_fields() -> Vec<(&'static str, &'static str)> {
        vec![
            ("quorum", "2"),
            ("down-after-milliseconds", "5000"),
            ("failover-timeout", "10000"),
            ("parallel-syncs", "1"),
            ("num-slaves", "2"),
            ("num-other-sentinels", "2"),
            ("flags", "master"),
        ]
    }

    #[test]
    fn first_start_picks_pod_zero_and_configures_everyone() {
        let redis = vec![
            master("r-1", 1, "ip1", 0, &[]),
            master("r-0", 0, "ip0", 0, &[]),
            master("r-2", 2, "ip2", 0, &[]),
        ];
        let sentinels = vec![sentinel("s-0", None, &[]), sentinel("s-1", None, &[])];
        let p = plan(&spec(), &redis, &sentinels);
        assert_eq!(p.master.as_deref(), Some("r-0"));
        assert_eq!(p.decision, None, "nothing to explain on a first start");
        assert!(p.steps.contains(&Step::Follow { pod: "r-1".into() }));
        assert!(p.steps.contains(&Step::Follow { pod: "r-2".into() }));
        assert!(p.steps.contains(&Step::Monitor {
            sentinel: "s-0".into()
        }));
        assert!(p.steps.contains(&Step::Label {
            pod: "r-0".into(),
            role: "master"
        }));
    }

    #[test]
    fn a_healthy_set_needs_nothing() {
        let mut redis = vec![
            master("r-0", 0, "ip0", 100, &["ip1", "ip2"]),
            replica("r-1", 1, "ip1", "ip0", 100),
            replica("r-2", 2, "ip2", "ip0", 100),
        ];
        redis[0].role_label = Some("master".into());
        redis[1].role_label = Some("replica".into());
        redis[2].role_label = Some("replica".into());
        let f = healthy_fields();
        let sentinels = vec![
            sentinel("s-0", Some("ip0"), &f),
            sentinel("s-1", Some("ip0"), &f),
            sentinel("s-2", Some("ip0"), &f),
        ];
        let p = plan(&spec(), &redis, &sentinels);
        assert_eq!(p.master.as_deref(), Some("r-0"));
        assert!(p.steps.is_empty(), "{:?}", p.steps);
    }

    #[test]
    fn after_a_failover_the_sentinels_choice_wins_and_labels_move() {
        // Sentinels promoted r-1; r-0 came back as a master of nothing, with old data.
        let mut redis = vec![
            master("r-0", 0, "ip0", 90, &[]),
            master("r-1", 1, "ip1", 120, &["ip2"]),
            replica("r-2", 2, "ip2", "ip1", 120),
        ];
        redis[0].role_label = Some("master".into());
        redis[1].role_label = Some("replica".into());
        let f = healthy_fields();
        let sentinels = vec![
            sentinel("s-0", Some("ip1"), &f),
            sentinel("s-1", Some("ip1"), &f),
            sentinel("s-2", Some("ip1"), &f),
        ];
        let p = plan(&spec(), &redis, &sentinels);
        assert_eq!(p.master.as_deref(), Some("r-1"));
        assert!(p.steps.contains(&Step::Follow { pod: "r-0".into() }));
        assert!(p.steps.contains(&Step::Label {
            pod: "r-1".into(),
            role: "master"
        }));
        assert!(p.steps.contains(&Step::Label {
            pod: "r-0".into(),
            role: "replica"
        }));
    }

    #[test]
    fn split_brain_keeps_the_node_with_data_and_replicas_and_says_why() {
        let redis = vec![
            master("r-0", 0, "ip0", 0, &[]),
            master("r-1", 1, "ip1", 500, &["ip2"]),
            replica("r-2", 2, "ip2", "ip1", 500),
        ];
        let p = plan(&spec(), &redis, &[]);
        assert_eq!(p.master.as_deref(), Some("r-1"), "never the empty node");
        assert!(
            p.decision
                .as_deref()
                .is_some_and(|d| d.contains("r-0, r-1") && d.contains("keeping r-1")),
            "{:?}",
            p.decision
        );
        assert!(p.steps.contains(&Step::Follow { pod: "r-0".into() }));
    }

    #[test]
    fn with_no_master_the_furthest_replica_is_promoted() {
        let redis = vec![
            replica("r-0", 0, "ip0", "gone", 100),
            replica("r-1", 1, "ip1", "gone", 140),
            replica("r-2", 2, "ip2", "gone", 120),
        ];
        let p = plan(&spec(), &redis, &[]);
        assert_eq!(p.master.as_deref(), Some("r-1"));
        assert_eq!(p.steps[0], Step::Promote { pod: "r-1".into() });
    }

    #[test]
    fn an_unreachable_master_is_left_to_sentinel() {
        let mut down = master("r-0", 0, "ip0", 100, &[]);
        down.replication = None;
        let redis = vec![
            down,
            replica("r-1", 1, "ip1", "ip0", 100),
            replica("r-2", 2, "ip2", "ip0", 100),
        ];
        let f = healthy_fields();
        let sentinels = vec![
            sentinel("s-0", Some("ip0"), &f),
            sentinel("s-1", Some("ip0"), &f),
            sentinel("s-2", Some("ip0"), &f),
        ];
        let p = plan(&spec(), &redis, &sentinels);
        assert!(
            p.hold.as_deref().is_some_and(|h| h.contains("unreachable")),
            "{p:?}"
        );
        assert!(
            p.steps.is_empty(),
            "no promotion racing Sentinel: {:?}",
            p.steps
        );
    }

    #[test]
    fn sentinels_naming_an_address_no_pod_has_are_overruled() {
        // Every pod was replaced: the Sentinels remember an address that is gone.
        let redis = vec![
            master("r-0", 0, "new0", 0, &[]),
            master("r-1", 1, "new1", 0, &[]),
        ];
        let f = healthy_fields();
        let sentinels = vec![
            sentinel("s-0", Some("gone"), &f),
            sentinel("s-1", Some("gone"), &f),
            sentinel("s-2", Some("gone"), &f),
        ];
        let p = plan(&spec(), &redis, &sentinels);
        assert_eq!(p.master.as_deref(), Some("r-0"));
        assert_eq!(
            p.steps
                .iter()
                .filter(|s| matches!(s, Step::Remonitor { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn nothing_is_touched_during_a_failover() {
        let redis = vec![
            master("r-0", 0, "ip0", 0, &[]),
            master("r-1", 1, "ip1", 0, &[]),
        ];
        let mut f = healthy_fields();
        f.push(("failover-state", "wait_promotion"));
        let sentinels = vec![sentinel("s-0", Some("ip0"), &f)];
        let p = plan(&spec(), &redis, &sentinels);
        assert!(p.hold.is_some());
        assert!(p.steps.is_empty());
    }

    #[test]
    fn stale_sentinels_are_fixed_one_at_a_time() {
        let redis = vec![
            master("r-0", 0, "ip0", 10, &["ip1", "ip2"]),
            replica("r-1", 1, "ip1", "ip0", 10),
            replica("r-2", 2, "ip2", "ip0", 10),
        ];
        let mut stale = healthy_fields();
        stale.retain(|(k, _)| *k != "num-slaves");
        stale.push(("num-slaves", "4"));
        let f = healthy_fields();
        let sentinels = vec![
            sentinel("s-0", Some("old"), &f),
            sentinel("s-1", Some("old"), &f),
            sentinel("s-2", Some("ip0"), &stale),
        ];
        let p = plan(&spec(), &redis, &sentinels);
        let disruptive: Vec<&Step> = p
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Remonitor { .. } | Step::Reset { .. }))
            .collect();
        assert_eq!(disruptive.len(), 1, "{:?}", p.steps);
    }

    #[test]
    fn sentinel_settings_follow_the_spec() {
        let redis = vec![master("r-0", 0, "ip0", 10, &[])];
        let mut f = healthy_fields();
        f.retain(|(k, _)| *k != "down-after-milliseconds");
        f.push(("down-after-milliseconds", "30000"));
        let p = plan(&spec(), &redis, &[sentinel("s-0", Some("ip0"), &f)]);
        assert!(p.steps.contains(&Step::Configure {
            sentinel: "s-0".into(),
            settings: vec![("down-after-milliseconds".into(), "5000".into())]
        }));
    }
}
