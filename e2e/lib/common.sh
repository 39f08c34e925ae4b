# Shared settings and helpers of e2e/cluster. Sourced, not run.

# Where things live. Binaries are cached by version (shared by every checkout);
# the running cluster's state (certificates, etcd data, logs, PIDs) is per machine.
GBO_CACHE="${GBO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestbook-operator}"
GBO_STATE="${GBO_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/guestbook-operator/cluster}"
K8S_BIN="$GBO_CACHE/bin/k8s-v$K8S_VERSION"
ETCD_BIN="$GBO_CACHE/bin/etcd-v$ETCD_VERSION"
KWOK_BIN="$GBO_CACHE/bin/kwok-v$KWOK_VERSION"
COREDNS_BIN="$GBO_CACHE/bin/coredns-v$COREDNS_VERSION"
HELM_BIN="$GBO_CACHE/bin/helm-v$HELM_VERSION"
KUBECONFIG_PATH="$GBO_STATE/kubeconfig"
REPO_ROOT="$(cd "$E2E_DIR/.." && pwd)"
PODRUNNER_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/gbo-podrunner"
PODRUNNER_STATE="$GBO_STATE/podrunner"
# Programs run inside pods as non-root users must be readable by them: not under a home
# directory, and on the system Python (a pyenv interpreter lives under /root).
GBO_SHARED_CACHE="${GBO_SHARED_CACHE:-/var/cache/guestbook-operator}"
PATRONI_VENV="$GBO_SHARED_CACHE/venv/patroni-$PATRONI_VERSION"
# Programs that pods run and this machine's packages lack (CoreDNS), on the pods' PATH.
POD_BIN_DIR="$GBO_SHARED_CACHE/pod-bin"
# Debian 12 ships PostgreSQL 15; pods asking for another major version get 15 under that path.
PG_HOST_VERSION=15

# Control-plane ports, all on 127.0.0.1. etcd avoids 2379 so that a system etcd
# on the same machine does not clash.
ETCD_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=6443
KCM_PORT=10257
SCHEDULER_PORT=10259
KUBE_PROXY_HEALTHZ_PORT=10256
KUBE_PROXY_METRICS_PORT=10249

# The pod network: one bridge on this machine, forwarding only from the bridge back
# onto it, no NAT and no route off the machine. The host end holds POD_GATEWAY,
# where the API server is also reachable. Nodes get /24s of it.
POD_BRIDGE=gbo0
POD_NETWORK=10.244.0.0/16
POD_GATEWAY=10.244.0.1
# Service ClusterIPs, served by kube-proxy (nftables) on this machine: the host and
# every pod route the range onto the bridge, where kube-proxy translates it to pod
# addresses. Rules of our own (table inet $NFT_TABLE) refuse whatever it does not
# translate and keep all of it on the bridge.
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
CLUSTER_DNS_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
NFT_TABLE=gbo-cluster
# kube-proxy plays the proxy of this node (an existing kwok node, so it starts at once).
KUBE_PROXY_NODE=gbo-worker-a

# Fake nodes: name, zone, pod CIDR.
NODES=(
  "gbo-worker-a zone-a 10.244.1.0/24"
  "gbo-worker-b zone-b 10.244.2.0/24"
  "gbo-worker-c zone-c 10.244.3.0/24"
)

# Pods with a container image matching this (extended) regular expression are
# run for real by the store-process runner; kwok leaves them alone. Every other
# pod is simulated by kwok (it turns Ready, Job pods complete).
REAL_IMAGES_REGEX="${GBO_REAL_IMAGES_REGEX:-(^|/)(redis|spilo-[0-9]+|patroni|postgres|guestbook-operator-backup|nginx|coredns|redis_exporter|postgres-exporter|nginx-prometheus-exporter|examplevotingapp_(vote|result|worker)|gb-frontend)(:|@|$)}"

log() { printf '[cluster] %s\n' "$*" >&2; }
err() { printf '[cluster] ERROR: %s\n' "$*" >&2; }
die() { err "$*"; exit 1; }

kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

pidfile() { echo "$GBO_STATE/pids/$1.pid"; }

# True when the process recorded for $1 is alive and still the program we started
# (a recycled PID belonging to something else does not count).
proc_alive() {
  local f pid; f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(cat "/proc/$pid/cmdline" 2>/dev/null | tr '\0' ' ' | cut -c1-4096)" = "$(cat "$f.cmd" 2>/dev/null)" ]
}

# Closes every descriptor above stderr in the current (sub)shell.
close_inherited_fds() {
  local fd
  for fd in $(ls /proc/$BASHPID/fd); do
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
  done
}

# start NAME CMD...: runs CMD in its own session, logs to $GBO_STATE/logs/NAME.log,
# records its PID and command line so that stop can find exactly this process.
start_proc() {
  local name="$1"; shift
  mkdir -p "$GBO_STATE/pids" "$GBO_STATE/logs"
  # The daemon must not inherit descriptors of whoever ran `up` (a lock held with flock,
  # a pipe a caller waits on): it would hold them for its whole life.
  ( close_inherited_fds; exec setsid "$@" ) >>"$GBO_STATE/logs/$name.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$(pidfile "$name")"
  printf '%s ' "$@" > "$(pidfile "$name").cmd"
  # Compare against what /proc reports once the exec happened.
  sleep 0.2
  if [ -r "/proc/$pid/cmdline" ]; then tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-4096 > "$(pidfile "$name").cmd"; fi
}

