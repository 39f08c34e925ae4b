//! The operator under exactly the identity the Helm chart creates: the chart's ServiceAccount,
//! ClusterRole/Role, bindings and Lease Role, rendered by the pinned helm (`helm template
//! --show-only` the RBAC templates, with the test's namespace as the release namespace and its
//! name as `fullnameOverride`) and applied in the test cluster; the operator then runs with a
//! bound token of that ServiceAccount in a kubeconfig of its own, as the chart's Deployment
//! would. The API server's audit log tells its requests apart from the test's, so writes can be
//! counted, and refusals found, per identity.
//!
//! Without helm (e.g. on kind with only a kubeconfig) the same objects are read from
//! `manifests/install.yaml` (the chart rendered by hack/render-manifests; hack/check-chart fails
//! when it is stale) and renamed as the chart would name them; namespaced mode needs helm.

use crate::support::repo;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::config::{AuthInfo, Kubeconfig};
use kube::{Api, Client};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, Once, Weak};

/// How the chart is installed: watching every namespace (a ClusterRole and ClusterRoleBinding)
/// or, with `watchNamespace`, one (a Role and RoleBinding there). The read-only StorageClass
/// ClusterRole and the Lease Role come with both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    ClusterWide,
    Namespaced,
}

/// The chart's identity for an operator in `ns` (also its release namespace): its objects
/// exist while this lives; cluster-scoped ones are deleted on drop (namespaced ones go with the
/// namespace).
pub struct Identity {
    pub user: String,
    pub kubeconfig: PathBuf,
    /// (kind, name) of the cluster-scoped objects applied.
    cluster_scoped: Vec<(String, String)>,
}

/// The identities in use, by (namespace, mode).
type Registry = HashMap<(String, Mode), Weak<Identity>>;
static SHARED: Mutex<Option<Registry>> = Mutex::new(None);
static SWEEP: Once = Once::new();

impl Identity {
    /// The identity of every operator started in `ns` in `mode`, created on first use and kept
    /// while any holder lives (two operators of one namespace are the chart's two replicas).
    /// Blocks: it runs the API calls on a runtime of its own, so it may be called from sync
    /// code ([`crate::support::Operator::start`]) and from async tests alike.
    pub fn shared(ns: &str, mode: Mode) -> Arc<Identity> {
        let mut guard = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        let key = (ns.to_string(), mode);
        if let Some(id) = map.get(&key).and_then(Weak::upgrade) {
            return id;
        }
        let owned = ns.to_string();
        let id = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(async move {
                    let c = crate::support::client().await;
                    Identity::create(&c, &owned, mode).await
                })
        })
        .join()
        .unwrap_or_else(|_| panic!("creating the chart's identity in {ns} failed (see above)"));
        let id = Arc::new(id);
        map.insert(key, Arc::downgrade(&id));
        id
    }

    /// The earlier helper: the ServiceAccount `name` in `ns` bound to `cluster_role`
    /// cluster-wide. Kept only while a caller may still use it (tests should run the operator
    /// under [`Identity::shared`], the chart's identity); the binding is deleted on drop.
    #[allow(dead_code)]
    pub async fn new(c: &Client, ns: &str, name: &str, cluster_role: &str) -> Self {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(name.into());
        Api::<ServiceAccount>::namespaced(c.clone(), ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap_or_else(|e| panic!("ServiceAccount {ns}/{name}: {e}"));
        let binding = format!("{ns}-{name}");
        let crb = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        });
        Api::<ClusterRoleBinding>::all(c.clone())
            .patch(
                &binding,
                &PatchParams::apply(crate::support::MANAGER).force(),
                &Patch::Apply(&crb),
            )
            .await
            .unwrap_or_else(|e| panic!("ClusterRoleBinding {binding}: {e}"));
        let kubeconfig = crate::support::repo(&format!("target/e2e-logs/{ns}-{name}.kubeconfig"));
        let user = token_kubeconfig(c, ns, name, &kubeconfig).await;
        Self {
            user,
            kubeconfig,
            cluster_scoped: vec![("ClusterRoleBinding".into(), binding)],
        }
    }

    /// Renders the chart's RBAC for `ns`, applies it, and writes a kubeconfig with a token of
    /// the chart's ServiceAccount.
    pub async fn create(c: &Client, ns: &str, mode: Mode) -> Self {
        if !SWEEP.is_completed() {
            sweep_leftovers(c).await;
            SWEEP.call_once(|| {});
        }
        let yaml = render(ns, mode);
        let params = PatchParams::apply(crate::support::MANAGER).force();
        let mut account = None;
        let mut cluster_scoped = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
            let Ok(obj) = DynamicObject::deserialize(doc) else {
                continue;
            };
            let Some(types) = obj.types.clone() else {
                continue;
            };
            let gvk = GroupVersionKind::try_from(&types).expect("a valid apiVersion");
            let ar = ApiResource::from_gvk(&gvk);
            let name = obj.metadata.name.clone().expect("a named object");
            let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
                Some(o) => Api::namespaced_with(c.clone(), o, &ar),
                None => {
                    cluster_scoped.push((types.kind.clone(), name.clone()));
                    Api::all_with(c.clone(), &ar)
                }
            };
            api.patch(&name, &params, &Patch::Apply(&obj))
                .await
                .unwrap_or_else(|e| panic!("applying the chart's {} {name}: {e}", types.kind));
            if types.kind == "ServiceAccount" {
                account = Some(name);
            }
        }
        let name = account.expect("the chart renders a ServiceAccount");
        let kubeconfig = crate::support::repo(&format!(
            "target/e2e-logs/{ns}-{}.kubeconfig",
            match mode {
                Mode::ClusterWide => "chart",
                Mode::Namespaced => "chart-namespaced",
            }
        ));
        let user = token_kubeconfig(c, ns, &name, &kubeconfig).await;
        Self {
            user,
            kubeconfig,
            cluster_scoped,
        }
    }
}

