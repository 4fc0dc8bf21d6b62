-- wrk script for bench/deliveries: bench/post-signed.lua (signed POSTs, a unique X-GitHub-Delivery each), but each
-- wrk thread stops once it has had its share of BENCH_REQUESTS answers, so that a run posts about that many
-- webhooks (a few more: the requests in flight when a thread stops). Run wrk with a -d long enough to get there.
--
-- Environment: as bench/post-signed.lua, plus
--   BENCH_REQUESTS    answers to wait for, in all
--   BENCH_THREADS     wrk's -t (to split BENCH_REQUESTS between the threads)
--   BENCH_LUA_DIR     where post-signed.lua is (default: bench, relative to wrk's working directory)

dofile((os.getenv("BENCH_LUA_DIR") or "bench") .. "/post-signed.lua")

local signed_init = init

function init(args)
   signed_init(args)
   local total = tonumber(os.getenv("BENCH_REQUESTS") or error("BENCH_REQUESTS is not set"))
   local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
   limit = math.ceil(total / threads)
   answers = 0
end

function response(status, headers, body)
   answers = answers + 1
   if answers >= limit then
      wrk.thread:stop()
   end
end
