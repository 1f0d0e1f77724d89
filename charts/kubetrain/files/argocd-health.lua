-- Argo CD health check of kubetrain.io/TrainingJob, for argocd-cm's
-- resource.customizations.health.kubetrain.io_TrainingJob (see charts/kubetrain/README.md,
-- "GitOps health"). Tested against the operator's own statuses by
-- tests/cluster/test_gitops_health.py, in gopher-lua with the libraries Argo CD opens (base,
-- table, package, a safe os: no string library, so strings are only joined with ..).
--
-- A job that waits, starts, runs or retries is Progressing; Succeeded is Healthy, Failed is
-- Degraded and Suspended is Suspended. A status the operator wrote for an older spec
-- (observedGeneration behind metadata.generation) says nothing about the current one, and a
-- job without a status has not been looked at yet: both are Progressing.
local hs = { status = "Progressing", message = "Waiting for the operator to report a status" }
local status = obj.status
if status == nil or status.phase == nil then
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local health = {
  Pending = "Progressing",
  Provisioning = "Progressing",
  Running = "Progressing",
  Retrying = "Progressing",
  Succeeded = "Healthy",
  Failed = "Degraded",
  Suspended = "Suspended",
}
hs.status = health[status.phase] or "Unknown"

local reason, message = status.reason, status.message
if reason ~= nil and reason ~= "" and message ~= nil and message ~= "" then
  hs.message = reason .. ": " .. message
elseif message ~= nil and message ~= "" then
  hs.message = message
elseif reason ~= nil and reason ~= "" then
  hs.message = reason
else
  hs.message = "phase " .. status.phase
end
return hs
