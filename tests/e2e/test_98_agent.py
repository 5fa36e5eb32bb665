"""The node agent (`verge node --control`): a real `verge control` and real
nodes; versions go live on desired-state changes within a long poll, the
switch fails no request, corrupt bundles are refused and reported, and a
node keeps (and after a restart, brings back) its last known good versions
while the control plane is away."""

import json
import threading
import time

import pytest

from harness import free_port, http_request, wait_for, write_app
from test_97_control import Control, CRASH_SIGNALS, bundle_of, upload  # noqa: F401 (fixture helpers)

APP = """\
name: web
rollout: {window: 0s, min_requests: 0}
routes:
  - exact: /v
    respond: {body: "%s\\n"}
  - exact: /boom
    respond: {status: 500, body: "boom\\n"}
"""


def version_dir(tmp_path, tag):
    d = tmp_path / ("src-" + tag)
    write_app(d, APP % tag)
    return d


@pytest.fixture
def plane(tmp_path, verge_bin):
    """A control plane with a node token; .deploy(tag) uploads and makes it desired."""
    c = Control(verge_bin, tmp_path / "cp", tmp_path / "cp-data").start()

    class Plane:
        control = c
        admin = c.admin_token()
        r = c.req("POST", "/v1/tokens", admin, {"name": "nodes", "scope": "node"})
        assert r.status in (200, 201), r
        node_token = r.json()["secret"] if "secret" in r.json() else r.json()["token"]

        @staticmethod
        def version(tag):
            sha, data = bundle_of(verge_bin, version_dir(tmp_path, tag), tmp_path / ("%s.tgz" % tag))
            r = upload(c, Plane.admin, "web", data)
            assert r.status in (200, 201), r
            return sha

        @staticmethod
        def deploy(tag):
            sha = Plane.version(tag)
            r = c.req("PUT", "/v1/apps/web/desired", Plane.admin, {"version": sha})
            assert r.status == 200, r
            return sha

        @staticmethod
        def node_report(node_id):
            r = c.req("GET", "/v1/nodes", Plane.admin)
            for n in r.json()["nodes"]:
                if n["id"] == node_id:
                    return (n.get("report") or {}).get("apps", {}).get("web", {})
            return {}

    yield Plane
    rc = c.stop()
    assert not (rc is not None and rc < 0 and -rc in CRASH_SIGNALS), c.logs()


def start_node(verge, plane, tmp_path, node_id="n1", port=None):
    return verge(None, args=["--control", plane.control.url, "--token", plane.node_token, "--node-id", node_id,
                             "--location", "fra", "--data", str(tmp_path / ("data-" + node_id))],
                 ports=[port] if port else None, apps=[])


def body(v):
    try:
        r = http_request(v.port, "GET", "/v", timeout=2)
        return r.body.decode().strip() if r.status == 200 else r.status
    except OSError:
        return None


def test_node_runs_what_is_deployed_and_switches_without_a_failed_request(verge, plane, tmp_path):
    plane.deploy("v1")
    v = start_node(verge, plane, tmp_path)
    assert wait_for(lambda: body(v) == "v1", 10), body(v)
    assert wait_for(lambda: plane.node_report("n1").get("version"), 10)

    failures, seen, stop = [], set(), threading.Event()

    def load():
        while not stop.is_set():
            b = body(v)
            if b not in ("v1", "v2"):
                failures.append(b)
            seen.add(b)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        sha2 = plane.deploy("v2")
        assert wait_for(lambda: body(v) == "v2", 10)
        took = time.monotonic() - t0
        time.sleep(0.2)
    finally:
        stop.set()
        t.join()
    assert not failures, failures[:5]
    assert seen == {"v1", "v2"}
    print("deploy to live on the node: %.0f ms" % (took * 1000))
    assert took < 2.0
    assert wait_for(lambda: plane.node_report("n1").get("version") == sha2, 10), plane.node_report("n1")


