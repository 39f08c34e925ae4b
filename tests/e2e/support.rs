//! What the e2e tests share: a client for the cluster in KUBECONFIG, a namespace per test, the
//! operator binary as a child process, polling, and the capabilities a test may need that not
//! every cluster has (skipped visibly, counted, or failed when the run requires them).

use guestbook_operator::crd::{self, Guestbook, PatroniCluster, RedisSentinel, VoteApp};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, Resource};
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// The capabilities a test may need and the visible skip; a file of its own so that test
// targets without a cluster (tests/standins) share it without the rest of this one.
#[path = "skip.rs"]
mod skip;
pub use skip::{Capability, require, require_part, skip};

pub const MANAGER: &str = "gbo-e2e";

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A client for the cluster the suite was pointed at. Refuses to guess: no KUBECONFIG, no run.
pub async fn client() -> Client {
    skip::summary_at_exit();
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "the e2e suite needs KUBECONFIG (run hack/test-all, or eval \"$(e2e/cluster up | tail -n1)\" first)"
    );
    Client::try_default()
        .await
        .expect("a client for the cluster in KUBECONFIG")
}

/// Installs (server-side apply) the committed CRDs and waits until they are served.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(MANAGER).force();
    for c in crd::all() {
        let name = c.metadata.name.clone().expect("CRD name");
        api.patch(&name, &params, &Patch::Apply(&c))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    }
    for c in crd::all() {
        let name = c.metadata.name.clone().expect("CRD name");
        wait_for(
            &format!("CRD {name} Established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let c = api.get(&name).await.ok()?;
                    let established = c
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            },
        )
        .await;
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A namespace of its own for one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, test: &str) -> Self {
        let name = format!(
            "e2e-{test}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let api: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("GBO_E2E_KEEP").is_some() {
            eprintln!("keeping namespace {} (GBO_E2E_KEEP)", self.name);
            return;
        }
        let name = self.name.clone();
        // Drop cannot await; delete from a runtime of our own on another thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(c) = Client::try_default().await {
                    release_credentials(&c, &name).await;
                    let _ = Api::<Namespace>::all(c)
                        .delete(&name, &DeleteParams::background())
                        .await;
                }
            });
        })
        .join();
    }
}

/// The operator's finalizer on the credential Secrets it generates.
pub const CREDENTIALS_FINALIZER: &str = "guestbook-operator.dev/credentials";

/// Lifts [`CREDENTIALS_FINALIZER`] from every Secret in `ns`. A test namespace is deleted
/// after its operator has stopped: nothing else would lift it, and the namespace would stay
/// terminating for ever.
pub async fn release_credentials(c: &Client, ns: &str) {
    use k8s_openapi::api::core::v1::Secret;
    let api: Api<Secret> = Api::namespaced(c.clone(), ns);
    let Ok(list) = api.list_metadata(&Default::default()).await else {
        return;
    };
    for s in list.items {
        let finalizers = s.metadata.finalizers.unwrap_or_default();
        if let (true, Some(name)) = (
            finalizers.iter().any(|f| f == CREDENTIALS_FINALIZER),
            s.metadata.name,
        ) {
            let rest: Vec<&String> = finalizers
                .iter()
                .filter(|f| *f != CREDENTIALS_FINALIZER)
                .collect();
            let patch = serde_json::json!({"metadata": {"finalizers": rest}});
            let _ = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
}

/// The start of most e2e tests: the CRDs installed, a namespace of its own, the operator
/// watching it (no leader election), and `yaml` applied in it.
pub async fn start_with(test: &str, yaml: &str) -> (Client, TestNamespace, Operator) {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, test).await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    apply_yaml(&c, &ns.name, yaml)
        .await
        .unwrap_or_else(|e| panic!("{test}: the resource was rejected: {e}"));
    (c, ns, op)
}

/// The ApiResource of one of our kinds, by kind name.
pub fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "RedisSentinel" => ApiResource::erase::<RedisSentinel>(&()),
        "PatroniCluster" => ApiResource::erase::<PatroniCluster>(&()),
        "Guestbook" => ApiResource::erase::<Guestbook>(&()),
        "VoteApp" => ApiResource::erase::<VoteApp>(&()),
        other => panic!("not one of our kinds: {other}"),
    }
}

/// Server-side applies one YAML document into `ns` with strict field validation, as
/// `kubectl apply --server-side` does.
pub async fn apply_yaml(
    client: &Client,
    ns: &str,
    yaml: &str,
) -> Result<DynamicObject, kube::Error> {
    let mut obj: DynamicObject =
        serde_yaml_ng::from_str(yaml).expect("fixture parses as an object");
    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    let ar = api_resource(&kind);
    obj.metadata.namespace = Some(ns.to_string());
    let name = obj.metadata.name.clone().expect("fixture has a name");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force().validation_strict(),
        &Patch::Apply(&obj),
    )
    .await
}

/// Server-side applies every document of a manifest file into `ns` (any kind the cluster
/// serves).
pub async fn apply_file(client: &Client, ns: &str, path: &str) {
    let text = std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut obj = DynamicObject::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
        let types = obj
            .types
            .clone()
            .unwrap_or_else(|| panic!("{path}: a document without apiVersion/kind"));
        let gvk = GroupVersionKind::try_from(&types).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let name = obj.metadata.name.clone().expect("named object");
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            obj.metadata.namespace = Some(ns.to_string());
            Api::namespaced_with(client.clone(), ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("{path}: applying {name}: {e}"));
    }
}

/// Polls `probe` until it yields a value; panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The operator binary running as a child process; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Operator {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// The identity it runs as; checks on drop that no request was refused (see rbac.rs).
    _rbac: crate::rbac::Guard,
}

