"""`verge dev` and `verge init`: the whole platform on one machine — a real
`verge control` and N real `verge node --control` pops started by `verge
dev`, the app deployed through the API, redeployed on save (timed), errors
shown as file:line:col while the last good version keeps serving, every
child stopped on Ctrl-C and gone after a SIGKILL of the parent, latency by
distance, and an app scaffolded by `verge init` that passes `verge test`."""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from harness import http_request, wait_for, write_app

APP = """\
name: web
routes:
  - exact: /v
    respond: {body: "%s\\n"}
  - exact: /fn
    handler: lib/edge.lua:hello
  - path: /
    static: public
"""

LUA = """\
function hello(req)
  return {status = 200, body = "%s\\n"}
end
"""


def free_range(n):
    """A base port with base..base+n free on 127.0.0.1."""
    for _ in range(200):
        base = 20000 + (int.from_bytes(os.urandom(2), "big") % 40000)
        socks = []
        try:
            for p in range(base, base + n + 1):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def children_of(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d.name))
    return out


def running(pid):
    """True while pid exists and is not a zombie."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def cmdline(pid):
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
    except OSError:
        return []


class Dev:
    """One `verge dev` process; its stdout and stderr go to files."""

    def __init__(self, verge_bin, workdir, app_dir, pops=1, args=(), json_mode=True):
        self.base = free_range(pops)
        self.argv = [str(verge_bin), "dev", str(app_dir), "--pops", str(pops), "--port", str(self.base)]
        if json_mode:
            self.argv.append("--json")
        self.argv += list(args)
        self.out_path = Path(workdir) / ("dev-%d.out" % self.base)
        self.err_path = Path(workdir) / ("dev-%d.err" % self.base)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        self.ready = None
        self.kids = []  # its children once ready
        self.tmp = None  # their temporary directory

    def stdout(self):
        return self.out_path.read_text(errors="replace")

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def events(self, name=None):
        out = []
        for line in self.stdout().splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if isinstance(j, dict) and (name is None or j.get("event") == name):
                out.append(j)
        return out

    def logs(self):
        return "--- argv: %s\n--- stderr:\n%s\n--- stdout (tail):\n%s" % (
            " ".join(self.argv), self.stderr()[-4000:], self.stdout()[-6000:])

    def wait_ready(self, timeout=30):
        def ready():
            assert self.proc.poll() is None, "verge dev exited with %s\n%s" % (self.proc.returncode, self.logs())
            ev = self.events("ready")
            return ev[0] if ev else None
        self.ready = wait_for(ready, timeout)
        assert self.ready, "not ready after %ds\n%s" % (timeout, self.logs())
        self.kids = children_of(self.proc.pid)
        for k in self.kids:
            argv = cmdline(k)
            for i, a in enumerate(argv[:-1]):
                if a == b"--data":
                    self.tmp = Path(argv[i + 1].decode()).parent
        return self.ready

    def ports(self):
        return [p["port"] for p in self.ready["pops"]]

    def stop(self, sig=signal.SIGINT, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError("verge dev did not stop within %ds\n%s" % (timeout, self.logs()))
        return self.proc.returncode


@pytest.fixture
def dev(tmp_path, verge_bin, monkeypatch):
    started = []
    # the session file `verge trace/logs/top` read: this test's, not the machine's
    monkeypatch.setenv("VERGE_DEV_FILE", str(tmp_path / "dev-session.json"))

    def start(app_dir, pops=1, args=(), json_mode=True, wait=True):
        d = Dev(verge_bin, tmp_path, app_dir, pops, args, json_mode)
        started.append(d)
        if wait:
            d.wait_ready()
        return d

    yield start
    for d in started:
        pids = set(d.kids) | set(children_of(d.proc.pid) if d.proc.poll() is None else [])
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(d.proc.pid, signal.SIGKILL)
                d.proc.wait()
        for pid in pids:  # never leave a child behind, whatever the test did
            if running(pid) and cmdline(pid)[1:2] in ([b"node"], [b"control"]):  # still ours, not a reused pid
                os.kill(pid, signal.SIGKILL)
        if d.tmp and d.tmp.exists():  # a killed verge dev cannot clean up
            subprocess.run(["rm", "-rf", str(d.tmp)])


def body(port, path="/v"):
    try:
        r = http_request(port, "GET", path, timeout=2)
        return r.body.decode().strip() if r.status == 200 else r.status
    except OSError:
        return None


def make_app(tmp_path, tag="v1"):
    return write_app(tmp_path / "app", APP % tag, {"lib/edge.lua": LUA % ("fn-" + tag),
                                                   "public/index.html": "<p>%s</p>\n" % tag})


def test_three_pops_at_distinct_locations_serve_the_app(dev, tmp_path):
    app = make_app(tmp_path)
    d = dev(app, pops=3, json_mode=False, wait=False)
    # the human form: a line per pop with its location and URL
    lines = wait_for(lambda: d.proc.poll() is None and re.findall(
        r"^\s+(pop-\d+)\s+([a-z]{3})\s+(.+?)\s+http://127\.0\.0\.1:(\d+)/", d.stdout(), re.M), 30)
    assert lines and len(lines) == 3, d.logs()
    assert "runs on 3 locations" in d.stdout()
    assert [pop for pop, _, _, _ in lines] == ["pop-1", "pop-2", "pop-3"]
    locations = [loc for _, loc, _, _ in lines]
    assert len(set(locations)) == 3, locations
    ports = [int(p) for _, _, _, p in lines]
    assert ports == [d.base + 1, d.base + 2, d.base + 3]
    for p in ports:
        assert body(p) == "v1"
        assert body(p, "/fn") == "fn-v1"
        assert body(p, "/") == "<p>v1</p>"
    # logs come prefixed with the process; access lines are short
    assert wait_for(lambda: re.search(r"^\[pop-2 %s\] GET /fn 200 [\d.]+ms$" % locations[1], d.stdout(), re.M), 5), \
        d.logs()
    assert re.search(r"^\[control\] info ", d.stdout(), re.M)
    # the control plane knows the pops at their locations
    token = re.search(r"VERGE_TOKEN=(vgt_[0-9a-f]{64})", d.stdout()).group(1)
    r = http_request(d.base, "GET", "/v1/nodes", headers={"Authorization": "Bearer " + token})
    nodes = {n["id"]: n["location"] for n in r.json()["nodes"]}
    assert nodes == {"pop-%d" % (i + 1): loc for i, loc in enumerate(locations)}
    # more than one pop: a nats-server of its own links them (the production engine)
    m = re.search(r"^\s+bus\s+nats://127\.0\.0\.1:(\d+)", d.stdout(), re.M)
    assert m, d.stdout()
    for p in ports:
        metrics = http_request(p, "GET", "/_verge/metrics").body.decode()
        assert re.search(r"^verge_bus_connected 1$", metrics, re.M), metrics[-500:]
    nats_port = int(m.group(1))
    assert d.stop() == 0, d.logs()
    with pytest.raises(OSError):  # stopped with the rest
        socket.create_connection(("127.0.0.1", nats_port), timeout=1).close()


def test_json_ready_document(dev, tmp_path):
    d = dev(make_app(tmp_path), pops=2)
    doc = d.ready
    assert doc["app"] == "web" and re.fullmatch(r"[0-9a-f]{64}", doc["version"])
    assert doc["control"]["url"] == "http://127.0.0.1:%d" % d.base
    assert [p["id"] for p in doc["pops"]] == ["pop-1", "pop-2"]
    for p in doc["pops"]:
        assert p["url"] == "http://127.0.0.1:%d/" % p["port"]
        assert p["city"] and len(p["country"]) == 2 and p["region"]
        assert body(p["port"]) == "v1"
    # every other line is JSON too: logs carry their process
    assert wait_for(lambda: any(e.get("proc") == "pop-1" for e in d.events()), 5)
    assert d.stop() == 0


def test_hot_redeploy_serves_within_one_second(dev, tmp_path):
    app = make_app(tmp_path)
    d = dev(app, pops=2)
    ports = d.ports()
    took = []
    for i, (rel, path, content, want) in enumerate([
            ("verge.yaml", "/v", APP % "v2", "v2"),                           # the manifest
            ("lib/edge.lua", "/fn", LUA % "fn-v3", "fn-v3"),                 # a Lua file in a subdirectory
            ("public/index.html", "/", "<p>v4</p>\n", "<p>v4</p>"),          # a static file
            ("public/new/x.txt", "/new/x.txt", "new dir\n", "new dir"),      # a directory made after the start
    ]):
        f = app / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        time.sleep(0.3)  # apart from the previous change's debounce
        t0 = time.monotonic()
        f.write_text(content)
        ok = wait_for(lambda: all(body(p, path) == want for p in ports), 5, interval=0.01)
        took.append(time.monotonic() - t0)
        assert ok, "change %d (%s) not served: %r\n%s" % (i, rel, [body(p, path) for p in ports], d.logs())
    print("save to served on 2 pops: %s ms" % ", ".join("%.0f" % (t * 1000) for t in took))
    assert max(took) < 1.0, took
    deployed = d.events("deployed")
    assert len(deployed) >= 4, d.logs()
    assert all(e["ms"] < 1000 for e in deployed), deployed
    assert d.stop() == 0


def test_broken_manifest_or_lua_shows_file_line_col_and_old_version_serves(dev, tmp_path):
    app = make_app(tmp_path)
    d = dev(app, pops=2)
    ports = d.ports()
    # a manifest error: caught by the checker before anything is sent
    (app / "verge.yaml").write_text((APP % "v1").replace("respond:", "respnd:"))
    assert wait_for(lambda: re.search(r"verge\.yaml:4:5: .*respnd", d.stderr()), 5), d.logs()
    # a Lua error: refused by the control plane (422), shown the same way
    (app / "verge.yaml").write_text(APP % "v2")
    (app / "lib/edge.lua").write_text("function hello(req)\n  return {status = 200, body = 'x'\nend\n")
    assert wait_for(lambda: re.search(r"lib/edge\.lua:\d+:\d+: ", d.stderr()), 5), d.logs()
    time.sleep(0.3)
    assert [body(p) for p in ports] == ["v1", "v1"]
    assert [body(p, "/fn") for p in ports] == ["fn-v1", "fn-v1"]
    errors = d.events("error")
    assert any(e.get("errors") and e["errors"][0]["file"].endswith("verge.yaml") for e in errors), errors
    assert any(e.get("status") == 422 for e in errors), errors
    assert not d.events("deployed")
    assert d.proc.poll() is None
    # fixed: the stack is still there and takes it
    (app / "lib/edge.lua").write_text(LUA % "fn-v2")
    assert wait_for(lambda: all(body(p, "/fn") == "fn-v2" and body(p) == "v2" for p in ports), 5), d.logs()
    assert d.stop() == 0


def test_ctrl_c_stops_every_child_and_removes_the_temp_dir(dev, tmp_path):
    d = dev(make_app(tmp_path), pops=3)
    kids = d.kids
    assert len(kids) == 5, kids  # the control plane, 3 pops and the nats-server linking them
    assert d.tmp and d.tmp.name.startswith("verge-dev-") and d.tmp.exists(), d.tmp
    t0 = time.monotonic()
    assert d.stop(signal.SIGINT) == 0, d.logs()
    took = time.monotonic() - t0
    assert not [k for k in kids if running(k)], [cmdline(k) for k in kids if running(k)]
    assert not d.tmp.exists()
    assert took < 6, took
    assert "stopped" in d.stdout()  # the children's last lines were shown
    for p in [d.base] + d.ports():  # every port is free again
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))


def test_sigkill_of_verge_dev_takes_the_children_down(dev, tmp_path):
    d = dev(make_app(tmp_path), pops=2)
    kids = d.kids
    assert len(kids) == 4, kids  # the control plane, 2 pops, nats-server
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    gone = wait_for(lambda: not [k for k in kids if running(k)], 5)
    assert gone, [cmdline(k) for k in kids if running(k)]
    # (the fixture removes the temporary directory a killed parent leaves)


def test_latency_far_pop_answers_slower_than_near_one(dev, tmp_path):
    d = dev(make_app(tmp_path), pops=3, args=["--latency"])
    pops = d.ready["pops"]
    assert d.ready["from"] == pops[0]["location"]
    near, far = pops[0], max(pops, key=lambda p: p["distance_km"])
    assert far["distance_km"] > 5000 and near["distance_km"] < 1
    assert far["latency_ms"] > near["latency_ms"] + 50

    def median_ms(port):
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            assert body(port) == "v1"
            times.append((time.monotonic() - t0) * 1000)
        return statistics.median(times)

    tn, tf = median_ms(near["port"]), median_ms(far["port"])
    print("near %s: %.1f ms, far %s: %.1f ms (model %d / %d ms)" % (
        near["location"], tn, far["location"], tf, near["latency_ms"], far["latency_ms"]))
    assert tf - tn > 0.8 * (far["latency_ms"] - near["latency_ms"]), (tn, tf)
    assert tf >= far["latency_ms"]
    assert d.stop() == 0
    # from the far location, the order turns round
    d2 = dev(make_app(tmp_path / "again"), pops=3, args=["--latency", "--from", far["location"]])
    by_id = {p["id"]: p for p in d2.ready["pops"]}
    assert by_id[far["id"]]["distance_km"] < 1
    assert median_ms(by_id[far["id"]]["port"]) + 50 < median_ms(by_id[near["id"]]["port"])
    assert d2.stop() == 0


def test_init_scaffolds_an_app_that_passes_test_and_check_and_runs_in_dev(dev, tmp_path, verge_bin):
    r = subprocess.run([str(verge_bin), "init", "myapp"], cwd=tmp_path, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    for cmd in ("cd myapp", "verge dev", "verge test", "verge deploy"):
        assert cmd in r.stdout, r.stdout
    app = tmp_path / "myapp"
    for f in ("verge.yaml", "edge.lua", "public/index.html", "test/hello.lua"):
        assert (app / f).is_file(), f
    t = subprocess.run([str(verge_bin), "test"], cwd=app, capture_output=True, text=True, timeout=60)
    assert t.returncode == 0, t.stdout + t.stderr
    assert re.search(r"\b3 passed, 0 failed", t.stdout), t.stdout
    c = subprocess.run([str(verge_bin), "check", str(app)], capture_output=True, text=True, timeout=10)
    assert c.returncode == 0, c.stdout + c.stderr
    # it refuses to touch what exists, and names that are not app names
    before = sorted(p.name for p in app.rglob("*"))
    r2 = subprocess.run([str(verge_bin), "init", "myapp"], cwd=tmp_path, capture_output=True, text=True)
    assert r2.returncode != 0 and "not an empty directory" in r2.stderr
    assert sorted(p.name for p in app.rglob("*")) == before
    r3 = subprocess.run([str(verge_bin), "init", "My_App"], cwd=tmp_path, capture_output=True, text=True)
    assert r3.returncode != 0 and "not an app name" in r3.stderr
    assert not (tmp_path / "My_App").exists()
    # and it runs under verge dev as scaffolded
    d = dev(app)
    port = d.ports()[0]
    assert body(port, "/hello?name=dev") == "hello, dev"
    assert "<h1>myapp</h1>" in http_request(port, "GET", "/").body.decode()
    assert d.stop() == 0


def test_bad_input_exits_non_zero_and_leaves_nothing_running(tmp_path, verge_bin):
    def run(args, cwd=tmp_path):
        return subprocess.run([str(verge_bin), "dev"] + args, cwd=cwd, capture_output=True, text=True, timeout=30)

    before = set(p for p in Path("/proc").iterdir() if p.name.isdigit())
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run([str(empty)])
    assert r.returncode != 0 and "has no verge.yaml" in r.stderr, r.stderr
    r = run([], cwd=empty)  # DIR defaults to the current directory
    assert r.returncode != 0 and "has no verge.yaml" in r.stderr, r.stderr
    app = make_app(tmp_path)
    for n in ("0", "65", "-1", "x", ""):
        r = run([str(app), "--pops", n])
        assert r.returncode == 2 and "--pops takes a number from 1 to 64" in r.stderr, (n, r.stderr)
    r = run([str(app), "--from", "atlantis"])
    assert r.returncode != 0 and "no location 'atlantis'" in r.stderr
    # a port of the range in use
    base = free_range(3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 2))
        s.listen()
        r = run([str(app), "--pops", "3", "--port", str(base)])
    assert r.returncode == 1 and "127.0.0.1:%d is in use" % (base + 2) in r.stderr, r.stderr
    # a broken manifest at start-up: the error, and nothing starts
    bad = write_app(tmp_path / "bad", "name: web\nroutes:\n  - path: /\n    respnd: {body: x}\n")
    r = run([str(bad), "--port", str(base)])
    assert r.returncode == 1 and re.search(r"verge\.yaml:4:5: ", r.stderr), r.stderr
    after = set(p for p in Path("/proc").iterdir() if p.name.isdigit())
    leftovers = [cmdline(int(p.name)) for p in after - before
                 if running(int(p.name)) and b"dev" in b" ".join(cmdline(int(p.name)))]
    assert not [c for c in leftovers if str(verge_bin).encode() in c[0] or c[0] == b"verge"], leftovers


def test_diagnostics_commands_find_the_dev_session(dev, tmp_path, verge_bin):
    """verge logs / top / trace need no options next to a running `verge
    dev`: it writes where its nodes are, and removes it when it stops."""
    app = make_app(tmp_path)
    d = dev(app, pops=1)
    port = d.ports()[0]
    tp = "00-%s-00f067aa0ba902b7-01" % ("7" * 32)
    r = http_request(port, "GET", "/v", headers={"traceparent": tp})
    assert r.status == 200
    assert "server-timing" in [k.lower() for k, _ in r.headers.items]  # dev: always
    session = json.loads((tmp_path / "dev-session.json").read_text())
    assert session["nodes"] == ["http://127.0.0.1:%d" % port] and session["pid"] == d.proc.pid
    assert wait_for(lambda: subprocess.run([str(verge_bin), "trace", "7" * 32], capture_output=True).returncode == 0,
                    5)
    logs = subprocess.run([str(verge_bin), "logs", "--filter", "path=/v", "--json"], capture_output=True, text=True,
                          timeout=20)
    assert logs.returncode == 0 and '"path":"/v"' in logs.stdout, logs.stderr
    top = subprocess.run([str(verge_bin), "top", "--count", "1", "--interval", "300ms", "--json"],
                         capture_output=True, text=True, timeout=20)
    assert top.returncode == 0 and json.loads(top.stdout.splitlines()[-1])["nodes"] == 1, top.stderr
    d.stop()
    assert not (tmp_path / "dev-session.json").exists()


def test_dynamic_placement_reacts_to_load_generated_locally(dev, tmp_path, verge_bin):
    """--pops 3 runs the real scheduler over the pops' locations: an app
    with a dynamic placement starts on one pop; load that claims to come
    from another pop's area (X-Verge-Client-Area) makes the control plane
    add that pop, and the dev log says so."""
    app = write_app(tmp_path / "app", """\
