#!/usr/bin/python3
"""Deploy-to-serving and rollback times (bench/README.md "deploy").

Starts one `verge control` and N `verge node --control` agents on
127.0.0.1 (ports from the kernel, data in a temporary directory), then:

  deploy    `verge deploy DIR` (a rollout with canary: 0, waves: [100],
            window: 0s, min_requests: 0) until every node answers GET /v
            with the new version; medians over --runs;
  rollback  a rollout with canary: "50%" and a long window of a version
            whose /v answers 500: once the canary nodes serve it, one of
            them reports 5xx in its heartbeat (a report the bench posts
            with the node's token: the agent's own stats may not exist
            yet), the gate fails, and the time from the control plane's
            detection (the deployment's detected_at) to every node
            answering with the old version again is measured.

Every process is started by us and stopped by pid."""

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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def req(port, method, path, token=None, body=None, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {}
    if token:
        h["Authorization"] = "Bearer " + token
    if body is not None:
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def answer(port):
    try:
        st, data = req(port, "GET", "/v", timeout=2)
        return data.decode().split()[0] if st in (200, 500) and data else None
    except OSError:
        return None


class Bench:
    def __init__(self, verge, tmp):
        self.verge, self.tmp, self.procs = verge, tmp, []
        self.cport = free_port()
        self.url = "http://127.0.0.1:%d" % self.cport
        data = os.path.join(tmp, "cp")
        self.spawn([verge, "control", "--listen", "127.0.0.1:%d" % self.cport, "--data", data], "control")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if req(self.cport, "GET", "/_verge/health")[0] == 200 and os.path.exists(data + "/admin.token"):
                    break
            except OSError:
                pass
            time.sleep(0.05)
        self.admin = open(data + "/admin.token").read().strip()
        st, b = req(self.cport, "POST", "/v1/tokens", self.admin, {"name": "nodes", "scope": "node"})
        assert st == 201, b
        self.node_token = json.loads(b)["secret"]
        self.nodes = {}  # id -> port
        self.n_versions = 0

    def spawn(self, argv, name):
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def add_nodes(self, n):
        for i in range(len(self.nodes), n):
            nid, port = "n%03d" % i, free_port()
            self.spawn([self.verge, "node", "--control", self.url, "--token", self.node_token, "--node-id", nid,
                        "--location", "bench", "--data", os.path.join(self.tmp, "node-" + nid), "--listen",
                        "127.0.0.1:%d" % port, "--workers", "1", "--access-log", "off"], "node-" + nid)
            self.nodes[nid] = port

    def app(self, tag, rollout, status=200):
        d = os.path.join(self.tmp, "app-" + tag)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "verge.yaml"), "w") as f:
            f.write("name: web\nrollout: {%s}\nroutes:\n  - exact: /v\n    respond: {status: %d, body: \"%s\\n\"}\n"
                    % (rollout, status, tag))
        return d

    def cli(self, *args):
        p = subprocess.run([self.verge] + list(args) + ["--control", self.url, "--token", self.admin],
                           capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError("verge %s: %s" % (" ".join(args[:1]), p.stderr.decode()))
        return p

    def wait_all(self, tag, timeout=60):
        """Seconds until every node answers with tag (each polled until it does)."""
        t0 = time.monotonic()
        pending = set(self.nodes)
        while pending and time.monotonic() - t0 < timeout:
            for nid in list(pending):
                if answer(self.nodes[nid]) == tag:
                    pending.discard(nid)
        if pending:
            raise RuntimeError("%d node(s) not on %s after %ss: %s" % (len(pending), tag, timeout, sorted(pending)[:5]))
        return time.monotonic()

    def next_tag(self):
        self.n_versions += 1
        return "v%d" % self.n_versions

    def deploy_once(self):
        tag = self.next_tag()
        d = self.app(tag, "canary: 0, waves: [100], window: 0s, min_requests: 0")
        t0 = time.monotonic()
        self.cli("deploy", d)
        took = self.wait_all(tag) - t0
        self.wait_done()  # the nodes' next heartbeats finish the rollout (not timed)
        return took

    def wait_done(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st, b = req(self.cport, "GET", "/v1/apps/web/deployments?limit=1", self.admin)
            if json.loads(b)["deployments"][0]["state"] != "rolling":
                return
            time.sleep(0.05)
        raise RuntimeError("the rollout did not finish")

    def rollback_once(self):
        good = self.next_tag()
        self.cli("deploy", self.app(good, "canary: 0, window: 0s, min_requests: 0"), "--immediate")
        self.wait_all(good)
        bad = self.next_tag()
        self.cli("deploy", self.app(bad, 'canary: "50%", window: 60s, min_requests: 10', status=500))
        st, b = req(self.cport, "GET", "/v1/apps/web/deployments?limit=1", self.admin)
        dep = json.loads(b)["deployments"][0]
        canary = dep["steps"][0]["nodes"] if dep["steps"][0].get("nodes") else []
        deadline = time.monotonic() + 30
        while not canary and time.monotonic() < deadline:
            time.sleep(0.02)
            canary = json.loads(req(self.cport, "GET", "/v1/apps/web/deployments/%d" % dep["id"], self.admin)[1])[
                "steps"][0].get("nodes", [])
        while time.monotonic() < deadline and not all(answer(self.nodes[n]) == bad for n in canary):
            time.sleep(0.01)
        # the gates watch once every canary node has reported the version live
        while time.monotonic() < deadline and json.loads(
                req(self.cport, "GET", "/v1/apps/web/deployments/%d" % dep["id"], self.admin)[1])["steps"][0][
                    "state"] != "observing":
            time.sleep(0.02)
        on_bad = sum(1 for n in self.nodes if answer(self.nodes[n]) == bad)
        # the regression, as the first canary node's heartbeat reports it
        buckets = [0] * 15
        buckets[1] = 100
        report = {"apps": {"web": {"version": dep["version"], "health": "ok", "rps": 50.0,
                                   "stats": {"live_since_ms": int(time.time() * 1000), "requests": 100,
                                             "errors_5xx": 100,
                                             "latency_le_ms": [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
                                                               5000, 10000], "latency_counts": buckets}}}}
        st, b = req(self.cport, "POST", "/v1/nodes/%s/heartbeat" % canary[0], self.node_token, report)
        assert st == 200, b
        t_back = self.wait_all(good)
        t_back_wall = time.time() - (time.monotonic() - t_back)
        d = json.loads(req(self.cport, "GET", "/v1/apps/web/deployments/%d" % dep["id"], self.admin)[1])
        if d["state"] != "rolled_back":
            raise RuntimeError("not rolled back: %s" % d["state"])
        return t_back_wall - d["detected_at_ms"] / 1000.0, on_bad

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verge", default=os.path.join(REPO, "build", "verge"))
    ap.add_argument("--nodes", default="1,10,50")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rollback-runs", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verge-bench-deploy.")
    b = Bench(a.verge, tmp)
    results = {"deploy_to_serving_ms": {}, "rollback_after_detection_ms": {}}
    try:
        first = True
        for n in [int(x) for x in a.nodes.split(",")]:
            b.add_nodes(n)
            if first:
                b.cli("deploy", b.app(b.next_tag(), "canary: 0"), "--immediate")
                first = False
            b.wait_all("v%d" % b.n_versions, timeout=120)
            times = [b.deploy_once() * 1000 for _ in range(a.runs)]
            results["deploy_to_serving_ms"][n] = {"median": round(statistics.median(times), 1),
                                                  "min": round(min(times), 1), "max": round(max(times), 1),
                                                  "runs": len(times)}
            print("deploy to serving, %2d node(s): median %.0f ms (min %.0f, max %.0f, %d runs)" % (
                n, statistics.median(times), min(times), max(times), len(times)), flush=True)
        n = len(b.nodes)
        if n >= 2 and a.rollback_runs:
            rb = []
            for _ in range(a.rollback_runs):
                t, on_bad = b.rollback_once()
                rb.append(t * 1000)
            results["rollback_after_detection_ms"][n] = {"median": round(statistics.median(rb), 1),
                                                         "max": round(max(rb), 1), "runs": len(rb),
                                                         "canary_nodes": on_bad}
            print("rollback, %d nodes (%d on the bad canary): detection -> every node on the old version: "
                  "median %.0f ms, max %.0f ms (%d runs)" % (n, on_bad, statistics.median(rb), max(rb), len(rb)),
                  flush=True)
    finally:
        b.close()
        if not os.environ.get("BENCH_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "results", "deploy.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
