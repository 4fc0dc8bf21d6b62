#!/usr/bin/env python3
"""Latency percentile plot for bench/run, from what `bench/latency.py --json OUT --samples` wrote: for every measured
webhook, 202 -> sink (the sink's receivedAt of its delivery - the client's clock when its 202 arrived) and send -> 202
(the relay's ingest, durable commit included), in milliseconds.

The x axis is the percentile on a "nines" scale: x = -log10(1 - p), so 0, 50, 90, 99, 99.9 and 99.99 are evenly
spaced and the tail gets as much room as the body (a plain CDF squeezes p99..max into the last 1% of the width).
Each sample is drawn at its plotting position (k - 0.5) / n, so the largest of n samples sits at 1 - 0.5 / n (about
p99.98 for 2,500 samples): the curve ends where the data does, nothing past it is extrapolated. p50, p99 and p99.9
are marked with the figures latency.py computed (nearest rank), so the marks match its summary and JSON. The y axis
is linear in ms: 202 -> sink can be negative (a delivery may reach the sink before its sender has read the 202), so
a log scale would hide the body of that curve; --ylog switches to a symmetric log scale for long tails.

usage: plot.py --latency LAT.json --out docs/benchmarks-latency.png [--title TEXT] [--ylog] [--width 900 --height 500]

Needs matplotlib (imported only when plotting): pip install matplotlib (Debian's /usr/bin/python3:
python3 -m pip install --break-system-packages matplotlib).
"""
import argparse
import json
import math
import os
import sys


def log(msg):
    print("plot: " + msg, file=sys.stderr)


def die(msg):
    print("plot: FAILED: " + msg, file=sys.stderr)
    sys.exit(1)


def parse_args():
    p = argparse.ArgumentParser(description="latency percentile plot from bench/latency.py --json --samples")
    p.add_argument("--latency", required=True, help="the JSON bench/latency.py --json OUT --samples wrote")
    p.add_argument("--out", required=True, help="PNG to write, e.g. docs/benchmarks-latency.png")
    p.add_argument("--title", help="first title line (default: what was measured, from the JSON)")
    p.add_argument("--ylog", action="store_true", help="symmetric log y axis (linear within 1 ms of 0)")
    p.add_argument("--width", type=int, default=900, help="pixels (default 900)")
    p.add_argument("--height", type=int, default=500, help="pixels (default 500)")
    return p.parse_args()


def nines(p):
    """x position of percentile p (0..100, < 100) on the nines scale."""
    return -math.log10(1 - p / 100)


def percentile(sorted_values, q):
    # nearest rank, as bench/latency.py computes it
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def curve(values):
    """(xs, ys): every sample at its plotting position on the nines scale."""
    v = sorted(values)
    n = len(v)
    return [nines(100 * (k + 0.5) / n) for k in range(n)], v


def main():
    a = parse_args()
    try:
        with open(a.latency) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        die("cannot read %s: %s" % (a.latency, e))
    samples = data.get("samples")
    if not samples:
        die("%s has no per-webhook samples: run bench/latency.py with --json %s --samples" % (a.latency, a.latency))
    # (key in samples and in the JSON's summaries, legend label, colour)
    series = [("ackToSink", "202 \u2192 sink (delivery after the 202)", "tab:blue"),
              ("ingest", "send \u2192 202 (ingest: verify, durable commit)", "tab:orange")]
    for key, _, _ in series:
        if not samples.get(key):
            die("%s: samples.%s is missing or empty" % (a.latency, key))

    try:
        import matplotlib
        matplotlib.use("Agg")   # no display needed
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        die("matplotlib is not installed: pip install matplotlib "
            "(for Debian's /usr/bin/python3: python3 -m pip install --break-system-packages matplotlib)")

    dpi = 100
    fig, ax = plt.subplots(figsize=(a.width / dpi, a.height / dpi), dpi=dpi)
    x_max = 0.0
    marks = [(50, "p50", "p50"), (99, "p99", "p99"), (99.9, "p999", "p99.9")]
    for key, label, colour in series:
        values = samples[key]
        xs, ys = curve(values)
        x_max = max(x_max, xs[-1])
        ax.plot(xs, ys, color=colour, linewidth=1.6, label="%s, n=%d" % (label, len(values)))
        summary = data.get(key, {})
        s = sorted(values)
        for q, field, name in marks:
            if len(s) < 100 / (100 - q):   # fewer samples than that percentile needs: not marked
                continue
            y = summary.get(field)
            if not isinstance(y, (int, float)):
                y = percentile(s, q)
            ax.plot([nines(q)], [y], marker="o", markersize=5, color=colour, zorder=3)
            # below and right of the point: the curve rises to the right, so that corner is free
            ax.annotate("%s %.2f ms" % (name, y), (nines(q), y), textcoords="offset points", xytext=(5, -5),
                        ha="left", va="top", fontsize=8, color=colour)

    # x axis: percentiles on the nines scale, up to where the data ends
    ticks = [0, 50, 90, 99, 99.9, 99.99, 99.999]
    ticks = [t for t in ticks if nines(t) <= x_max + 1e-9]
    ax.set_xticks([nines(t) for t in ticks])
    ax.set_xticklabels(["p%g" % t for t in ticks])
    ax.set_xlim(0, x_max * 1.02)
    ax.set_xlabel("percentile (the largest sample is the last point of each curve)")
    ax.set_ylabel("latency (ms)")
    if a.ylog:
        ax.set_yscale("symlog", linthresh=1.0)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: "%g" % v))
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.grid(True, which="major", color="0.88")
    ax.legend(loc="lower right" if a.ylog else "upper left", fontsize=9, frameon=False)

    rate = data.get("rate")
    title = a.title or "Relay latency at %g webhooks/s for %g s (achieved %s/s; %g s warm-up not counted)" % (
        rate, data.get("duration"), data.get("achievedRate"), data.get("warmup"))
    sub = ("bench/latency.py, %s connections, open loop: %s measured, %s missing, %s errors; "
           "sink clock in whole ms (\u00b10.5)"
           % (data.get("connections"), data.get("measured"), data.get("missing"), data.get("errors")))
    fig.suptitle(title, fontsize=11)
    ax.set_title(sub, fontsize=8.5, color="0.3")
    fig.tight_layout()
    out_dir = os.path.dirname(a.out)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    fig.savefig(a.out, dpi=dpi)
    log("wrote %s (%dx%d)" % (a.out, a.width, a.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
