//! The `gbo-podrunner` command: `run` (the runner), `fault` (chaos), `logs`.

use clap::{Parser, Subcommand};
use gbo_podrunner::settings::Settings;
use gbo_podrunner::{fault, runner};
use std::net::Ipv4Addr;
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
        /// Only this container (kill only).
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
                "pause" => fault::pause(&cli.state_dir, ns, name),
                _ => fault::resume(&cli.state_dir, ns, name),
            }
            .map_err(|e| e.to_string()),
        },
        Command::Cleanup => cleanup(cli.state_dir),
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
    let settings = Settings {
        state_dir,
        bridge: String::new(),
        gateway: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        apiserver_port: 0,
        real_images: regex::Regex::new("^$").map_err(|e| e.to_string())?,
        ip_offset: 0,
        extra_path: None,
        path_aliases: Vec::new(),
        restart_backoff: Duration::ZERO,
        restart_backoff_max: Duration::ZERO,
    };
    rt.block_on(runner::clean_leftovers(&settings));
    Ok(())
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
