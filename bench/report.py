#!/usr/bin/env python3
"""Turns the raw samples of a bench run into medians, ratios, a table and JSON.

Input (written by bench/run.sh and bench/spike/run.sh):
  --samples FILE  one wrk run a line, whitespace separated:
                  scenario server round rps p99_us cpu_us_per_req requests errors
                  (p99_us -1: not measured)
  --idle FILE     optional; one JSON object a line from bench/idle_conns.py,
                  with an added "server" key
Every server is compared with --baseline (nginx): ratio = server / baseline,
so rps > 1 is better, p99 and cpu < 1 are better.
"""
import argparse
import json
import statistics
import sys


def fmt_us(us):
    if us < 0:
        return "-"  # not measured (e.g. h2load gives no percentiles)
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", required=True)
    ap.add_argument("--idle")
    ap.add_argument("--baseline", default="nginx")
    ap.add_argument("--json", required=True)
    ap.add_argument("--meta", default="{}", help="JSON object copied into the output")
    args = ap.parse_args()

    scenarios, order = {}, []
    with open(args.samples) as f:
        for line in f:
            p = line.split()
            if len(p) != 8:
                continue
            sc, srv = p[0], p[1]
            if sc not in scenarios:
                scenarios[sc] = {}
                order.append(sc)
            scenarios[sc].setdefault(srv, []).append({
                "round": int(p[2]), "rps": float(p[3]), "p99_us": float(p[4]),
                "cpu_us_per_req": float(p[5]), "requests": int(p[6]), "errors": int(p[7]),
            })

    out = {"meta": json.loads(args.meta), "baseline": args.baseline, "scenarios": {}, "idle_conns": {}}
    rows = []
    for sc in order:
        res = {}
        for srv, samples in scenarios[sc].items():
            res[srv] = {
                "rps_median": statistics.median(s["rps"] for s in samples),
                "p99_us_median": statistics.median(s["p99_us"] for s in samples),
                "cpu_us_per_req_median": statistics.median(s["cpu_us_per_req"] for s in samples),
                "errors": sum(s["errors"] for s in samples),
                "samples": samples,
            }
        base = res.get(args.baseline)
        for srv, r in res.items():
            if base and srv != args.baseline:
                r["ratio_vs_" + args.baseline] = {
                    "rps": r["rps_median"] / base["rps_median"] if base["rps_median"] else None,
                    "p99": r["p99_us_median"] / base["p99_us_median"] if base["p99_us_median"] > 0 else None,
                    "cpu": r["cpu_us_per_req_median"] / base["cpu_us_per_req_median"]
                    if base["cpu_us_per_req_median"] else None,
                }
        out["scenarios"][sc] = res
        # baseline first, then the others in the order they were seen
        for srv in sorted(res, key=lambda s: (s != args.baseline, list(res).index(s))):
            rows.append((sc, srv, res[srv]))

    def ratio(v):
        return f"{v:.2f}" if v is not None else "-"

    hdr = ("scenario", "server", "rps", "p99", "CPU us/req", "rps x", "p99 x", "CPU x", "errors", "runs")
    table = [hdr]
    for sc, srv, r in rows:
        rt = r.get("ratio_vs_" + args.baseline)
        table.append((sc, srv, f"{r['rps_median']:.0f}", fmt_us(r["p99_us_median"]),
                      f"{r['cpu_us_per_req_median']:.2f}",
                      ratio(rt["rps"]) if rt else "", ratio(rt["p99"]) if rt else "",
                      ratio(rt["cpu"]) if rt else "", str(r["errors"]), str(len(r["samples"]))))
    widths = [max(len(row[i]) for row in table) for i in range(len(hdr))]
    print("medians over rounds; 'x' columns are server / %s (rps: higher is better; "
          "p99 and CPU: lower is better)" % args.baseline)
    for row in table:
        print("  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))

    if args.idle:
        idle = {}
        with open(args.idle) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    idle[d.pop("server")] = d
        base = idle.get(args.baseline)
        for srv, d in idle.items():
            if base and srv != args.baseline and base.get("kib_per_conn"):
                d["ratio_vs_" + args.baseline] = d["kib_per_conn"] / base["kib_per_conn"]
        out["idle_conns"] = idle
        if idle:
            print()
            print("idle keep-alive connections (RSS of all server processes)")
            t = [("server", "held", "RSS before", "RSS holding", "KiB/conn", "x")]
            for srv in sorted(idle, key=lambda s: s != args.baseline):
                d = idle[srv]
                r = d.get("ratio_vs_" + args.baseline)
                t.append((srv, f"{d['held']}/{d['wanted']}", f"{d['rss_before_kib']} KiB",
                          f"{d['rss_holding_kib']} KiB", f"{d['kib_per_conn']:.2f}",
                          f"{r:.2f}" if r is not None else ""))
            w = [max(len(row[i]) for row in t) for i in range(len(t[0]))]
            for row in t:
                print("  ".join(c.rjust(x) if i >= 1 else c.ljust(x) for i, (c, x) in enumerate(zip(row, w))))

    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
