# Proves the local cluster really runs workloads: a Deployment gets Ready pods, a
# StatefulSet's volumeClaimTemplate gets a Bound claim, a CronJob's Job completes.
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
