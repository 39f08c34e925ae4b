# Certificates and kubeconfigs of the local control plane. Sourced by e2e/cluster.

# cert NAME SUBJECT [SANS] [EXTENDED_KEY_USAGE]: a key and a certificate signed by the cluster CA.
gen_cert() {
  local name="$1" subj="$2" sans="${3:-}" eku="${4:-clientAuth}" dir="$GBO_STATE/pki"
  openssl genrsa -out "$dir/$name.key" 2048 2>/dev/null
  openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } > "$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# kubeconfig NAME SERVER: a kubeconfig authenticating with pki/NAME.{crt,key}.
gen_kubeconfig() {
  local name="$1" server="$2" out="$3" dir="$GBO_STATE/pki"
  cat > "$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: gbo-local
  cluster:
    server: $server
    certificate-authority: $dir/ca.crt
users:
- name: $name
  user:
    client-certificate: $dir/$name.crt
    client-key: $dir/$name.key
contexts:
- name: gbo-local
  context:
    cluster: gbo-local
    user: $name
current-context: gbo-local
KC
  chmod 600 "$out"
}

gen_pki() {
  local dir="$GBO_STATE/pki"
  [ -f "$dir/.complete" ] && return 0
  rm -rf "$dir"; mkdir -p "$dir"; chmod 700 "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 \
    -subj "/CN=guestbook-operator-local-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  gen_cert apiserver "/CN=kube-apiserver" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$POD_GATEWAY,IP:$KUBERNETES_SERVICE_IP" \
    serverAuth
  gen_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  gen_cert admin "/O=system:masters/CN=gbo-admin"
  gen_cert controller-manager "/CN=system:kube-controller-manager"
  gen_cert scheduler "/CN=system:kube-scheduler"
  # The bootstrap policy binds system:node-proxier to this user, as for a cluster's kube-proxy.
  gen_cert kube-proxy "/CN=system:kube-proxy"
  # kwok plays every kubelet: it updates nodes, pods and node leases of all nodes.
  gen_cert kwok "/O=system:masters/CN=kwok-controller"
  gen_cert serving "/CN=localhost" "DNS:localhost,IP:127.0.0.1" serverAuth
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  local server="https://127.0.0.1:$APISERVER_PORT"
  gen_kubeconfig admin "$server" "$KUBECONFIG_PATH"
  gen_kubeconfig controller-manager "$server" "$GBO_STATE/controller-manager.kubeconfig"
  gen_kubeconfig scheduler "$server" "$GBO_STATE/scheduler.kubeconfig"
  gen_kubeconfig kwok "$server" "$GBO_STATE/kwok.kubeconfig"
  gen_kubeconfig kube-proxy "$server" "$GBO_STATE/kube-proxy.kubeconfig"
  touch "$dir/.complete"
}
