//! The Helm chart's lifecycle on the local cluster: `helm install` (CRDs from the chart),
//! a custom resource of each kind converges, `helm upgrade` to a chart with a changed CRD and
//! changed values, `helm uninstall`; and the `kubectl apply --server-side` bundle doing the
//! same job.
//!
//! The chart's Deployment is applied for real, but its pods are simulated by kwok (the
//! operator's image is not built here): the operator binary runs as a process on this machine
//! instead, exactly as that Deployment's container would — its args read from the live
//! Deployment (only `--http-addr` moved to a free loopback port), its env (`POD_NAME`,
//! `POD_NAMESPACE`, `RUST_LOG`), and a token of the chart's ServiceAccount. A helm upgrade that
//! changes the Deployment rolls it: the process is restarted with the new Deployment's args.
//! Helm only ever reads the chart from a local path.

use crate::identity::token_kubeconfig;
use crate::rbac::{Denials, helm, helm_template, run_helm};
use crate::support::{TestNamespace, api_resource, apply_yaml, client, install_crds, repo, skip};
use guestbook_operator::k8s::children::ChildKind;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(300);

/// A store of each kind and an app of each kind on them, cheap to converge. (The PatroniCluster
/// is not named `db`: the VoteApp's glue Service for the stock images is named `db`, and so would
/// be the store's primary Service; the two controllers then rewrite it in turn.)
const RESOURCES: &[(&str, &str, &str)] = &[
    (
        "RedisSentinel",
        "cache",
        "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {name: cache}\nspec:\n  redis: {replicas: 2, storage: {size: 100Mi}}\n  sentinel: {replicas: 3}\n  auth: {enabled: false}\n",
    ),
    (
        "PatroniCluster",
        "pg",
        "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {name: pg}\nspec:\n  members: 1\n  storage: {size: 200Mi}\n  auth: {stockAppCredentials: true}\n  patroni: {ttl: 20, loopWait: 2, retryTimeout: 5}\n",
    ),
    (
        "Guestbook",
        "book",
        "apiVersion: guestbook-operator.dev/v1alpha1\nkind: Guestbook\nmetadata: {name: book}\nspec:\n  frontend: {replicas: 1}\n  redis: {name: cache}\n",
    ),
    (
        "VoteApp",
        "polls",
        "apiVersion: guestbook-operator.dev/v1alpha1\nkind: VoteApp\nmetadata: {name: polls}\nspec:\n  redis: {name: cache}\n  postgres: {name: pg}\n",
    ),
];

/// The operator as the chart's Deployment runs it (see the module doc); SIGTERM on drop.
struct DeployedOperator {
    child: Child,
    log: PathBuf,
    denials: Denials,
}

impl DeployedOperator {
    async fn start(c: &Client, ns: &str, deployment: &str, tag: &str) -> Self {
        let d = Api::<Deployment>::namespaced(c.clone(), ns)
            .get(deployment)
            .await
            .expect("the chart's Deployment");
        let pod = d.spec.expect("spec").template.spec.expect("pod spec");
        let container = &pod.containers[0];
        let account = pod.service_account_name.clone().expect("a ServiceAccount");
        let kubeconfig = repo(&format!("target/e2e-logs/{ns}-{tag}.kubeconfig"));
        let user = token_kubeconfig(c, ns, &account, &kubeconfig).await;
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let args: Vec<String> = container
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                if a.starts_with("--http-addr=") {
                    format!("--http-addr={http}")
                } else {
                    a
                }
            })
            .collect();
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for e in container.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("metadata.name") => format!("{deployment}-{tag}"),
                        Some("metadata.namespace") => ns.to_string(),
                        other => panic!("an env var from {other:?}: not simulated"),
                    }
                }
                _ => String::new(),
            };
            env.insert(e.name.clone(), value);
        }
        let log = repo(&format!("target/e2e-logs/{ns}-{tag}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_guestbook-operator"));
        cmd.args(&args)
            .envs(&env)
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start the operator binary");
        Self {
            child,
            log,
            denials: Denials::from_now(&user),
        }
    }

    /// SIGTERM, wait; then fails the test if any request was refused.
    fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on the PID of our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let found = self.denials.found(Some(&self.log));
        assert!(
            found.is_empty(),
            "the chart's identity was refused: {found:#?}"
        );
    }
}

