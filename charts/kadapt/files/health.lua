-- Argo CD health check for kadapt.dev/AdaptationJob (argocd-cm key:
-- resource.customizations.health.kadapt.dev_AdaptationJob). Argo CD runs it with the live
-- object in `obj` (Lua 5.1); it maps the job's phase and conditions to a health status:
-- Progressing while queued, starting or training; Healthy once Succeeded; Degraded when
-- Failed, stopped by a budget or stalled; Suspended when suspended by its user.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kadapt operator to pick the job up"
  return hs
end

local phase = obj.status.phase
local budget = condition("BudgetExceeded")

if phase == "Succeeded" then
  hs.status = "Healthy"
  local uri = nil
  if obj.status.output ~= nil then
    uri = obj.status.output.uri
  end
  if uri ~= nil then
    hs.message = "Succeeded; output at " .. uri
  else
    hs.message = "Succeeded"
  end
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message_of(condition("Failed"), "Failed")
  return hs
end

if is_true(budget) then
  hs.status = "Degraded"
  hs.message = message_of(budget, "Stopped by its budget")
  return hs
end

local stalled = condition("Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = message_of(stalled, "Stalled")
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = message_of(condition("Suspended"), "Suspended")
  return hs
end

-- Pending, Queued, Created, Running, Restarting (and phases a newer operator may add).
hs.status = "Progressing"
if phase == "Running" and obj.status.progress ~= nil and obj.status.progress.percent ~= nil then
  hs.message = string.format("Running: %.1f%% of optimizer steps", obj.status.progress.percent)
else
  hs.message = message_of(condition(phase) or condition("Running"), phase)
end
return hs
