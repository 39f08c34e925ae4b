//! Starting a container: in the pod's network namespace, new mount, PID and UTS namespaces
//! (its hostname is the pod's), an overlay of this machine's root as its filesystem (writes
//! stay private to the container) with the image's own files laid in, its volumes
//! bind-mounted where the spec says, then the command as the spec's user.

use crate::error::{Error, Result, io};
use crate::images::Layer;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

#[derive(Clone, Debug)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Everything needed to start one container.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The container's own directory (root overlay, log, PID file).
    pub dir: PathBuf,
    pub netns: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub mounts: Vec<Mount>,
    /// (target, source) paths shown inside when the target does not exist.
    pub aliases: Vec<(String, String)>,
    /// hosts, resolv.conf and hostname of the pod.
    pub etc_dir: PathBuf,
    /// The pod's hostname, set in the container's own UTS namespace.
    pub hostname: String,
    /// What the image has that this machine's root lacks.
    pub layer: Layer,
    /// Where the container may write why it ended (`terminationMessagePath`).
    pub termination_message_path: String,
}

/// Single-quotes for /bin/sh.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn check_target(t: &str) -> Result<()> {
    if !t.starts_with('/') || t.split('/').any(|c| c == "..") {
        return Err(Error::Pod(format!(
            "mount path {t:?} must be absolute, without '..'"
        )));
    }
    Ok(())
}

/// Resolves symlinks in `target` as the container will see them. The container's root starts
/// as a view of this machine's root, so its links are this machine's links; resolving them
/// here keeps `mkdir -p "$R$target"` from following an absolute link (such as
/// /var/run -> /run) out of the container root onto the host.
pub fn resolve_in_root(target: &str) -> Result<String> {
    check_target(target)?;
    let mut pending: Vec<String> = target
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .rev()
        .map(String::from)
        .collect();
    let mut resolved = PathBuf::from("/");
    let mut hops = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        let next = resolved.join(&comp);
        match std::fs::read_link(&next) {
            Ok(link) => {
                hops += 1;
                if hops > 40 {
                    return Err(Error::Pod(format!(
                        "mount path {target:?}: too many symbolic links"
                    )));
                }
                if link.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                let parts: Vec<String> = link
                    .to_string_lossy()
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(String::from)
                    .collect();
                pending.extend(parts.into_iter().rev());
            }
            Err(_) => resolved = next,
        }
    }
    Ok(resolved.to_string_lossy().to_string())
}

