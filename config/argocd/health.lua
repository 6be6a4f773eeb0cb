-- Argo CD health check for tenantry.dev Tenants and ExpenseApps (kstatus conditions).
-- Healthy: Ready at the current generation. Degraded: Stalled (a person must act; the message says
-- what). Suspended: a Tenant with spec.suspend that is otherwise Ready. Progressing: anything else.
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local ready, stalled = nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stalled" and c.status == "True" then stalled = c end
end
local current = obj.status.observedGeneration ~= nil and obj.status.observedGeneration == obj.metadata.generation
if stalled ~= nil and current then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end
if ready ~= nil and ready.status == "True" and current then
  if obj.spec ~= nil and obj.spec.suspend == true then
    hs.status = "Suspended"
    hs.message = "Suspended: " .. ready.message
    return hs
  end
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if ready ~= nil and ready.status ~= "True" and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
elseif not current then
  hs.message = "Waiting for the operator to act on generation " .. tostring(obj.metadata.generation)
end
return hs
