# Builds the control-plane binaries from the Go module proxy and caches them,
# keyed by version, under $GBO_CACHE/bin. Sourced by e2e/cluster.
# A cached tool is reused when its binaries exist; a partial build never
# counts as cached because binaries are moved into place only at the end.

gbo_go_env() {
  export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
  export GOPATH="${GOPATH:-$HOME/go}"
}

# Writes a wrapper module that requires k8s.io/kubernetes and pins every
# staging module it requires to the matching v0.Y.Z release: go install
# refuses k8s.io/kubernetes directly because of its ./staging replace lines.
gbo_build_kubernetes() {
  local v="$K8S_VERSION" out="$GBO_CACHE/bin/k8s-v$K8S_VERSION"
  [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && return 0
  local minor="${v#*.}"; minor="${minor%%.*}"
  local staging="0.${v#*.}" src="$GBO_CACHE/src/k8s-v$v"
  log "building Kubernetes v$v (cold build: tens of minutes on 2 cores)"
  mkdir -p "$src" && cd "$src" || return 1
  curl -fsS "$GOPROXY_URL/k8s.io/kubernetes/@v/v$v.mod" -o upstream.mod || return 1
  {
    echo "module gbo.local/k8sbuild"; echo; echo "go 1.26"; echo
    echo "require k8s.io/kubernetes v$v"; echo
    # Only staging modules named in the require block take part in the build.
    awk '/^require \(/{r=1;next} r&&/^\)/{r=0} r&&$1 ~ /^k8s\.io\// && $2=="v0.0.0"{print $1}' upstream.mod |
      while read -r m; do echo "replace $m => $m v$staging"; done
  } > go.mod
  local pkgs="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
  # shellcheck disable=SC2086
  go get $(for p in $pkgs; do printf '%s@v%s ' "$p" "$v"; done) || return 1
  local date; date=$(date -u -d "@$(stat -c %Y upstream.mod)" +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=v$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  mkdir -p "$src/out"
  # shellcheck disable=SC2086
  go build -trimpath -ldflags "$ld" -o "$src/out/" $pkgs || return 1
  mkdir -p "$out" && mv "$src"/out/* "$out/"
}

# etcd's server module carries its own ../ replace lines too; a wrapper
# module that requires it resolves its siblings at the same release.
gbo_build_etcd() {
  local v="$ETCD_VERSION" out="$GBO_CACHE/bin/etcd-v$ETCD_VERSION"
  [ -x "$out/etcd" ] && return 0
  local src="$GBO_CACHE/src/etcd-v$v"
  log "building etcd v$v"
  mkdir -p "$src" && cd "$src" || return 1
  printf 'module gbo.local/etcdbuild\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$v" > go.mod
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
    echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m v$v" >> go.mod
  done
  go get "go.etcd.io/etcd/server/v3@v$v" || return 1
  mkdir -p out && go build -trimpath -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3 || return 1
  mkdir -p "$out" && mv out/etcd "$out/etcd"
}

gbo_build_simple() { # name module-path version binary
  local name="$1" pkg="$2" v="$3" bin="$4" out="$GBO_CACHE/bin/$1-v$3"
  [ -x "$out/$bin" ] && return 0
  log "building $name v$v"
  local tmp="$GBO_CACHE/src/$name-v$v"; mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$pkg@v$v" || return 1
  mkdir -p "$out" && mv "$tmp/$bin" "$out/$bin"
}

gbo_build_all() {
  gbo_go_env
  GOPROXY_URL="${GOPROXY_URL:-https://proxy.golang.org}"
  ( gbo_build_etcd ) || { err "etcd build failed"; return 1; }
  ( gbo_build_simple kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" kwok ) || { err "kwok build failed"; return 1; }
  ( gbo_build_simple helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION" helm ) || { err "helm build failed"; return 1; }
  ( gbo_build_kubernetes ) || { err "Kubernetes build failed"; return 1; }
}
