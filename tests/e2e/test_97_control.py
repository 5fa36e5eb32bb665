"""verge control: the control plane's API, store and CLI against the real
binary on a free port with a temporary data directory."""

import hashlib
import http.client
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from harness import REPO, free_port, http_request, write_app

CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}
DIAG = re.compile(r"^verge\.yaml:(\d+):(\d+): .+")


class Control:
    """One `verge control` process."""

    def __init__(self, bin_path, workdir, data_dir, port=None, args=(), env=None):
        self.bin = str(bin_path)
        self.workdir = Path(workdir)
        self.data = Path(data_dir)
        self.port = port or free_port()
        self.args = list(args)
        self.env = env
        self.proc = None
        self.n = 0

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, wait=True):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.n += 1
        self.stderr_path = self.workdir / ("control%d.stderr" % self.n)
        argv = [self.bin, "control", "--listen", "127.0.0.1:%d" % self.port, "--data", str(self.data)] + self.args
        env = dict(os.environ)
        env.pop("VERGE_CONTROL_TOKEN", None)
        env.update(self.env or {})
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         cwd=str(self.workdir), env=env, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("verge control exited with %s\n%s" % (self.proc.returncode, self.logs()))
            try:
                if http_request(self.port, "GET", "/_verge/health", timeout=1).status == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise AssertionError("verge control not ready\n" + self.logs())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: nothing is flushed or closed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout=5.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def logs(self):
        try:
            return self.stderr_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def log_records(self):
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def admin_token(self):
        return (self.data / "admin.token").read_text().strip()

    def req(self, method, path, token=None, body=None, ctype=None, headers=None, timeout=10):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            ctype = ctype or "application/json"
        if ctype:
            h["Content-Type"] = ctype
        return http_request(self.port, method, path, body=body, headers=h, timeout=timeout)

    def make_token(self, name, scope, admin=None):
        r = self.req("POST", "/v1/tokens", admin or self.admin_token(), {"name": name, "scope": scope})
        assert r.status == 201, r
        return r.json()["secret"]