def test_corrupt_bundle_is_refused_and_reported_old_version_serves(verge, plane, tmp_path):
    plane.deploy("v1")
    v = start_node(verge, plane, tmp_path)
    assert wait_for(lambda: body(v) == "v1", 10)
    sha2 = plane.version("v2")
    stored = plane.control.data / "bundles" / ("%s.tar.gz" % sha2)
    assert stored.exists(), list((plane.control.data / "bundles").iterdir())
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # what the node downloads no longer matches its name
    stored.write_bytes(bytes(data))
    r = plane.control.req("PUT", "/v1/apps/web/desired", plane.admin, {"version": sha2})
    assert r.status == 200
    assert wait_for(lambda: plane.node_report("n1").get("failed_version") == sha2, 10), plane.node_report("n1")
    rep = plane.node_report("n1")
    assert "sha256" in rep["error"] or "corrupt" in rep["error"], rep
    assert body(v) == "v1"
    assert any("version refused" in (rec.get("msg") or "") for rec in v.log_records())


def test_control_plane_away_node_keeps_serving_and_restarts_on_last_known_good(verge, plane, tmp_path):
    plane.deploy("v1")
    port = free_port()
    v = start_node(verge, plane, tmp_path, port=port)
    assert wait_for(lambda: body(v) == "v1", 10)
    plane.control.kill()
    time.sleep(0.3)
    assert body(v) == "v1"
    v.stop()
    v2 = start_node(verge, plane, tmp_path, port=port)  # control still down
    assert body(v2) == "v1"
    assert any("unreachable" in (rec.get("msg") or "") for rec in v2.log_records()) or wait_for(
        lambda: any("unreachable" in (rec.get("msg") or "") for rec in v2.log_records()), 5)
    plane.control.start()  # same data: the node reconciles
    plane.deploy("v3")
    assert wait_for(lambda: body(v2) == "v3", 15), body(v2)


def test_two_nodes_follow_one_deploy(verge, plane, tmp_path):
    plane.deploy("v1")
    a = start_node(verge, plane, tmp_path, node_id="a")
    b = start_node(verge, plane, tmp_path, node_id="b")
    assert wait_for(lambda: body(a) == "v1" and body(b) == "v1", 10)
    plane.deploy("v2")
    assert wait_for(lambda: body(a) == "v2" and body(b) == "v2", 10)
    r = plane.control.req("GET", "/v1/nodes", plane.admin)
    assert {n["id"] for n in r.json()["nodes"]} >= {"a", "b"}


