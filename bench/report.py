#!/usr/bin/env python3
"""Turns the raw samples of a bench run into medians, ratios, a table and JSON.

Input (written by bench/run.sh and bench/spike/run.sh):
  --samples FILE  one wrk run a line, whitespace separated:
                  scenario server round rps p99_us cpu_us_per_req requests errors
                  (p99_us -1: not measured)
  --fixed FILE    optional; one fixed-rate h2load run a line (bench/run.sh):
                  scenario server round target_rps conns achieved_rps
                  p50_us p99_us p999_us max_us cpu_us_per_req requests errors
                  client_core_busy_pct server_core_busy_pct
  --idle FILE     optional; one JSON object a line from bench/idle_conns.py,
                  with an added "server" key
  --cache-mem FILE  optional; one JSON object a line from bench/cache_mem.py,
                  with an added "server" key
  --subject NAME --best-of A,B  for every scenario where a server of the
                  --best-of list other than the baseline ran (the cache
                  scenarios: nginx and varnish), also compare the subject with
                  the best of them: rps / the highest rps, p99 / the lowest
                  p99, CPU / the lowest CPU (JSON: ratio_vs_best)
Every server is compared with --baseline (nginx): ratio = server / baseline,
so rps > 1 is better, p99 and cpu < 1 are better (and every fixed-rate
latency ratio: lower is better).
"""
import argparse
import json
import statistics
import sys


def fmt_us(us):
    if us < 0:
        return "-"  # not measured (e.g. h2load gives no percentiles)
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"


def print_table(table, left=2):
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.rjust(w) if i >= left else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def ratio(v):
    return f"{v:.2f}" if v is not None else "-"


def by_baseline(res, baseline):
    """Server names, baseline first, then the others in the order seen."""
    names = list(res)
    return sorted(names, key=lambda s: (s != baseline, names.index(s)))


BUSY_PCT = 85
FIXED_FIELDS = ("p50_us", "p99_us", "p999_us", "max_us", "cpu_us_per_req", "achieved_rps",
                "client_core_busy_pct", "server_core_busy_pct")


def fixed_rate(path, baseline):
    """Fixed-rate runs -> {scenario: {target_rps, conns, servers: {...}}}."""
    out = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) != 15:
                continue
            sc = out.setdefault(p[0], {"target_rps": int(p[3]), "conns": int(p[4]), "servers": {}})
            sc["servers"].setdefault(p[1], []).append({
                "round": int(p[2]), "achieved_rps": float(p[5]), "p50_us": float(p[6]),
                "p99_us": float(p[7]), "p999_us": float(p[8]), "max_us": float(p[9]),
                "cpu_us_per_req": float(p[10]), "requests": int(p[11]), "errors": int(p[12]),
                "client_core_busy_pct": float(p[13]), "server_core_busy_pct": float(p[14]),
            })
    for sc in out.values():
        res = {}
        for srv, samples in sc["servers"].items():
            ok = [s for s in samples if s["requests"] > 0]
            r = {k + "_median": statistics.median(s[k] for s in ok) if ok else -1 for k in FIXED_FIELDS}
            r["errors"] = sum(s["errors"] for s in samples)
            # h2load could not offer the rate (client CPU short?) or the
            # server could not carry it: the latencies then mean little.
            r["short_of_rate"] = bool(ok) and r["achieved_rps_median"] < 0.95 * sc["target_rps"]
            # a core this busy is near saturation: the run is no longer "well
            # below saturation" and its latencies are queueing again.
            r["core_busy"] = max(r["client_core_busy_pct_median"], r["server_core_busy_pct_median"]) > BUSY_PCT
            r["samples"] = samples
            res[srv] = r
        base = res.get(baseline)
        for srv, r in res.items():
            if base and srv != baseline:
                r["ratio_vs_" + baseline] = {
                    k: r[k + "_median"] / base[k + "_median"] if base[k + "_median"] > 0 and r[k + "_median"] >= 0
                    else None
                    for k in ("p50_us", "p99_us", "p999_us", "cpu_us_per_req")
                }
        sc["servers"] = res
    return out


def paired(samples, base_samples):
    """Medians of the per-round ratios (each server against the baseline of
    the same round): the host's noise moves both runs of a round together,
    so these are steadier than the ratio of the medians."""
    by_round = {b["round"]: b for b in base_samples}
    ratios = {"rps": [], "p99": [], "cpu": []}
    for s in samples:
        b = by_round.get(s["round"])
        if not b:
            continue
        if b["rps"]:
            ratios["rps"].append(s["rps"] / b["rps"])
        if b["p99_us"] > 0:
            ratios["p99"].append(s["p99_us"] / b["p99_us"])
        if b["cpu_us_per_req"]:
            ratios["cpu"].append(s["cpu_us_per_req"] / b["cpu_us_per_req"])
    return {k: statistics.median(v) if v else None for k, v in ratios.items()}