/// The script that runs as PID 1 of the new namespaces and ends by exec'ing the command.
fn init_script(l: &Launch) -> Result<String> {
    let root = l.dir.join("root");
    let (upper, work) = (l.dir.join("upper"), l.dir.join("work"));
    let mut s = String::from(
        "#!/bin/sh\n# Written by gbo-podrunner: sets up one container, then becomes it.\nset -eu\n",
    );
    s += &format!("R={}\n", q(&root.to_string_lossy()));
    // This shell runs in a UTS namespace of its own: the hostname is the pod's alone.
    s += &format!(
        "printf '%s' {} > /proc/sys/kernel/hostname\n",
        q(&l.hostname)
    );
    s += "/usr/bin/mount --make-rprivate /\n";
    s += &format!(
        "/usr/bin/mount -t overlay overlay -o {} \"$R\"\n",
        q(&format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.display(),
            work.display()
        ))
    );
    s += "/usr/bin/mount -t proc proc \"$R/proc\"\n";
    // A /dev of its own, as a runtime gives a container: a few device nodes, shared memory, and
    // the termination message file, so nothing a container writes under /dev reaches the host.
    s += "/usr/bin/mount -t tmpfs -o mode=755,nosuid tmpfs \"$R/dev\"\n";
    s += "for d in null zero full random urandom tty; do /usr/bin/touch \"$R/dev/$d\"; /usr/bin/mount --bind \"/dev/$d\" \"$R/dev/$d\"; done\n";
    s += "/usr/bin/mkdir -p \"$R/dev/shm\" \"$R/dev/pts\"\n";
    s += "/usr/bin/mount -t tmpfs -o mode=1777 tmpfs \"$R/dev/shm\"\n";
    s += "/usr/bin/ln -s /proc/self/fd \"$R/dev/fd\"; /usr/bin/ln -s /proc/self/fd/0 \"$R/dev/stdin\"; /usr/bin/ln -s /proc/self/fd/1 \"$R/dev/stdout\"; /usr/bin/ln -s /proc/self/fd/2 \"$R/dev/stderr\"\n";
    s += "/usr/bin/mount --rbind /sys \"$R/sys\"\n";
    s += "/usr/bin/mount -t tmpfs -o mode=755 tmpfs \"$R/run\"\n";
    s += "/usr/bin/mount -t tmpfs -o mode=1777 tmpfs \"$R/tmp\"\n";
    for d in &l.layer.dirs {
        s += &format!(
            "/usr/bin/mkdir -p -m 1777 \"$R\"{}\n",
            q(&resolve_in_root(d)?)
        );
    }
    for (target, source) in &l.aliases {
        let target = &resolve_in_root(target)?;
        s += &format!(
            "if [ ! -e \"$R\"{t} ] && [ -d {src} ]; then /usr/bin/mkdir -p \"$R\"{t}; /usr/bin/mount --bind {src} \"$R\"{t}; fi\n",
            t = q(target),
            src = q(source)
        );
    }
    for m in &l.mounts {
        let (src, t) = (
            q(&m.source.to_string_lossy()),
            q(&resolve_in_root(&m.target)?),
        );
        if m.source.is_dir() {
            s += &format!("/usr/bin/mkdir -p \"$R\"{t}\n");
        } else {
            s += &format!(
                "/usr/bin/mkdir -p \"$(/usr/bin/dirname \"$R\"{t})\"; [ -e \"$R\"{t} ] || /usr/bin/touch \"$R\"{t}\n"
            );
        }
        s += &format!("/usr/bin/mount --bind {src} \"$R\"{t}\n");
        if m.read_only {
            s += &format!("/usr/bin/mount -o remount,bind,ro \"$R\"{t}\n");
        }
    }
    let msg = q(&resolve_in_root(&l.termination_message_path)?);
    s += &format!(
        "/usr/bin/mkdir -p \"$(/usr/bin/dirname \"$R\"{msg})\"; /usr/bin/touch \"$R\"{msg}\n"
    );
    s += &format!(
        "/usr/bin/mount --bind {} \"$R\"{msg}\n",
        q(&l.dir.join("termination-log").to_string_lossy())
    );
    for f in ["hosts", "resolv.conf", "hostname"] {
        let t = q(&resolve_in_root(&format!("/etc/{f}"))?);
        s += &format!("[ -e \"$R\"{t} ] || /usr/bin/touch \"$R\"{t}\n");
        s += &format!(
            "/usr/bin/mount --bind {} \"$R\"{t}\n",
            q(&l.etc_dir.join(f).to_string_lossy())
        );
    }
    for (name, uid, gid) in &l.layer.users {
        s += &format!(
            "/usr/bin/grep -q '^{name}:' \"$R/etc/group\" || echo '{name}:x:{gid}:' >> \"$R/etc/group\"\n"
        );
        s += &format!(
            "/usr/bin/grep -q '^{name}:' \"$R/etc/passwd\" || echo '{name}:x:{uid}:{gid}:{name} user:/nonexistent:/usr/sbin/nologin' >> \"$R/etc/passwd\"\n"
        );
    }
    // Images define the user they run as; this machine may not. Give the container's own
    // /etc/passwd and /etc/group (copied up into its private layer) an entry for its uid/gid,
    // as programs such as initdb refuse to run as a user they cannot look up.
    s += &format!(
        "/usr/bin/grep -q '^[^:]*:[^:]*:{uid}:' \"$R/etc/passwd\" || echo 'u{uid}:x:{uid}:{gid}:container user:/tmp:/bin/sh' >> \"$R/etc/passwd\"\n",
        uid = l.uid,
        gid = l.gid
    );
    s += &format!(
        "/usr/bin/grep -q '^[^:]*:[^:]*:{gid}:' \"$R/etc/group\" || echo 'g{gid}:x:{gid}:' >> \"$R/etc/group\"\n",
        gid = l.gid
    );
    let groups = if l.groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            l.groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let chdir = l
        .workdir
        .as_deref()
        .map(|w| format!(" --chdir={}", q(w)))
        .unwrap_or_default();
    s += &format!(
        "exec /usr/sbin/chroot \"$R\" /usr/bin/env{chdir} /usr/bin/setpriv --reuid={} --regid={} {groups} -- \"$@\"\n",
        l.uid, l.gid
    );
    Ok(s)
}

