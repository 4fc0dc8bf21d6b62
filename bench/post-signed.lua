-- wrk script for bench/run: POSTs one constant JSON body, signed the GitHub way (X-Hub-Signature-256: sha256=<hex
-- HMAC-SHA256 of the body>, precomputed by bench/run), with a unique X-GitHub-Delivery per request, so that every
-- request is a new, verified event that the relay must commit durably before it answers.
--
-- Environment (set by bench/run):
--   BENCH_BODY        the request body
--   BENCH_SIGNATURE   hex HMAC-SHA256 of BENCH_BODY under the source's secret
--   BENCH_PATH        request path (default /v1/hooks/bench)
--   BENCH_RUN_ID      prefix of the delivery ids, unique per run (default: the time)
--   BENCH_IDS         "uuid": random delivery ids in UUID form, as GitHub sends them, instead of the prefix and a
--                     counter (which keeps each thread's ids in order, so the store's dedup index grows at its end)

local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_id", thread_count)
end

function init(args)
   body = os.getenv("BENCH_BODY") or error("BENCH_BODY is not set")
   local signature = os.getenv("BENCH_SIGNATURE") or error("BENCH_SIGNATURE is not set")
   path = os.getenv("BENCH_PATH") or "/v1/hooks/bench"
   prefix = (os.getenv("BENCH_RUN_ID") or tostring(os.time())) .. "-" .. tostring(thread_id) .. "-"
   counter = 0
   uuid = os.getenv("BENCH_IDS") == "uuid"
   if uuid then
      -- Seeded from the kernel: every run and thread its own sequence (a store keeps its ids across runs, and a
      -- repeated id would be answered as a duplicate).
      local f = assert(io.open("/dev/urandom", "rb"))
      local bytes = f:read(6)
      f:close()
      local seed = 0
      for i = 1, 6 do seed = seed * 256 + bytes:byte(i) end
      math.randomseed(seed)
   end
   headers = {
      ["Content-Type"] = "application/json",
      ["User-Agent"] = "GitHub-Hookshot/bench",
      ["X-GitHub-Event"] = "push",
      ["X-Hub-Signature-256"] = "sha256=" .. signature,
   }
end

function request()
   counter = counter + 1
   if uuid then
      headers["X-GitHub-Delivery"] = string.format("%04x%04x-%04x-4%03x-%04x-%06x%06x", math.random(0, 0xffff),
         math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xfff), math.random(0x8000, 0xbfff),
         math.random(0, 0xffffff), math.random(0, 0xffffff))
   else
      headers["X-GitHub-Delivery"] = prefix .. counter
   end
   return wrk.format("POST", path, headers, body)
end
