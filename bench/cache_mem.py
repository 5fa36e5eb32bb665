#!/usr/bin/env python3
"""Memory per cached object: fills a server's HTTP cache with N distinct
small objects and reports how much the server's memory grew per object.

    cache_mem.py --port P --pid PID --count N --server verge|nginx [--tmpfs-dir DIR]

1. Warm-up: 2,000 distinct objects under /cache/obj/w<i> (pools, buffers,
   hash tables at working size; these stay cached).
2. "before": memory of PID's process tree.
3. N GETs of /cache/obj/<i> (i = 0..N-1) over --conns keep-alive
   connections, each answer checked (200, --bytes bytes).
4. After 1 s, "after"; then a sample of --sample objects is fetched again
   and counted as hits by the server's own signal (verge: Cache-Status
   "verge; hit"; nginx: X-Cache-Status: HIT). A figure with a hit rate under
   99% is flagged: objects were evicted or never stored, so the memory per
   object means little.

Memory is measured two ways over the process tree (the pid and all its
descendants): the sum of Pss (proportional set size, /proc/PID/smaps_rollup:
shared pages such as nginx's keys_zone, mapped by master, workers, cache
manager and loader, are counted once, split between them) and the sum of
VmRSS (shared pages counted once per process that touched them). Pss is the
headline. Neither includes tmpfs: nginx keeps each cached body in a file,
and with --tmpfs-dir the growth of that directory (du: allocated blocks, 4 KiB
per file at least) is reported separately as tmpfs_bytes_per_obj.

Prints one JSON object on stdout; progress on stderr. Standard library only.
"""

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time


def tree(root):
    """root and all its descendants (by ppid)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
            parent[int(d)] = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    keep = {root}
    changed = True
    while changed:
        changed = False
        for p, pp in parent.items():
            if p not in keep and pp in keep:
                keep.add(p)
                changed = True
    return sorted(keep)


def memory_kib(root):
    """(sum of Pss, sum of VmRSS) over root's tree, KiB."""
    pss = rss = 0
    for pid in tree(root):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss


def du_bytes(path):
    out = subprocess.run(["du", "-s", "-B1", path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


async def fetch_all(port, paths, conns, want_bytes, hit_re=None):
    """GETs every path over `conns` keep-alive connections. Returns
    (ok, errors, hits) — hits counted only when hit_re is given."""
    queue = list(reversed(paths))
    res = {"ok": 0, "err": 0, "hits": 0}

    async def worker():
        reader = writer = None
        while queue:
            path = queue.pop()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET %s HTTP/1.1\r\nHost: bench.test\r\n\r\n" % path.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(m.group(1))) if m else b""
                if status == 200 and len(body) == want_bytes:
                    res["ok"] += 1
                else:
                    res["err"] += 1
                if hit_re is not None and hit_re.search(head):
                    res["hits"] += 1
                if re.search(rb"(?im)^connection:\s*close", head):
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                res["err"] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    return res["ok"], res["err"], res["hits"]


HIT_RE = {
    "nginx": re.compile(rb"(?im)^x-cache-status:\s*hit\b"),
    "varnish": re.compile(rb"(?im)^x-varnish:\s*\d+\s+\d+"),
}
VERGE_HIT_RE = re.compile(rb"(?im)^cache-status:.*verge\s*;\s*hit\b")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--count", type=int, default=200000)
    ap.add_argument("--server", default="verge")
    ap.add_argument("--prefix", default="/cache/obj/")
    ap.add_argument("--bytes", type=int, default=200)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--tmpfs-dir")
    a = ap.parse_args()
    hit_re = HIT_RE.get(a.server, VERGE_HIT_RE)

    def run(paths, check_hits=False):
        return asyncio.run(fetch_all(a.port, paths, a.conns, a.bytes, hit_re if check_hits else None))

    ok, err, _ = run(["%sw%d" % (a.prefix, i) for i in range(2000)])
    if ok == 0:
        print("cache_mem: the warm-up got no valid answer (%d errors)" % err, file=sys.stderr)
        return 1
    time.sleep(0.5)
    pss0, rss0 = memory_kib(a.pid)
    tmp0 = du_bytes(a.tmpfs_dir) if a.tmpfs_dir else 0
    t0 = time.monotonic()
    ok, err, _ = run(["%s%d" % (a.prefix, i) for i in range(a.count)])
    took = time.monotonic() - t0
    print("cache_mem: %s: %d objects in %.1fs (%d errors)" % (a.server, ok, took, err), file=sys.stderr)
    time.sleep(1.0)
    pss1, rss1 = memory_kib(a.pid)
    tmp1 = du_bytes(a.tmpfs_dir) if a.tmpfs_dir else 0
    sample = random.Random(1).sample(range(a.count), min(a.sample, a.count))
    _, _, hits = run(["%s%d" % (a.prefix, i) for i in sample], check_hits=True)
    n = max(ok, 1)
    out = {
        "objects": a.count, "object_bytes": a.bytes, "ok": ok, "errors": err, "fill_seconds": round(took, 2),
        "pss_before_kib": pss0, "pss_after_kib": pss1, "rss_before_kib": rss0, "rss_after_kib": rss1,
        "bytes_per_obj_pss": round((pss1 - pss0) * 1024 / n, 1),
        "bytes_per_obj_rss": round((rss1 - rss0) * 1024 / n, 1),
        "sample": len(sample), "sample_hits": hits,
        "hit_rate_ok": hits >= 0.99 * len(sample),
    }
    if a.tmpfs_dir:
        out["tmpfs_bytes_per_obj"] = round((tmp1 - tmp0) / n, 1)
        out["tmpfs_after_kib"] = tmp1 // 1024
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