impl Drop for DeployedOperator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A copy of the chart with a new optional field (`spec.gitopsNote`) in every CRD's schema
/// and a new chart version: what a release that extends the API looks like to Helm.
fn changed_chart(dir: &Path) -> PathBuf {
    let src = repo("charts/guestbook-operator");
    let dst = dir.join("guestbook-operator");
    let status = Command::new("cp")
        .args(["-rL"])
        .arg(&src)
        .arg(&dst)
        .status()
        .expect("cp");
    assert!(status.success(), "copying the chart");
    let crds_path = dst.join("files/crds.yaml");
    let text = std::fs::read_to_string(&crds_path).expect("the chart's CRDs");
    let mut out = String::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v = <serde_json::Value as serde::Deserialize>::deserialize(doc).expect("a CRD");
        for version in v["spec"]["versions"].as_array_mut().expect("versions") {
            let spec = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            spec["properties"]["gitopsNote"] = serde_json::json!({
                "description": "A note for the humans reading this object (added by the upgrade test).",
                "type": "string",
                "maxLength": 256,
            });
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&v).expect("yaml"));
    }
    std::fs::write(&crds_path, out).expect("write CRDs");
    let chart_yaml = dst.join("Chart.yaml");
    let meta = std::fs::read_to_string(&chart_yaml).expect("Chart.yaml");
    std::fs::write(
        &chart_yaml,
        meta.replace("version: 0.1.0", "version: 0.1.1-e2e"),
    )
    .expect("Chart.yaml");
    dst
}

/// `(kind/name) -> (content, generation)` of every object in `ns` owned by one of ours, and
/// of ours themselves (generation only). The content is the object without what others write
/// as a matter of course — `status` (the controllers of Deployments, StatefulSets,
/// autoscalers, CronJobs, budgets, claims), `resourceVersion` and `managedFields` (which move
/// with every status write): what is left (spec, data, labels, annotations, owner references)
/// changes only when someone changes what was asked for.
pub async fn children(c: &Client, ns: &str) -> BTreeMap<String, (String, i64)> {
    let mut out = BTreeMap::new();
    for kind in ChildKind::ALL {
        let ar = kind.api_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), ns, &ar);
        let list = match api.list(&ListParams::default()).await {
            // The Prometheus Operator's kinds exist only where its CRDs are installed.
            Err(kube::Error::Api(e)) if e.code == 404 && kind.is_monitoring() => continue,
            other => other.expect("list"),
        };
        for o in list.items {
            if o.owner_references().is_empty() {
                continue;
            }
            let generation = o.metadata.generation.unwrap_or(0);
            let name = o.name_any();
            let mut v = serde_json::to_value(&o).expect("json");
            if let Some(m) = v.as_object_mut() {
                m.remove("status");
            }
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
            out.insert(format!("{}/{name}", ar.kind), (v.to_string(), generation));
        }
    }
    for kind in crate::gitops::KINDS {
        let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), ns, &api_resource(kind));
        for o in api.list(&ListParams::default()).await.expect("list").items {
            out.insert(
                format!("{kind}/{}", o.name_any()),
                (String::new(), o.metadata.generation.unwrap_or(0)),
            );
        }
    }
    out
}

async fn crd_has_field(c: &Client, field: &str) -> Vec<(String, bool)> {
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    let mut out = Vec::new();
    for crd in guestbook_operator::crd::all() {
        let name = crd.name_any();
        let live = api.get(&name).await.expect("the CRD");
        let has = live.spec.versions.iter().all(|v| {
            v.schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| s.properties.as_ref())
                .and_then(|p| p.get("spec"))
                .and_then(|s| s.properties.as_ref())
                .is_some_and(|p| p.contains_key(field))
        });
        out.push((name, has));
    }
    out
}

/// Puts the committed CRDs back as they were before the chart took them over: the chart's
/// labels and annotations and the upgrade's field removed (an update of the whole object, so
/// fields another manager added go too).
async fn restore_crds(c: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in guestbook_operator::crd::all() {
        let name = crd.name_any();
        let Ok(mut live) = api.get(&name).await else {
            continue;
        };
        live.spec = crd.spec.clone();
        live.metadata.labels = crd.metadata.labels.clone();
        live.metadata.annotations = crd.metadata.annotations.clone();
        live.metadata.managed_fields = None;
        let _ = api.replace(&name, &PostParams::default(), &live).await;
    }
    install_crds(c).await;
}

/// Restores the CRDs however the test ends (they are shared with every other test).
struct CrdGuard;