def fetch_cost(out):
    """What one verge.fetch subrequest costs next to a proxied request (issue
    3's floor), per server: the CPU of the fetch scenario minus the same
    handler without its fetch (lua1k), over the CPU of the proxy scenario.
    The whole fetch request over the proxied one is shown too."""
    sc = out["scenarios"]
    if not all(k in sc for k in ("fetch", "lua1k", "proxy")):
        return
    rows = [("server", "fetch CPU", "lua1k CPU", "subrequest", "proxy CPU", "subrequest / proxy",
             "fetch / proxy")]
    out["fetch_cost"] = {}
    for srv in sc["fetch"]:
        if srv not in sc["lua1k"] or srv not in sc["proxy"]:
            continue
        f, l, p = (sc[k][srv]["cpu_us_per_req_median"] for k in ("fetch", "lua1k", "proxy"))
        if not p:
            continue
        out["fetch_cost"][srv] = {"subrequest_us": f - l, "subrequest_vs_proxy": (f - l) / p,
                                  "fetch_vs_proxy": f / p}
        rows.append((srv, f"{f:.2f}", f"{l:.2f}", f"{f - l:.2f}", f"{p:.2f}", ratio((f - l) / p), ratio(f / p)))
    print()
    print("cost of a subrequest (CPU us per request, medians): subrequest = fetch - lua1k (the same handler "
          "without its fetch)")
    print_table(rows, left=1)


def best_of(out, subject, peers, baseline):
    """verge / best of (nginx, varnish) per scenario, in the scenarios where a
    peer other than the baseline ran."""
    rows = [("scenario", "best rps", subject + " rps", "rps x", "best p99", subject + " p99", "p99 x",
             "best CPU", subject + " CPU", "CPU x")]
    for sc, res in out["scenarios"].items():
        present = [p for p in peers if p in res]
        if subject not in res or not any(p != baseline for p in present):
            continue
        me = res[subject]
        b_rps = max(present, key=lambda p: res[p]["rps_median"])
        b_p99 = min(present, key=lambda p: res[p]["p99_us_median"])
        b_cpu = min(present, key=lambda p: res[p]["cpu_us_per_req_median"])
        r = {
            "rps": me["rps_median"] / res[b_rps]["rps_median"] if res[b_rps]["rps_median"] else None,
            "rps_best": b_rps,
            "p99": me["p99_us_median"] / res[b_p99]["p99_us_median"] if res[b_p99]["p99_us_median"] > 0 else None,
            "p99_best": b_p99,
            "cpu": me["cpu_us_per_req_median"] / res[b_cpu]["cpu_us_per_req_median"]
            if res[b_cpu]["cpu_us_per_req_median"] else None,
            "cpu_best": b_cpu,
        }
        me["ratio_vs_best"] = r
        rows.append((sc, f"{res[b_rps]['rps_median']:.0f} ({b_rps})", f"{me['rps_median']:.0f}", ratio(r["rps"]),
                     f"{fmt_us(res[b_p99]['p99_us_median'])} ({b_p99})", fmt_us(me["p99_us_median"]),
                     ratio(r["p99"]), f"{res[b_cpu]['cpu_us_per_req_median']:.2f} ({b_cpu})",
                     f"{me['cpu_us_per_req_median']:.2f}", ratio(r["cpu"])))
    if len(rows) > 1:
        print()
        print("%s / best of (%s), medians over rounds: rps x above 1 is better, p99 x and CPU x below 1"
              % (subject, ", ".join(peers)))
        print_table(rows, left=1)