/// Creates `target`'s missing parents inside `upper` with the owner and mode the same
/// directories have on this machine's root, so that laying a file in does not change how
/// the directories above it look in the container.
fn make_parents(upper: &Path, target: &str) -> Result<PathBuf> {
    let mut on_host = PathBuf::from("/");
    let mut in_upper = upper.to_path_buf();
    let parent = Path::new(target).parent().unwrap_or(Path::new("/"));
    for comp in parent.components().skip(1) {
        on_host.push(comp);
        in_upper.push(comp);
        if in_upper.is_dir() {
            continue;
        }
        std::fs::create_dir(&in_upper).map_err(io(&in_upper))?;
        if let Ok(m) = std::fs::metadata(&on_host) {
            std::fs::set_permissions(
                &in_upper,
                std::fs::Permissions::from_mode(m.mode() & 0o7777),
            )
            .map_err(io(&in_upper))?;
            std::os::unix::fs::chown(&in_upper, Some(m.uid()), Some(m.gid()))
                .map_err(io(&in_upper))?;
        }
    }
    Ok(in_upper.join(Path::new(target).file_name().unwrap_or_default()))
}

/// Writes the image's files and links into the container's private layer.
fn lay_in(upper: &Path, layer: &Layer) -> Result<()> {
    for (path, content) in &layer.files {
        let p = make_parents(upper, &resolve_in_root(path)?)?;
        std::fs::write(&p, content).map_err(io(&p))?;
    }
    for (path, target) in &layer.links {
        let p = make_parents(upper, &resolve_in_root(path)?)?;
        std::os::unix::fs::symlink(target, &p).map_err(io(&p))?;
    }
    Ok(())
}

/// Starts the container. The returned child is the namespace launcher; it exits with the
/// container's status. A fresh writable layer each time, as a restarted container gets.
pub fn start(l: &Launch) -> Result<tokio::process::Child> {
    for sub in ["upper", "work"] {
        let d = l.dir.join(sub);
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(io(&d))?;
        }
    }
    for sub in ["upper", "work", "root"] {
        let d = l.dir.join(sub);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    lay_in(&l.dir.join("upper"), &l.layer)?;
    let script = l.dir.join(INIT_SCRIPT);
    std::fs::write(&script, init_script(l)?).map_err(io(&script))?;
    let msg = l.dir.join("termination-log");
    std::fs::write(&msg, "").map_err(io(&msg))?;
    std::fs::set_permissions(&msg, std::fs::Permissions::from_mode(0o666)).map_err(io(&msg))?;
    let log_path = l.dir.join("log");
    if log_path.exists() {
        let _ = std::fs::rename(&log_path, l.dir.join("log.previous"));
    }
    let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let err = log.try_clone().map_err(io(&log_path))?;
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &l.netns,
        "unshare",
        "--mount",
        "--pid",
        "--uts",
        "--fork",
        "--propagation",
        "private",
        "--",
    ])
    .arg("/bin/sh")
    .arg(&script)
    .args(&l.argv)
    .env_clear()
    .envs(l.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(err)
    .kill_on_drop(false);
    cmd.spawn().map_err(|e| Error::Command {
        cmd: format!("start container in {}", l.netns),
        msg: e.to_string(),
    })
}

/// The script each container's first process runs before it becomes the container's command.
pub const INIT_SCRIPT: &str = "init.sh";

/// Whether the container's first process `pid` has left `script` (the mounts are done and it
/// has become, or is becoming, the container's command). `false` while it runs the script or
/// once it is gone.
pub fn past_setup(pid: u32, script: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if cmdline.is_empty() {
        return false;
    }
    let script = script.as_os_str().as_encoded_bytes();
    !cmdline.split(|b| *b == 0).take(2).any(|a| a == script)
}

