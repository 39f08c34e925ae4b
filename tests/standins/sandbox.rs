//! The world of one contract test: a network namespace of its own (only a loopback, so nothing
//! it starts can reach anything else, and port 80 is free), real redis-server and PostgreSQL 15
//! bound to loopback addresses in it, and the stand-ins started with a bind-mounted /etc/hosts
//! that maps the names the images hard-code (`redis`, `db`, ...) to those addresses.
//! Every process is stopped by its own PID when its guard drops, failure or not.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// What the tests need from the machine.
pub struct Env {
    pub python: PathBuf,
    pub scripts: PathBuf,
    pg_uid: u32,
    pg_gid: u32,
}

/// The machine's prerequisites, or `None` once the test is recorded as skipped (the e2e
/// suite's mechanism: a line now, the count at exit); with GBO_REQUIRE_RUNNER=1 a missing
/// prerequisite fails the test instead.
pub fn env() -> Option<Env> {
    crate::skip::summary_at_exit();
    match find_env() {
        Ok(e) => Some(e),
        Err(why) => {
            crate::skip::skip(None, &why);
            None
        }
    }
}

fn find_env() -> Result<Env, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (network and mount namespaces, port 80)".into());
    }
    let shared = std::env::var("GBO_SHARED_CACHE")
        .unwrap_or_else(|_| "/var/cache/guestbook-operator".into());
    let python = Path::new(&shared).join("standins/bin/python3");
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(Command::new(&python).args(["-c", "import redis, psycopg"])) {
        return Err(format!(
            "{} with redis and psycopg is missing (run e2e/standins/install)",
            python.display()
        ));
    }
    for bin in ["redis-server", "psql", "unshare", "ip"] {
        if !ok(Command::new("sh").args(["-c", &format!("command -v {bin}")])) {
            return Err(format!("{bin} is not installed"));
        }
    }
    for bin in ["initdb", "postgres"] {
        if !Path::new(PG_BIN).join(bin).exists() {
            return Err(format!(
                "{PG_BIN}/{bin} is missing (Debian's postgresql-15)"
            ));
        }
    }
    if !ok(Command::new("unshare").args(["-n", "-m", "true"])) {
        return Err("cannot create network and mount namespaces here".into());
    }
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "no postgres user on this machine".to_string())
    };
    Ok(Env {
        python,
        scripts: Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/standins"),
        pg_uid: id("-u")?,
        pg_gid: id("-g")?,
    })
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One test's namespace and scratch directory. Create it first in the test (it moves the
/// calling thread into the new network namespace) and let it drop last.
pub struct Sandbox {
    pub env: Env,
    pub dir: PathBuf,
    hosts: PathBuf,
    names: std::sync::Mutex<Vec<(String, String)>>,
    logs: std::sync::Mutex<Vec<(String, PathBuf)>>,
}

impl Sandbox {
    pub fn new(env: Env, test: &str) -> Self {
        // A network namespace for this thread only (each test runs on a thread of its own); every
        // process it starts inherits it.
        // SAFETY: unshare(2) with CLONE_NEWNET affects only the calling thread's namespaces.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        run(Command::new("ip").args(["link", "set", "lo", "up"]));
        let dir = std::env::temp_dir().join(format!(
            "gbo-standins-{test}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        set_mode(&dir, 0o755);
        // Names no test maps fail at once: the only nameserver is a closed port on our loopback.
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
        let s = Self {
            env,
            hosts: dir.join("hosts"),
            dir,
            names: Default::default(),
            logs: Default::default(),
        };
        s.write_hosts();
        s
    }

    /// Maps `name` to `ip` in the stand-ins' /etc/hosts (rewritten in place: running stand-ins
    /// see the change at their next lookup, as they would see DNS change).
    pub fn map(&self, name: &str, ip: &str) {
        {
            let mut names = self.names.lock().expect("names");
            names.retain(|(n, _)| n != name);
            names.push((name.to_string(), ip.to_string()));
        }
        self.write_hosts();
    }

    fn write_hosts(&self) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, ip) in self.names.lock().expect("names").iter() {
            text += &format!("{ip} {name}\n");
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.hosts)
            .expect("hosts file");
        f.write_all(text.as_bytes()).expect("write hosts file");
    }

    /// A new log file for `name` (a second process of that name gets `name-2`, ...).
    fn log_file(&self, name: &str) -> (PathBuf, File) {
        let mut logs = self.logs.lock().expect("logs");
        let n = logs
            .iter()
            .filter(|(l, _)| l.split('#').next() == Some(name))
            .count();
        let label = if n == 0 {
            name.to_string()
        } else {
            format!("{name}#{}", n + 1)
        };
        let path = self.dir.join(format!("{label}.log"));
        let file = File::create(&path).expect("log file");
        logs.push((label, path.clone()));
        (path, file)
    }

    /// A redis-server listening on `ip`:6379.
    pub fn redis(&self, ip: &str) -> Proc {
        let name = format!("redis-{ip}");
        let (log, out) = self.log_file(&name);
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            ip,
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--protected-mode", "no", "--dir"])
        .arg(&self.dir);
        let p = Proc::spawn(&name, cmd, log, out, libc::SIGTERM);
        wait(
            &format!("{name} to answer"),
            Duration::from_secs(10),
            || redis_query::<String>(ip, &["PING"]).ok(),
        );
        p
    }

