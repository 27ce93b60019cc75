-- Load an Ardour session headless and print what Ardour itself sees, one JSON object per line.
-- Usage: ardour7-lua inspect.lua SESSION_DIR SNAPSHOT_NAME
-- Lines start with "@@ " so the Python side can skip Ardour's own log output.

local function json_string(s)
  s = tostring(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == '\\' then return '\\\\' end
    return string.format('\\u%04x', string.byte(c))
  end)
  return '"' .. s .. '"'
end

local function emit(fields)
  local parts = {}
  for _, kv in ipairs(fields) do
    local k, v = kv[1], kv[2]
    local text
    if type(v) == "string" then
      text = json_string(v)
    elseif type(v) == "boolean" then
      text = v and "true" or "false"
    elseif type(v) == "table" then
      local items = {}
      for _, item in ipairs(v) do items[#items + 1] = json_string(item) end
      text = "[" .. table.concat(items, ",") .. "]"
    elseif v ~= v or v == math.huge or v == -math.huge then
      text = "null"  -- JSON has no NaN or infinity
    else
      text = string.format("%.17g", v)
    end
    parts[#parts + 1] = json_string(k) .. ":" .. text
  end
  io.write("@@ {" .. table.concat(parts, ",") .. "}\n")
end

local s = load_session(arg[1], arg[2])
assert(s, "could not load session " .. tostring(arg[1]) .. " / " .. tostring(arg[2]))

emit({{"kind", "session"}, {"name", Session:name()}, {"sample_rate", Session:nominal_sample_rate()}})

local origin = Temporal.timepos_t(0)
local tmap = Temporal.TempoMap.read()
local meter = tmap:meter_at(origin)
emit({{"kind", "tempo"}, {"bpm", tmap:tempo_at(origin):note_types_per_minute()},
      {"divisions_per_bar", meter:divisions_per_bar()}, {"note_value", meter:note_value()}})

local routes = {}
for r in Session:get_routes():iter() do routes[#routes + 1] = r end
table.sort(routes, function(a, b) return a:presentation_info_ptr():order() < b:presentation_info_ptr():order() end)

for _, r in ipairs(routes) do
  local t = r:to_track()
  emit({{"kind", "route"}, {"name", r:name()}, {"order", r:presentation_info_ptr():order()},
        {"is_track", not t:isnil()}, {"is_master", r:is_master()}, {"inputs", r:n_inputs():n_audio()},
        {"outputs", r:n_outputs():n_audio()}, {"gain", r:gain_control():get_value()},
        {"muted", r:muted()}, {"comment", r:comment()}})
  if not t:isnil() then
    for region in t:playlist():region_list():iter() do
      local ar = region:to_audioregion()
      local paths = {}
      for i = 0, ar:n_channels() - 1 do
        paths[#paths + 1] = region:source(i):to_filesource():path()
      end
      emit({{"kind", "region"}, {"track", r:name()}, {"name", region:name()},
            {"position", region:position():samples()}, {"length", region:length():samples()},
            {"start", region:start():samples()}, {"channels", ar:n_channels()},
            {"peak", ar:maximum_amplitude(nil)}, {"scale_amplitude", ar:scale_amplitude()},
            {"sources", paths}})
    end
  end
end

for g in Session:route_groups():iter() do
  local members = {}
  for r in g:route_list():iter() do members[#members + 1] = r:name() end
  emit({{"kind", "group"}, {"name", g:name()}, {"routes", members}, {"active", g:is_active()},
        {"shares_mute", g:is_mute()}, {"shares_solo", g:is_solo()}, {"shares_gain", g:is_gain()}})
end

for l in Session:locations():list():iter() do
  emit({{"kind", "location"}, {"name", l:name()}, {"start", l:start():samples()},
        {"end", l:_end():samples()}, {"is_mark", l:is_mark()}, {"is_session_range", l:is_session_range()}})
end
if arg[3] then
  -- Ardour's own serialisation of what it loaded: proves it parsed what Lua cannot reach (metadata).
  Session:save_state(arg[3], false, false, false, false, false)
end
emit({{"kind", "end"}})  -- a run that aborts before this line is incomplete
io.flush()
