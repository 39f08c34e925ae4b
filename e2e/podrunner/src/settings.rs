//! How the runner is set up: where it keeps state, the pod network, what it runs for real.

use regex::Regex;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Per-pod state: volumes, container roots, logs, PID files.
    pub state_dir: PathBuf,
    /// The bridge every pod's veth joins.
    pub bridge: String,
    /// The host's address on the pod network; the API server is reachable there.
    pub gateway: Ipv4Addr,
    /// Prefix length of the pod network.
    pub prefix_len: u8,
    pub apiserver_port: u16,
    /// Pods with a container image matching this are run for real.
    pub real_images: Regex,
    /// Real pods take addresses from their node's pod /24 with this added to the third octet,
    /// so they never collide with the addresses kwok hands to simulated pods.
    pub ip_offset: u8,
    /// Prepended to PATH in every container (for example where Patroni is installed).
    pub extra_path: Option<String>,
    /// `TARGET=SOURCE`: inside containers, TARGET shows SOURCE when TARGET does not exist
    /// (for example a PostgreSQL version the machine does not have).
    pub path_aliases: Vec<(String, String)>,
    /// First delay before restarting a crashed container (doubles up to `restart_backoff_max`).
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// The Service range (`10.96.0.0/16`): pods route it via the gateway, where kube-proxy
    /// serves it. `None`: pods get no route for it.
    pub service_cidr: Option<String>,
    /// The cluster DNS Service's address (kube-dns). `None`: `ClusterFirst` pods fall back to
    /// `Default`, as a kubelet without `clusterDNS` does.
    pub cluster_dns: Option<Ipv4Addr>,
    pub cluster_domain: String,
    /// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`/`PORT`): the `kubernetes`
    /// Service when kube-proxy serves it; `None`: the gateway and `apiserver_port`.
    pub kubernetes_service: Option<SocketAddrV4>,
    /// `FAMILY TABLE SET`: the nftables set of pod addresses whose Service traffic back to
    /// themselves is masqueraded (see `net::hairpin`).
    pub hairpin_set: Option<String>,
}

impl Settings {
    pub fn pods_dir(&self) -> PathBuf {
        self.state_dir.join("pods")
    }

    /// Default command for images without one in the pod spec (our containers always set one;
    /// this covers hand-written test pods).
    pub fn default_command(image: &str) -> Option<Vec<String>> {
        let name = image.rsplit('/').next().unwrap_or(image);
        let repo = name.split([':', '@']).next().unwrap_or(name);
        match repo {
            "redis" => Some(vec!["redis-server".into()]),
            // The official image's CMD.
            "nginx" => Some(vec!["nginx".into(), "-g".into(), "daemon off;".into()]),
            // The images' entrypoints, found on PATH (Debian's exporters, the cached CoreDNS).
            "coredns" => Some(vec!["coredns".into()]),
            "redis_exporter" => Some(vec!["prometheus-redis-exporter".into()]),
            "postgres-exporter" | "postgres_exporter" => {
                Some(vec!["prometheus-postgres-exporter".into()])
            }
            "nginx-prometheus-exporter" => Some(vec!["prometheus-nginx-exporter".into()]),
            // The stock app images: stand-ins of our own (e2e/standins).
            "examplevotingapp_vote" => Some(standin("vote")),
            "examplevotingapp_result" => Some(standin("result")),
            "examplevotingapp_worker" => Some(standin("worker")),
            "gb-frontend" => Some(standin("gb_frontend")),
            _ => None,
        }
    }

    pub fn is_real(&self, image: &str) -> bool {
        self.real_images.is_match(image)
    }
}

/// Where e2e/standins/install puts the stand-ins (GBO_SHARED_CACHE's default location).
const STANDINS: &str = "/var/cache/guestbook-operator/standins";

/// Runs the command it is given as its child and passes SIGTERM on to it; exits as the child
/// did. (`sh -c FORWARD_TERM standin CMD ARGS...`)
const FORWARD_TERM: &str = r#"child= stop=
trap 'stop=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM
"$@" &
child=$!
[ -z "$stop" ] || kill -TERM "$child" 2>/dev/null
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || exit "$status"
done"#;

/// The stand-in script `app` run by the stand-ins' own venv, as the child of a shell that
/// passes SIGTERM on. A container's first process is PID 1 of its namespace, and the kernel
/// delivers it no signal it has no handler for, SIGTERM included: Python's default would
/// leave a stand-in running until SIGKILL at the end of the grace period. The images' own
/// first processes stop on SIGTERM (gunicorn, the .NET runtime, tini in front of node,
/// Apache), so a deleted pod's stand-ins stop at once, as those do.
fn standin(app: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        FORWARD_TERM.into(),
        "standin".into(),
        format!("{STANDINS}/bin/python3"),
        format!("{STANDINS}/apps/{app}.py"),
    ]
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn exporter_images_run_debians_exporters() {
        let cmd = |image: &str| super::Settings::default_command(image).map(|c| c.join(" "));
        for (image, program) in [
            (
                "docker.io/oliver006/redis_exporter:v1.67.0",
                "prometheus-redis-exporter",
            ),
            (
                "quay.io/prometheuscommunity/postgres-exporter:v0.17.1",
                "prometheus-postgres-exporter",
            ),
            (
                "docker.io/nginx/nginx-prometheus-exporter:1.4.2",
                "prometheus-nginx-exporter",
            ),
        ] {
            assert_eq!(cmd(image).as_deref(), Some(program), "{image}");
        }
    }

    #[test]
    fn a_stand_in_stops_on_sigterm_and_exits_as_its_child_did() {
        let run = |child: &str| {
            Command::new("/bin/sh")
                .args(["-c", super::FORWARD_TERM, "standin", "/bin/sh", "-c", child])
                .spawn()
                .expect("sh")
        };
        // The child's own status goes through.
        let status = run("exit 3").wait().expect("wait");
        assert_eq!(status.code(), Some(3));
        // SIGTERM to the shell reaches a child that has no handler of its own: it dies of it.
        let mut sh = run("sleep 30");
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        crate::sandbox::signal(sh.id(), libc::SIGTERM);
        let status = sh.wait().expect("wait");
        assert!(t0.elapsed() < Duration::from_secs(5), "stopped at once");
        assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    }
}