# stop NAME [GRACE_SECONDS]: SIGTERM, then SIGKILL after the grace period (5 s), by
# recorded PID only.
stop_proc() {
  local name="$1" grace="${2:-5}" f pid i; f=$(pidfile "$name")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if proc_alive "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $(( grace * 10 ))); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f" "$f.cmd"
}

# wait_for DESCRIPTION TIMEOUT_SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local what="$1" timeout="$2"; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then err "timed out after ${timeout}s waiting for $what"; return 1; fi
    sleep 0.3
  done
}

# wait_started NAME DESCRIPTION TIMEOUT_SECONDS CMD...: like wait_for, but gives up at once
# when the process started as NAME has exited (its log says why).
wait_started() {
  local name="$1" what="$2" timeout="$3"; shift 3
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if ! proc_alive "$name"; then
      err "$name exited while waiting for $what; last lines of $GBO_STATE/logs/$name.log:"
      tail -n 15 "$GBO_STATE/logs/$name.log" >&2 || true
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then err "timed out after ${timeout}s waiting for $what"; return 1; fi
    sleep 0.3
  done
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the cluster needs; installed once, idempotently.
ensure_packages() {
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v socat >/dev/null || missing+=(socat)
  command -v curl >/dev/null || missing+=(curl)
  command -v setsid >/dev/null || missing+=(util-linux)
  # The real programs behind store pods.
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  [ -x "/usr/lib/postgresql/$PG_HOST_VERSION/bin/postgres" ] || missing+=("postgresql-$PG_HOST_VERSION")
  command -v psql >/dev/null || missing+=("postgresql-client-$PG_HOST_VERSION")
  command -v nsenter >/dev/null || missing+=(util-linux)
  # kube-proxy's nftables mode drives the kernel through nft; proxy-tier pods run nginx.
  command -v nft >/dev/null || missing+=(nftables)
  [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v dig >/dev/null || missing+=(bind9-dnsutils)
  # The exporter sidecars' programs (the module proxy does not serve either exporter).
  command -v prometheus-redis-exporter >/dev/null || missing+=(prometheus-redis-exporter)
  command -v prometheus-postgres-exporter >/dev/null || missing+=(prometheus-postgres-exporter)
  command -v prometheus-nginx-exporter >/dev/null || missing+=(prometheus-nginx-exporter)
  command -v lua5.1 >/dev/null || missing+=(lua5.1)  # Argo CD's Lua dialect: docs/argocd health checks
  command -v promtool >/dev/null || missing+=(prometheus)  # promtool: the chart's alert tests
  /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  # Packages such as nginx and redis-server start a daemon on the host when installed;
  # nothing may run here that the cluster did not start, so service starts are refused
  # while installing (unless this machine already has such a policy).
  local policy=/usr/sbin/policy-rc.d ours=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Written by e2e/cluster while it installs packages.\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"; ours=1
  fi
  local rc=0
  { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  if [ "$ours" = 1 ]; then as_root rm -f "$policy"; fi
  return $rc
}

# Binaries pods run that no package provides, where non-root container users can read them
# (the build cache is under a home directory).
ensure_pod_binaries() {
  as_root mkdir -p "$POD_BIN_DIR"
  if ! cmp -s "$COREDNS_BIN/coredns" "$POD_BIN_DIR/coredns"; then
    as_root install -m 755 "$COREDNS_BIN/coredns" "$POD_BIN_DIR/coredns"
  fi
}

ensure_go() {
  command -v go >/dev/null || die "Go is required to build the control plane (Kubernetes v$K8S_VERSION needs Go >= 1.26); install it from https://go.dev/dl"
  local v; v=$(go env GOVERSION | sed 's/^go//')
  local major="${v%%.*}" rest="${v#*.}"; local minor="${rest%%.*}"
  if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 26 ]; }; then
    die "Go $v is too old: Kubernetes v$K8S_VERSION needs Go >= 1.26"
  fi
}

# Patroni (and the PostgreSQL driver it uses) in a virtualenv cached by version. A venv
# cannot be moved (its scripts name their interpreter by path), so completion is marked by a
# stamp file instead of a rename.
ensure_patroni() {
  [ -f "$PATRONI_VENV/.complete" ] && return 0
  log "installing Patroni $PATRONI_VERSION into $PATRONI_VENV"
  rm -rf "$PATRONI_VENV"
  as_root mkdir -p "$(dirname "$PATRONI_VENV")"
  as_root /usr/bin/python3 -m venv "$PATRONI_VENV"
  as_root "$PATRONI_VENV/bin/pip" install -q --disable-pip-version-check \
    "patroni[kubernetes]==$PATRONI_VERSION" "psycopg[binary]==$PSYCOPG_VERSION"
  as_root chmod -R a+rX "$PATRONI_VENV"
  as_root touch "$PATRONI_VENV/.complete"
}
