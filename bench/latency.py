#!/usr/bin/env python3
"""Latency percentiles of one fixed-rate h2load run, from its --log-file.

h2load (nghttp2 1.52) writes one tab-separated line per request:
  start time (µs since the epoch)  HTTP status (-1: stream failed)  duration (µs)
(later versions may append columns; only the first three are read). Only
requests that *started* inside the measurement window [--from, --to] (µs since
the epoch, taken by bench/run.sh around its CPU readings) are counted, so the
connection ramp-up and the ramp-down at the end are left out.

Prints one line: requests rate_per_s p50_us p99_us p999_us max_us errors
(errors: failed streams and non-2xx). Percentiles are nearest-rank.
"""
import argparse
import math
import sys


def nearest_rank(sorted_vals, q):
    return sorted_vals[max(0, math.ceil(q * len(sorted_vals)) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True, help="h2load --log-file output")
    ap.add_argument("--from", dest="t_from", type=int, required=True, help="window start, µs since epoch")
    ap.add_argument("--to", dest="t_to", type=int, required=True, help="window end, µs since epoch")
    args = ap.parse_args()

    durations, errors, bad_lines = [], 0, 0
    with open(args.log) as f:
        for line in f:
            p = line.split("\t")
            try:
                start, status, dur = int(p[0]), int(p[1]), int(p[2])
            except (IndexError, ValueError):
                bad_lines += 1
                continue
            if not args.t_from <= start < args.t_to:
                continue
            durations.append(dur)
            if not 200 <= status < 300:
                errors += 1
    if bad_lines:
        print(f"latency.py: {bad_lines} unparsable lines in {args.log}", file=sys.stderr)
    if not durations or args.t_to <= args.t_from:
        print("0 0 -1 -1 -1 -1 1")
        return 1
    durations.sort()
    rate = len(durations) / ((args.t_to - args.t_from) / 1e6)
    print(len(durations), f"{rate:.1f}", nearest_rank(durations, 0.50), nearest_rank(durations, 0.99),
          nearest_rank(durations, 0.999), durations[-1], errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
