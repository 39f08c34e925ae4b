-- Argo CD health check for guestbook-operator.dev resources (RedisSentinel, PatroniCluster,
-- Guestbook, VoteApp): their kstatus conditions mapped onto Argo CD's states. One script for
-- the four kinds; docs/argocd-health.md explains it, docs/argocd/argocd-cm.yaml installs it.
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted"
  return hs
end
local st = obj.status
if st == nil then
  return hs
end
-- Conditions describe the observed generation only: an older one says nothing about the
-- current spec.
if st.observedGeneration == nil or st.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
local ready, stalled, reconciling
if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    if c.type == "Ready" then ready = c end
    if c.type == "Stalled" then stalled = c end
    if c.type == "Reconciling" then reconciling = c end
  end
end
-- kstatus: Stalled is Failed, Reconciling is InProgress, whatever Ready says.
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = reconciling.message or reconciling.reason or "Reconciling"
  return hs
end
if ready == nil or ready.status ~= "True" then
  if ready ~= nil and ready.message ~= nil then
    hs.message = ready.message
  end
  return hs
end
-- Ready. A store whose scheduled backups are paused (spec.backup.suspend) serves, but waits
-- for someone to resume them: Suspended, as Argo CD shows a suspended CronJob.
if obj.spec ~= nil and obj.spec.backup ~= nil and obj.spec.backup.suspend == true then
  hs.status = "Suspended"
  hs.message = "Ready; scheduled backups are suspended (spec.backup.suspend)"
  return hs
end
hs.status = "Healthy"
hs.message = ready.message or "Ready"
return hs