/// Writes to `path` the test's kubeconfig with a bound token of the ServiceAccount `ns/name`
/// instead of the test's credentials; returns the user the API server sees.
pub async fn token_kubeconfig(c: &Client, ns: &str, name: &str, path: &PathBuf) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![]),
            expiration_seconds: Some(3 * 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for {ns}/{name}: {e}"))
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest status");
    let user = format!("system:serviceaccount:{ns}:{name}");
    write_kubeconfig(path, &user, &token);
    user
}

fn write_kubeconfig(path: &PathBuf, user: &str, token: &str) {
    let mut config = Kubeconfig::read().expect("the test's kubeconfig");
    for ctx in config
        .contexts
        .iter_mut()
        .filter_map(|c| c.context.as_mut())
    {
        ctx.user = Some(user.to_string());
    }
    config.auth_infos = vec![kube::config::NamedAuthInfo {
        name: user.to_string(),
        auth_info: Some(AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        }),
        other: Default::default(),
    }];
    std::fs::create_dir_all(path.parent().expect("dir")).expect("log dir");
    let text = serde_yaml_ng::to_string(&config).expect("kubeconfig yaml");
    std::fs::write(path, text).expect("write kubeconfig");
}

/// The chart's ServiceAccount and RBAC objects for an operator whose release namespace (and,
/// namespaced, watched namespace) is `ns`; object names are `ns` (fullnameOverride) plus the
/// chart's suffixes, so cluster-scoped names of two tests never collide.
pub fn render(ns: &str, mode: Mode) -> String {
    let only = [
        "templates/serviceaccount.yaml",
        "templates/rbac.yaml",
        "templates/leader-election-rbac.yaml",
    ];
    let mut args = vec![
        "--namespace".to_string(),
        ns.to_string(),
        "--set".to_string(),
        format!("fullnameOverride={ns}"),
        "--set".to_string(),
        "crds.install=false".to_string(),
    ];
    if mode == Mode::Namespaced {
        args.extend(["--set".to_string(), format!("watchNamespace={ns}")]);
    }
    for o in only {
        args.extend(["--show-only".to_string(), o.to_string()]);
    }
    if helm().is_some() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        return helm_template(&args);
    }
    assert!(
        mode == Mode::ClusterWide,
        "namespaced mode renders the chart with helm, which was not found"
    );
    from_install_bundle(ns)
}

