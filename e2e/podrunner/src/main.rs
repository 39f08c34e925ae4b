//! The `gbo-podrunner` command: `run` (the runner), `fault` (chaos), `logs`, `exec`.

use clap::{Parser, Subcommand};
use gbo_podrunner::settings::Settings;
use gbo_podrunner::{exec, fault, runner};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "gbo-podrunner",
    about = "Runs real store processes behind the local cluster's pods (test support)"
)]
struct Cli {
    /// Where the runner keeps per-pod state.
    #[arg(long, env = "GBO_PODRUNNER_STATE")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run pods until SIGTERM.
    Run(RunArgs),
    /// Inject a fault into a pod: kill (-9 its containers), pause (SIGSTOP all), resume.
    Fault {
        #[arg(value_parser = ["kill", "pause", "resume"])]
        action: String,
        /// NAMESPACE/POD
        pod: String,
        /// Only this container.
        #[arg(long)]
        container: Option<String>,
        /// Keep the killed container down this many seconds before the runner restarts it.
        #[arg(long)]
        down_for: Option<u64>,
    },
    /// Stop whatever an earlier runner left behind (processes, network namespaces, state).
    Cleanup,
    /// Print a container's output.
    Logs {
        /// NAMESPACE/POD
        pod: String,
        container: String,
        #[arg(long)]
        previous: bool,
    },
    /// Run a command inside a running container (as `kubectl exec`); exits with its status.
    Exec {
        /// NAMESPACE/POD
        pod: String,
        /// The container (needed when the pod runs several).
        #[arg(short, long)]
        container: Option<String>,
        /// Kill the command (and all it started) after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, default_value = "gbo0")]
    bridge: String,
    #[arg(long, default_value = "10.244.0.1")]
    gateway: Ipv4Addr,
    #[arg(long, default_value_t = 16)]
    prefix_len: u8,
    #[arg(long, default_value_t = 6443)]
    apiserver_port: u16,
    /// Pods with a container image matching this regular expression are run for real.
    #[arg(long)]
    real_images: String,
    #[arg(long, default_value_t = 128)]
    ip_offset: u8,
    /// Prepended to PATH in containers.
    #[arg(long)]
    extra_path: Option<String>,
    /// TARGET=SOURCE: show SOURCE at TARGET inside containers when TARGET does not exist.
    #[arg(long = "path-alias")]
    path_aliases: Vec<String>,
    #[arg(long, default_value_t = 10)]
    restart_backoff_seconds: u64,
    /// The Service range; pods route it via the gateway (where kube-proxy serves it).
    #[arg(long)]
    service_cidr: Option<String>,
    /// The kube-dns Service's address, the nameserver of ClusterFirst pods.
    #[arg(long)]
    cluster_dns: Option<Ipv4Addr>,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// IP:PORT of the `kubernetes` Service, given to pods as KUBERNETES_SERVICE_HOST/PORT
    /// (default: the API server on the gateway).
    #[arg(long)]
    kubernetes_service: Option<SocketAddrV4>,
    /// FAMILY TABLE SET: the nftables set that makes a pod's Service traffic back to itself
    /// work (each pod's `addr . addr` is kept in it).
    #[arg(long)]
    hairpin_set: Option<String>,
}

fn split_pod(s: &str) -> Option<(&str, &str)> {
    s.split_once('/')
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(cli.state_dir, args),
        Command::Fault {
            action,
            pod,
            container,
            down_for,
        } => match split_pod(&pod) {
            None => Err("pod must be NAMESPACE/NAME".to_string()),
            Some((ns, name)) => match action.as_str() {
                "kill" => fault::kill(
                    &cli.state_dir,
                    ns,
                    name,
                    container.as_deref(),
                    down_for.map(Duration::from_secs),
                ),
                "pause" => match container.as_deref() {
                    Some(c) => fault::pause_container(&cli.state_dir, ns, name, c),
                    None => fault::pause(&cli.state_dir, ns, name),
                },
                _ => match container.as_deref() {
                    Some(c) => fault::resume_container(&cli.state_dir, ns, name, c),
                    None => fault::resume(&cli.state_dir, ns, name),
                },
            }
            .map_err(|e| e.to_string()),
        },
        Command::Cleanup => cleanup(cli.state_dir),
        Command::Exec {
            pod,
            container,
            timeout,
            command,
        } => match split_pod(&pod) {
            None => Err("pod must be NAMESPACE/NAME".to_string()),
            Some((ns, name)) => {
                let target = (ns, name, container.as_deref());
                return run_exec(
                    &cli.state_dir,
                    target,
                    &command,
                    Duration::from_secs(timeout),
                );
            }
        },
        Command::Logs {
            pod,
            container,
            previous,
        } => match split_pod(&pod) {
            None => Err("pod must be NAMESPACE/NAME".to_string()),
            Some((ns, name)) => fault::log(&cli.state_dir, ns, name, &container, previous)
                .map(|l| print!("{l}"))
                .map_err(|e| e.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gbo-podrunner: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cleanup(state_dir: PathBuf) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(runner::clean_leftovers(&state_dir));
    Ok(())
}

/// Runs the command in the container with this process's input and output, and exits as it
/// did (124 after the timeout, as timeout(1)).
fn run_exec(
    state_dir: &std::path::Path,
    (ns, pod, container): (&str, &str, Option<&str>),
    argv: &[String],
    timeout: Duration,
) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            let target = exec::target(state_dir, ns, pod, container).map_err(|e| e.to_string())?;
            let mut cmd = exec::command(&target, argv);
            cmd.stdin(std::process::Stdio::inherit()).process_group(0);
            rt.block_on(async {
                let mut child = cmd.spawn().map_err(|e| e.to_string())?;
                let mut guard = exec::GroupGuard::new(&child);
                let status = tokio::time::timeout(timeout, child.wait()).await;
                if let Ok(status) = status {
                    guard.disarm();
                    return status.map_err(|e| e.to_string());
                }
                eprintln!(
                    "gbo-podrunner: {} still running after {timeout:?}; killed",
                    argv.join(" ")
                );
                Ok(std::os::unix::process::ExitStatusExt::from_raw(124 << 8))
            })
        });
    match outcome {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(255);
            ExitCode::from(u8::try_from(code).unwrap_or(255))
        }
        Err(e) => {
            eprintln!("gbo-podrunner: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(state_dir: PathBuf, a: RunArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .init();
    let real_images =
        regex::Regex::new(&a.real_images).map_err(|e| format!("--real-images: {e}"))?;
    let path_aliases = a
        .path_aliases
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(t, s)| (t.to_string(), s.to_string()))
                .ok_or_else(|| format!("--path-alias {s:?}: want TARGET=SOURCE"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let settings = Settings {
        state_dir,
        bridge: a.bridge,
        gateway: a.gateway,
        prefix_len: a.prefix_len,
        apiserver_port: a.apiserver_port,
        real_images,
        ip_offset: a.ip_offset,
        extra_path: a.extra_path,
        path_aliases,
        restart_backoff: Duration::from_secs(a.restart_backoff_seconds),
        restart_backoff_max: Duration::from_secs(300),
        service_cidr: a.service_cidr,
        cluster_dns: a.cluster_dns,
        cluster_domain: a.cluster_domain,
        kubernetes_service: a.kubernetes_service,
        hairpin_set: a.hairpin_set,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| e.to_string())?;
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        runner::run(settings, client, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}