def cli(verge_bin, plane, *args):
    import subprocess
    return subprocess.run([str(verge_bin)] + list(args) + ["--control", plane.control.url, "--token", plane.admin],
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def test_cli_deploy_wait_rollback_status(verge, plane, tmp_path, verge_bin):
    v = start_node(verge, plane, tmp_path)
    p = cli(verge_bin, plane, "deploy", str(version_dir(tmp_path, "v1")), "--wait")
    assert p.returncode == 0, p.stderr
    assert b"every node runs web@" in p.stdout and b"n1" in p.stdout
    assert body(v) == "v1"  # --wait returned: the node runs it
    p = cli(verge_bin, plane, "deploy", str(version_dir(tmp_path, "v2")), "--wait", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["app"] == "web" and out["state"] == "done" and out["created"] is True
    assert [(n["id"], n["live"]) for n in out["nodes"]] == [("n1", out["version"])]
    assert body(v) == "v2"
    p = cli(verge_bin, plane, "rollback", "web", "--wait")
    assert p.returncode == 0, p.stderr
    assert body(v) == "v1"
    p = cli(verge_bin, plane, "status")
    assert p.returncode == 0, p.stderr
    line = [l for l in p.stdout.decode().splitlines() if l.startswith("n1")]
    assert line and "web" in line[0] and "fra" in line[0] and " ok" in line[0], p.stdout
    p = cli(verge_bin, plane, "status", "--json")
    assert json.loads(p.stdout)["nodes"][0]["report"]["apps"]["web"]["health"] == "ok"


def test_cli_deploy_refuses_an_invalid_app_with_file_line_col(plane, tmp_path, verge_bin):
    d = tmp_path / "bad"
    write_app(d, "name: web\nroutes:\n  - exact: /v\n    respnd: {body: x}\n")
    p = cli(verge_bin, plane, "deploy", str(d))
    assert p.returncode == 1
    assert b"verge.yaml:4:5:" in p.stderr and b"did you mean 'respond'" in p.stderr, p.stderr


def test_reports_count_what_the_live_version_served(verge, plane, tmp_path):
    """The heartbeat's stats (what rollout gates read) count the live
    version's requests, 5xx and latencies since it went live here."""
    plane.deploy("v1")
    v = start_node(verge, plane, tmp_path)
    assert wait_for(lambda: body(v) == "v1", 10)
    for _ in range(20):
        assert http_request(v.port, "GET", "/v").status == 200
    for _ in range(5):
        assert http_request(v.port, "GET", "/boom").status == 500

    def stats():
        return plane.node_report("n1").get("stats") or {}

    assert wait_for(lambda: stats().get("requests", 0) >= 25, 10), stats()
    st = stats()
    assert st["errors_5xx"] == 5
    assert sum(st["latency_counts"]) == st["requests"] and len(st["latency_counts"]) == len(st["latency_le_ms"]) + 1
    assert st["live_since_ms"] > 0
    sha2 = plane.deploy("v2")
    assert wait_for(lambda: body(v) == "v2", 10)
    # the new version starts from zero (the polls above count as its requests)
    assert wait_for(lambda: plane.node_report("n1").get("version") == sha2 and stats().get("errors_5xx") == 0, 10)
    assert stats()["requests"] < 25 + 50


def test_old_versions_are_pruned_keeping_live_and_previous(verge, plane, tmp_path):
    v = start_node(verge, plane, tmp_path)
    shas = []
    for tag in ("v1", "v2", "v3"):
        shas.append(plane.deploy(tag))
        assert wait_for(lambda: body(v) == tag, 10)
    kept = tmp_path / "data-n1" / "apps" / "web"
    assert wait_for(lambda: sorted(p.name for p in kept.iterdir()) == sorted(shas[1:]), 5), list(kept.iterdir())
    # the live version went on record before the old ones went: no wait
    saved = json.loads((tmp_path / "data-n1" / "agent.json").read_text())
    assert saved["apps"] == {"web": shas[2]}


def test_node_learns_a_change_within_100ms(verge, plane, tmp_path):
    """Long poll, not periodic polling: the agent logs the new version it
    was told about within 100 ms of the PUT that made it desired."""
    import datetime
    plane.deploy("v1")
    v = start_node(verge, plane, tmp_path)
    assert wait_for(lambda: body(v) == "v1", 10)
    time.sleep(0.3)  # the node is parked in its long poll
    sha2 = plane.version("v2")
    t0 = time.time()
    r = plane.control.req("PUT", "/v1/apps/web/desired", plane.admin, {"version": sha2})
    assert r.status == 200

    def learned():
        for rec in v.log_records():
            if rec.get("msg") == "agent: new version" and rec.get("version") == sha2:
                return datetime.datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()
        return None

    assert wait_for(lambda: learned() is not None, 5)
    delay = learned() - t0
    print("desired-state change to the node: %.1f ms" % (delay * 1000))
    assert delay < 0.1, delay


def test_cli_rollback_without_app_takes_the_manifest_here(verge, plane, tmp_path, verge_bin):
    import subprocess
    v = start_node(verge, plane, tmp_path)
    plane.deploy("v1")
    assert wait_for(lambda: body(v) == "v1", 10)
    d2 = version_dir(tmp_path, "v2")
    plane.deploy("v2")
    assert wait_for(lambda: body(v) == "v2", 10)
    p = subprocess.run([str(verge_bin), "rollback", "--wait", "--control", plane.control.url, "--token", plane.admin],
                       capture_output=True, timeout=60, cwd=str(d2), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert body(v) == "v1"
