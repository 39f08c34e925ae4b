//! The proxy tier's metrics, run for real on loopback: nginx with the configuration the
//! Guestbook builder generates (only the ports moved to free loopback ones) and Debian's
//! nginx exporter started with exactly the sidecar's arguments. The exporter reads
//! `stub_status` and serves the series the `ProxyRejecting` alert uses. Needs nginx and
//! prometheus-nginx-exporter (`e2e/cluster build` installs both); skipped visibly otherwise.

#[allow(dead_code)]
mod common;

// The e2e suite's skip mechanism: a line per skipped test, the count at exit.
#[path = "e2e/skip.rs"]
#[allow(dead_code)]
mod skip;

use common::one;
use guestbook_operator::controllers::guestbook::build::build_offline;
use guestbook_operator::crd::Guestbook;
use guestbook_operator::k8s::children::ChildKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";
const EXPORTER: &str = "prometheus-nginx-exporter";

/// A process of the test, stopped by its PID when dropped: SIGTERM first, so that nginx's
/// master takes its worker with it (SIGKILL would leave the worker running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on the PID of our own child process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    l.local_addr().expect("addr").port()
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

async fn get(url: &str) -> Option<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    http.get(url).send().await.ok()?.text().await.ok()
}

#[tokio::test]
async fn the_exporter_sidecar_reads_the_generated_stub_status() {
    skip::summary_at_exit();
    let exporter = on_path(EXPORTER);
    let (true, Some(exporter)) = (Path::new(NGINX).is_file(), exporter) else {
        skip::skip(
            None,
            "needs nginx and prometheus-nginx-exporter (e2e/cluster build)",
        );
        return;
    };
    let gb: Guestbook = one("tests/fixtures/build/gb-proxy.yaml");
    let built = build_offline(&gb).expect("a valid fixture");
    let conf = built
        .children
        .iter()
        .find(|c| c.kind == ChildKind::ConfigMap && c.name == "book-proxy")
        .and_then(|c| c.object["data"]["guestbook.conf"].as_str())
        .expect("the proxy's configuration")
        .to_string();
    let deployment = built
        .children
        .iter()
        .find(|c| c.kind == ChildKind::Deployment && c.name == "book-proxy")
        .expect("the proxy Deployment");
    let sidecar = &deployment.object["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "exporter");
    // The sidecar's environment too: it holds the retries that outlast nginx's start.
    let envs: Vec<(String, String)> = sidecar["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    let args: Vec<String> = sidecar["args"]
        .as_array()
        .expect("the sidecar's args")
        .iter()
        .filter_map(|a| Some(a.as_str()?.to_string()))
        .collect();
    // The status server listens on the pod's loopback only.
    assert!(conf.contains("listen 127.0.0.1:8081;"), "{conf}");

    let (listen, upstream, status, metrics) = (free_port(), free_port(), free_port(), free_port());
    let conf = conf
        .replace("listen 80;", &format!("listen 127.0.0.1:{listen};"))
        .replace(
            "server book-frontend.shop.svc.cluster.local:8080;",
            &format!("server 127.0.0.1:{upstream};"),
        )
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{status}"))
        .replace("access_log /dev/stdout upstream_timing;", "access_log off;");
    let dir = std::env::temp_dir().join(format!("gbo-proxy-exporter-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).expect("a work directory");
    std::fs::write(dir.join("conf.d/guestbook.conf"), conf).expect("the conf");
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             include {d}/conf.d/*.conf; }}\n"
        ),
    )
    .expect("nginx.conf");
    // Started first, as in the pod (a native sidecar starts before the main container): it
    // must wait for nginx rather than exit.
    let args = args
        .iter()
        .map(|a| a.replace("127.0.0.1:8081", &format!("127.0.0.1:{status}")));
    let _exporter = Running(
        Command::new(exporter)
            .args(args)
            .envs(envs)
            .arg(format!("--web.listen-address=127.0.0.1:{metrics}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the exporter"),
    );
    let _nginx = Running(
        Command::new(NGINX)
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        // A connection of our own, so that the counters have something to count.
        let _ = get(&format!("http://127.0.0.1:{listen}/healthz")).await;
        if let Some(b) = get(&format!("http://127.0.0.1:{metrics}/metrics")).await
            && b.lines().any(|l| l == "nginx_up 1")
        {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the exporter never read stub_status: {:?}",
            std::fs::read_to_string(dir.join("error.log"))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for series in ["nginx_connections_accepted ", "nginx_connections_handled "] {
        assert!(
            body.lines().any(|l| l.starts_with(series)),
            "{series}: {body}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
