#!/usr/bin/env python3
"""Delivery latency at a fixed rate, for bench/deliveries: posts signed webhooks (GitHub preset) to the relay at RATE
per second (open loop: each webhook has its planned send time; CONNECTIONS keep-alive connections on as many
threads), records when each one's 202 arrived, then reads what `relay simulate sink` received (GET /_sink/requests,
each with its receivedAt) and matches every delivery to its webhook by the canonical event's id (the eventId of the
202; the generic destination's default body is the canonical event).

Latency of a webhook = the sink's receivedAt of its first delivery - the client's clock when its 202 arrived (same
machine, same clock). Also reported: the ingest latency (send -> 202) and send -> sink. The sink stamps arrivals in
milliseconds (rounded), so every sink-side figure is +-0.5 ms.

usage: latency.py --relay URL --secret S --sink BASE_URL [--rate 500] [--duration 20] [--warmup 2]
                  [--connections 8] [--json OUT.json [--samples]]
Prints a one-line summary; --json writes the figures (milliseconds) for bench/deliveries; with --samples it also
writes every measured webhook's latencies (ms, in send order) under "samples": "ackToSink" (202 -> sink, for those
that arrived) and "ingest" (send -> 202), for bench/plot.py.
"""
import argparse
import hashlib
import hmac
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--relay", required=True, help="http://127.0.0.1:PORT/v1/hooks/SOURCE")
    p.add_argument("--secret", required=True)
    p.add_argument("--sink", required=True, help="http://127.0.0.1:PORT of relay simulate sink")
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--wait", type=float, default=30, help="seconds to wait for the last deliveries")
    p.add_argument("--json")
    p.add_argument("--samples", action="store_true", help="also write the per-webhook latencies into --json")
    return p.parse_args()


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    # nearest rank, as wrk and most latency tools report it
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def summary(values):
    v = sorted(values)
    return {"count": len(v), "p50": percentile(v, 50), "p90": percentile(v, 90), "p99": percentile(v, 99),
            "p999": percentile(v, 99.9), "max": v[-1] if v else float("nan"), "min": v[0] if v else float("nan"),
            "mean": sum(v) / len(v) if v else float("nan")}


def iso_to_epoch(s):
    # "2026-11-22T01:35:50.488Z"
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main():
    a = parse_args()
    url = urllib.parse.urlsplit(a.relay)
    secret = a.secret.encode()
    run = "lat-%d-%d" % (os.getpid(), int(time.time()))
    total = int(a.rate * (a.warmup + a.duration))
    interval = 1.0 / a.rate
    start = time.time() + 0.2
    results = [None] * total          # n -> (t_planned, t_send, t_ack, status, eventId)
    errors = []
    late = [0]

    def sender(k):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        for n in range(k, total, a.connections):
            planned = start + n * interval
            delay = planned - time.time()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.005:
                late[0] += 1
            body = json.dumps({"n": n, "run": run, "order": {"id": "O-%d" % n, "state": "SHIPPED"}},
                              separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
                       "X-GitHub-Delivery": "%s-%d" % (run, n),
                       "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}
            t_send = time.time()
            try:
                conn.request("POST", url.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                t_ack = time.time()
            except Exception as e:
                errors.append("%d: %s" % (n, e))
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                continue
            event_id = None
            if r.status == 202:
                try:
                    event_id = json.loads(data)["eventId"]
                except Exception:
                    pass
            else:
                errors.append("%d: HTTP %d %s" % (n, r.status, data[:100]))
            results[n] = (planned, t_send, t_ack, r.status, event_id)
        conn.close()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(a.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    posted_at = time.time()
    achieved = sum(1 for r in results if r) / max(1e-9, max(r[2] for r in results if r) - start)

    # Collect the sink's requests until every accepted event has arrived (or --wait passes).
    by_event = {r[4]: n for n, r in enumerate(results) if r and r[4]}
    arrived = {}                      # n -> first receivedAt
    copies = 0
    since = 0
    deadline = time.time() + a.wait
    while True:
        while True:
            with urllib.request.urlopen("%s/_sink/requests?since=%d&limit=5000" % (a.sink, since), timeout=10) as r:
                page = json.loads(r.read())
            for q in page["requests"]:
                since = max(since, q["seq"])
                if q["status"] != 200:
                    continue
                try:
                    ev = json.loads(q["body"])["id"]
                except Exception:
                    continue
                n = by_event.get(ev)
                if n is None:
                    continue
                t = iso_to_epoch(q["receivedAt"])
                if n in arrived:
                    copies += 1
                    arrived[n] = min(arrived[n], t)
                else:
                    arrived[n] = t
            if len(page["requests"]) < 5000:
                break
        if len(arrived) >= len(by_event) or time.time() > deadline:
            break
        time.sleep(0.2)

    warm = int(a.rate * a.warmup)
    measured = [n for n in range(warm, total) if results[n] and results[n][4]]
    ack_to_sink = [(arrived[n] - results[n][2]) * 1000 for n in measured if n in arrived]
    send_to_sink = [(arrived[n] - results[n][1]) * 1000 for n in measured if n in arrived]
    ingest = [(results[n][2] - results[n][1]) * 1000 for n in measured]
    missing = [n for n in measured if n not in arrived]
    out = {
        "rate": a.rate, "achievedRate": round(achieved, 1), "duration": a.duration, "warmup": a.warmup,
        "connections": a.connections, "posted": total, "accepted": len(by_event), "measured": len(measured),
        "errors": len(errors), "firstErrors": errors[:5], "late": late[0], "missing": len(missing),
        "duplicateDeliveries": copies, "ackToSink": summary(ack_to_sink), "sendToSink": summary(send_to_sink),
        "ingest": summary(ingest), "collectSeconds": round(time.time() - posted_at, 1),
    }
    if a.samples:
        out["samples"] = {"ackToSink": [round(x, 3) for x in ack_to_sink], "ingest": [round(x, 3) for x in ingest]}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    s = out["ackToSink"]
    print("latency: %d webhooks at %.0f/s (achieved %.1f/s, %d sent late), %d measured after %.0fs warm-up: "
          "202 -> sink p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms; "
          "ingest (send -> 202) p50 %.2f ms p99 %.2f ms p99.9 %.2f ms; %d missing, %d errors"
          % (total, a.rate, achieved, late[0], len(measured), a.warmup, s["p50"], s["p90"], s["p99"], s["p999"],
             s["max"], out["ingest"]["p50"], out["ingest"]["p99"], out["ingest"]["p999"], len(missing), len(errors)),
          file=sys.stderr)
    return 0 if not missing and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