impl Drop for CrdGuard {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(c) = Client::try_default().await {
                    restore_crds(&c).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn helm_install_upgrade_uninstall_keeps_crds_resources_and_data() {
    if helm().is_none() {
        skip(None, "no helm (run e2e/cluster build)");
        return;
    }
    let _turn = CRD_TURN.lock().await;
    let c = client().await;
    install_crds(&c).await;
    let _crds = CrdGuard;
    let release_ns = TestNamespace::new(&c, "helm").await;
    let apps = TestNamespace::new(&c, "helm-apps").await;
    let release = format!("gbo-{}", std::process::id());
    let deployment = format!("{release}-guestbook-operator");
    let watch = format!("watchNamespace={}", apps.name);
    let chart = repo("charts/guestbook-operator");
    let base = [
        "--namespace",
        release_ns.name.as_str(),
        "--set",
        watch.as_str(),
        "--force-conflicts",
    ];

    // Install: the CRDs come from the chart (taking over the ones the suite applied).
    let mut args = vec![
        "install",
        release.as_str(),
        chart.to_str().expect("path"),
        "--take-ownership",
    ];
    args.extend(base);
    run_helm(&args);
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in guestbook_operator::crd::all() {
        let live = crds.get(&crd.name_any()).await.expect("CRD");
        assert_eq!(
            live.annotations()
                .get("helm.sh/resource-policy")
                .map(String::as_str),
            Some("keep"),
            "{} kept on uninstall",
            crd.name_any()
        );
        assert_eq!(
            live.annotations().get("meta.helm.sh/release-name"),
            Some(&release),
            "{} installed by the release",
            crd.name_any()
        );
    }
    let op = DeployedOperator::start(&c, &release_ns.name, &deployment, "deployed").await;
    for (_, _, yaml) in RESOURCES {
        apply_yaml(&c, &apps.name, yaml).await.expect("accepted");
    }
    for (kind, name, _) in RESOURCES {
        crate::apps::wait_ready(&c, &apps.name, kind, name, T).await;
    }
    let before = children(&c, &apps.name).await;
    println!("figure: helm install: {} objects converged", before.len());

    // Upgrade: a CRD with a new optional field, and changed values (log level; no metrics
    // Service). The Deployment changes, so it rolls: the process restarts as the new one.
    let dir = TempDir::new("helm-upgrade");
    let changed = changed_chart(&dir.0);
    let mut args = vec![
        "upgrade",
        release.as_str(),
        changed.to_str().expect("path"),
        "--set",
        "logLevel=debug",
        "--set",
        "metrics.service.enabled=false",
        "--take-ownership",
    ];
    args.extend(base);
    run_helm(&args);
    for (name, has) in crd_has_field(&c, "gitopsNote").await {
        assert!(
            has,
            "{name}: the upgrade's new field is in the served schema"
        );
    }
    let d = Api::<Deployment>::namespaced(c.clone(), &release_ns.name)
        .get(&deployment)
        .await
        .expect("Deployment");
    let env = d.spec.expect("spec").template.spec.expect("pod").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug")),
        "the values change reached the Deployment"
    );
    let services: Api<Service> = Api::namespaced(c.clone(), &release_ns.name);
    assert!(
        services
            .get_opt(&format!("{deployment}-metrics"))
            .await
            .expect("get")
            .is_none(),
        "metrics.service.enabled=false removed the metrics Service"
    );
    op.stop();
    let op = DeployedOperator::start(&c, &release_ns.name, &deployment, "upgraded").await;
    // The new field is accepted now, and asks for nothing: no child changes.
    let noted = RESOURCES[0]
        .2
        .replace("spec:\n", "spec:\n  gitopsNote: upgraded by helm\n");
    apply_yaml(&c, &apps.name, &noted)
        .await
        .expect("the new optional field is served");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = children(&c, &apps.name).await;
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| {
            let a = after.get(*k);
            // The store whose spec got the note has a new generation, nothing else.
            !(a == Some(v) || (k.as_str() == "RedisSentinel/cache" && a.is_some()))
        })
        .map(|(k, _)| k)
        .collect();
    assert!(
        changed.is_empty() && before.len() == after.len(),
        "the upgrade changed objects it does not ask to change: {changed:#?}"
    );

    // Uninstall: the operator's objects go; CRDs, custom resources and store data stay.
    op.stop();
    run_helm(&[
        "uninstall",
        release.as_str(),
        "--namespace",
        release_ns.name.as_str(),
    ]);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &release_ns.name);
    crate::support::wait_for("the Deployment gone", Duration::from_secs(60), || async {
        deployments
            .get_opt(&deployment)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), &release_ns.name);
    assert!(sas.get_opt(&deployment).await.expect("get").is_none());
    let roles: Api<Role> = Api::namespaced(c.clone(), &apps.name);
    assert!(roles.get_opt(&deployment).await.expect("get").is_none());
    let cluster_roles: Api<ClusterRole> = Api::all(c.clone());
    assert!(
        cluster_roles
            .get_opt(&format!("{deployment}-cluster-read"))
            .await
            .expect("get")
            .is_none()
    );
    for (name, has) in crd_has_field(&c, "gitopsNote").await {
        assert!(has, "{name} kept (resource-policy keep)");
    }
    let kept = children(&c, &apps.name).await;
    assert_eq!(
        kept.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "custom resources and their children survive the uninstall"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), &apps.name);
    let data = claims.list(&ListParams::default()).await.expect("claims");
    assert!(
        data.items.iter().any(|p| p.name_any().contains("cache"))
            && data.items.iter().any(|p| p.name_any().contains("pg")),
        "the stores' data claims are kept: {:?}",
        data.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
}

