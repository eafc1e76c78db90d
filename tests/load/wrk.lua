-- wrk script: a tools/call POST with a bearer token, as an MCP client sends it.
--
-- Environment:
--   TOKEN        bearer token for every request (hot: verified once, then a cache hit)
--   TOKENS_FILE  with COLD_EVERY=N: every Nth request uses the next never-used token from this
--                file (one per line), so 1/N of requests miss the verified-token cache
--   BODY         request body (default: a tools/call of "get_events")
--
-- Run with one thread (-t 1): the fresh-token cursor lives in the thread's Lua state.
-- done() prints one machine-readable line:
--   RESULT requests duration_us p50_us p99_us mean_us non2xx socket_errors fresh_used wrapped

local token = os.getenv("TOKEN") or ""
local body = os.getenv("BODY")
  or '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_events","arguments":{"calendar":"work","limit":10}}}'
local cold_every = tonumber(os.getenv("COLD_EVERY") or "0")

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer " .. token

local fresh = {}
local n = 0
-- Globals, not locals: done() reads them from each thread with thread:get().
cursor = 0
wrapped = 0

if cold_every > 0 then
  local path = os.getenv("TOKENS_FILE")
  for line in io.lines(path) do
    if #line > 0 then fresh[#fresh + 1] = line end
  end
  local hot = wrk.format(nil, nil, nil, nil)
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end

  function request()
    n = n + 1
    if n % cold_every ~= 0 then
      return hot
    end
    cursor = cursor + 1
    if cursor > #fresh then
      cursor = 1
      wrapped = wrapped + 1
    end
    headers["Authorization"] = "Bearer " .. fresh[cursor]
    return wrk.format(nil, nil, headers, nil)
  end
end

-- Fresh-token counters live in the thread's Lua state; report them through it.
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local used, wraps = 0, 0
  for _, t in ipairs(threads) do
    used = used + (tonumber(t:get("cursor")) or 0)
    wraps = wraps + (tonumber(t:get("wrapped")) or 0)
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.1f %.1f %.1f %d %d %d %d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean,
    e.status, e.connect + e.read + e.write + e.timeout, used, wraps))
end
