-- wrk's requests for `make bench` (bench/run.py writes bench/.wrk-requests.lua: a Lua table of
-- {path, headers, body} built by `sluice loadgen`'s generator, the four families' mix).
local requests = dofile(os.getenv("SLUICE_WRK_REQUESTS"))
local n = 0

request = function()
  n = n % #requests + 1
  local r = requests[n]
  return wrk.format("POST", r[1], r[2], r[3])
end

done = function(summary, latency, requests)
  io.write(string.format("SLUICE %d %d %d %d %.1f %.1f %.1f\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.duration / 1e6))
end
