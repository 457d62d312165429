-- Argo CD health of a tierguard.dev MemoryTier (docs/argocd-health.md has the table it follows).
-- Written for Argo CD's Lua 5.1 interpreter; tested with Lua 5.4.
local hs = { status = "Progressing", message = "Waiting for tierguard to reconcile the tier" }
if obj.status == nil then
  return hs
end
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if status.observedGeneration ~= nil and generation ~= nil and status.observedGeneration < generation then
  hs.message = "tierguard has not seen the latest spec yet (generation " .. tostring(generation) .. ")"
  return hs
end
local conditions = {}
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    conditions[c.type] = c
  end
end
local function said(c)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return nil
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled) or "the tier is stalled"
  return hs
end
local phase = status.phase
if phase == nil or phase == "Pending" then
  return hs
end
if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "spec.mode is Paused: tierguard observes and reports only"
  return hs
end
local mitigations = {}
if status.mitigations ~= nil then
  for _, m in ipairs(status.mitigations) do
    table.insert(mitigations, m.name)
  end
end
-- DryRun records what it would do and changes nothing: the application runs on its spec.
if obj.spec ~= nil and obj.spec.mode == "DryRun" then
  hs.status = "Healthy"
  hs.message = "DryRun: nothing is carried out; the policy's phase is " .. phase
  if #mitigations > 0 then
    hs.message = hs.message .. ", it would apply " .. table.concat(mitigations, ", ")
  end
  return hs
end
if phase == "RollingBack" then
  hs.status = "Degraded"
  hs.message = "Canary rollback in progress: " .. table.concat(mitigations, ", ")
  return hs
end
if phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = "Rolled back; resume with kubectl tierguard resume (annotation tierguard.dev/resume)"
  return hs
end
if phase == "Recovering" then
  hs.message = "Mitigations are ending; the canary ramps back to its baseline"
  return hs
end
-- The runbook's response is in force: an overlay over the spec (Argo Rollouts shows an aborted
-- rollout as Degraded).
if #mitigations > 0 then
  hs.status = "Degraded"
  hs.message = "Mitigations in force: " .. table.concat(mitigations, ", ")
  return hs
end
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(ready) or "running on the baseline"
  if phase == "Degraded" then
    local watched = {}
    for _, name in ipairs({ "MemoryPressure", "BreakerOpen", "CacheStampede" }) do
      local c = conditions[name]
      if c ~= nil and c.status == "True" then
        table.insert(watched, name .. ": " .. (said(c) or c.reason or ""))
      end
    end
    hs.message = "Watching, no mitigation in force"
    if #watched > 0 then
      hs.message = hs.message .. ": " .. table.concat(watched, "; ")
    end
  end
  return hs
end
hs.message = said(ready) or hs.message
return hs
