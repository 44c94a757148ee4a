-- wrk script for `python -m bench intake`: POST a valid, varied order to /v1/orders.
--
--   wrk -t2 -c64 -d15s --timeout 5s -s bench/intake_order.lua http://127.0.0.1:8001 -- RUNID
--
-- Every request is a new order: 1-3 distinct SKUs, varied customer, address and
-- country (the shape bench.harness.generator.order_body sends) with a unique Idempotency-Key
-- (RUNID-thread-counter) and the dev API key; a second argument "no-idempotency-key"
-- leaves that header out. Responses are counted per status code; `done` prints one
-- line "BENCH-JSON {...}" that bench.harness.load.run_wrk reads.

local threads = {}
local next_tid = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

-- country, city, region, postal code that pass the country's address rules (no hold);
-- the same table as bench.harness.generator.DESTINATIONS
local destinations = {
  {"US", "Springfield", "IL", "62701"}, {"DE", "Berlin", "", "10115"},
  {"GB", "London", "", "SW1A 1AA"}, {"FR", "Paris", "", "75001"},
  {"CA", "Toronto", "ON", "M5V 2T6"}, {"AU", "Sydney", "NSW", "2000"},
  {"NL", "Amsterdam", "", "1012 AB"}, {"ES", "Madrid", "M", "28001"},
  {"IT", "Roma", "RM", "00184"}, {"SE", "Stockholm", "", "111 52"},
}
local first = {"Ann", "Bob", "Chen", "Dara", "Eve", "Farid", "Gita", "Hugo", "Ines", "Jon"}
local last = {"Lee", "Smith", "Wang", "Okafor", "Novak", "Garcia", "Kim", "Rossi", "Berg", "Ali"}
local counter = 0
local run = "wrk"
local idempotency = true

function init(args)
  run = args[1] or "wrk"
  idempotency = args[2] ~= "no-idempotency-key"
  statuses = {}
  math.randomseed(tid * 7919 + os.time())
  wrk.method = "POST"
  wrk.path = "/v1/orders"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-API-Key"] = "dev-api-key"
end

function request()
  counter = counter + 1
  local n = math.random(1, 3)
  local base = math.random(0, 9999)
  local who = math.random(0, 99999)
  local lines = {}
  for j = 1, n do
    lines[j] = string.format(
      '{"sku":"SKU-%05d","quantity":%d,"unit_price":"%d.%02d"}',
      (base + 7 * j) % 10000, math.random(1, 5), math.random(1, 199), math.random(0, 99))
  end
  local dest = destinations[math.random(1, #destinations)]
  local region = dest[3] ~= "" and string.format('"region":"%s",', dest[3]) or ""
  local body = string.format(
    '{"channel":"storefront","currency":"USD",' ..
    '"customer":{"name":"%s %s","email":"c%d.%d.%d@example.com","locale":"en"},' ..
    '"shipping_address":{"line1":"%d Main St","city":"%s",%s' ..
    '"postal_code":"%s","country":"%s"},"lines":[%s]}',
    first[who % 10 + 1], last[math.floor(who / 10) % 10 + 1], who, tid, counter,
    math.random(1, 999), dest[2], region, dest[4], dest[1],
    table.concat(lines, ","))
  if idempotency then
    wrk.headers["Idempotency-Key"] = string.format("%s-%d-%d", run, tid, counter)
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses") or {}
    for k, v in pairs(s) do
      counts[k] = (counts[k] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(counts) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"duration_us":%d,"requests":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.duration, summary.requests, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