name: web
placement:
  dynamic: {target: 30ms, min_demand: 3rps, min: 1, max: 3}
routes:
  - exact: /v
    respond: {body: "p1\\n"}
""")
    d = dev(app, pops=3, json_mode=False, wait=False)
    assert wait_for(lambda: "runs on 1 of 3 locations" in d.stdout(), 30), d.logs()
    lines = re.findall(r"^\s+(pop-\d+)\s+([a-z]{3})\s+.+?\s+http://127\.0\.0\.1:(\d+)/", d.stdout(), re.M)
    ports = {loc: int(p) for _, loc, p in lines}
    home = [loc for loc, p in ports.items() if body(p) == "p1"]
    assert len(home) == 1, (home, d.logs())
    far = next(loc for loc in ports if loc != home[0])
    assert body(ports[far]) == 404
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and body(ports[far]) != "p1":
        for _ in range(10):  # ~20 rps from the far area, served at home
            http_request(ports[home[0]], "GET", "/v", headers={"X-Verge-Client-Area": far}, timeout=2)
        time.sleep(0.5)
    assert body(ports[far]) == "p1", d.logs()
    assert re.search(r"^\[control\] info  placement changed .*added=.*%s" % far, d.stdout(), re.M), d.stdout()
    # `verge placement` finds the session's control plane by itself
    p = subprocess.run([str(verge_bin), "placement", "web"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and far in p.stdout and "placed" in p.stdout, p.stdout + p.stderr