@pytest.fixture
def control(request, tmp_path, verge_bin):
    started = []

    def start(args=(), env=None, data=None, port=None, wait=True):
        c = Control(verge_bin, tmp_path, data or (tmp_path / "data"), port=port, args=args, env=env)
        started.append(c)
        return c.start(wait=wait)

    yield start
    problems = []
    for c in started:
        rc = c.stop()
        if rc is not None and rc < 0 and -rc in CRASH_SIGNALS:
            problems.append("verge control died of signal %d\n%s" % (-rc, c.logs()))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def run_cli(verge_bin, args, env=None, cwd=None, timeout=30):
    e = dict(os.environ)
    e.pop("VERGE_TOKEN", None)
    e.pop("VERGE_CONTROL", None)
    e.update(env or {})
    return subprocess.run([str(verge_bin)] + list(args), capture_output=True, timeout=timeout, env=e, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def bundle_of(verge_bin, app_dir, out):
    p = run_cli(verge_bin, ["bundle", str(app_dir), "-o", str(out)])
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().strip(), Path(out).read_bytes()


def upload(c, token, app, data, ctype="application/gzip"):
    return c.req("POST", "/v1/apps/%s/versions" % app, token, data, ctype=ctype, timeout=30)


def tgz(entries, sort=True):
    """A gzip'd tar from (name, type, data/linkname) made with Python's tarfile."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, kind, data in sorted(entries) if sort else entries:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
                t.addfile(ti)
            elif kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = data
                t.addfile(ti)
            elif kind == "chr":
                ti.type = tarfile.CHRTYPE
                t.addfile(ti)
    return buf.getvalue()


HELLO = REPO / "examples" / "hello"


def hello_version(c, verge_bin, tmp_path, token=None):
    sha, data = bundle_of(verge_bin, HELLO, tmp_path / "hello.tgz")
    r = upload(c, token or c.admin_token(), "hello", data)
    assert r.status in (200, 201), r
    return sha


# ---- start-up and tokens -----------------------------------------------------


def test_bootstrap_writes_admin_token_0600_and_logs_where(control):
    c = control()
    p = c.data / "admin.token"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    secret = c.admin_token()
    assert re.fullmatch(r"vgt_[0-9a-f]{64}", secret)
    assert any(r.get("secret_in") == str(p) for r in c.log_records()), c.logs()
    assert c.req("GET", "/v1/tokens", secret).status == 200
    # a restart does not make a second one
    c.stop()
    c.start()
    assert c.admin_token() == secret
    toks = c.req("GET", "/v1/tokens", secret).json()["tokens"]
    assert [t["name"] for t in toks] == ["admin"]


def test_bootstrap_from_file_and_env(control, tmp_path):
    f = tmp_path / "boot"
    f.write_text("my-bootstrap-secret-0123456789\n")
    c = control(args=["--bootstrap-token-file", str(f)], data=tmp_path / "d1")
    assert not (c.data / "admin.token").exists()
    assert c.req("GET", "/v1/apps", "my-bootstrap-secret-0123456789").status == 200
    c2 = control(env={"VERGE_CONTROL_TOKEN": "env-bootstrap-secret-abcdef"}, data=tmp_path / "d2")
    assert c2.req("GET", "/v1/apps", "env-bootstrap-secret-abcdef").status == 200
    assert c2.req("GET", "/v1/apps", "my-bootstrap-secret-0123456789").status == 401


def test_auth_401_403_matrix(control, verge_bin, tmp_path):
    c = control()
    admin = c.admin_token()
    read, deploy, node = c.make_token("r", "read"), c.make_token("d", "deploy"), c.make_token("n", "node")
    sha = hello_version(c, verge_bin, tmp_path)
    assert c.req("POST", "/v1/nodes/register", node, {"id": "n1", "location": "fra"}).status == 200

    # no token, a malformed header, an unknown token: 401 everywhere, with a reason
    for hdr in (None, "Basic abc", "Bearer", "Bearer vgt_" + "0" * 64):
        h = {"Authorization": hdr} if hdr else {}
        r = c.req("GET", "/v1/apps", headers=h)
        assert r.status == 401, (hdr, r)
        assert r.headers.get("www-authenticate", "").startswith("Bearer")
        assert r.json()["error"]
    assert c.req("POST", "/v1/tokens", None, {"name": "x", "scope": "admin"}).status == 401

    desired = {"version": sha}
    reg = {"id": "n2", "location": "fra"}
    beat = {"apps": {"hello": {"version": sha, "health": "ok", "rps": 1, "errors": 0}}}
    calls = [
        # (method, path, body, {token: expected status})
        ("GET", "/v1/apps", None, {read: 200, deploy: 200, admin: 200, node: 403}),
        ("GET", "/v1/apps/hello", None, {read: 200, deploy: 200, admin: 200, node: 403}),
        ("GET", "/v1/apps/hello/versions", None, {read: 200, deploy: 200, admin: 200, node: 403}),
        ("GET", "/v1/apps/hello/versions/" + sha, None, {read: 200, deploy: 200, admin: 200, node: 403}),
        ("POST", "/v1/apps", {"name": "made"}, {read: 403, node: 403, deploy: 201, admin: 200}),
        ("PUT", "/v1/apps/hello/desired", desired, {read: 403, node: 403, deploy: 200, admin: 200}),
        ("GET", "/v1/bundles/" + sha, None, {read: 200, deploy: 200, admin: 200, node: 200}),
        ("GET", "/v1/nodes", None, {read: 200, deploy: 200, admin: 200, node: 403}),
        ("POST", "/v1/nodes/register", reg, {read: 403, deploy: 403, admin: 403, node: 200}),
        ("POST", "/v1/nodes/n1/heartbeat", beat, {read: 403, deploy: 403, admin: 403, node: 200}),
        ("GET", "/v1/nodes/n1/desired", None, {read: 200, deploy: 200, admin: 200, node: 200}),
        ("GET", "/v1/history", None, {read: 200, deploy: 200, admin: 200, node: 403}),
        ("GET", "/v1/tokens", None, {read: 403, deploy: 403, node: 403, admin: 200}),
        ("POST", "/v1/tokens", {"name": "t2", "scope": "read"}, {read: 403, deploy: 403, node: 403, admin: 201}),
        ("DELETE", "/v1/tokens/t2", None, {read: 403, deploy: 403, node: 403, admin: 200}),
    ]
    names = {read: "read", deploy: "deploy", admin: "admin", node: "node"}
    for method, path, body, want in calls:
        for tok, status in want.items():
            r = c.req(method, path, tok, body)
            assert r.status == status, "%s %s as %s: %r" % (method, path, names[tok], r)
            if status == 403:
                assert "may not" in r.json()["error"]
    # a node token uploads no versions
    r = upload(c, node, "hello", (tmp_path / "hello.tgz").read_bytes())
    assert r.status == 403

    # revoked: 401 at once
    assert c.req("DELETE", "/v1/tokens/d", admin).status == 200
    assert c.req("GET", "/v1/apps", deploy).status == 401
    assert c.req("DELETE", "/v1/tokens/d", admin).status == 404
    assert c.req("POST", "/v1/tokens", admin, {"name": "d", "scope": "read"}).status == 409
    # the list has no secrets or hashes
    toks = c.req("GET", "/v1/tokens", admin)
    assert deploy not in toks.text and "hash" not in toks.text
    assert {t["name"]: t["revoked_at"] is not None for t in toks.json()["tokens"]}["d"] is True


# ---- versions ----------------------------------------------------------------


def test_upload_version_from_examples_and_reupload(control, verge_bin, tmp_path):
    c = control()
    tok = c.make_token("dev", "deploy")
    sha, data = bundle_of(verge_bin, HELLO, tmp_path / "a.tgz")
    sha2, data2 = bundle_of(verge_bin, HELLO, tmp_path / "b.tgz")
    assert data == data2 and sha == sha2  # deterministic
    assert sha == hashlib.sha256(data).hexdigest()

    r = upload(c, tok, "hello", data)
    assert r.status == 201, r
    v = r.json()
    assert v["id"] == sha and v["app"] == "hello" and v["created"] is True and v["size"] == len(data)
    assert v["created_by"] == "dev" and v["bundle"] == "/v1/bundles/" + sha
    # the same bytes again: the same version, no duplicate
    r = upload(c, tok, "hello", data)
    assert r.status == 200 and r.json()["created"] is False and r.json()["id"] == sha
    vs = c.req("GET", "/v1/apps/hello/versions", tok).json()["versions"]
    assert [x["id"] for x in vs] == [sha]
    app = c.req("GET", "/v1/apps/hello", tok).json()
    assert app["versions"] == 1 and app["latest_version"] == sha and app["desired"] is None
    # content-addressed on disk and served back byte for byte
    assert (c.data / "bundles" / (sha + ".tar.gz")).read_bytes() == data
    b = c.req("GET", "/v1/bundles/" + sha, tok)
    assert b.status == 200 and b.body == data and b.headers.get("content-type") == "application/gzip"
    assert c.req("GET", "/v1/bundles/" + "0" * 64, tok).status == 404
    assert c.req("GET", "/v1/apps/hello/versions/" + "0" * 64, tok).status == 404
    assert c.req("GET", "/v1/apps/nope", tok).status == 404
    assert c.req("GET", "/v1/apps/nope/versions", tok).status == 404
    # nothing left behind in tmp/
    assert list((c.data / "tmp").iterdir()) == []


def test_invalid_manifest_is_422_with_file_line_col(control, verge_bin, tmp_path):
    c = control()
    tok = c.admin_token()
    bad = write_app(tmp_path / "bad", "name: bad\nroutes:\n  - path: /\n    respnd: {status: 200}\n")
    _, data = bundle_of(verge_bin, bad, tmp_path / "bad.tgz")
    r = upload(c, tok, "bad", data)
    assert r.status == 422, r
    e = r.json()["errors"][0]
    m = DIAG.match(e["text"])
    assert m, e
    # the same position `verge check` reports
    chk = run_cli(verge_bin, ["check", str(bad)])
    assert chk.returncode == 1
    assert ":%s:%s: " % (m.group(1), m.group(2)) in chk.stderr.decode(), chk.stderr
    assert e["file"] == "verge.yaml" and e["line"] == int(m.group(1)) and e["col"] == int(m.group(2))
    assert str(c.data) not in r.text  # no server paths in messages
    # nothing was stored
    assert c.req("GET", "/v1/apps/bad", tok).status == 404
    assert list((c.data / "bundles").iterdir()) == []

    # a Lua file that does not load: 422 too, as `verge check` says
    lua = write_app(tmp_path / "lua", "name: lua\nroutes:\n  - path: /\n    handler: edge.lua\n",
                    {"edge.lua": "function handle(req)\n  return {status = 200\nend\n"})
    _, data = bundle_of(verge_bin, lua, tmp_path / "lua.tgz")
    r = upload(c, tok, "lua", data)
    assert r.status == 422, r
    assert re.match(r"^edge\.lua:\d+", r.json()["errors"][0]["text"]), r.json()

    # the manifest's name must be the app of the URL
    _, data = bundle_of(verge_bin, HELLO, tmp_path / "hello.tgz")
    r = upload(c, tok, "other", data)
    assert r.status == 422 and "'hello'" in r.json()["errors"][0]["message"], r
    assert c.req("GET", "/v1/apps/other", tok).status == 404


def test_malformed_bundles_refused_with_reason(control, tmp_path):
    c = control()
    tok = c.admin_token()
    manifest = b"name: x\nroutes:\n  - path: /\n    respond: {status: 200}\n"
    ok = tgz([("verge.yaml", "file", manifest)])
    assert upload(c, tok, "x", ok).status == 201
    cases = {
        "not gzip": (b"hello, this is not a bundle", "gzip"),
        "plain tar": (ok[:0] + b"\x00" * 1024, "gzip"),
        "traversal": (tgz([("../evil", "file", b"x"), ("verge.yaml", "file", manifest)]), "'..'"),
        "absolute": (tgz([("/tmp/evil", "file", b"x")]), "absolute"),
        "symlink": (tgz([("l", "symlink", "/etc"), ("verge.yaml", "file", manifest)]), "links"),
        "hardlink": (tgz([("verge.yaml", "file", manifest), ("z", "hardlink", "verge.yaml")]), "links"),
        "device": (tgz([("dev", "chr", None), ("verge.yaml", "file", manifest)]), "devices"),
        "truncated": (ok[: len(ok) // 2], "truncated"),
        "duplicate": (tgz([("verge.yaml", "file", manifest), ("verge.yaml", "file", manifest)], sort=False),
                      "duplicated"),
    }
    for name, (data, why) in cases.items():
        r = upload(c, tok, "x", data)
        assert r.status == 400, (name, r)
        assert why in r.json()["error"], (name, r.json())
    assert not Path("/tmp/evil").exists()
    # wrong Content-Type
    r = upload(c, tok, "x", ok, ctype="text/plain")
    assert r.status == 415
    # a bad app name in the URL
    assert upload(c, tok, "Bad_Name", ok).status == 400
    assert c.alive()
    assert len(c.req("GET", "/v1/apps/x/versions", tok).json()["versions"]) == 1


def test_oversize_bundle_413_at_the_boundary(control, tmp_path):
    c = control(args=["--max-bundle", "4096", "--max-files", "3"])
    tok = c.admin_token()
    # exactly the limit gets through to the reader (and fails as not gzip); one more byte is 413
    r = upload(c, tok, "x", b"x" * 4096)
    assert r.status == 400, r
    r = upload(c, tok, "x", b"x" * 4097)
    assert r.status == 413, r
    # a chunked body over the limit too
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    conn.putrequest("POST", "/v1/apps/x/versions")
    conn.putheader("Authorization", "Bearer " + tok)
    conn.putheader("Content-Type", "application/gzip")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for _ in range(5):
            conn.send(b"400\r\n" + b"y" * 1024 + b"\r\n")
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass
    assert conn.getresponse().status == 413
    conn.close()
    # too many files: 413 with the reason
    manifest = b"name: x\nroutes:\n  - path: /\n    respond: {status: 200}\n"
    three = tgz([("a", "file", b"1"), ("b", "file", b"2"), ("verge.yaml", "file", manifest)])
    four = tgz([("a", "file", b"1"), ("b", "file", b"2"), ("c", "file", b"3"), ("verge.yaml", "file", manifest)])
    assert upload(c, tok, "x", three).status == 201
    r = upload(c, tok, "x", four)
    assert r.status == 413 and "entries" in r.json()["error"], r
    assert c.alive()


def test_large_bundle_streamed_upload(control, verge_bin, tmp_path):
    """A bundle well above the 64 KiB buffered-body size arrives streamed."""
    c = control()
    tok = c.admin_token()
    app = write_app(tmp_path / "big", "name: big\nroutes:\n  - path: /\n    static: public\n",
                    {"public/blob.bin": os.urandom(3 << 20)})
    sha, data = bundle_of(verge_bin, app, tmp_path / "big.tgz")
    assert len(data) > (3 << 20)
    r = upload(c, tok, "big", data)
    assert r.status == 201 and r.json()["id"] == sha, r
    assert c.req("GET", "/v1/bundles/" + sha, tok, timeout=30).body == data


# ---- bad input -----------------------------------------------------------------


def test_bad_input_never_crashes(control):
    c = control()
    tok = c.admin_token()
    r = c.req("POST", "/v1/tokens", tok, b"{not json", ctype="application/json")
    assert r.status == 400 and "malformed JSON" in r.json()["error"]
    assert c.req("POST", "/v1/tokens", tok, b"[1,2]", ctype="application/json").status == 400
    assert c.req("POST", "/v1/tokens", tok, {"name": "x", "scope": "root"}).status == 400
    assert c.req("POST", "/v1/tokens", tok, {"name": "a/b", "scope": "read"}).status == 400
    assert c.req("POST", "/v1/tokens", tok, b'{"name":"a","name":"b","scope":"read"}',
                 ctype="application/json").status == 400
    assert c.req("POST", "/v1/apps", tok, {"name": "-bad"}).status == 400
    assert c.req("GET", "/v1/nope", tok).status == 404
    assert c.req("GET", "/v1/apps/hello/versions/x/y", tok).status == 404
    assert c.req("GET", "/elsewhere", tok).status == 404
    r = c.req("DELETE", "/v1/apps", tok)
    assert r.status == 405 and set(r.headers.get("allow").split(", ")) == {"GET", "POST"}
    assert c.req("PATCH", "/v1/tokens", tok).status == 405
    # JSON bodies: 1 MiB at most
    big = b'{"name":"' + b"a" * (1 << 20) + b'","scope":"read"}'
    assert c.req("POST", "/v1/tokens", tok, big, ctype="application/json").status == 413
    nt = c.make_token("n", "node")
    assert c.req("POST", "/v1/nodes/register", nt, {"id": "n1"}).status == 400
    assert c.req("POST", "/v1/nodes/register", nt, {"id": "n1", "location": "x", "labels": {"a": 1}}).status == 400
    assert c.req("POST", "/v1/nodes/register", nt, {"id": "n1", "location": "x", "labels": ["a"]}).status == 400
    assert c.req("POST", "/v1/nodes/register", nt, {"id": "n/1", "location": "x"}).status == 400
    assert c.req("GET", "/v1/history?limit=0", tok).status == 400
    assert c.req("GET", "/v1/history?limit=1001", tok).status == 400
    assert c.req("GET", "/v1/history?limit=1000", tok).status == 200
    assert c.req("PUT", "/v1/apps/hello/desired", tok, {"version": "abc"}).status == 400
    assert c.req("PUT", "/v1/apps/hello/desired", tok, {"version": "a" * 64}).status == 404
    # a raw mess on the socket
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        s.recv(100)
    assert c.alive()
    assert c.req("GET", "/v1/apps", tok).status == 200


# ---- restart -------------------------------------------------------------------


def test_sigkill_after_acknowledged_writes_keeps_everything(control, verge_bin, tmp_path):
    c = control()
    admin = c.admin_token()
    dev = c.make_token("dev", "deploy")
    node = c.make_token("n", "node")
    sha = hello_version(c, verge_bin, tmp_path, dev)
    assert c.req("POST", "/v1/nodes/register", node, {"id": "n1", "location": "ams", "labels": {"a": "b"}}).status == 200
    r = c.req("PUT", "/v1/apps/hello/desired", dev, {"version": sha})
    assert r.status == 200 and r.json()["rev"] == 1
    hist = c.req("GET", "/v1/history", admin).json()["history"]
    # the last write, acknowledged, then SIGKILL at once
    assert c.req("DELETE", "/v1/tokens/dev", admin).status == 200
    c.kill()
    c.start()
    assert c.req("GET", "/v1/apps", dev).status == 401  # the revocation survived
    app = c.req("GET", "/v1/apps/hello", admin).json()
    assert app["desired"]["version"] == sha and app["desired"]["rev"] == 1
    assert c.req("GET", "/v1/bundles/" + sha, node).body == (tmp_path / "hello.tgz").read_bytes()
    d = c.req("GET", "/v1/nodes/n1/desired", node).json()
    assert d["rev"] == 1 and d["apps"][0]["version"] == sha
    nodes = c.req("GET", "/v1/nodes", admin).json()["nodes"]
    assert nodes[0]["id"] == "n1" and nodes[0]["labels"] == {"a": "b"}
    hist2 = c.req("GET", "/v1/history", admin).json()["history"]
    assert len(hist2) == len(hist) + 1 and hist2[0]["action"] == "token.revoke"
    assert hist2[1:] == hist


def test_sigterm_exits_cleanly(control):
    c = control()
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(5) == 0
    assert any(r.get("msg") == "stopped" for r in c.log_records())


# ---- long poll -----------------------------------------------------------------


class Poll(threading.Thread):
    def __init__(self, c, token, node, since, wait):
        super().__init__(daemon=True)
        self.args = (c, token, node, since, wait)
        self.resp = None
        self.done_at = None
        self.sent = threading.Event()

    def run(self):
        c, token, node, since, wait = self.args
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=wait + 10)
        conn.putrequest("GET", "/v1/nodes/%s/desired?since=%d&wait=%d" % (node, since, wait))
        conn.putheader("Authorization", "Bearer " + token)
        conn.endheaders()
        self.sent.set()
        r = conn.getresponse()
        body = r.read()
        self.done_at = time.monotonic()
        self.resp = (r.status, body)
        conn.close()


def two_versions(c, verge_bin, tmp_path, token):
    shas = []
    for i in range(2):
        d = write_app(tmp_path / ("v%d" % i), "name: lp\nroutes:\n  - path: /\n    respond: {status: 200, body: v%d}\n"
                      % i)
        sha, data = bundle_of(verge_bin, d, tmp_path / ("v%d.tgz" % i))
        assert upload(c, token, "lp", data).status == 201
        shas.append(sha)
    return shas


def test_long_poll_wakes_within_100ms(control, verge_bin, tmp_path):
    c = control()
    dev = c.make_token("dev", "deploy")
    node = c.make_token("n", "node")
    for n in ("n1", "n2", "n3"):
        assert c.req("POST", "/v1/nodes/register", node, {"id": n, "location": "x"}).status == 200
    shas = two_versions(c, verge_bin, tmp_path, dev)
    latencies = []
    rev = c.req("GET", "/v1/nodes/n1/desired", node).json()["rev"]
    for i in range(6):
        polls = [Poll(c, node, n, rev, 20) for n in ("n1", "n2", "n3")]
        for p in polls:
            p.start()
            p.sent.wait(5)
        time.sleep(0.3)  # every poll is held by now
        assert all(p.resp is None for p in polls)
        t0 = time.monotonic()
        r = c.req("PUT", "/v1/apps/lp/desired", dev, {"version": shas[i % 2]})
        assert r.status == 200 and r.json()["changed"] is True
        for p in polls:
            p.join(5)
            assert p.resp is not None and p.resp[0] == 200, p.resp
            body = json.loads(p.resp[1])
            assert body["rev"] == rev + 1 and body["apps"][0]["version"] == shas[i % 2]
            latencies.append(p.done_at - t0)
        rev += 1
    latencies.sort()
    print("long-poll wake-up latency: median %.1f ms, max %.1f ms" % (
        latencies[len(latencies) // 2] * 1000, latencies[-1] * 1000))
    assert latencies[-1] < 0.100, latencies


def test_long_poll_timeout_and_immediate_answers(control, verge_bin, tmp_path):
    c = control()
    dev = c.make_token("dev", "deploy")
    node = c.make_token("n", "node")
    assert c.req("POST", "/v1/nodes/n1/heartbeat", node, {"apps": {}}).status == 404  # not registered
    assert c.req("POST", "/v1/nodes/register", node, {"id": "n1", "location": "x"}).status == 200
    assert c.req("GET", "/v1/nodes/zz/desired?since=0&wait=1", node).status == 404
    # nothing deployed: rev 0; since=0 and no wait: 304 at once
    r = c.req("GET", "/v1/nodes/n1/desired?since=0", node)
    assert r.status == 304 and r.headers.get("x-verge-rev") == "0"
    # no since: the state now
    r = c.req("GET", "/v1/nodes/n1/desired", node)
    assert r.status == 200 and r.json() == {"node": "n1", "rev": 0, "apps": []}
    # wait=1 with no change: 304 after about a second
    t0 = time.monotonic()
    r = c.req("GET", "/v1/nodes/n1/desired?since=0&wait=1", node)
    dt = time.monotonic() - t0
    assert r.status == 304 and 0.9 <= dt < 2.0, (r, dt)
    # a revision behind: answered at once even with a wait
    shas = two_versions(c, verge_bin, tmp_path, dev)
    assert c.req("PUT", "/v1/apps/lp/desired", dev, {"version": shas[0]}).status == 200
    t0 = time.monotonic()
    r = c.req("GET", "/v1/nodes/n1/desired?since=0&wait=30", node)
    assert r.status == 200 and r.json()["rev"] == 1 and time.monotonic() - t0 < 0.5
    # the same version again changes nothing: waiters keep waiting
    p = Poll(c, node, "n1", 1, 2)
    p.start()
    p.sent.wait(5)
    time.sleep(0.2)
    r = c.req("PUT", "/v1/apps/lp/desired", dev, {"version": shas[0]})
    assert r.status == 200 and r.json()["changed"] is False and r.json()["rev"] == 1
    time.sleep(0.3)
    assert p.resp is None
    p.join(5)
    assert p.resp[0] == 304
    # bad parameters
    assert c.req("GET", "/v1/nodes/n1/desired?since=x", node).status == 400
    assert c.req("GET", "/v1/nodes/n1/desired?since=0&wait=61", node).status == 400
    assert c.req("GET", "/v1/nodes/n1/desired?since=-1", node).status == 400
    # a client that goes away while held does not upset the next change
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
        s.sendall(("GET /v1/nodes/n1/desired?since=1&wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                   % node).encode())
        time.sleep(0.2)
    time.sleep(0.1)
    assert c.req("PUT", "/v1/apps/lp/desired", dev, {"version": shas[1]}).status == 200
    assert c.alive()
    assert c.req("GET", "/v1/nodes/n1/desired", node).json()["rev"] == 2


# ---- history --------------------------------------------------------------------


def test_history_records_every_mutation(control, verge_bin, tmp_path):
    c = control()
    admin = c.admin_token()
    dev = c.make_token("dev", "deploy")
    node = c.make_token("edge", "node")
    assert c.req("POST", "/v1/apps", dev, {"name": "empty"}).status == 201
    assert c.req("POST", "/v1/apps", dev, {"name": "empty"}).status == 200  # no change, no row
    sha = hello_version(c, verge_bin, tmp_path, dev)
    hello_version(c, verge_bin, tmp_path, dev)  # the same bytes: no row
    assert c.req("PUT", "/v1/apps/hello/desired", dev, {"version": sha}).status == 200
    assert c.req("PUT", "/v1/apps/hello/desired", dev, {"version": sha}).status == 200  # unchanged: no row
    assert c.req("POST", "/v1/nodes/register", node, {"id": "n1", "location": "x"}).status == 200
    assert c.req("POST", "/v1/nodes/n1/heartbeat", node, {"apps": {}}).status == 200  # an observation: no row
    assert c.req("DELETE", "/v1/tokens/dev", admin).status == 200
    # refused calls leave nothing either
    assert c.req("POST", "/v1/apps", node, {"name": "nope"}).status == 403
    assert c.req("POST", "/v1/tokens", admin, {"name": "edge", "scope": "read"}).status == 409
    h = c.req("GET", "/v1/history", admin).json()["history"]
    got = [(e["actor"], e["action"], e["subject"]) for e in reversed(h)]
    assert got == [
        ("bootstrap", "token.create", "admin"),
        ("admin", "token.create", "dev"),
        ("admin", "token.create", "edge"),
        ("dev", "app.create", "empty"),
        ("dev", "app.create", "hello"),
        ("dev", "version.create", sha),
        ("dev", "desired.set", sha),
        ("edge", "node.register", "n1"),
        ("admin", "token.revoke", "dev"),
    ], got
    assert [e["id"] for e in h] == sorted([e["id"] for e in h], reverse=True)
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", e["at"]) for e in h)
    ha = c.req("GET", "/v1/history?app=hello", admin).json()["history"]
    assert [e["action"] for e in ha] == ["desired.set", "version.create", "app.create"]
    assert ha[0]["detail"]["rev"] == 1
    assert len(c.req("GET", "/v1/history?limit=2", admin).json()["history"]) == 2


def test_nodes_heartbeat_and_up_flag(control):
    c = control(args=["--node-timeout", "1s"])
    admin = c.admin_token()
    node = c.make_token("n", "node")
    assert c.req("POST", "/v1/nodes/register", node, {"id": "n1", "location": "fra", "labels": {"pci": "yes"}}).status == 200
    assert c.req("POST", "/v1/apps", admin, {"name": "hello"}).status == 201  # reports name known apps only
    report = {"apps": {"hello": {"version": "x", "health": "ok", "rps": 12.5, "errors": 0}}}
    r = c.req("POST", "/v1/nodes/n1/heartbeat", node, report)
    assert r.status == 200 and r.json()["rev"] == 0
    n = c.req("GET", "/v1/nodes", admin).json()["nodes"][0]
    assert n["up"] is True and n["report"] == report and n["location"] == "fra"
    time.sleep(1.2)
    assert c.req("GET", "/v1/nodes", admin).json()["nodes"][0]["up"] is False
    assert c.req("POST", "/v1/nodes/n1/heartbeat", node, {"apps": []}).status == 400


# ---- CLI ------------------------------------------------------------------------


def test_cli_human_and_json(control, verge_bin, tmp_path):
    c = control()
    env = {"VERGE_CONTROL": c.url, "VERGE_TOKEN": c.admin_token()}
    p = run_cli(verge_bin, ["token", "create", "ci", "--scope", "deploy"], env)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "created token 'ci' (scope deploy)" in out
    secret = out.strip().splitlines()[-1]
    assert re.fullmatch(r"vgt_[0-9a-f]{64}", secret)
    p = run_cli(verge_bin, ["token", "create", "ro", "--scope", "read", "--json"], env)
    assert p.returncode == 0 and json.loads(p.stdout)["scope"] == "read"
    p = run_cli(verge_bin, ["token", "list"], env)
    assert p.returncode == 0
    lines = p.stdout.decode().splitlines()
    assert lines[0].split()[:2] == ["NAME", "SCOPE"]
    assert any(l.split()[:2] == ["ci", "deploy"] and l.endswith("live") for l in lines), lines
    p = run_cli(verge_bin, ["token", "list", "--json"], env)
    assert {t["name"] for t in json.loads(p.stdout)["tokens"]} == {"admin", "ci", "ro"}

    # versions: a deploy token from the flag, the control plane from the flag
    sha, data = bundle_of(verge_bin, HELLO, tmp_path / "h.tgz")
    assert upload(c, secret, "hello", data).status == 201
    flags = ["--control", c.url, "--token", secret]
    p = run_cli(verge_bin, ["versions", "hello"] + flags)
    assert p.returncode == 0, p.stderr
    assert sha in p.stdout.decode() and "ci" in p.stdout.decode()
    p = run_cli(verge_bin, ["versions", "hello", "--json"] + flags)
    assert json.loads(p.stdout)["versions"][0]["id"] == sha
    p = run_cli(verge_bin, ["versions"] + flags)
    assert p.returncode == 0 and p.stdout.decode().splitlines()[1].split()[:2] == ["hello", "1"]
    assert c.req("PUT", "/v1/apps/hello/desired", secret, {"version": sha}).status == 200
    p = run_cli(verge_bin, ["versions", "hello"] + flags)
    assert ("* " + sha) in p.stdout.decode()

    # errors: no token, an unknown app, a revoked token, a scope too small
    p = run_cli(verge_bin, ["versions", "--control", c.url])
    assert p.returncode == 2 and b"no API token" in p.stderr
    p = run_cli(verge_bin, ["versions", "nope"] + flags)
    assert p.returncode == 1 and b"404" in p.stderr
    p = run_cli(verge_bin, ["token", "list"] + flags)
    assert p.returncode == 1 and b"403" in p.stderr
    p = run_cli(verge_bin, ["token", "revoke", "ci"], env)
    assert p.returncode == 0 and p.stdout.decode().strip() == "revoked token 'ci'"
    p = run_cli(verge_bin, ["versions"] + flags)
    assert p.returncode == 1 and b"401" in p.stderr
    p = run_cli(verge_bin, ["versions", "--control", "http://127.0.0.1:%d" % free_port(), "--token", "x"])
    assert p.returncode == 1 and b"cannot connect" in p.stderr
    p = run_cli(verge_bin, ["token", "create", "x"], env)
    assert p.returncode == 2 and b"--scope" in p.stderr


def test_cli_bundle(verge_bin, tmp_path):
    p = run_cli(verge_bin, ["bundle", str(HELLO), "-o", str(tmp_path / "a.tgz"), "--json"])
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    data = (tmp_path / "a.tgz").read_bytes()
    assert j["sha256"] == hashlib.sha256(data).hexdigest() and j["size"] == len(data)
    with tarfile.open(tmp_path / "a.tgz") as t:
        members = t.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "verge.yaml" in names
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert all(m.mode in (0o644, 0o755) for m in members)
    # the default directory is the current one; stdout with -o -
    p = run_cli(verge_bin, ["bundle", "-o", "-"], cwd=str(HELLO))
    assert p.returncode == 0 and p.stdout == data
    # links are refused with the path
    d = write_app(tmp_path / "ln", "name: ln\n", {"x": "y"})
    os.symlink("/etc/passwd", d / "pw")
    p = run_cli(verge_bin, ["bundle", str(d), "-o", str(tmp_path / "ln.tgz")])
    assert p.returncode == 1 and b"pw" in p.stderr and b"symlink" in p.stderr
    p = run_cli(verge_bin, ["bundle", str(HELLO)])
    assert p.returncode == 2


def test_http2_prior_knowledge(control, verge_bin, tmp_path):
    """The API over h2c (vg_http_accept hands HTTP/2 to h2o): upload, read back."""
    c = control()
    tok = c.admin_token()
    sha, data = bundle_of(verge_bin, HELLO, tmp_path / "h.tgz")
    base = ["curl", "-s", "--http2-prior-knowledge", "-H", "Authorization: Bearer " + tok]
    p = subprocess.run(base + ["-w", "\n%{http_version} %{http_code}", "-H", "Content-Type: application/gzip",
                               "--data-binary", "@" + str(tmp_path / "h.tgz"), c.url + "/v1/apps/hello/versions"],
                       capture_output=True, timeout=30)
    body, _, status = p.stdout.decode().rpartition("\n")
    assert status == "2 201", p.stdout
    assert json.loads(body)["id"] == sha
    p = subprocess.run(base + ["-o", str(tmp_path / "back.tgz"), "-w", "%{http_version} %{http_code}",
                               c.url + "/v1/bundles/" + sha], capture_output=True, timeout=30)
    assert p.stdout.decode() == "2 200" and (tmp_path / "back.tgz").read_bytes() == data
    p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-w", "%{http_code}", "-o", "/dev/null",
                        c.url + "/v1/apps"], capture_output=True, timeout=30)
    assert p.stdout.decode() == "401"


def test_expired_token_is_401_with_its_reason(control, verge_bin, tmp_path):
    c = control()
    admin = c.admin_token()
    r = c.req("POST", "/v1/tokens", admin, {"name": "brief", "scope": "read", "expires_in": 1})
    assert r.status == 201, r
    brief = r.json()["secret"]
    assert c.req("GET", "/v1/apps", brief).status == 200
    listed = {t["name"]: t for t in c.req("GET", "/v1/tokens", admin).json()["tokens"]}
    assert listed["brief"]["expires_at"] and listed["admin"]["expires_at"] is None
    time.sleep(1.2)
    r = c.req("GET", "/v1/apps", brief)
    assert r.status == 401 and "expired" in r.json()["error"]
    for bad in (0, -5, "soon", "1x"):
        r = c.req("POST", "/v1/tokens", admin, {"name": "b%s" % abs(hash(str(bad))), "scope": "read", "expires_in": bad})
        assert r.status == 400, (bad, r)
    p = run_cli(verge_bin, ["token", "create", "cli-brief", "--scope", "read", "--expires", "30d", "--json",
                            "--control", c.url, "--token", admin])
    assert p.returncode == 0, p.stderr
    listed = {t["name"]: t for t in c.req("GET", "/v1/tokens", admin).json()["tokens"]}
    assert listed["cli-brief"]["expires_at"]


def test_heartbeat_for_an_unknown_app_is_refused_and_stores_nothing(control, verge_bin, tmp_path):
    c = control()
    node = c.make_token("n", "node")
    assert c.req("POST", "/v1/nodes/register", node, {"id": "n1", "location": "fra"}).status == 200
    r = c.req("POST", "/v1/nodes/n1/heartbeat", node, {"apps": {"ghost": {"version": "x", "health": "ok"}}})
    assert r.status == 422 and "ghost" in r.json()["error"]
    nodes = c.req("GET", "/v1/nodes", c.admin_token()).json()["nodes"]
    assert nodes[0]["report"] in (None, {}) or "ghost" not in (nodes[0]["report"] or {}).get("apps", {})