/// The bundle's RBAC objects (rendered as release `guestbook-operator` in
/// `guestbook-operator-system`), renamed as `render` would name them for `ns`.
fn from_install_bundle(ns: &str) -> String {
    const RELEASE_NS: &str = "guestbook-operator-system";
    const FULLNAME: &str = "guestbook-operator";
    let text = std::fs::read_to_string(crate::support::repo("manifests/install.yaml"))
        .expect("manifests/install.yaml");
    let rename = |v: &mut serde_json::Value| {
        if let Some(s) = v.as_str()
            && let Some(rest) = s.strip_prefix(FULLNAME)
        {
            *v = serde_json::Value::String(format!("{ns}{rest}"));
        }
    };
    let mut out = String::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let Ok(mut v) = serde_json::Value::deserialize(doc) else {
            continue;
        };
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let rbac = [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ];
        if !rbac.contains(&kind.as_str()) {
            continue;
        }
        rename(&mut v["metadata"]["name"]);
        if v["metadata"]["namespace"] == RELEASE_NS {
            v["metadata"]["namespace"] = ns.into();
        }
        if v.get("roleRef").is_some() {
            rename(&mut v["roleRef"]["name"]);
        }
        for s in v["subjects"].as_array_mut().into_iter().flatten() {
            rename(&mut s["name"]);
            s["namespace"] = ns.into();
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&v).expect("yaml"));
    }
    out
}

/// Cluster-scoped objects of identities whose test namespace is gone (a test process killed
/// before it could clean up). Only names of e2e namespaces (`e2e-`) are considered.
async fn sweep_leftovers(c: &Client) {
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let lp = ListParams::default().labels("app.kubernetes.io/part-of=guestbook-operator");
    let gone = |name: &str| {
        let ours = name.starts_with("e2e-");
        let ns = name
            .strip_suffix("-cluster-read")
            .unwrap_or(name)
            .to_string();
        let namespaces = namespaces.clone();
        async move { ours && matches!(namespaces.get_opt(&ns).await, Ok(None)) }
    };
    let dp = DeleteParams::default();
    let bindings: Api<ClusterRoleBinding> = Api::all(c.clone());
    for b in bindings
        .list_metadata(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let name = b.metadata.name.unwrap_or_default();
        if gone(&name).await {
            let _ = bindings.delete(&name, &dp).await;
        }
    }
    let roles: Api<ClusterRole> = Api::all(c.clone());
    for r in roles
        .list_metadata(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let name = r.metadata.name.unwrap_or_default();
        if gone(&name).await {
            let _ = roles.delete(&name, &dp).await;
        }
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        let objects = std::mem::take(&mut self.cluster_scoped);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(c) = Client::try_default().await else {
                    return;
                };
                for (kind, name) in objects {
                    let dp = DeleteParams::default();
                    let _ = match kind.as_str() {
                        "ClusterRole" => Api::<ClusterRole>::all(c.clone())
                            .delete(&name, &dp)
                            .await
                            .map(|_| ()),
                        _ => Api::<ClusterRoleBinding>::all(c.clone())
                            .delete(&name, &dp)
                            .await
                            .map(|_| ()),
                    };
                }
            });
        })
        .join();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The pinned helm (`$GBO_CACHE/bin/helm-v$HELM_VERSION/helm`, what hack/render-manifests
/// uses), else a `helm` on PATH (`e2e/cluster env` puts the pinned one there).
pub fn helm() -> Option<PathBuf> {
    let versions = std::fs::read_to_string(repo("e2e/versions.env")).ok()?;
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("HELM_VERSION="))?
        .trim_matches(['"', '\'']);
    let cache = std::env::var_os("GBO_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("guestbook-operator"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/guestbook-operator"))
        })?;
    let pinned = cache.join(format!("bin/helm-v{version}/helm"));
    if pinned.is_file() {
        return Some(pinned);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
}

/// Runs `helm` with `args`; its stdout. Panics with helm's stderr when it fails.
pub fn run_helm(args: &[&str]) -> String {
    let helm = helm().expect("helm (run e2e/cluster build)");
    let out = Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// `helm template guestbook-operator charts/guestbook-operator ARGS...`.
pub fn helm_template(args: &[&str]) -> String {
    let chart = repo("charts/guestbook-operator");
    let mut all = vec![
        "template",
        "guestbook-operator",
        chart.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    run_helm(&all)
}