def cache_mem(path, out):
    mem = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                mem[d.pop("server")] = d
    out["cache_mem"] = mem
    if not mem:
        return
    print()
    print("memory per cached 200-byte object (process tree; Pss counts shared memory such as nginx's keys_zone "
          "once; tmpfs = nginx's body files, not in its processes' memory)")
    t = [("server", "objects", "ok", "errors", "sample hits", "Pss B/obj", "RSS B/obj", "tmpfs B/obj",
          "Pss + tmpfs B/obj")]
    for srv, d in mem.items():
        tmpfs = d.get("tmpfs_bytes_per_obj")
        t.append((srv, str(d["objects"]), str(d["ok"]), str(d["errors"]),
                  f"{d['sample_hits']}/{d['sample']}" + ("" if d["hit_rate_ok"] else "!"),
                  f"{d['bytes_per_obj_pss']:.0f}", f"{d['bytes_per_obj_rss']:.0f}",
                  f"{tmpfs:.0f}" if tmpfs is not None else "-",
                  f"{d['bytes_per_obj_pss'] + tmpfs:.0f}" if tmpfs is not None else f"{d['bytes_per_obj_pss']:.0f}"))
    print_table(t, left=1)
    if not all(d["hit_rate_ok"] for d in mem.values()):
        print("! fewer than 99% of a sample were hits afterwards: objects were evicted or never cached, "
              "so that figure is not memory per cached object")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", required=True)
    ap.add_argument("--title", help="printed above the --samples table")
    ap.add_argument("--fixed")
    ap.add_argument("--idle")
    ap.add_argument("--baseline", default="nginx")
    ap.add_argument("--subject", default="verge")
    ap.add_argument("--best-of", default="", help="comma-separated peers, e.g. nginx,varnish")
    ap.add_argument("--cache-mem")
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

    out = {"meta": json.loads(args.meta), "baseline": args.baseline, "scenarios": {}, "fixed_rate": {},
           "idle_conns": {}}
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
                r["paired_vs_" + args.baseline] = paired(r["samples"], base["samples"])
        out["scenarios"][sc] = res
        for srv in by_baseline(res, args.baseline):
            rows.append((sc, srv, res[srv]))

    hdr = ("scenario", "server", "rps", "p99", "CPU us/req", "rps x", "p99 x", "CPU x", "paired rps/p99/CPU x",
           "errors", "runs")
    table = [hdr]
    for sc, srv, r in rows:
        rt = r.get("ratio_vs_" + args.baseline)
        pr = r.get("paired_vs_" + args.baseline)
        table.append((sc, srv, f"{r['rps_median']:.0f}", fmt_us(r["p99_us_median"]),
                      f"{r['cpu_us_per_req_median']:.2f}",
                      ratio(rt["rps"]) if rt else "", ratio(rt["p99"]) if rt else "",
                      ratio(rt["cpu"]) if rt else "",
                      "/".join(ratio(pr[k]) for k in ("rps", "p99", "cpu")) if pr else "",
                      str(r["errors"]), str(len(r["samples"]))))
    if args.title:
        print(args.title)
    print("medians over rounds; 'x' columns are server / %s, 'paired' the median of each round's ratio (rps: higher is better; "
          "p99 and CPU: lower is better)" % args.baseline)
    print_table(table)
    if args.best_of:
        best_of(out, args.subject, [p for p in args.best_of.split(",") if p], args.baseline)
    fetch_cost(out)

    if args.fixed:
        fixed = fixed_rate(args.fixed, args.baseline)
        out["fixed_rate"] = fixed
        if fixed:
            print()
            print("fixed rate, open loop (h2load --rps, same rate for every server): medians over rounds "
                  "of each run's percentiles; 'x' = server / %s, lower is better" % args.baseline)
            t = [("scenario", "server", "rate", "conns", "achieved", "p50", "p99", "p99.9", "CPU us/req",
                  "p50 x", "p99 x", "p99.9 x", "CPU x", "cores c/s", "errors", "runs")]
            short = busy = False
            for sc, d in fixed.items():
                for srv in by_baseline(d["servers"], args.baseline):
                    r = d["servers"][srv]
                    rt = r.get("ratio_vs_" + args.baseline)
                    short = short or r["short_of_rate"]
                    busy = busy or r["core_busy"]
                    t.append((sc, srv, str(d["target_rps"]), str(d["conns"]),
                              f"{r['achieved_rps_median']:.0f}" + ("!" if r["short_of_rate"] else ""),
                              fmt_us(r["p50_us_median"]), fmt_us(r["p99_us_median"]), fmt_us(r["p999_us_median"]),
                              f"{r['cpu_us_per_req_median']:.2f}",
                              *((ratio(rt[k]) for k in ("p50_us", "p99_us", "p999_us", "cpu_us_per_req"))
                                if rt else ("",) * 4),
                              f"{r['client_core_busy_pct_median']:.0f}/{r['server_core_busy_pct_median']:.0f}%"
                              + ("!" if r["core_busy"] else ""),
                              str(r["errors"]), str(len(r["samples"]))))
            print_table(t)
            print("cores c/s: how busy the client core (h2load, and the origin in proxy) and the server core "
                  "were; a client core near 100% makes the latencies the client's")
            if short:
                print("! achieved rate under 95% of the target: the client or the server could not keep up; "
                      "those latencies are not at the stated rate")
            if busy:
                print(f"! a core over {BUSY_PCT}% busy: not well below saturation; lower BENCH_FIXED_RATE "
                      "or BENCH_FIXED_FRACTION")

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
            print_table(t, left=1)

    if args.cache_mem:
        cache_mem(args.cache_mem, out)

    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