/// `kubectl apply --server-side -f manifests/install.yaml` installs what the chart installs:
/// the bundle is the chart rendered now (else this fails: it is stale), it applies cleanly
/// (server-side dry run, the shared cluster's CRDs are not taken over), and it holds the same
/// objects as `helm template` with default values.
#[test]
fn the_install_bundle_is_the_chart_rendered_now() {
    if helm().is_none() {
        skip(None, "no helm (run e2e/cluster build)");
        return;
    }
    let dir = TempDir::new("bundle");
    let fresh = dir.0.join("install.yaml");
    let status = Command::new(repo("hack/render-manifests"))
        .arg(&fresh)
        .stdout(Stdio::null())
        .status()
        .expect("hack/render-manifests");
    assert!(status.success(), "hack/render-manifests failed");
    let committed =
        std::fs::read_to_string(repo("manifests/install.yaml")).expect("manifests/install.yaml");
    assert!(
        committed == std::fs::read_to_string(&fresh).expect("rendered"),
        "manifests/install.yaml is stale: run hack/render-manifests and commit it"
    );
    let chart = helm_template(&["--namespace", "guestbook-operator-system"]);
    let kinds = |t: &str| {
        let mut k: Vec<String> = t
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .map(str::to_string)
            .collect();
        k.sort();
        k
    };
    let mut want = kinds(&chart);
    want.push("Namespace".into());
    want.sort();
    assert_eq!(
        kinds(&committed),
        want,
        "the bundle = the chart + its Namespace"
    );
}

/// The bundle applied for real (`kubectl apply --server-side`): its Namespace, identity and
/// Deployment are created, and the operator under the bundle's ServiceAccount makes a store
/// converge. It watches only the test's namespace (`--namespace`, the one deviation from the
/// bundle's Deployment: a cluster-wide operator would act on every other test's objects).
#[tokio::test]
async fn kubectl_apply_of_the_bundle_installs_a_working_operator() {
    let kubectl = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    let Some(kubectl) = kubectl else {
        skip(None, "no kubectl on PATH (eval \"$(e2e/cluster env)\")");
        return;
    };
    let _turn = CRD_TURN.lock().await;
    let c = client().await;
    install_crds(&c).await;
    let _crds = CrdGuard;
    let apps = TestNamespace::new(&c, "bundle").await;
    let out = Command::new(&kubectl)
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kubectl-e2e",
            "-f",
        ])
        .arg(repo("manifests/install.yaml"))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _cleanup = BundleCleanup(kubectl.clone());
    let ns = "guestbook-operator-system";
    let d = Api::<Deployment>::namespaced(c.clone(), ns)
        .get("guestbook-operator")
        .await
        .expect("the bundle's Deployment");
    let pod = d.spec.expect("spec").template.spec.expect("pod");
    let account = pod.service_account_name.expect("account");
    let kubeconfig = repo(&format!("target/e2e-logs/{}-bundle.kubeconfig", apps.name));
    token_kubeconfig(&c, ns, &account, &kubeconfig).await;
    let op = crate::support::Operator::start_as(
        &apps.name,
        "bundle",
        &["--leader-election=false"],
        Some(&kubeconfig),
    );
    apply_yaml(&c, &apps.name, RESOURCES[0].2)
        .await
        .expect("accepted");
    crate::apps::wait_ready(&c, &apps.name, "RedisSentinel", "cache", T).await;
    op.assert_no_reconcile_errors().await;
    drop(op);
}

/// A directory of ours under target/, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let p = repo(&format!("target/e2e-tmp/{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The CRDs are shared: the two tests that hand them to a chart or bundle take turns.
static CRD_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Deletes what the bundle created except the CRDs (shared with every other test).
struct BundleCleanup(PathBuf);

impl Drop for BundleCleanup {
    fn drop(&mut self) {
        for (kind, name) in [
            ("clusterrolebinding", "guestbook-operator"),
            ("clusterrolebinding", "guestbook-operator-cluster-read"),
            ("clusterrole", "guestbook-operator"),
            ("clusterrole", "guestbook-operator-cluster-read"),
            ("namespace", "guestbook-operator-system"),
        ] {
            // Waited for: a next run's apply into a terminating namespace would be refused.
            let _ = Command::new(&self.0)
                .args(["delete", kind, name, "--ignore-not-found", "--timeout=90s"])
                .stdout(Stdio::null())
                .status();
        }
    }
}
