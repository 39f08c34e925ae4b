# Proves the local cluster really runs workloads: a Deployment gets Ready pods, a
# StatefulSet's volumeClaimTemplate gets a Bound claim, a CronJob's Job completes, a real
# pod answers on its address, its Service's ClusterIP and, from inside a pod, by name.
# Sourced by e2e/cluster.

smoke_check() {
  local ns=gbo-smoke t0; t0=$(date +%s)
  kc delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
  kc create namespace "$ns" >/dev/null
  wait_for "ServiceAccount default in $ns" 30 kc -n "$ns" get serviceaccount default
  # The CronJob goes first: its controller only fires on minute boundaries.
  kc -n "$ns" apply -f - >/dev/null <<'YAML'
apiVersion: batch/v1
kind: CronJob
metadata: {name: smoke}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: registry.k8s.io/pause:3.10}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers: [{name: app, image: registry.k8s.io/pause:3.10}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: smoke}
spec:
  replicas: 1
  serviceName: smoke
  selector: {matchLabels: {app: smoke-sts}}
  template:
    metadata: {labels: {app: smoke-sts}}
    spec:
      containers:
      - name: app
        image: registry.k8s.io/pause:3.10
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Mi}}
YAML
  kc -n "$ns" rollout status deployment/smoke --timeout=60s >/dev/null || { err "smoke: Deployment pods did not become Ready"; return 1; }
  log "smoke: Deployment has 2 Ready pods"
  wait_for "smoke StatefulSet claim Bound" 60 smoke_claim_bound "$ns" || return 1
  kc -n "$ns" rollout status statefulset/smoke --timeout=60s >/dev/null || { err "smoke: StatefulSet pod did not become Ready"; return 1; }
  log "smoke: StatefulSet pod Ready with a Bound claim"
  smoke_real_pod "$ns" || return 1
  smoke_service "$ns" || return 1
  smoke_gateway_api "$ns" || return 1
  wait_for "a Job of the smoke CronJob to complete" 90 smoke_job_complete "$ns" || return 1
  log "smoke: CronJob's Job completed"
  kc delete namespace "$ns" --wait=false >/dev/null
  log "smoke check passed in $(( $(date +%s) - t0 ))s"
}

smoke_claim_bound() {
  [ "$(kc -n "$1" get pvc data-smoke-0 -o jsonpath='{.status.phase}' 2>/dev/null)" = Bound ]
}

smoke_job_complete() {
  kc -n "$1" get jobs -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Complete")].status}{"\n"}{end}' | grep -q '^True$'
}

# A pod the runner runs for real: redis-server in its own network namespace, Ready by a real
# exec probe, in its Service's EndpointSlice, answering on its address and nowhere else; a
# native sidecar (a second redis-server on 6380) started before it in the same namespace.
smoke_real_pod() {
  local ns="$1" ip
  kc -n "$ns" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: smoke-redis, labels: {app: smoke-redis}}
spec:
  initContainers:
  - name: sidecar
    image: docker.io/library/redis:7.2
    restartPolicy: Always
    command: [redis-server, --port, "6380", --save, "", --appendonly, "no", --protected-mode, "no"]
    readinessProbe:
      exec: {command: [redis-cli, -p, "6380", ping]}
      periodSeconds: 1
  containers:
  - name: redis
    image: docker.io/library/redis:7.2
    command: [redis-server, --save, "", --appendonly, "no", --protected-mode, "no"]
    ports: [{containerPort: 6379, name: redis}]
    readinessProbe:
      exec: {command: [redis-cli, ping]}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: smoke-cache}
spec:
  selector: {app: smoke-redis}
  ports: [{port: 6379, targetPort: redis}]
YAML
  kc -n "$ns" wait --for=condition=Ready pod/smoke-redis --timeout=60s >/dev/null ||
    { err "smoke: the real redis pod did not become Ready"; return 1; }
  ip=$(kc -n "$ns" get pod smoke-redis -o jsonpath='{.status.podIP}')
  [ "$(redis-cli -h "$ip" ping 2>/dev/null)" = PONG ] || { err "smoke: redis does not answer on $ip"; return 1; }
  [ "$(redis-cli -h "$ip" -p 6380 ping 2>/dev/null)" = PONG ] || { err "smoke: the sidecar does not answer on $ip:6380"; return 1; }
  [ "$(kc -n "$ns" get pod smoke-redis -o jsonpath='{.status.initContainerStatuses[0].started}')" = true ] ||
    { err "smoke: the sidecar is not reported started"; return 1; }
  wait_for "the smoke Service's EndpointSlice to hold $ip" 30 smoke_endpoint "$ns" "$ip" || return 1
  log "smoke: real redis pod Ready at $ip and in its EndpointSlice"
}

smoke_endpoint() {
  kc -n "$1" get endpointslices -l kubernetes.io/service-name=smoke-cache \
    -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}{"\n"}{end}' | grep -qx "$2"
}

# The real pod's Service through kube-proxy: its ClusterIP from this host, and from inside the
# pod by name through the cluster DNS (the pod reaching itself through its own Service).
smoke_service() {
  local ns="$1" vip name="smoke-cache.$1.svc.$CLUSTER_DOMAIN"
  vip=$(kc -n "$ns" get service smoke-cache -o jsonpath='{.spec.clusterIP}')
  wait_for "the smoke Service's ClusterIP $vip to answer" 15 smoke_redis_ping "$vip" ||
    { err "smoke: redis does not answer on its ClusterIP $vip (kube-proxy)"; return 1; }
  local got
  got=$(smoke_exec "$ns" getent hosts smoke-cache | awk '{print $1" "$2}')
  [ "$got" = "$vip $name" ] || { err "smoke: smoke-cache resolved to '$got' in the pod, not '$vip $name'"; return 1; }
  [ "$(smoke_exec "$ns" redis-cli -h smoke-cache ping)" = PONG ] ||
    { err "smoke: the pod does not reach its own Service by name"; return 1; }
  log "smoke: Service answers on ClusterIP $vip from the host, and by name from inside the pod"
}

smoke_redis_ping() { [ "$(redis-cli -h "$1" ping 2>/dev/null)" = PONG ]; }

smoke_exec() {
  local ns="$1"; shift
  "$PODRUNNER_BIN" --state-dir "$PODRUNNER_STATE" exec -c redis --timeout 10 "$ns/smoke-redis" -- "$@" 2>/dev/null
}

# The Gateway API is served: an HTTPRoute passes the API server's schema with strict field
# validation (a dry run: nothing is stored).
smoke_gateway_api() {
  kc -n "$1" create --dry-run=server --validate=strict -f - >/dev/null <<'YAML' ||
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: smoke}
spec:
  parentRefs: [{name: smoke}]
  rules: [{backendRefs: [{name: smoke-cache, port: 6379}]}]
YAML
    { err "smoke: the API server refused an HTTPRoute (Gateway API CRDs)"; return 1; }
  log "smoke: Gateway API v$GATEWAY_API_VERSION serves HTTPRoutes"
}
