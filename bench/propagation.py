#!/usr/bin/python3
"""verge.kv global propagation against raw NATS KV (bench/README.md
"propagation").

Per fleet size N: one nats-server with JetStream (a temporary store, a free
port) and N `verge node --workers 1 --nats URL` processes on 127.0.0.1, one
app whose Lua handler does verge.kv.set(key, value, {scope = "global"}).
Then, in each of --runs rounds (who goes first alternates):

  verge  one request to node 0 whose Lua handler makes --writes
         verge.kv.set calls, --interval-ms apart (verge.sleep); every other
         node logs, at debug level, each live write it applies to its
         replica with the exact lag: its wall clock at the apply minus the
         write time the writer put in the record just before its
         kvStore_Put ("state: replica applied", lag_us). Lua reads that
         replica, so this is kv.set -> visible to Lua on that node. The
         samples are every (write, other node) pair.
  raw    bench/kv_peer (libnats): one writer, N-1 watchers, each a
         process with its own connection, the same number of puts at the
         same interval; each watcher records its wall clock when
         kvWatcher_Next hands it the entry minus the time taken just before
         kvStore_Put, then writes the same log line as verge's (the
         instrument costs both sides one write(2) per entry;
         --peer-no-log leaves it out). One more watcher, not measured,
         stands for the writing node's own: verge's node 0 watches its
         bucket too, so the server delivers each write N times on both
         sides.

Both sides write the same fixed set of --keys keys (write i to key
i mod keys): nats-server 2.9 delivers an entry to a watcher later the more
subjects the bucket holds, so the two must compare at equal bucket sizes.
Rounds are short and interleaved (ABBA...) so that the load of a shared
machine hits both sides alike. The figures: p50/p99 (nearest rank) over
every sample of every round, per side, and their ratio; next to it the
median over rounds of each round's p99 ratio against the round beside it.

Then, on node 0, the cost of verge.kv.get: one request runs a loop of
--gets gets of one key in one Lua call, timed with verge.now() around the
loop, for scope="global" (the replica) and scope="local" (LMDB), rounds
alternating; ns per get, medians.

nats-server is pinned to CPU 0 with this driver, the nodes and kv_peer to
CPU 1 (--server-cpu / --node-cpu). Every process is started by us and
stopped by pid."""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MANIFEST = """name: prop
limits: {lua_timeout: 600s}
routes:
  - exact: /set
    handler: prop.lua:set
  - exact: /setloop
    handler: prop.lua:setloop
  - exact: /getloop
    handler: prop.lua:getloop
"""
LUA = r"""
function set(req)
  local ok, err = verge.kv.set(req.query.k, req.query.v, {scope = req.query.scope or "global"})
  return {status = ok and 200 or 500, body = tostring(err or "ok") .. "\n"}
end

-- n global writes to TAG.(i mod keys), ms apart, from one call: the writer's
-- side is a loop of kv.set as kv_peer's is a loop of kvStore_Put (no HTTP
-- request per write competing with the fan-out)
function setloop(req)
  local n = math.tointeger(tonumber(req.query.n))
  local pause = tonumber(req.query.ms) / 1000
  local keys = math.tointeger(tonumber(req.query.keys))
  for i = 0, n - 1 do
    local ok, err = verge.kv.set(req.query.tag .. "." .. (i % keys), "x" .. i, {scope = "global"})
    if not ok then return {status = 500, body = err .. "\n"} end
    verge.sleep(pause)
  end
  return {body = "ok\n"}
end

-- n gets of one key in one call; ns per get
function getloop(req)
  local n = math.tointeger(tonumber(req.query.n)) or 100000
  local o = {scope = req.query.scope}
  local k = req.query.k
  local get = verge.kv.get
  assert(get(k, o) ~= nil, "the key is not there")
  local t0 = verge.now()
  for _ = 1, n do get(k, o) end
  local t1 = verge.now()
  return {body = string.format("%.1f\n", (t1 - t0) * 1e9 / n)}
end
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(port, path, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def pct(xs, p):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))
    return xs[k]


class Fleet:
    def __init__(self, a, tmp, n):
        self.a, self.tmp, self.procs, self.nodes = a, tmp, [], []
        self.nport = free_port()
        self.url = "nats://127.0.0.1:%d" % self.nport
        self.spawn(["taskset", "-c", str(a.server_cpu), "nats-server", "-a", "127.0.0.1", "-p", str(self.nport),
                    "-js", "-sd", os.path.join(tmp, "js")], "nats")
        self.wait_port(self.nport)
        app = os.path.join(tmp, "app")
        os.makedirs(app, exist_ok=True)
        with open(os.path.join(app, "verge.yaml"), "w") as f:
            f.write(MANIFEST)
        with open(os.path.join(app, "prop.lua"), "w") as f:
            f.write(LUA)
        for i in range(n):
            port = free_port()
            name = "node%02d" % i
            self.spawn(["taskset", "-c", str(a.node_cpu), a.verge, "node", "--app", app, "--listen",
                        "127.0.0.1:%d" % port, "--workers", "1", "--access-log", "off", "--log-level", "debug",
                        "--nats", self.url, "--node-id", name, "--state-dir", os.path.join(tmp, "state-" + name)],
                       name)
            self.nodes.append((port, os.path.join(tmp, name + ".log")))
        for port, _ in self.nodes:
            self.wait_ready(port)

    def spawn(self, argv, name):
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                             start_new_session=True)
        self.procs.append(p)
        return p

    @staticmethod
    def wait_port(port):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nothing listens on %d" % port)

    @staticmethod
    def wait_ready(port):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if get(port, "/_verge/health", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("node on %d not ready" % port)

    def verge_round(self, tag):
        """Lags (µs) of every (write, other node) pair of one round."""
        offsets = [os.path.getsize(logf) for _, logf in self.nodes[1:]]
        st, body = get(self.nodes[0][0], "/setloop?tag=%s&n=%d&ms=%d&keys=%d" % (
            tag, self.a.writes, self.a.interval_ms, self.a.keys), timeout=600)
        if st != 200:
            raise RuntimeError("kv.set failed: %s" % body)
        lags, deadline = [], time.monotonic() + 10
        for (_, logf), off in zip(self.nodes[1:], offsets):
            while True:
                mine = []
                with open(logf, "rb") as f:
                    f.seek(off)
                    for line in f:
                        if b'"state: replica applied"' not in line:
                            continue
                        r = json.loads(line)
                        if r["key"].startswith(tag + "."):
                            mine.append(int(r["lag_us"]))
                if len(mine) >= self.a.writes or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if len(mine) < self.a.writes:
                raise RuntimeError("%s applied %d of %d writes" % (logf, len(mine), self.a.writes))
            lags += mine
        return lags

    def raw_round(self):
        p = subprocess.run(["taskset", "-c", str(self.a.node_cpu), self.a.peer, self.url, str(len(self.nodes) - 1),
                            str(self.a.writes), str(self.a.interval_ms), str(self.a.keys),
                            "-" if self.a.peer_no_log else self.tmp, "1"],
                           capture_output=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError("kv_peer: %s" % p.stderr.decode())
        return [int(x) for x in p.stdout.split()]

    def get_cost(self, scope):
        st, body = get(self.nodes[0][0], "/getloop?scope=%s&k=getbench&n=%d" % (scope, self.a.gets))
        if st != 200:
            raise RuntimeError("getloop: %s" % body)
        return float(body)

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def summary(rounds, pooled):
    return {"p50_us": pct(pooled, 50), "p99_us": pct(pooled, 99), "p999_us": pct(pooled, 99.9),
            "max_us": max(pooled), "samples": len(pooled),
            "round_p50_median_us": statistics.median(r["p50"] for r in rounds),
            "round_p99_median_us": statistics.median(r["p99"] for r in rounds)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verge", default=os.path.join(REPO, os.environ.get("BUILD", "build"), "verge"))
    ap.add_argument("--peer", default=os.path.join(REPO, os.environ.get("BUILD", "build"), "bench", "kv_peer"))
    ap.add_argument("--nodes", default="10,30")
    ap.add_argument("--writes", type=int, default=100)
    ap.add_argument("--interval-ms", type=int, default=10)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--peer-no-log", action="store_true",
                    help="kv_peer's watchers do not write verge's per-entry log line (the instrument)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--gets", type=int, default=100000)
    ap.add_argument("--get-runs", type=int, default=5)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--node-cpu", type=int, default=1)
    ap.add_argument("--json", default=os.path.join(REPO, "bench", "results", "propagation.json"))
    a = ap.parse_args()
    os.sched_setaffinity(0, {a.server_cpu})
    results = {"config": {"writes": a.writes, "interval_ms": a.interval_ms, "keys": a.keys, "runs": a.runs,
                          "peer_logs": not a.peer_no_log,
                          "gets": a.gets, "get_runs": a.get_runs},
               "propagation": {}, "get_ns": {}}
    for n in [int(x) for x in a.nodes.split(",")]:
        tmp = tempfile.mkdtemp(prefix="verge-bench-prop.")
        fleet = None
        try:
            fleet = Fleet(a, tmp, n)
            vr, rr, vall, rall = [], [], [], []
            for r in range(a.runs):
                order = ("verge", "raw") if r % 2 == 0 else ("raw", "verge")
                for who in order:
                    lags = fleet.verge_round("p") if who == "verge" else fleet.raw_round()
                    rec = {"p50": pct(lags, 50), "p99": pct(lags, 99), "max": max(lags), "n": len(lags)}
                    (vr if who == "verge" else rr).append(rec)
                    (vall if who == "verge" else rall).extend(lags)
                    print("  N=%d round %d %-5s p50 %5d us  p99 %6d us  max %6d us  (%d samples)" % (
                        n, r, who, rec["p50"], rec["p99"], rec["max"], rec["n"]), flush=True)
            res = {"verge": summary(vr, vall), "raw_nats": summary(rr, rall),
                   "rounds": {"verge": vr, "raw_nats": rr}}
            res["p99_ratio"] = round(res["verge"]["p99_us"] / res["raw_nats"]["p99_us"], 3)
            res["p50_ratio"] = round(res["verge"]["p50_us"] / res["raw_nats"]["p50_us"], 3)
            res["p99_ratio_paired_median"] = round(statistics.median(v["p99"] / r["p99"] for v, r in zip(vr, rr)), 3)
            results["propagation"][n] = res
            if n == min(int(x) for x in a.nodes.split(",")):
                port = fleet.nodes[0][0]
                for scope in ("global", "local"):
                    st, body = get(port, "/set?k=getbench&v=some-value-of-32-bytes-0123456789&scope=" + scope)
                    assert st == 200, body
                time.sleep(0.2)
                g, l = [], []
                for r in range(a.get_runs):
                    for scope in (("global", "local") if r % 2 == 0 else ("local", "global")):
                        (g if scope == "global" else l).append(fleet.get_cost(scope))
                results["get_ns"] = {"global": statistics.median(g), "local": statistics.median(l),
                                     "global_runs": g, "local_runs": l,
                                     "ratio_global_over_local": round(statistics.median(g) / statistics.median(l), 3)}
        finally:
            if fleet:
                fleet.close()
            if not os.environ.get("BENCH_KEEP_TMP"):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print("kept", tmp)
    print()
    print("kv.set on node 0 -> applied on each other node (verge) / kvStore_Put -> watcher (raw NATS KV)")
    print("%d rounds of %d writes %d ms apart each, interleaved; percentiles over every sample of every round;"
          % (a.runs, a.writes, a.interval_ms))
    print("'p99 x pr' = median over rounds of (verge p99 / raw p99 of the round next to it)")
    print("%6s  %10s %10s  %10s %10s  %8s %8s %8s" % ("nodes", "verge p50", "verge p99", "raw p50", "raw p99",
                                                     "p50 x", "p99 x", "p99 x pr"))
    for n, res in results["propagation"].items():
        print("%6d  %8dus %8dus  %8dus %8dus  %8.2f %8.2f %8.2f" % (
            n, res["verge"]["p50_us"], res["verge"]["p99_us"], res["raw_nats"]["p50_us"], res["raw_nats"]["p99_us"],
            res["p50_ratio"], res["p99_ratio"], res["p99_ratio_paired_median"]))
    if results["get_ns"]:
        gn = results["get_ns"]
        print("verge.kv.get from Lua (%d in one call, median of %d): global %.0f ns, local %.0f ns, global/local %.2f"
              % (a.gets, a.get_runs, gn["global"], gn["local"], gn["ratio_global_over_local"]))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(results, f, indent=2)
    print("JSON:", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
