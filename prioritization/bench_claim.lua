-- wrk script of `manage.py bench claim` (prioritization/claim_bench.py).
--
-- Run with one connection per thread (wrk -t C -c C): wrk keeps one Lua state per
-- thread and does not say which connection a response belongs to, so one connection
-- per thread is what lets each connection act as one contractor.
--
-- Arguments (after `--`): mode key contractor_base campaigns_per_request threads
--                         target_per_thread done_file
--   mode "cycle":  POST next-lead; on 200 POST the outcome of that lead; repeat.
--   mode "claims": POST next-lead only, each time as a fresh contractor (base + j), whose
--                  qualification is the tuple (j*k + i) % 200 + 1, i = 0..k-1.
--   target_per_thread > 0: after that many units (cycles or claims) append a line to
--                  done_file and keep going (the caller stops wrk once every thread is
--                  done, so the load stays the same to the end: a stopped wrk thread would
--                  leave its connection idle and the others would run faster). The windows
--                  of the first and last 10% of the units are timed here, client side.
-- done() prints one line "BENCH {json}" with the counts and next-lead latency histogram.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } leadrank_timespec;
int clock_gettime(int clk_id, leadrank_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock_buffer = ffi.new("leadrank_timespec")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock_buffer)
  return tonumber(clock_buffer.tv_sec) * 1e6 + tonumber(clock_buffer.tv_nsec) / 1e3
end

local CAMPAIGNS = 200
-- Log-scale latency buckets: bucket b holds latencies in [e^(b/50), e^((b+1)/50)) µs (2%).
local BUCKETS_PER_E = 50
-- Outcomes as the Contract app reports them: most close the lead, some reschedule it.
local DISPOSITIONS = {
  { 0.45, "not_interested" }, { 0.80, "converted" }, { 0.95, "no_answer" }, { 1.01, "busy" },
}

-- Main state: number the threads and keep them for done().
local threads = {}
function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  headers = { ["Authorization"] = "Api-Key " .. args[2], ["Content-Type"] = "application/json" }
  base = tonumber(args[3])
  per_request = tonumber(args[4])
  thread_count = tonumber(args[5])
  target = tonumber(args[6]) or 0
  done_file = args[7] or ""
  math.randomseed(12345 + thread_index * 7919)
  contractor = base + thread_index
  claims_made = 0
  pending_lead = nil
  pending_disposition = nil
  sent = nil
  started = 0
  units, claims, empty, errors, outcomes = 0, 0, 0, 0, 0
  histogram = {}
  t_start, t_first10, t_last10, t_end = 0, 0, 0, 0
  finished = false
end

local function tuple_body()
  local ids = {}
  if mode == "claims" then
    local j = thread_index + claims_made * thread_count
    contractor = base + j
    for i = 0, per_request - 1 do
      ids[#ids + 1] = tostring((j * per_request + i) % CAMPAIGNS + 1)
    end
  else
    local seen = {}
    while #ids < per_request do
      local c = math.random(1, CAMPAIGNS)
      if not seen[c] then
        seen[c] = true
        ids[#ids + 1] = tostring(c)
      end
    end
  end
  return string.format('{"contractor_id":%d,"campaign_ids":[%s]}', contractor, table.concat(ids, ","))
end

local function disposition()
  local r = math.random()
  for _, pair in ipairs(DISPOSITIONS) do
    if r < pair[1] then return pair[2] end
  end
  return "converted"
end

function request()
  if t_start == 0 then t_start = now_us() end
  if pending_lead then
    sent = "outcome"
    local body = string.format('{"contractor_id":%d,"disposition":"%s"}', contractor, pending_disposition)
    return wrk.format("POST", "/api/v1/leads/" .. pending_lead .. "/outcome/", headers, body)
  end
  sent = "next"
  local body = tuple_body()
  started = now_us()
  return wrk.format("POST", "/api/v1/next-lead/", headers, body)
end

local function unit_done(t)
  units = units + 1
  if target > 0 and not finished then
    if units == math.ceil(target * 0.1) then t_first10 = t end
    if units == math.floor(target * 0.9) then t_last10 = t end
    if units >= target then
      t_end = t
      finished = true
      if done_file ~= "" then
        local handle = io.open(done_file, "a")
        if handle then
          handle:write(thread_index, "\n")
          handle:close()
        end
      end
    end
  end
end

function response(status, headers_, body)
  local t = now_us()
  if sent == "next" then
    local us = math.max(1, t - started)
    local b = math.floor(math.log(us) * BUCKETS_PER_E)
    histogram[b] = (histogram[b] or 0) + 1
    if status == 200 then
      claims = claims + 1
      claims_made = claims_made + 1
      if mode == "cycle" then
        pending_lead = string.match(body, '"lead_id":%s*(%d+)')
        -- Drawn once per lead: after a dropped connection wrk calls request() again, and
        -- that resend must be the same outcome (as a Contract app retry is), which the
        -- engine answers as a repeat; a different one would be a 409 for a closed lead.
        if pending_lead then pending_disposition = disposition() else errors = errors + 1 end
      else
        unit_done(t)
      end
    elseif status == 204 then
      empty = empty + 1
      if mode == "claims" then claims_made = claims_made + 1 end
    else
      errors = errors + 1
      if mode == "claims" then claims_made = claims_made + 1 end
    end
  elseif sent == "outcome" then
    pending_lead = nil
    if status == 200 then
      outcomes = outcomes + 1
      unit_done(t)
    else
      errors = errors + 1
    end
  end
end

function done(summary, latency, requests)
  local totals = { units = 0, claims = 0, empty = 0, errors = 0, outcomes = 0 }
  local merged = {}
  local first10, last10, finished_threads = 0, 0, 0
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + (thread:get(name) or 0)
    end
    for b, n in pairs(thread:get("histogram") or {}) do
      merged[b] = (merged[b] or 0) + n
    end
    local t0, t10, t90, t100 = thread:get("t_start"), thread:get("t_first10"), thread:get("t_last10"), thread:get("t_end")
    if t100 and t100 > 0 then
      finished_threads = finished_threads + 1
      first10 = first10 + (t10 - t0)
      last10 = last10 + (t100 - t90)
    end
  end
  local parts = {}
  for b, n in pairs(merged) do
    parts[#parts + 1] = string.format('"%d":%d', b, n)
  end
  print(string.format(
    'BENCH {"duration_us":%d,"requests":%d,"units":%d,"claims":%d,"empty":%d,"errors":%d,' ..
    '"outcomes":%d,"http_errors":%d,"timeouts":%d,"all_p50_us":%d,"all_p99_us":%d,' ..
    '"first10_us":%d,"last10_us":%d,"finished_threads":%d,"histogram":{%s}}',
    summary.duration, summary.requests, totals.units, totals.claims, totals.empty, totals.errors,
    totals.outcomes, summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99),
    first10, last10, finished_threads, table.concat(parts, ",")))
end
