//! The `guestbook-operator` command.

use clap::{Parser, Subcommand};
use guestbook_operator::context::Settings;
use guestbook_operator::leader::Timing;
use guestbook_operator::manager::{self, LeaderElection, Options};
use guestbook_operator::telemetry::{self, LogFormat};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "guestbook-operator",
    version,
    about = "Runs highly available Guestbook and voting apps with Redis Sentinel and Patroni stores"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller manager.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print every object the operator would create for the custom resources in a file,
    /// offline (no cluster): for review in GitOps pull requests.
    Render {
        /// The file with the custom resources (YAML, several documents allowed); `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Namespace for resources that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// A human summary of one app or store: conditions, tiers, stores, master or leader,
    /// members, backups, recent events. As a kubectl plugin: name the binary
    /// `kubectl-guestbook_operator` and run `kubectl guestbook-operator status KIND/NAME`.
    Status {
        /// KIND/NAME, e.g. voteapp/vote, rsen/cache.
        target: String,
        /// The namespace; the kubeconfig context's when omitted.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (all namespaces when omitted).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /healthz, /readyz and /metrics endpoint.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Elect a leader through a Lease, so that only one replica acts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "guestbook-operator")]
    leader_election_id: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds the leader keeps trying to renew before it stops acting.
    #[arg(long, default_value_t = 10)]
    renew_deadline_seconds: u64,
    /// Seconds between election attempts.
    #[arg(long, default_value_t = 2)]
    retry_period_seconds: u64,
    /// Seconds between polls of a healthy store: the safety net behind the events failovers
    /// are followed by. Tests set it long to prove the events alone suffice.
    #[arg(long, default_value_t = 30)]
    safety_poll_seconds: u64,
    /// Seconds between looks at a store that is starting, failing over or rolling.
    #[arg(long, default_value_t = 2)]
    converging_poll_seconds: u64,
    /// Seconds between asks of which optional APIs the cluster serves: ServiceMonitors and
    /// PodMonitors are made once the Prometheus Operator's CRDs are installed, without a restart.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    api_discovery_interval_seconds: u64,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}-{}", std::process::id())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match guestbook_operator::crd::all_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: rendering CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(args),
        Command::Render { file, namespace } => render(&file, &namespace),
        Command::Status { target, namespace } => status(&target, namespace),
    }
}

fn render(file: &str, namespace: &str) -> ExitCode {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: reading {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match guestbook_operator::cli::render::render(&text, namespace) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {file}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(target: &str, namespace: Option<String>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let config = kube::Config::infer().await.map_err(|e| e.to_string())?;
        let ns = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        guestbook_operator::cli::status::summary(&client, &ns, target)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    telemetry::init(args.log_format);
    if args.renew_deadline_seconds >= args.lease_duration_seconds
        || args.retry_period_seconds >= args.renew_deadline_seconds
    {
        tracing::error!("need retry-period < renew-deadline < lease-duration");
        return ExitCode::from(2);
    }
    let leader_election = args.leader_election.then(|| LeaderElection {
        lease_namespace: args.leader_election_namespace.clone(),
        lease_name: args.leader_election_id.clone(),
        identity: args.identity.clone().unwrap_or_else(default_identity),
        timing: Timing {
            lease_duration: Duration::from_secs(args.lease_duration_seconds),
            renew_deadline: Duration::from_secs(args.renew_deadline_seconds),
            retry_period: Duration::from_secs(args.retry_period_seconds),
        },
    });
    let options = Options {
        namespace: args.namespace,
        http_addr: args.http_addr,
        leader_election,
        settings: Settings {
            safety_poll: Duration::from_secs(args.safety_poll_seconds),
            converging_poll: Duration::from_secs(args.converging_poll_seconds),
            api_discovery: Duration::from_secs(args.api_discovery_interval_seconds),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(manager::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}
