//! The chart's RBAC, proven: every operator of the e2e suite runs under exactly the identity
//! the chart creates (see [`crate::identity`]; [`crate::support::Operator::start`] does it by
//! default), a run fails when any of them is refused a request, and the chart grants exactly
//! what the code uses — no wildcard, nothing more, nothing less.
//!
//! **Where the used set comes from, and why not from the audit log.** The used set is derived
//! from the code: the child kinds of the four controllers are read from their `CHILD_KINDS`
//! (the library's own constants: a child kind is watched, applied and pruned, see
//! `k8s::apply`), and the requests made outside that path are a short static list, [`DIRECT`],
//! each entry with a witness — a snippet of the source making the call, which
//! [`every_direct_call_listed_is_in_the_code`] finds in that file (whitespace ignored), so an
//! entry whose call is gone fails the run. The audit log is the other half: it proves nothing
//! is missing ([`Guard`]: a refused request by any operator fails its test). Deriving the used
//! set from the audit log instead was rejected as less reliable: (1) the local cluster's audit
//! policy logs write verbs only, so reads (get/list/watch) would be invisible; (2) a request the
//! chart must allow is not always the verb logged — a server-side apply that creates an object
//! is logged as `patch` but authorized as `create` too; (3) a verb counts as used only if the
//! run happened to exercise it, so a filtered or shorter run (or a rare path such as pruning
//! a backup claim) would report grants as unused, and cargo cannot order a test after all the
//! others to gather the whole run's requests.

use crate::identity::{Identity, Mode};
pub use crate::identity::{helm, helm_template, run_helm};
use crate::support::{TestNamespace, apply_yaml, client, install_crds, repo, skip};
use guestbook_operator::controllers::{guestbook, patroni_cluster, redis_sentinel, vote_app};
use guestbook_operator::k8s::children::ChildKind;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

/// One grant: (API group, resource[/subresource], verb).
pub type Grant = (String, String, String);

