"""Rollouts: a real `verge control` and real agent nodes (`verge node
--control`), traffic driven by the test. A gated deployment reaches the
canary first, then the waves, and finishes; a regression (a version whose
route answers 500) is rolled back on every node and `verge deploy --wait`
exits 1 with the reason; `verge rollback` during a rollout cancels it at
once; a control plane killed mid-rollout resumes it; a second deploy of
the same app is refused (409); the new endpoints check their tokens.

The gates read the `stats` the nodes put in their heartbeats. Where the
agent does not report them (yet), a scripted node (FakeNode: registers,
long-polls, reports the version it is given live with the figures the
test chooses) stands beside the real ones, so the gate is still driven by
reports that reach the control plane through its API."""

import json
import subprocess
import threading
import time

import pytest

from harness import http_request, wait_for, write_app
from test_97_control import CRASH_SIGNALS, Control, bundle_of, upload  # noqa: F401
from test_98_agent import start_node

OK_APP = """\
name: web
rollout: {%s}
routes:
  - exact: /v
    respond: {body: "%s\\n"}
"""

BAD_APP = """\
name: web
rollout: {%s}
routes:
  - exact: /v
    respond: {status: 500, body: "%s broken\\n"}
"""


@pytest.fixture
def plane(tmp_path, verge_bin):
    c = Control(verge_bin, tmp_path / "cp", tmp_path / "cp-data").start()

    class Plane:
        control = c
        admin = c.admin_token()
        node_token = c.make_token("nodes", "node", admin)

        @staticmethod
        def version(tag, rollout="", bad=False):
            d = tmp_path / ("src-" + tag)
            write_app(d, (BAD_APP if bad else OK_APP) % (rollout, tag))
            sha, data = bundle_of(verge_bin, d, tmp_path / ("%s.tgz" % tag))
            r = upload(c, Plane.admin, "web", data)
            assert r.status in (200, 201), r
            return sha, d

        @staticmethod
        def set_now(sha):
            r = c.req("PUT", "/v1/apps/web/desired", Plane.admin, {"version": sha})
            assert r.status == 200, r
            return r.json()

        @staticmethod
        def start(sha, token=None):
            return c.req("POST", "/v1/apps/web/deployments", token or Plane.admin, {"version": sha})

        @staticmethod
        def dep(i):
            r = c.req("GET", "/v1/apps/web/deployments/%d" % i, Plane.admin)
            assert r.status == 200, r
            return r.json()

        @staticmethod
        def nodes():
            return c.req("GET", "/v1/nodes", Plane.admin).json()["nodes"]

        @staticmethod
        def cli(*args, timeout=60):
            return subprocess.run([str(verge_bin)] + list(args) + ["--control", c.url, "--token", Plane.admin],
                                  capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    yield Plane
    rc = c.stop()
    assert not (rc is not None and rc < 0 and -rc in CRASH_SIGNALS), c.logs()


def body(v):
    try:
        r = http_request(v.port, "GET", "/v", timeout=2)
        return r.body.decode().split()[0] if r.status in (200, 500) else r.status
    except OSError:
        return None


def live(plane, node_id):
    for n in plane.nodes():
        if n["id"] == node_id:
            return ((n.get("report") or {}).get("apps", {}).get("web") or {}).get("version")
    return None


def reports_stats(plane, node_id):
    for n in plane.nodes():
        if n["id"] == node_id:
            return "stats" in (((n.get("report") or {}).get("apps") or {}).get("web") or {})
    return False


class Traffic(threading.Thread):
    """Requests to every node in turn until stopped; counts answers."""

    def __init__(self, nodes):
        super().__init__(daemon=True)
        self.nodes, self.stop_ev, self.answers = nodes, threading.Event(), {}

    def run(self):
        while not self.stop_ev.is_set():
            for v in self.nodes:
                b = body(v)
                self.answers[b] = self.answers.get(b, 0) + 1
            time.sleep(0.005)

    def stop(self):
        self.stop_ev.set()
        self.join(5)


class FakeNode(threading.Thread):
    """A node scripted by the test: it registers, long-polls its desired
    state, reports every version it is given as live at once, and reports
    for it the figures `figures(version)` returns (requests, 5xx)."""

    def __init__(self, plane, node_id, figures):
        super().__init__(daemon=True)
        self.plane, self.id, self.figures = plane, node_id, figures
        self.stop_ev = threading.Event()
        self.version = None
        self.live_since = {}
        self.wakes = []  # (monotonic time, desired version) per long-poll answer
        c = plane.control
        r = c.req("POST", "/v1/nodes/register", plane.node_token, {"id": node_id, "location": "fake"})
        assert r.status == 200, r

    def beat(self):
        apps = {}
        if self.version:
            req, err = self.figures(self.version)
            buckets = [0] * 15
            buckets[1] = req  # (0.5, 1] ms
            apps["web"] = {"version": self.version, "health": "ok", "rps": 1.0,
                           "stats": {"live_since_ms": self.live_since[self.version], "requests": req,
                                     "errors_5xx": err,
                                     "latency_le_ms": [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
                                                       10000],
                                     "latency_counts": buckets}}
        try:
            self.plane.control.req("POST", "/v1/nodes/%s/heartbeat" % self.id, self.plane.node_token, {"apps": apps},
                                   timeout=5)
        except OSError:
            pass

    def run(self):
        since = 0
        last_beat = 0
        while not self.stop_ev.is_set():
            try:
                r = self.plane.control.req("GET", "/v1/nodes/%s/desired?since=%d&wait=1" % (self.id, since),
                                           self.plane.node_token, timeout=5)
            except OSError:
                time.sleep(0.1)
                continue
            if r.status == 200:
                d = r.json()
                since = d["rev"]
                v = next((a["version"] for a in d["apps"] if a["app"] == "web"), None)
                self.wakes.append((time.monotonic(), v))
                if v and v != self.version:
                    self.version = v
                    self.live_since[v] = int(time.time() * 1000)
                    self.beat()
            if time.monotonic() - last_beat > 0.3:
                self.beat()
                last_beat = time.monotonic()

    def stop(self):
        self.stop_ev.set()
        self.join(5)


def fleet(verge, plane, tmp_path, ids):
    nodes = {i: start_node(verge, plane, tmp_path, node_id=i) for i in ids}
    return nodes


def all_serve(nodes, tag):
    return all(body(v) == tag for v in nodes.values())


def test_clean_rollout_goes_canary_then_waves_then_done(verge, plane, tmp_path):
    v1, _ = plane.version("v1")
    plane.set_now(v1)
    nodes = fleet(verge, plane, tmp_path, ["a", "b", "c", "d"])
    assert wait_for(lambda: all_serve(nodes, "v1"), 15), {k: body(v) for k, v in nodes.items()}
    assert wait_for(lambda: all(live(plane, i) == v1 for i in nodes), 10)
    stats = reports_stats(plane, "a")
    # with stats the gate needs traffic, which the test drives; without, time alone.
    # The latency gate is left wide: a few hundred requests' p99 on a busy
    # machine moves 3x between nodes, and this test is about the steps (the
    # gate's verdicts have their own tests)
    v2, src2 = plane.version("v2", "canary: 1, waves: [50, 100], window: 2s, min_requests: %d, max_p99_ratio: 50"
                             % (5 if stats else 0))
    traffic = Traffic(list(nodes.values()))
    traffic.start()
    try:
        r = plane.start(v2)
        assert r.status == 201, r
        dep = r.json()
        assert dep["state"] == "rolling" and dep["strategy"] == "gated" and dep["previous_version"] == v1
        assert r.headers.get("location") == "/v1/apps/web/deployments/%d" % dep["id"]
        assert [s["name"] for s in dep["steps"]] == ["canary", "wave 1", "wave 2"]
        # the canary alone (node ids in order: a) serves v2 while the window runs
        assert wait_for(lambda: body(nodes["a"]) == "v2", 10)
        assert [body(nodes[i]) for i in "bcd"] == ["v1", "v1", "v1"]
        d = plane.dep(dep["id"])
        assert d["step"] == 1 and d["steps"][0]["nodes"] == ["a"], d
        assert {n["id"]: n["target"] for n in d["nodes"]} == {"a": v2, "b": v1, "c": v1, "d": v1}
        # wave 1 (50%: a and b), then everyone
        assert wait_for(lambda: plane.dep(dep["id"])["state"] == "done", 30), plane.dep(dep["id"])
    finally:
        traffic.stop()
    d = plane.dep(dep["id"])
    assert [s["state"] for s in d["steps"]] == ["passed"] * 3, d["steps"]
    assert d["steps"][1]["nodes"] == ["a", "b"] and d["steps"][2]["nodes"] == ["a", "b", "c", "d"]
    for s in d["steps"]:
        assert s["gate"]["verdict"] == "pass" and s["ended_at"] - s["live_at"] >= 2000, s
    assert d["steps"][0]["ended_at"] <= d["steps"][1]["started_at"] <= d["steps"][1]["live_at"]
    if stats:
        assert d["steps"][0]["gate"]["new"]["requests"] >= 5
    assert wait_for(lambda: all_serve(nodes, "v2"), 10)
    app = plane.control.req("GET", "/v1/apps/web", plane.admin).json()
    assert app["desired"]["version"] == v2 and app["desired"]["deployment"] == dep["id"]
    h = plane.control.req("GET", "/v1/history?app=web", plane.admin).json()["history"]
    assert [e["action"] for e in h[:3]] == ["desired.set", "deployment.done", "deployment.start"], h[:3]
    lst = plane.control.req("GET", "/v1/apps/web/deployments", plane.admin).json()["deployments"]
    assert [x["state"] for x in lst[:2]] == ["done", "superseded"] and lst[0]["id"] == dep["id"]
    # the same version again: nothing to do
    r = plane.start(v2)
    assert r.status == 200 and r.json()["changed"] is False


def test_regression_rolls_back_every_node_and_deploy_wait_exits_1(verge, plane, tmp_path):
    v1, _ = plane.version("v1")
    plane.set_now(v1)
    nodes = fleet(verge, plane, tmp_path, ["b", "c", "d"])
    assert wait_for(lambda: all_serve(nodes, "v1"), 15)
    assert wait_for(lambda: all(live(plane, i) == v1 for i in nodes), 10)
    fake = None
    if not reports_stats(plane, "b"):
        # the agent reports no stats: a scripted canary reports the new
        # version's 5xx (every request fails) and the old one's (none)
        fake = FakeNode(plane, "a", lambda v: (50, 50) if v != v1 else (50, 0))
        fake.start()
        assert wait_for(lambda: live(plane, "a") == v1, 5)
    rollout = "canary: 2, waves: [100], window: 1s, min_requests: 10, max_error_rate: 0.05"
    v2, src2 = plane.version("v2", rollout, bad=True)
    traffic = Traffic(list(nodes.values()))
    traffic.start()
    try:
        t0 = time.monotonic()
        p = plane.cli("deploy", str(src2), "--wait")
        took = time.monotonic() - t0
    finally:
        traffic.stop()
        if fake:
            fake.stop()
    out, err = p.stdout.decode(), p.stderr.decode()
    print(out, err)
    assert p.returncode == 1, (out, err)
    assert "rolled back" in err and "5xx rate" in err, err
    assert "canary" in out, out
    assert took < 30
    # every node is back on v1 and the deployment says why
    assert wait_for(lambda: all_serve(nodes, "v1"), 10), {k: body(v) for k, v in nodes.items()}
    lst = plane.control.req("GET", "/v1/apps/web/deployments", plane.admin).json()["deployments"]
    d = plane.dep(lst[0]["id"])
    assert d["state"] == "rolled_back" and "5xx rate" in d["reason"] and "canary" in d["reason"], d
    assert d["steps"][0]["state"] == "failed" and d["steps"][0]["gate"]["verdict"] == "fail"
    assert d["steps"][0]["gate"]["new"]["error_rate"] > 0.05
    assert all(n["target"] == v1 for n in d["nodes"]), d["nodes"]
    assert wait_for(lambda: all(live(plane, i) == v1 for i in nodes), 10)
    assert plane.control.req("GET", "/v1/apps/web", plane.admin).json()["desired"]["version"] == v1
    h = plane.control.req("GET", "/v1/history?app=web", plane.admin).json()["history"]
    assert h[0]["action"] == "deployment.rollback" and h[0]["detail"]["back_to"] == v1, h[0]
    # the canary nodes (a, b) did run v2 before going back
    assert "b" in d["steps"][0]["nodes"]


def test_manual_rollback_during_a_rollout_is_immediate_and_complete(verge, plane, tmp_path):
    v1, _ = plane.version("v1")
    plane.set_now(v1)
    nodes = fleet(verge, plane, tmp_path, ["a", "b", "c"])
    assert wait_for(lambda: all_serve(nodes, "v1"), 15)
    v2, _ = plane.version("v2", "canary: 2, window: 60s, min_requests: 0, max_p99_ratio: 50")
    r = plane.start(v2)
    assert r.status == 201
    dep = r.json()["id"]
    assert wait_for(lambda: body(nodes["a"]) == "v2" and body(nodes["b"]) == "v2", 10)
    assert body(nodes["c"]) == "v1"
    t0 = time.monotonic()
    p = plane.cli("rollback", "web", "--wait")
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert all_serve(nodes, "v1"), {k: body(v) for k, v in nodes.items()}
    assert took < 5, took
    d = plane.dep(dep)
    assert d["state"] == "superseded" and "superseded by" in d["reason"], d
    assert plane.control.req("GET", "/v1/apps/web", plane.admin).json()["desired"]["version"] == v1
    h = [e["action"] for e in plane.control.req("GET", "/v1/history?app=web", plane.admin).json()["history"][:2]]
    assert h == ["desired.set", "deployment.cancel"], h
    time.sleep(0.5)  # nothing moves any more
    assert all_serve(nodes, "v1")
    assert plane.dep(dep)["state"] == "superseded"


def test_control_plane_killed_mid_rollout_resumes(verge, plane, tmp_path):
    v1, _ = plane.version("v1")
    plane.set_now(v1)
    nodes = fleet(verge, plane, tmp_path, ["a", "b", "c"])
    assert wait_for(lambda: all_serve(nodes, "v1"), 15)
    v2, _ = plane.version("v2", "canary: 1, waves: [100], window: 3s, min_requests: 0, max_p99_ratio: 50")
    dep = plane.start(v2).json()["id"]
    assert wait_for(lambda: body(nodes["a"]) == "v2", 10)
    assert wait_for(lambda: plane.dep(dep)["steps"][0]["state"] == "observing", 10)
    plane.control.kill()
    assert body(nodes["a"]) == "v2" and body(nodes["b"]) == "v1"  # nodes keep serving
    time.sleep(0.5)
    plane.control.start()
    assert plane.dep(dep)["state"] in ("rolling", "done")
    assert wait_for(lambda: plane.dep(dep)["state"] == "done", 30), plane.dep(dep)
    assert wait_for(lambda: all_serve(nodes, "v2"), 15), {k: body(v) for k, v in nodes.items()}
    d = plane.dep(dep)
    assert [s["state"] for s in d["steps"]] == ["passed", "passed"]
    assert d["steps"][0]["nodes"] == ["a"]


def test_second_deploy_of_the_app_is_refused_while_one_rolls(plane, tmp_path):
    v1, _ = plane.version("v1")
    plane.set_now(v1)
    a = FakeNode(plane, "a", lambda v: (0, 0))
    a.start()
    try:
        assert wait_for(lambda: live(plane, "a") == v1, 5)
        v2, _ = plane.version("v2", "window: 60s, min_requests: 0, max_p99_ratio: 50")
        v3, src3 = plane.version("v3")
        n = len(a.wakes)
        t0 = time.monotonic()
        r = plane.start(v2)
        assert r.status == 201, r
        dep = r.json()["id"]
        # the canary's long poll wakes with the new version within 100 ms
        assert wait_for(lambda: any(v == v2 for _, v in a.wakes[n:]), 2)
        woke = next(t for t, v in a.wakes[n:] if v == v2) - t0
        assert woke < 0.1, woke
        r = plane.start(v3)
        assert r.status == 409, r
        msg = r.json()["error"]
        assert "rollout in progress" in msg and str(dep) in msg and "verge rollback web" in msg, msg
        p = plane.cli("deploy", str(src3))
        assert p.returncode == 1 and b"rollout in progress" in p.stderr, p.stderr
        assert plane.dep(dep)["state"] == "rolling"
        lst = plane.control.req("GET", "/v1/apps/web/deployments", plane.admin).json()["deployments"]
        assert lst[0]["id"] == dep and lst[0]["state"] == "rolling"  # the refused ones left no row
    finally:
        a.stop()


def test_deployment_endpoints_check_tokens_and_input(plane, tmp_path):
    c = plane.control
    v1, _ = plane.version("v1")
    read = c.make_token("reader", "read", plane.admin)
    deploy = c.make_token("ci", "deploy", plane.admin)
    assert c.req("POST", "/v1/apps/web/deployments", None, {"version": v1}).status == 401
    assert c.req("POST", "/v1/apps/web/deployments", "vgt_" + "0" * 64, {"version": v1}).status == 401
    assert c.req("POST", "/v1/apps/web/deployments", read, {"version": v1}).status == 403
    assert c.req("POST", "/v1/apps/web/deployments", plane.node_token, {"version": v1}).status == 403
    assert c.req("GET", "/v1/apps/web/deployments", None).status == 401
    assert c.req("GET", "/v1/apps/web/deployments", plane.node_token).status == 403
    assert c.req("GET", "/v1/apps/web/deployments/1", None).status == 401
    assert c.req("POST", "/v1/apps/web/deployments", deploy, {"version": "abc"}).status == 400
    assert c.req("POST", "/v1/apps/web/deployments", deploy, {"version": "a" * 64}).status == 404
    assert c.req("POST", "/v1/apps/nope/deployments", deploy, {"version": v1}).status == 404
    assert c.req("POST", "/v1/apps/web/deployments", deploy, b"{", ctype="application/json").status == 400
    assert c.req("GET", "/v1/apps/nope/deployments", read).status == 404
    assert c.req("GET", "/v1/apps/web/deployments/999", read).status == 404
    assert c.req("GET", "/v1/apps/web/deployments/x", read).status == 404
    assert c.req("DELETE", "/v1/apps/web/deployments", deploy).status == 405
    # a first deployment with no node up finishes at once
    r = c.req("POST", "/v1/apps/web/deployments", deploy, {"version": v1})
    assert r.status == 201, r
    d = plane.dep(r.json()["id"])
    assert d["state"] == "done" and d["created_by"] == "ci" and d["previous_version"] is None, d
    assert c.req("GET", "/v1/apps/web/deployments", read).json()["deployments"][0]["state"] == "done"
