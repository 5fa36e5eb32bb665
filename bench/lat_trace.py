#!/usr/bin/env python3
"""Reads bench/lat_trace's CSV and separates the machine's stalls from a
server's own latency tail.

A millisecond in which many connections see a slow request at once (12 or
more over 1.6x the median, and its neighbours) is a stall of the machine:
another process ran, an interrupt. Those are dropped; what is left is the
server's own shape. Prints one line: requests/s, stalled ms, percentiles of
the rest, and the share of the rest above 1.6x the median ("structural
slow": requests that waited a whole extra turn of the server's loop).
The first 0.5 s is warm-up and left out.
"""
import sys
from collections import Counter


def main():
    path, label = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
    rows = []
    with open(path) as f:
        for line in f:
            conn, sent, recv = map(int, line.split(","))
            if sent > 500_000_000:
                rows.append((conn, sent, recv))
    if not rows:
        sys.exit("lat_trace.py: no requests after the warm-up")
    lat = sorted(r[2] - r[1] for r in rows)
    med = lat[len(lat) // 2]
    slow = [r for r in rows if r[2] - r[1] > 1.6 * med]
    per_ms = Counter(r[2] // 1_000_000 for r in slow)
    stalled = {ms for ms, k in per_ms.items() if k >= 12}
    stalled |= {ms + 1 for ms in stalled} | {ms - 1 for ms in stalled}
    rest = sorted((r[2] - r[1]) / 1000 for r in rows if r[2] // 1_000_000 not in stalled)
    n = len(rest)

    def pct(p):
        return rest[min(n - 1, int(p / 100 * n))]

    structural = sum(1 for r in slow if r[2] // 1_000_000 not in stalled)
    secs = (rows[-1][2] - rows[0][1]) / 1e9
    print("%s: %.0f req/s, stalled %d ms; the rest: n=%d p50=%.0f p90=%.0f p99=%.0f p99.9=%.0f us, "
          "structural slow %.2f%%" % (label, len(rows) / secs, len(stalled), n, pct(50), pct(90), pct(99),
                                       pct(99.9), 100 * structural / n))


if __name__ == "__main__":
    main()