/// Every (group, resource, verb) the Roles and ClusterRoles in `yaml` grant; panics on a
/// wildcard or a rule limited by resourceNames or nonResourceURLs (the chart has none).
pub fn grants(yaml: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let Ok(v) = serde_json::Value::deserialize(doc) else {
            continue;
        };
        let kind = v["kind"].as_str().unwrap_or_default();
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        for rule in v["rules"].as_array().into_iter().flatten() {
            assert!(
                rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
                "{kind} {name}: a rule with resourceNames or nonResourceURLs: {rule}"
            );
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| s.as_str().expect("strings").to_string())
                    .collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for verb in list("verbs") {
                        for x in [&g, &r, &verb] {
                            assert!(!x.contains('*'), "{kind} {name}: a wildcard in {rule}");
                        }
                        out.insert((g.clone(), r.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

/// A request the operator makes outside the child path, with where it is made.
pub struct Direct {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// A source file and a snippet of it that makes the call (compared without whitespace).
    pub witness: (&'static str, &'static str),
    pub why: &'static str,
}

const STORES: &[&str] = &["redissentinels", "patroniclusters"];
/// The resources of our four kinds (their main resource: specs and metadata).
pub const KIND_RESOURCES: &[&str] = &[
    "redissentinels",
    "patroniclusters",
    "guestbooks",
    "voteapps",
];

/// Every request of the operator not made through `k8s::apply` / `k8s::cache` for a child kind.
pub const DIRECT: &[Direct] = &[
    Direct {
        group: "guestbook-operator.dev",
        resources: KIND_RESOURCES,
        verbs: &["list", "watch"],
        witness: (
            "src/k8s/watches.rs",
            "synced.reflect(api, watcher::Config::default())",
        ),
        why: "each controller's main watch (and the apps' watches of the stores they reference)",
    },
    Direct {
        group: "guestbook-operator.dev",
        resources: &["guestbooks", "voteapps"],
        verbs: &["get"],
        witness: (
            "src/controllers/apps/mod.rs",
            "match api.get_opt(&owner).await",
        ),
        why: "an app in a namespace conflict looks up the namespace's owner when the cache may be behind",
    },
    Direct {
        group: "guestbook-operator.dev",
        resources: &[
            "redissentinels/status",
            "patroniclusters/status",
            "guestbooks/status",
            "voteapps/status",
        ],
        verbs: &["patch"],
        witness: (
            "src/k8s/status.rs",
            "api.patch_status(&name, &params, &Patch::Apply(&body))",
        ),
        why: "status is server-side applied to the status subresource",
    },
    Direct {
        group: "guestbook-operator.dev",
        resources: &[
            "redissentinels/finalizers",
            "patroniclusters/finalizers",
            "guestbooks/finalizers",
            "voteapps/finalizers",
        ],
        verbs: &["update"],
        witness: ("src/k8s/owner.rs", ".controller_owner_ref(&())"),
        why: "controller owner references carry blockOwnerDeletion: under the \
              OwnerReferencesPermissionEnforcement admission plugin that needs update on the \
              owner's finalizers (this cluster does not run it, so no request shows it)",
    },
    Direct {
        group: "",
        resources: &["pods"],
        verbs: &["list", "watch"],
        witness: (
            "src/k8s/watches.rs",
            "let api = scoped_api::<Pod>(client, namespace);",
        ),
        why: "the pods of the stores' workloads (watch_pods)",
    },
    Direct {
        group: "",
        resources: &["pods"],
        verbs: &["patch"],
        witness: (
            "src/controllers/redis_sentinel/follow.rs",
            "&Patch::Merge(&set(ROLE_MASTER)),",
        ),
        why: "the Redis master's role label moves on failover",
    },
    Direct {
        group: "",
        resources: &["pods"],
        verbs: &["delete"],
        witness: (
            "src/controllers/redis_sentinel/rollout.rs",
            "Api::<Pod>::namespaced(ctx.client.clone(), ns).delete(pod,",
        ),
        why: "ordered rolling updates delete one pod at a time",
    },
    Direct {
        group: "",
        resources: &["pods"],
        verbs: &["get", "update"],
        witness: (
            "src/controllers/patroni_cluster/build.rs",
            r#"rule("pods", &["get", "list", "watch", "patch", "update"])"#,
        ),
        why: "Patroni's Role grants them, and RBAC lets the operator grant only what it holds",
    },
    Direct {
        group: "",
        resources: &["configmaps"],
        verbs: &["get", "update"],
        witness: (
            "src/controllers/patroni_cluster/build.rs",
            r#""configmaps", &["get", "list", "watch", "create", "update", "patch", "delete","#,
        ),
        why: "Patroni's Role grants them (its DCS), and RBAC lets the operator grant only what \
              it holds",
    },
    Direct {
        group: "",
        resources: &["secrets"],
        verbs: &["get"],
        witness: ("src/k8s/secrets.rs", "api.get_opt(name).await?"),
        why: "generated credentials are read back",
    },
    Direct {
        group: "",
        resources: &["persistentvolumeclaims"],
        verbs: &["get"],
        witness: (
            "src/controllers/patroni_cluster/reconcile.rs",
            "api.get_metadata_opt(claim).await?",
        ),
        why: "a bootstrap claim must exist",
    },
    Direct {
        group: "apps",
        resources: &["statefulsets"],
        verbs: &["get"],
        witness: (
            "src/controllers/patroni_cluster/operate.rs",
            ".namespaced::<StatefulSet>(ns).get_metadata_opt(sts)",
        ),
        why: "a StatefulSet missing from the cache is confirmed absent before an earlier \
              cluster's leftovers are cleared",
    },
    Direct {
        group: "storage.k8s.io",
        resources: &["storageclasses"],
        verbs: &["get"],
        witness: (
            "src/controllers/patroni_cluster/reconcile.rs",
            "api.get_metadata_opt(class).await?",
        ),
        why: "a PatroniCluster naming a missing StorageClass stalls",
    },
    Direct {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: &["list"],
        witness: (
            "src/controllers/redis_sentinel/follow.rs",
            "let api: Api<EndpointSlice> = Api::namespaced(h.client.clone(), ns);",
        ),
        why: "after a failover the old master must leave the master Service's endpoints",
    },
    Direct {
        group: "gateway.networking.k8s.io",
        resources: &["httproutes"],
        verbs: &["get", "list", "create", "patch", "delete"],
        witness: (
            "src/controllers/apps/route.rs",
            "api.patch(name, &params, &Patch::Apply(route)).await?;",
        ),
        why: "spec.httpRoute: read to compare, applied (created when new), listed and deleted \
              to prune",
    },
    Direct {
        group: "",
        resources: &["events"],
        verbs: &["list"],
        witness: (
            "src/k8s/diagnose.rs",
            "match events.list(&ListParams::default().fields(&fields)).await {",
        ),
        why: "a Pending claim's newest event says why it waits",
    },
    Direct {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        witness: ("src/manager.rs", "Recorder::new(client.clone(), reporter)"),
        why: "kube's Recorder creates events.k8s.io/v1 Events and patches a repeated one's series",
    },
    Direct {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "update"],
        witness: (
            "src/leader.rs",
            ".replace(&self.name, &PostParams::default(), &lease)",
        ),
        why: "leader election: read, created once, renewed and taken over by update",
    },
];

/// Child kinds the apps never prune (their stores: letting go of one is a patch, see
/// `controllers::apps::handoff`), with the line that says so.
const KEPT: &[(&str, (&str, &str))] = &[
    (
        "redissentinels",
        (
            "src/controllers/guestbook/reconcile.rs",
            "let keep = [ChildKind::RedisSentinel];",
        ),
    ),
    (
        "patroniclusters",
        (
            "src/controllers/vote_app/reconcile.rs",
            "let keep = [ChildKind::RedisSentinel, ChildKind::PatroniCluster];",
        ),
    ),
];

/// What the operator's code uses, each grant with why.
pub fn used() -> BTreeMap<Grant, String> {
    let mut out = BTreeMap::new();
    let mut add = |g: &str, r: &str, v: &str, why: &str| {
        out.entry((g.to_string(), r.to_string(), v.to_string()))
            .or_insert_with(|| why.to_string());
    };
    let children: BTreeSet<ChildKind> = [
        guestbook::CHILD_KINDS,
        vote_app::CHILD_KINDS,
        redis_sentinel::CHILD_KINDS,
        patroni_cluster::CHILD_KINDS,
    ]
    .concat()
    .into_iter()
    .collect();
    for kind in children {
        let ar = kind.api_resource();
        let kept = KEPT.iter().any(|(r, _)| *r == ar.plural);
        for verb in ["list", "watch", "create", "patch", "delete"] {
            if verb == "delete" && kept {
                continue;
            }
            let why = match verb {
                "list" | "watch" => "a child kind: watched (ChildCache)",
                "create" | "patch" => "a child kind: server-side applied (create when new)",
                _ => "a child kind: pruned",
            };
            add(&ar.group, &ar.plural, verb, why);
        }
    }
    for d in DIRECT {
        for r in d.resources {
            for v in d.verbs {
                add(d.group, r, v, d.why);
            }
        }
    }
    out
}

fn squeeze(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn every_direct_call_listed_is_in_the_code() {
    let witnesses = DIRECT
        .iter()
        .map(|d| d.witness)
        .chain(KEPT.iter().map(|(_, w)| *w));
    let mut missing = Vec::new();
    for (file, snippet) in witnesses {
        let text = std::fs::read_to_string(repo(file)).unwrap_or_default();
        if !squeeze(&text).contains(&squeeze(snippet)) {
            missing.push(format!("{file}: {snippet}"));
        }
    }
    assert!(
        missing.is_empty(),
        "the code no longer makes these calls (or moved them): drop the grant from the chart and \
         its entry from rbac::DIRECT, or point the witness at the new call:\n  {}",
        missing.join("\n  ")
    );
    // Both kinds kept are stores, and a store is a child kind of some app.
    for (r, _) in KEPT {
        assert!(STORES.contains(r));
    }
}

#[test]
fn the_charts_rules_grant_exactly_what_the_operator_uses() {
    if helm().is_none() {
        skip(None, "no helm (run e2e/cluster build)");
        return;
    }
    let used = used();
    let want: BTreeSet<Grant> = used.keys().cloned().collect();
    for (mode, extra) in [
        ("cluster-wide", None),
        ("namespaced", Some("watchNamespace=apps")),
    ] {
        let mut args = vec!["--namespace", "guestbook-operator-system"];
        if let Some(e) = extra {
            args.extend(["--set", e]);
        }
        let yaml = helm_template(&args);
        let got = grants(&yaml);
        let unused: Vec<_> = got.difference(&want).collect();
        let missing: Vec<_> = want.difference(&got).map(|g| (g, &used[g])).collect();
        assert!(
            unused.is_empty() && missing.is_empty(),
            "{mode}: the chart's RBAC and the code's requests differ\n\
             granted, never used: {unused:#?}\nused, not granted: {missing:#?}"
        );
        println!(
            "figure: {mode}: the chart grants {} (group, resource, verb)",
            got.len()
        );
    }
    // The bundle says the same (it is the chart rendered; check-chart fails when stale).
    let bundle = std::fs::read_to_string(repo("manifests/install.yaml")).expect("bundle");
    let got = grants(&bundle);
    assert!(
        got == want,
        "manifests/install.yaml's RBAC differs from the chart's (run hack/render-manifests): \
         only in the bundle {:?}, only in the chart {:?}",
        got.difference(&want).collect::<Vec<_>>(),
        want.difference(&got).collect::<Vec<_>>()
    );
}

/// Requests refused by RBAC since a point in the API server's audit log (write verbs: what the
/// local cluster logs) or in an operator's log (any verb: watch and read errors are logged).
pub struct Denials {
    user: String,
    audit: Option<(PathBuf, u64)>,
}

impl Denials {
    pub fn from_now(user: &str) -> Self {
        let audit = std::env::var_os("GBO_AUDIT_LOG")
            .map(PathBuf::from)
            .map(|p| {
                let at = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p, at)
            });
        Self {
            user: user.to_string(),
            audit,
        }
    }

    /// Refused requests: audit entries (`verb resource name: reason`) and log lines.
    pub fn found(&self, log: Option<&Path>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((path, at)) = &self.audit {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(path) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = f.seek(SeekFrom::Start(if len >= *at { *at } else { 0 }));
                let _ = f.read_to_string(&mut text);
            }
            for line in text.lines() {
                let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if e["user"]["username"] != self.user.as_str()
                    || e["responseStatus"]["code"] != 403
                    || e["annotations"]["authorization.k8s.io/decision"] != "forbid"
                {
                    continue;
                }
                let r = &e["objectRef"];
                out.push(format!(
                    "audit: {} {}{} {}: {}",
                    e["verb"].as_str().unwrap_or("?"),
                    r["resource"].as_str().unwrap_or("?"),
                    r["subresource"]
                        .as_str()
                        .map(|s| format!("/{s}"))
                        .unwrap_or_default(),
                    r["name"].as_str().unwrap_or(""),
                    e["annotations"]["authorization.k8s.io/reason"]
                        .as_str()
                        .unwrap_or_default(),
                ));
            }
        }
        if let Some(log) = log {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            // Text or JSON logs (quotes escaped there): the user refused, and RBAC's words.
            out.extend(
                text.lines()
                    .filter(|l| {
                        l.contains(&self.user) && l.contains(" cannot ") && l.contains("forbidden")
                    })
                    .map(|l| format!("log: {}", l.chars().take(400).collect::<String>())),
            );
        }
        out
    }
}

/// Held by each [`crate::support::Operator`]: the identity it runs as (the chart's, unless the
/// test passed a kubeconfig of its own) and, when the operator stops, the check that none of
/// its requests was refused (a panic, failing the test, unless the test already failed).
pub struct Guard {
    _identity: Option<Arc<Identity>>,
    kubeconfig: PathBuf,
    log: PathBuf,
    denials: Denials,
}

impl Guard {
    pub fn new(ns: &str, kubeconfig: Option<&Path>, log: &Path) -> Self {
        let (identity, kubeconfig) = match kubeconfig {
            Some(k) => (None, k.to_path_buf()),
            None => {
                let id = Identity::shared(ns, Mode::ClusterWide);
                let k = id.kubeconfig.clone();
                (Some(id), k)
            }
        };
        let user = user_of(&kubeconfig);
        Self {
            _identity: identity,
            kubeconfig,
            log: log.to_path_buf(),
            denials: Denials::from_now(&user),
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

/// The user a kubeconfig authenticates as, as the API server names a ServiceAccount token's.
fn user_of(kubeconfig: &Path) -> String {
    let Ok(k) = kube::config::Kubeconfig::read_from(kubeconfig) else {
        return String::new();
    };
    k.auth_infos
        .first()
        .map(|a| a.name.clone())
        .unwrap_or_default()
}

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let mut found = self.denials.found(Some(&self.log));
        found.dedup();
        found.truncate(20);
        assert!(
            found.is_empty(),
            "the operator ({}) was refused requests the chart's RBAC should allow:\n  {}",
            self.log.display(),
            found.join("\n  ")
        );
    }
}

/// Namespaced mode: the chart rendered with `watchNamespace`, the operator bound by that Role
/// only (plus the chart's read-only StorageClass ClusterRole); a Guestbook (stores, apps,
/// Ingress, autoscaling) and a PatroniCluster (the Role the operator grants Patroni must fit
/// inside its own) converge, no request is refused, and nothing outside the namespace is
/// allowed.
#[tokio::test]
async fn namespaced_mode_runs_the_examples_with_only_its_role() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "rbac-ns").await;
    let me = Identity::create(&c, &ns.name, Mode::Namespaced).await;
    let op = crate::support::Operator::start_as(
        &ns.name,
        "solo",
        &["--leader-election=false"],
        Some(&me.kubeconfig),
    );
    for file in ["guestbook.yaml", "patronicluster.yaml"] {
        let yaml =
            std::fs::read_to_string(repo(&format!("manifests/examples/{file}"))).expect("example");
        apply_yaml(&c, &ns.name, &yaml)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let t = Duration::from_secs(300);
    crate::apps::wait_ready(&c, &ns.name, "Guestbook", "guestbook", t).await;
    crate::apps::wait_ready(&c, &ns.name, "PatroniCluster", "orders-db", t).await;
    op.assert_no_reconcile_errors().await;

    // The Role confines: the same requests elsewhere are refused.
    let reviews: Api<SubjectAccessReview> = Api::all(c.clone());
    for (namespace, verb, group, resource, allowed) in [
        (ns.name.as_str(), "patch", "", "pods", true),
        (
            ns.name.as_str(),
            "create",
            "rbac.authorization.k8s.io",
            "roles",
            true,
        ),
        ("default", "list", "", "pods", false),
        ("default", "create", "", "secrets", false),
        ("kube-system", "patch", "", "configmaps", false),
        (
            "default",
            "create",
            "rbac.authorization.k8s.io",
            "roles",
            false,
        ),
    ] {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(me.user.clone()),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", ns.name),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.into()),
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let got = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("a SubjectAccessReview")
            .status
            .map(|s| s.allowed);
        assert_eq!(
            got,
            Some(allowed),
            "{verb} {resource} in {namespace} for {}",
            me.user
        );
    }
    drop(op);
}