    /// A PostgreSQL 15 server listening on `ip`:5432, user postgres, password postgres.
    pub fn postgres(&self, ip: &str) -> Postgres {
        let data = self.dir.join(format!("pg-{ip}"));
        std::fs::create_dir_all(&data).expect("data directory");
        chown(&data, self.env.pg_uid, self.env.pg_gid);
        set_mode(&data, 0o700);
        let pwfile = self.dir.join("pg-password");
        std::fs::write(&pwfile, "postgres\n").expect("password file");
        set_mode(&pwfile, 0o644);
        let mut initdb = Command::new(Path::new(PG_BIN).join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-host=md5",
                "--auth-local=trust",
                "--no-sync",
            ])
            // The least helpful encoding: the clients must ask for UTF8 as the real ones do.
            .args(["--encoding=SQL_ASCII", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .uid(self.env.pg_uid)
            .gid(self.env.pg_gid);
        run(&mut initdb);
        let socket_dir = self.dir.join(format!("pg-run-{ip}"));
        std::fs::create_dir_all(&socket_dir).expect("socket directory");
        chown(&socket_dir, self.env.pg_uid, self.env.pg_gid);
        let mut pg = Postgres {
            ip: ip.to_string(),
            data,
            socket_dir,
            uid: self.env.pg_uid,
            gid: self.env.pg_gid,
            proc: None,
            log: self.log_file(&format!("postgres-{ip}")).0,
        };
        pg.start();
        pg
    }

    /// A stand-in (`vote`, `worker`, `result`, `gb_frontend`) from this checkout, run by the
    /// installed venv's Python as root in a mount namespace of its own whose /etc/hosts and
    /// /etc/resolv.conf are the sandbox's, with only PATH and `env` in its environment.
    pub fn standin(&self, app: &str, env: &[(&str, &str)]) -> Proc {
        let (log, out) = self.log_file(app);
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(&self.hosts)
            .arg(self.dir.join("resolv.conf"))
            .arg(&self.env.python)
            .arg(self.env.scripts.join(format!("{app}.py")))
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            // Never write __pycache__ into the checkout.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(env.iter().copied());
        Proc::spawn(app, cmd, log, out, libc::SIGTERM)
    }

    /// Waits until something accepts connections on 127.0.0.1:`port`.
    pub fn wait_listening(&self, port: u16) {
        wait(
            &format!("port {port} to listen"),
            Duration::from_secs(15),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The failing test's processes are gone by now; their logs tell why.
            let mut err = std::io::stderr().lock();
            for (name, path) in self.logs.lock().expect("logs").iter() {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let _ = writeln!(err, "----- log of {name} -----\n{text}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process the test started; on drop it gets its stop signal, then SIGKILL after 10 s.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    stop: i32,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf, out: File, stop: i32) -> Self {
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // Should the test process die without unwinding, its children must not live on.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, stop) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.to_string(),
            child,
            log,
            stop,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// The exit status, once the process has ended within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log contains `text`; panics with the log after `timeout`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        wait(&format!("{} to log {text:?}", self.name), timeout, || {
            self.log().contains(text).then_some(())
        });
    }

    /// Stops the process (its stop signal, SIGKILL after 10 s) and returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        self.signal(self.stop);
        if let Some(status) = self.wait_exit(Duration::from_secs(10)) {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL server of the sandbox, stoppable and restartable on the same data.
pub struct Postgres {
    pub ip: String,
    data: PathBuf,
    socket_dir: PathBuf,
    uid: u32,
    gid: u32,
    proc: Option<Proc>,
    log: PathBuf,
}

impl Postgres {
    pub fn start(&mut self) {
        assert!(self.proc.is_none(), "postgres {} already runs", self.ip);
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("postgres log");
        let mut cmd = Command::new(Path::new(PG_BIN).join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args([
                "-c",
                &format!("listen_addresses={}", self.ip),
                "-c",
                "port=5432",
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ))
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .uid(self.uid)
            .gid(self.gid);
        // SIGINT: PostgreSQL's fast shutdown, which ends every client connection.
        self.proc = Some(Proc::spawn(
            &format!("postgres-{}", self.ip),
            cmd,
            self.log.clone(),
            out,
            libc::SIGINT,
        ));
        wait(
            "postgres to accept connections",
            Duration::from_secs(30),
            || {
                let exited = self.proc.as_mut().and_then(|p| p.wait_exit(Duration::ZERO));
                assert!(exited.is_none(), "postgres exited: {exited:?}");
                self.psql("SELECT 1").ok()
            },
        );
    }

    /// Fast shutdown: every client connection is terminated by the server.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Runs SQL through psql as postgres/postgres over TCP; the unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-h", &self.ip, "-U", "postgres", "-d", "postgres", "-tA"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", "postgres")
            .env("PGCONNECT_TIMEOUT", "3")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The `votes` table as (id, vote) rows, sorted by id (none while the table is missing).
    pub fn votes(&self) -> Vec<(String, String)> {
        let out = match self.psql("SELECT id, vote FROM votes ORDER BY id") {
            Ok(out) => out,
            Err(e) if e.contains("does not exist") => String::new(),
            Err(e) => panic!("reading votes: {e}"),
        };
        out.lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(id, v)| (id.to_string(), v.to_string()))
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One command to the redis-server on `ip`:6379.
pub fn redis_query<T: redis::FromRedisValue>(ip: &str, args: &[&str]) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://{ip}:6379/"))?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con)
}

/// The `votes` list on the redis-server on `ip`.
pub fn queued(ip: &str) -> Vec<String> {
    redis_query(ip, &["LRANGE", "votes", "0", "-1"]).expect("LRANGE votes")
}

/// Polls `probe` every 100 ms until it yields a value; panics naming `what` after `timeout`.
pub fn wait<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}