/// The operator binary the suite runs: this build's, or the one `GBO_E2E_OPERATOR_BIN` names
/// (another build, e.g. with a feature taken out, to see that the test proving it fails).
fn operator_bin() -> PathBuf {
    std::env::var_os("GBO_E2E_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_guestbook-operator")))
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr")
}

impl Operator {
    /// Starts `guestbook-operator run` watching `ns`, with its Lease in `ns`.
    pub fn start(ns: &str, identity: &str, extra: &[&str]) -> Self {
        Self::start_as(ns, identity, extra, None)
    }

    /// [`Operator::start`] with the credentials of `kubeconfig` instead of the chart's identity
    /// (the ServiceAccount and RBAC the Helm chart creates, see identity.rs), the default.
    pub fn start_as(ns: &str, identity: &str, extra: &[&str], kubeconfig: Option<&Path>) -> Self {
        let addr = free_port();
        let log = repo(&format!("target/e2e-logs/{ns}-{identity}.log"));
        std::fs::create_dir_all(log.parent().expect("log dir")).expect("create log dir");
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let rbac = crate::rbac::Guard::new(ns, kubeconfig, &log);
        let mut cmd = Command::new(operator_bin());
        cmd.args([
            "run",
            "--namespace",
            ns,
            "--http-addr",
            &addr.to_string(),
            "--leader-election-namespace",
            ns,
        ])
        .args([
            "--identity",
            identity,
            "--lease-duration-seconds",
            "6",
            "--renew-deadline-seconds",
            "4",
            "--retry-period-seconds",
            "1",
        ])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("GBO_E2E_LOG").unwrap_or_else(|_| "info,guestbook_operator=debug".into()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        cmd.env("KUBECONFIG", rbac.kubeconfig());
        // If the test process dies without unwinding (a timeout's SIGKILL), the operator must
        // not live on acting on addresses later tests reuse.
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
            addr,
            log,
            _rbac: rbac,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the PID of our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("wait for killed operator");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path).await
    }

    /// The value of an unlabelled metric, or the sum over a labelled family matching `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let Some((200, body)) = self.get("/metrics").await else {
            return f64::NAN;
        };
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter(|l| l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Fails the test, with the operator's log, if any reconcile has failed.
    pub async fn assert_no_reconcile_errors(&self) {
        assert_eq!(
            self.metric("guestbook_operator_reconcile_errors_total", "")
                .await,
            0.0,
            "{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// An HTTP GET on loopback: (status, body), or `None` when nothing answers within 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = http.get(format!("http://{addr}{path}")).send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.text().await.ok()?;
    Some((status, body))
}

/// The Ready condition and observedGeneration of an object of ours, as (status, reason, observedGeneration, generation).
pub async fn kstatus(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Option<(String, String, i64, i64)> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &api_resource(kind));
    let o = api.get(name).await.ok()?;
    let generation = o.meta().generation?;
    let status = o.data.get("status")?;
    let observed = status.get("observedGeneration")?.as_i64()?;
    let ready = status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_string(),
        ready["reason"].as_str()?.to_string(),
        observed,
        generation,
    ))
}

/// Every condition of an object of ours as (type, status, reason), with its generation and
/// observedGeneration, from one read: conditions compared across two reads can mix two
/// different status writes.
pub async fn conditions(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Option<(i64, i64, Vec<(String, String, String)>)> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &api_resource(kind));
    let o = api.get(name).await.ok()?;
    let generation = o.meta().generation?;
    let status = o.data.get("status")?;
    let observed = status.get("observedGeneration")?.as_i64()?;
    let all = status
        .get("conditions")?
        .as_array()?
        .iter()
        .filter_map(|c| {
            Some((
                c["type"].as_str()?.to_string(),
                c["status"].as_str()?.to_string(),
                c["reason"].as_str()?.to_string(),
            ))
        })
        .collect();
    Some((generation, observed, all))
}

/// The condition `type_` of an object of ours, as (status, reason, message).
pub async fn condition(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &api_resource(kind));
    let o = api.get(name).await.ok()?;
    let c = o
        .data
        .get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["message"].as_str()?.to_string(),
    ))
}

/// Starts a Job from the CronJob's template, as `kubectl create job --from=cronjob/...` does,
/// and waits for it to finish; panics if it fails.
pub async fn run_job_from(c: &Client, ns: &str, cronjob: &str, job: &str) {
    if let Err(why) = try_job_from(c, ns, cronjob, job).await {
        panic!("Job {job} failed: {why}");
    }
}

/// Like [`run_job_from`], but returns the Job's failure message instead of panicking.
pub async fn try_job_from(c: &Client, ns: &str, cronjob: &str, job: &str) -> Result<(), String> {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    let cj = Api::<CronJob>::namespaced(c.clone(), ns)
        .get(cronjob)
        .await
        .expect("the CronJob");
    let template = cj.spec.job_template;
    let mut j = Job {
        spec: template.spec,
        ..Job::default()
    };
    j.metadata.name = Some(job.to_string());
    j.metadata.labels = template.metadata.and_then(|m| m.labels);
    j.metadata.annotations = Some(
        [(
            "cronjob.kubernetes.io/instantiate".to_string(),
            "manual".to_string(),
        )]
        .into(),
    );
    let jobs: Api<Job> = Api::namespaced(c.clone(), ns);
    jobs.create(&kube::api::PostParams::default(), &j)
        .await
        .expect("create the Job");
    wait_for(
        &format!("Job {job} to finish"),
        Duration::from_secs(180),
        || async {
            let j = jobs.get(job).await.ok()?;
            let conds = j.status?.conditions?;
            if let Some(f) = conds
                .iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
            {
                return Some(Err(f.message.clone().unwrap_or_default()));
            }
            conds
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
                .then_some(Ok(()))
        },
    )
    .await
}