/// The container's main process (PID 1 of its namespace), seen from here.
pub fn main_pid(launcher: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn pid_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Every process in the PID namespace of `main` (the whole container). Empty when `main` is
/// not in a PID namespace of its own (this machine's would be every process on it).
pub fn container_pids(main: u32) -> Vec<u32> {
    let Some(ns) = pid_ns(main) else {
        return Vec::new();
    };
    if std::fs::read_link("/proc/self/ns/pid").ok().as_ref() == Some(&ns) {
        return Vec::new();
    }
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| pid_ns(*p).as_ref() == Some(&ns))
        .collect()
}

pub fn signal(pid: u32, sig: i32) {
    if let Ok(p) = i32::try_from(pid) {
        // SAFETY: kill(2) on a PID this runner started (or a process in its namespace).
        unsafe { libc::kill(p, sig) };
    }
}

/// The exit code a kubelet would report for the launcher's wait status. `unshare --fork`
/// re-raises a signal that killed its child on itself, except SIGKILL, whose disposition it
/// cannot reset: then it exits 1 after printing "sigprocmask unblock failed" to the log.
pub fn exit_code(status: &std::process::ExitStatus, log: &Path) -> i32 {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::process::ExitStatusExt;
    if status.code() == Some(1)
        && let Ok(mut f) = std::fs::File::open(log)
    {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(256)));
        let mut tail = String::new();
        let _ = f.read_to_string(&mut tail);
        if tail.contains("unshare: sigprocmask unblock failed") {
            return 128 + libc::SIGKILL;
        }
    }
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// Reads a PID file written by [`write_pid`].
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn write_pid(path: &Path, pid: u32) -> Result<()> {
    std::fs::write(path, pid.to_string()).map_err(io(path))
}

/// The termination message a kubelet would report: the file the container wrote, or with
/// `FallbackToLogsOnError` and a failure, the end of its log (at most 4 KiB either way).
pub fn termination_message(dir: &Path, fallback_to_logs: bool, exit_code: i32) -> Option<String> {
    let cap = |s: String| -> String {
        let start = s.len().saturating_sub(4096);
        let start = (start..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s[start..].to_string()
    };
    let msg = std::fs::read_to_string(dir.join("termination-log")).unwrap_or_default();
    if !msg.trim().is_empty() {
        return Some(cap(msg));
    }
    if fallback_to_logs && exit_code != 0 {
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        let text: String = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return (!text.is_empty()).then(|| cap(text));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_quotes_paths_and_refuses_escapes() {
        let l = Launch {
            dir: "/state/c".into(),
            netns: "gbo-x".into(),
            argv: vec![],
            env: vec![],
            workdir: Some("/data dir".into()),
            uid: 999,
            gid: 999,
            groups: vec![1000],
            mounts: vec![Mount {
                source: "/nonexistent/it's".into(),
                target: "/etc/redis/redis.conf".into(),
                read_only: true,
            }],
            aliases: vec![],
            etc_dir: "/state/etc".into(),
            hostname: "redis-0".into(),
            layer: Layer::default(),
            termination_message_path: "/dev/termination-log".into(),
        };
        let s = init_script(&l).unwrap();
        assert!(s.contains("'/nonexistent/it'\\''s'"));
        assert!(s.contains("--chdir='/data dir'"));
        assert!(s.contains("--reuid=999 --regid=999 --groups=1000"));
        assert!(s.contains("remount,bind,ro"));
        assert!(s.contains("printf '%s' 'redis-0' > /proc/sys/kernel/hostname"));
        let mut bad = l.clone();
        bad.mounts[0].target = "/etc/../../x".into();
        assert!(init_script(&bad).is_err());
    }

    #[test]
    fn a_container_counts_as_running_once_past_its_setup_script() {
        let dir = std::env::temp_dir().join(format!("gbo-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join(INIT_SCRIPT);
        std::fs::write(&script, "sleep 0.5\nexec sleep 5\n").unwrap();
        let mut child = std::process::Command::new("/bin/sh")
            .arg(&script)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!past_setup(child.id(), &script), "still in its script");
        std::thread::sleep(std::time::Duration::from_millis(1000));
        assert!(past_setup(child.id(), &script), "exec'd its command");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!past_setup(child.id(), &script), "gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn targets_follow_links_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("gbo-resolve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("real"), &link).unwrap();
        let got = resolve_in_root(&format!("{}/sub/x", link.display())).unwrap();
        assert_eq!(got, format!("{}/sub/x", dir.join("real").display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
