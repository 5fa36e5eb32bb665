"""Reverse proxy: forwarding, balancing, health, retries, errors, streaming."""

import concurrent.futures
import hashlib
import http.client
import json
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest

from harness import RawConn, conn_request, free_port, pattern_bytes, wait_for


def origins_yaml(**origins):
    """origins_yaml(api=dict(servers=[o1, (o2, 2)], balance=..., ...)) -> YAML text.
    Servers are Origin objects, URLs, or (either, weight)."""
    out = ["origins:"]
    for name, o in origins.items():
        srv = []
        for s in o["servers"]:
            w = None
            if isinstance(s, tuple):
                s, w = s
            url = s if isinstance(s, str) else s.url
            srv.append('{url: "%s", weight: %d}' % (url, w) if w else '"%s"' % url)
        out.append("  %s:" % name)
        out.append("    servers: [%s]" % ", ".join(srv))
        for k, v in o.items():
            if k != "servers":
                out.append("    %s: %s" % (k, v))
    return "\n".join(out) + "\n"


def app_yaml(origins, routes=None, limits="{body_size: 1m}"):
    return "name: px\nlimits: %s\n%sroutes:\n%s" % (limits, origins, routes or ROUTES)


ROUTES = """\
  - path: /api
    proxy: api
    strip_prefix: /api
  - path: /full
    proxy: api
"""


def served_by(resp):
    return resp.json()["server"]


def many(v, n, path="/api/x", headers=None, keepalive=True):
    """n sequential GETs; returns the list of Resp."""
    out = []
    if keepalive:
        c = v.conn()
        for _ in range(n):
            out.append(conn_request(c, "GET", path, headers=headers))
        c.close()
    else:
        for _ in range(n):
            out.append(v.get(path, headers=headers))
    return out


# ---- forwarding -------------------------------------------------------------------


def test_forwards_method_path_body_headers(verge, origin):
    o = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o]))))
    body = b"hello \x00 world" * 100
    r = v.request("POST", "/api/echo/1?x=1&y=%20z", body=body,
                  headers={"X-Custom": "abc", "Content-Type": "application/x-test", "Cookie": "a=1"})
    assert r.status == 200, r
    assert r.headers.get("X-Origin") == "a"
    (rec,) = o.requests
    assert rec.method == "POST"
    assert rec.path == "/echo/1?x=1&y=%20z"
    assert rec.body == body
    assert rec.headers.get("X-Custom") == "abc"
    assert rec.headers.get("Content-Type") == "application/x-test"
    assert rec.headers.get("Cookie") == "a=1"


def test_forwarding_headers(verge, origin):
    o = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o]))))
    r = v.get("/api/x")
    assert r.status == 200
    (rec,) = o.requests
    h = rec.headers
    assert [x.strip() for x in (h.get("X-Forwarded-For") or "").split(",")] == ["127.0.0.1"], h
    assert h.get("Host") == "127.0.0.1:%d" % o.port, h  # preserve_host is off by default
    assert h.get("X-Forwarded-Proto") == "http", h
    assert h.get("Via"), h
    rid = h.get("X-Request-Id")
    assert rid and len(rid) >= 8, h
    assert r.headers.get("X-Request-Id") == rid, r


def test_x_forwarded_for_appends(verge, origin):
    o = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o]))))
    assert v.get("/api/x", headers={"X-Forwarded-For": "203.0.113.9"}).status == 200
    xff = [x.strip() for x in o.requests[0].headers.get("X-Forwarded-For").split(",")]
    assert xff == ["203.0.113.9", "127.0.0.1"], xff


def test_request_ids_are_unique(verge, origin):
    o = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o]))))
    ids = [r.headers.get("X-Request-Id") for r in many(v, 20)]
    assert None not in ids and len(set(ids)) == 20, ids


def test_hop_by_hop_headers_not_forwarded(verge, origin):
    o = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o]))))
    with RawConn(v.port) as c:
        r = c.request("GET", "/api/x", headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret",
                                                "Keep-Alive": "timeout=5", "X-End": "kept"})
    assert r.status == 200
    (rec,) = o.requests
    assert rec.headers.get("X-Hop") is None, rec.headers
    assert rec.headers.get("Keep-Alive") is None, rec.headers
    assert rec.headers.get("X-End") == "kept"


@pytest.mark.parametrize("path,upstream", [
    ("/api", "/"),
    ("/api/", "/"),
    ("/api/a/b?q=1", "/a/b?q=1"),
    ("/api?q=1", "/?q=1"),
    ("/full/a?q=1", "/full/a?q=1"),
])
def test_strip_prefix(verge, origin, path, upstream):
    o = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o]))))
    assert v.get(path).status == 200
    assert o.requests[0].path == upstream


def test_inline_url(verge, origin):
    o = origin("inline")
    v = verge("name: px\nroutes:\n  - path: /\n    proxy: %s\n" % o.url)
    r = v.get("/some/where?x=1")
    assert r.status == 200 and served_by(r) == "inline"
    assert o.requests[0].path == "/some/where?x=1"


def test_origin_status_passed_through(verge, origin):
    o = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o], retries=0))))
    r = v.get("/api/status/404")
    assert r.status == 404 and r.body == b"status\n"
    r = v.get("/api/status/503")
    assert r.status == 503 and r.body == b"status\n"
    assert r.headers.get("X-Origin") == "a"


# ---- balancing ----------------------------------------------------------------------


@pytest.mark.parametrize("weights,n", [((1, 1, 1), 300), ((1, 2, 3), 300)])
def test_round_robin_weights(verge, origin, weights, n):
    os_ = [origin("s%d" % i) for i in range(3)]
    servers = [(o, w) for o, w in zip(os_, weights)]
    v = verge(app_yaml(origins_yaml(api=dict(servers=servers, balance="round_robin"))))
    got = Counter(served_by(r) for r in many(v, n))
    total = sum(weights)
    for o, w in zip(os_, weights):
        want = n * w / total
        assert abs(got[o.name] - want) <= 0.1 * want, (got, weights)


def test_round_robin_across_connections(verge, origin):
    a, b = origin("a"), origin("b")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, b]))))
    got = Counter(served_by(r) for r in many(v, 40, keepalive=False))
    assert 16 <= got["a"] <= 24 and 16 <= got["b"] <= 24, got


def test_least_conn_prefers_idle_server(verge, origin):
    slow, fast = origin("slow", delay=0.5), origin("fast")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[slow, fast], balance="least_conn"))))

    def client(_):
        return [served_by(v.get("/api/x", timeout=20)) for _ in range(8)]

    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        got = Counter(s for lst in ex.map(client, range(10)) for s in lst)
    assert got["slow"] + got["fast"] == 80
    assert got["slow"] <= 20, got  # round robin would give the slow one 40


def test_hash_on_header(verge, origin):
    os_ = [origin("s%d" % i) for i in range(3)]
    v = verge(app_yaml(origins_yaml(api=dict(servers=os_, balance="hash", hash_on="header:X-User"))))
    c = v.conn()
    where = {}
    for k in range(60):
        key = "user-%d" % k
        seen = {served_by(conn_request(c, "GET", "/api/x", headers={"X-User": key})) for _ in range(3)}
        assert len(seen) == 1, (key, seen)
        where[key] = seen.pop()
    spread = Counter(where.values())
    assert len(spread) == 3, spread
    assert max(spread.values()) <= 40, spread


def test_hash_on_cookie(verge, origin):
    os_ = [origin("s%d" % i) for i in range(3)]
    v = verge(app_yaml(origins_yaml(api=dict(servers=os_, balance="hash", hash_on="cookie:sid"))))
    where = {}
    c = v.conn()
    for k in range(40):
        seen = set()
        for other in ("a=1", "zz=%d" % k, "x=y"):  # other cookies do not matter
            r = conn_request(c, "GET", "/api/x", headers={"Cookie": "%s; sid=s%d; q=2" % (other, k)})
            seen.add(served_by(r))
        assert len(seen) == 1, (k, seen)
        where[k] = seen.pop()
    assert len(set(where.values())) >= 2, where


def test_hash_on_client_ip(verge, origin):
    os_ = [origin("s%d" % i) for i in range(3)]
    v = verge(app_yaml(origins_yaml(api=dict(servers=os_, balance="hash", hash_on="client_ip"))))
    where = {}
    for i in range(2, 42):
        ip = "127.0.0.%d" % i
        seen = set()
        for _ in range(2):
            c = http.client.HTTPConnection("127.0.0.1", v.port, timeout=10, source_address=(ip, 0))
            seen.add(served_by(conn_request(c, "GET", "/api/x")))
            c.close()
        assert len(seen) == 1, (ip, seen)
        where[ip] = seen.pop()
    assert len(set(where.values())) >= 2, where


def test_hash_keeps_keys_when_a_server_goes_down(verge, origin):
    """Consistent hashing: keys of healthy servers stay where they were."""
    os_ = [origin("s%d" % i) for i in range(3)]
    health = "{path: /healthz, interval: 100ms, timeout: 200ms, rise: 1, fall: 1}"
    v = verge(app_yaml(origins_yaml(api=dict(servers=os_, balance="hash", hash_on="header:X-User",
                                             health=health))))
    c = v.conn()
    before = {k: served_by(conn_request(c, "GET", "/api/x", headers={"X-User": "k%d" % k})) for k in range(60)}
    os_[0].health_status = 500
    time.sleep(0.8)
    after = {k: served_by(conn_request(c, "GET", "/api/x", headers={"X-User": "k%d" % k})) for k in range(60)}
    assert "s0" not in after.values()
    moved = [k for k in before if before[k] != "s0" and after[k] != before[k]]
    assert not moved, (before, after)


# ---- health -------------------------------------------------------------------------

HEALTH = "{path: /healthz, interval: 200ms, timeout: 200ms, rise: 1, fall: 2}"


def test_active_health_check(verge, origin):
    a, b = origin("a"), origin("b")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, b], health=HEALTH))))
    assert wait_for(lambda: a.health_hits >= 2 and b.health_hits >= 2, 3), "no health probes"
    got = Counter(served_by(r) for r in many(v, 10))
    assert got["b"] > 0
    b.health_status = 500
    time.sleep(1.0)
    got = Counter(served_by(r) for r in many(v, 20))
    assert got == {"a": 20}, got
    b.health_status = 200

    def b_back():
        return "b" in {served_by(r) for r in many(v, 4)}

    assert wait_for(b_back, 2.0, interval=0.1), "b never came back"


def test_active_health_probe_timeout_marks_down(verge, origin):
    a, b = origin("a"), origin("b")

    def hang(h, rec):
        time.sleep(1.0)
        h.send_plain(200, b"late\n")

    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, b], health=HEALTH))))
    b.health_path = "/never"  # b's /healthz now goes to the handlers
    b.handlers["/healthz"] = hang
    time.sleep(1.2)
    got = Counter(served_by(r) for r in many(v, 20, path="/api/x"))
    assert got == {"a": 20}, got


def test_all_servers_down(verge, origin):
    a = origin("a")
    a.health_status = 500
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], health=HEALTH))))
    time.sleep(0.8)
    r = v.get("/api/x")
    assert r.status in (502, 503), r
    assert a.count() == 0


def test_passive_ejection(verge, origin):
    a, b = origin("a"), origin("b")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, b], retries=0,
                                             passive="{max_fails: 2, fail_timeout: 10s}"))))
    assert {served_by(r) for r in many(v, 4)} == {"a", "b"}
    b.kill()
    statuses = [r.status for r in many(v, 20, keepalive=False)]
    assert statuses.count(502) <= 2, statuses
    assert set(statuses) <= {200, 502}, statuses
    assert statuses[-10:] == [200] * 10, statuses


def test_passive_ejection_expires(verge, origin):
    a = origin("a")
    bport = free_port()
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, "http://127.0.0.1:%d" % bport], retries=0,
                                             passive="{max_fails: 1, fail_timeout: 1s}"))))
    statuses = [r.status for r in many(v, 6)]
    assert statuses.count(502) == 1 and statuses.count(200) == 5, statuses  # b failed once, then ejected
    b = origin("b", port=bport)  # b comes back; after fail_timeout it gets traffic again
    time.sleep(1.1)

    def b_used():
        many(v, 4)
        return b.count() > 0

    assert wait_for(b_used, 3, interval=0.1), "b never retried after fail_timeout"


def test_retry_idempotent_on_dead_server(verge, origin):
    a = origin("a")
    dead = "http://127.0.0.1:%d" % free_port()
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, dead], retries=1, passive="{max_fails: 0}"))))
    rs = many(v, 20)
    assert [r.status for r in rs] == [200] * 20, [r.status for r in rs]
    assert a.count() == 20


def test_no_retry_when_retries_is_zero(verge, origin):
    a = origin("a")
    dead = "http://127.0.0.1:%d" % free_port()
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, dead], retries=0, passive="{max_fails: 0}"))))
    statuses = Counter(r.status for r in many(v, 20))
    assert statuses == {200: 10, 502: 10}, statuses


def test_origin_refused_is_502(verge):
    v = verge("name: px\nroutes:\n  - path: /\n    proxy: http://127.0.0.1:%d\n" % free_port())
    t = time.monotonic()
    r = v.get("/x")
    assert r.status == 502, r
    assert time.monotonic() - t < 3


def test_origin_timeout_is_504(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], retries=0,
                                             timeouts="{connect: 1s, read: 500ms, total: 5s}"))))
    t = time.monotonic()
    r = v.get("/api/x?delay=2")
    took = time.monotonic() - t
    assert r.status == 504, r
    assert 0.4 <= took < 1.8, took
    assert v.get("/api/x").status == 200


def test_total_timeout_is_504(verge, origin):
    a = origin("a")

    def dribble(h, rec):
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        for _ in range(100):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.05)

    a.handlers["/dribble"] = dribble
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], retries=0,
                                             timeouts="{connect: 1s, read: 1s, total: 1s}"))))
    t = time.monotonic()
    try:
        r = v.get("/api/dribble")
        # headers may already be out: then the body must be cut short
        assert r.status == 504 or len(r.body) < 100, r
    except (http.client.IncompleteRead, ConnectionError):
        pass
    assert time.monotonic() - t < 3.5


def test_connect_timeout(verge):
    """An origin whose accept queue is full never completes the handshake:
    timeouts.connect bounds the wait."""
    bh = socket.socket()
    bh.bind(("127.0.0.1", 0))
    bh.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue; later SYNs are dropped
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(bh.getsockname())
            fillers.append(f)
        time.sleep(0.1)
        url = "http://127.0.0.1:%d" % bh.getsockname()[1]
        v = verge(app_yaml(origins_yaml(api=dict(servers=[url], retries=0,
                                                 timeouts="{connect: 300ms, read: 3s, total: 10s}"))))
        t = time.monotonic()
        r = v.get("/api/x", timeout=15)
        took = time.monotonic() - t
        assert r.status in (502, 504), r
        assert took < 2.5, "connect timeout 300ms, answered after %.1fs" % took
    finally:
        for f in fillers:
            f.close()
        bh.close()


def test_keepalive_to_origin(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    many(v, 20, keepalive=False)
    assert a.count() == 20
    assert len(a.conns) <= 3, a.conns


# ---- the upstream connection pool ------------------------------------------------------


class ScriptedOrigin:
    """A bare HTTP/1.1 origin for what http.server hides: which connection a
    request came on, and answers byte for byte. answer(conn_no, req_no,
    method, path, body) returns the bytes to send, or None to close the
    connection without answering; `close_after` (a set of (conn_no,
    req_no)) closes right after sending that answer. Requests carry
    Content-Length bodies only. `seen` lists (conn_no, req_no, method,
    path, body)."""

    def __init__(self, answer):
        self.answer = answer
        self.close_after = set()
        self.seen = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        self.closed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
                n = len(self.conns) - 1
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    @staticmethod
    def _read_request(c, buf):
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return None, buf
            buf += d
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        while len(buf) < length:
            d = c.recv(65536)
            if not d:
                return None, buf
            buf += d
        return (method, path, buf[:length]), buf[length:]

    def _serve(self, c, conn_no):
        buf = b""
        req_no = 0
        try:
            while True:
                req, buf = self._read_request(c, buf)
                if req is None:
                    return
                with self.lock:
                    self.seen.append((conn_no, req_no) + req)
                out = self.answer(conn_no, req_no, *req)
                if out is None:
                    return
                c.sendall(out)
                if (conn_no, req_no) in self.close_after:
                    return
                req_no += 1
        except OSError:
            pass
        finally:
            c.close()
            with self.lock:
                self.closed += 1

    def stop(self):
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def scripted():
    started = []

    def start(answer):
        o = ScriptedOrigin(answer)
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop()


def ok(body=b"ok\n", extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_origin_connection_reused(verge, origin):
    """Sequential requests from different clients share one upstream
    connection; so do the ones on a client keep-alive connection."""
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    many(v, 10, keepalive=False)
    many(v, 10, keepalive=True)
    with RawConn(v.port) as c:  # bodiless answers and chunked ones leave it in step too
        assert c.request("HEAD", "/api/download/100").status == 200
        assert c.request("POST", "/api/x", body=b"b" * 5000).status == 200
        assert c.request("GET", "/api/x").status == 200
    assert a.count() == 23
    assert len({r.peer for r in a.requests}) == 1, {r.peer for r in a.requests}
    assert not [r for r in v.log_records() if r.get("msg") == "upstream failed"], v.logs()


def test_origin_keepalive_zero_turns_reuse_off(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], keepalive="0"))))
    many(v, 5)
    assert len({r.peer for r in a.requests}) == 5


def test_origin_closes_idle_connection(verge, scripted):
    """An origin that closes keep-alive connections after a short idle time:
    verge notices while the connection is idle and opens a new one."""
    o = scripted(lambda conn, req, *rest: ok())
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o.url]))))
    assert v.get("/api/1").status == 200
    with o.lock:
        first = o.conns[0]
    first.shutdown(socket.SHUT_RDWR)  # the origin's idle timeout
    assert wait_for(lambda: o.closed == 1, 5)
    time.sleep(0.2)
    assert v.request("POST", "/api/2", body=b"once").status == 200
    assert [s[:4] for s in o.seen] == [(0, 0, "GET", "/1"), (1, 0, "POST", "/2")], o.seen
    msgs = [r.get("msg") for r in v.log_records()]
    assert "upstream failed" not in msgs, v.logs()
    assert "pooled upstream connection was closed, sending again on a new one" not in msgs, v.logs()


def test_idle_connections_capped(verge, origin):
    """At most 64 idle connections per server and worker: a burst of 80
    leaves 64 open, and they are used again."""
    a = origin("a", delay=0.5)
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    with concurrent.futures.ThreadPoolExecutor(80) as ex:
        statuses = list(ex.map(lambda i: v.get("/api/%d" % i, timeout=20).status, range(80)))
    assert statuses == [200] * 80
    assert len(a.conns) == 80
    assert wait_for(lambda: len(a.open_socks) == 64, 5), len(a.open_socks)
    a.delay = 0
    a.reset()
    many(v, 5, keepalive=False)
    assert not a.conns, a.conns  # no new connection
    assert len({r.peer for r in a.requests}) == 1 and len(a.open_socks) == 64


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pooled_connection_closed_as_request_arrives_is_sent_again(verge, scripted, method):
    """The origin closes an idle connection just as the next request arrives
    on it (no response byte): the request, even a POST, goes again on a new
    connection, without counting as a failed attempt of the server."""
    o = scripted(lambda conn, req, *rest: None if (conn, req) == (0, 1) else ok())
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o.url], retries=0,
                                             passive="{max_fails: 1, fail_timeout: 10s}"))))
    assert v.get("/api/1").status == 200
    r = v.request(method, "/api/2", body=b"pay" if method == "POST" else None)
    assert r.status == 200, r
    assert [s[:3] for s in o.seen] == [(0, 0, "GET"), (0, 1, method), (1, 0, method)], o.seen
    assert v.get("/api/3").status == 200  # not ejected
    assert [r for r in v.log_records() if r.get("msg") == "pooled upstream connection was closed, sending again on a new one"]
    assert not [r for r in v.log_records() if r.get("msg") == "upstream failed"], v.logs()


def test_new_connection_closed_without_answer_is_not_sent_again(verge, scripted):
    """The same close on a connection that was not reused is the origin
    failing: a POST is not sent twice."""
    o = scripted(lambda conn, req, method, *rest: None if method == "POST" else ok())
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o.url], retries=1, passive="{max_fails: 0}"))))
    assert v.request("POST", "/api/p", body=b"x").status == 502
    assert [s[2] for s in o.seen] == ["POST"], o.seen


def test_chunked_response_with_extensions_and_trailers_keeps_connection(verge, scripted):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
    o = scripted(lambda conn, req, *rest: chunked if req % 2 == 0 else ok())
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o.url]))))
    for i in range(4):
        r = v.get("/api/%d" % i)
        assert r.status == 200
        assert r.body == (b"hello world" if i % 2 == 0 else b"ok\n"), r
    assert r.headers.get("X-Trailer") is None
    assert {s[0] for s in o.seen} == {0}, o.seen


OK3 = b"Content-Length: 3\r\n\r\nok\n"


@pytest.mark.parametrize("answer,status,reuse", [
    (b"HTTP/1.1 200 OK\r\n" + OK3, 200, True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + OK3, 200, False),
    (b"HTTP/1.0 200 OK\r\n" + OK3, 200, False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n" + OK3, 200, True),
    (b"HTTP/1.1 200 OK\r\n" + OK3 + b"HTTP/1.1 200 OK\r\n", 200, False),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + OK3, 200, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n", 200,
     False),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, True),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nok\n", 204, False),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", 304, True),
], ids=["keep-alive", "connection-close", "http10", "http10-keepalive", "bytes-after-response",
        "100-continue-first", "length-and-chunked", "204", "204-with-body", "304-with-length"])
def test_connection_reused_only_when_allowed(verge, scripted, answer, status, reuse):
    o = scripted(lambda conn, req, *rest: answer)
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o.url]))))
    with RawConn(v.port) as c:
        for i in range(3):
            r = c.request("GET", "/api/%d" % i)
            assert r.status == status and r.body == (b"ok\n" if status == 200 else b""), r
    conns = [s[0] for s in o.seen]
    assert conns == ([0, 0, 0] if reuse else [0, 1, 2]), o.seen


def test_close_delimited_response_then_next_request(verge, scripted):
    """A body that runs until the close (HTTP/1.0 style): complete, and the
    connection is not reused."""
    data = pattern_bytes(300000)
    o = scripted(lambda conn, req, *rest: b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n" + data)
    o.close_after = {(i, 0) for i in range(10)}
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o.url]))))
    for i in range(3):
        r = v.get("/api/%d" % i, timeout=20)
        assert r.status == 200 and r.body == data
    assert [s[:2] for s in o.seen] == [(0, 0), (1, 0), (2, 0)], o.seen


def test_close_delimited_response_cut_by_reset_is_aborted(verge, scripted):
    def answer(conn, req, *rest):
        c = o.conns[conn]
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\npartial")
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        return None

    o = scripted(answer)
    v = verge(app_yaml(origins_yaml(api=dict(servers=[o.url]))))
    with RawConn(v.port, timeout=5) as c:
        c.send(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        _, status, _, h = c.read_head()
        assert status == 200
        assert c.wait_closed(3)
        assert not c.buf.endswith(b"0\r\n\r\n"), c.buf  # not ended as if complete


def test_slow_client_chunked_download_is_backpressured(verge, origin):
    """Backpressure with a chunked origin body (decoded in place) as with a
    sized one."""
    a = origin("a")
    size = 32 << 20
    data = pattern_bytes(size)

    def chunked(h, rec):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, size, 1 << 20):
            h._chunk(data[i:i + (1 << 20)])
        h._chunk(b"")

    a.handlers["/chunked"] = chunked
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 1s, total: 60s}"))))
    assert v.get("/api/x").status == 200
    base = _rss_kib(v.proc.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(30)
    s.connect(("127.0.0.1", v.port))
    try:
        s.sendall(b"GET /api/chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = _read_head(s)
        assert head.startswith("HTTP/1.1 200"), head
        time.sleep(2.5)
        grown = _rss_kib(v.proc.pid) - base
        while True:
            d = s.recv(1 << 20)
            assert d, "closed after %d bytes" % len(body)
            body += d
            if body.endswith(b"\r\n0\r\n\r\n"):
                break
    finally:
        s.close()
    assert grown < 20 * 1024, "RSS grew by %d KiB while the client stalled" % grown
    got, rest = b"", body
    while True:  # decode what verge sent on (chunked again, in its own pieces)
        line, _, rest = rest.partition(b"\r\n")
        n = int(line, 16)
        if n == 0:
            break
        got += rest[:n]
        rest = rest[n + 2:]
    assert got == data
    assert not [r for r in v.log_records() if r.get("msg") == "upstream failed"], v.logs()


# ---- streaming -------------------------------------------------------------------------


def test_chunked_request_body(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    parts = [b"hello ", b"chunked ", b"x" * 5000, b" world"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    with RawConn(v.port) as c:
        c.send(b"POST /api/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 700):
            c.send(body[i:i + 700])
            time.sleep(0.01)
        r = c.read_response()
    assert r.status == 200, r
    (rec,) = a.requests
    assert rec.body == b"".join(parts)
    assert r.json()["body_len"] == len(b"".join(parts))


def test_chunked_response_is_streamed(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 10s, total: 20s}"))))
    with RawConn(v.port, timeout=4) as c:
        c.send(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        version, status, reason, h = c.read_head()
        assert status == 200
        got = b""
        chunked = "chunked" in (h.get("Transfer-Encoding") or "")
        assert chunked or h.get("Content-Length") is None, h
        while b"first\n" not in got:  # must arrive before the origin sends the rest
            got += c.read_chunk() if chunked else c._read_n(1)
        a.stream_event.set()
        while True:
            d = c.read_chunk() if chunked else (c._read_n(1) if not c.eof else b"")
            if not d:
                break
            got += d
            if not chunked and got.endswith(b"second\n"):
                break
    assert got == b"first\nsecond\n"


BIG = 64 << 20


def test_64mib_upload(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 30s, total: 60s}")),
                       limits="{body_size: 100m}"))
    data = pattern_bytes(BIG)
    r = v.request("POST", "/api/upload", body=data, timeout=60)
    assert r.status == 200, r
    info = r.json()
    assert info["body_len"] == BIG
    assert info["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_64mib_download(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 30s, total: 60s}"))))
    c = http.client.HTTPConnection("127.0.0.1", v.port, timeout=60)
    c.request("GET", "/api/download/%d" % BIG)
    r = c.getresponse()
    assert r.status == 200
    h = hashlib.sha256()
    n = 0
    while True:
        d = r.read(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
    c.close()
    assert n == BIG
    assert h.hexdigest() == hashlib.sha256(pattern_bytes(BIG)).hexdigest()


def test_body_over_limit_not_forwarded(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a])), limits="{body_size: 1k}"))
    r = v.request("POST", "/api/x", body=b"x" * 2000)
    assert r.status == 413, r
    assert a.count() == 0


def test_proxy_json_roundtrip_many_concurrent(verge, origin):
    a, b = origin("a"), origin("b")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, b]))), workers=2)

    def one(i):
        body = json.dumps({"i": i}).encode() * 50
        r = v.request("POST", "/api/p%d" % i, body=body)
        return r.status, r.json()["body_sha256"] == hashlib.sha256(body).hexdigest(), r.json()["path"]

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        res = list(ex.map(one, range(200)))
    assert all(s == 200 and ok for s, ok, _ in res), res[:5]
    assert sorted(p for _, _, p in res) == sorted("/p%d" % i for i in range(200))


# ---- failure semantics ---------------------------------------------------------------


def drop_connection(h, rec):
    """Reads the request, then closes without answering (origin crash)."""
    h.close_connection = True
    try:
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def test_non_idempotent_not_retried_after_sent(verge, origin):
    a, b = origin("a"), origin("b")
    a.handlers["/"] = drop_connection
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, b], retries=1, passive="{max_fails: 0}"))))
    statuses = [v.request("POST", "/api/p%d" % i, body=b"pay once").status for i in range(6)]
    # each POST reached exactly one server: none was sent twice
    assert a.count() + b.count() == 6, (a.requests, b.requests)
    assert statuses.count(200) == b.count() and statuses.count(502) == a.count(), statuses
    assert a.count() > 0
    # the same failure on a GET is retried on b
    a.reset()
    b.reset()
    gets = [v.get("/api/g%d" % i).status for i in range(6)]
    assert gets == [200] * 6, gets
    assert b.count() == 6


def test_passive_ejection_on_5xx(verge, origin):
    a, b = origin("a"), origin("b")
    b.handlers["/"] = lambda h, rec: h.send_plain(500, b"broken\n")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, b], retries=0,
                                             passive="{max_fails: 2, fail_timeout: 10s}"))))
    statuses = [r.status for r in many(v, 20)]
    assert statuses.count(500) == 2, statuses
    assert statuses[-10:] == [200] * 10, statuses


def test_stale_pooled_connection_is_not_used(verge, origin):
    """The origin closes idle keep-alive connections without saying so; a
    request after that must not fail on the dead pooled connection."""
    a = origin("a")

    def answer_then_close(h, rec):
        h.send_plain(200, b"ok\n")
        h.close_connection = True  # closes right after, no "Connection: close"

    a.handlers["/"] = answer_then_close
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], retries=0))))
    statuses = []
    for i in range(6):
        statuses.append(v.request("POST" if i % 2 else "GET", "/api/x", body=b"x" if i % 2 else None).status)
        time.sleep(0.2)
    assert statuses == [200] * 6, statuses


def test_close_delimited_origin_response(verge, origin):
    a = origin("a")

    def no_length(h, rec):
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"y" * 100000)
        h.close_connection = True

    a.handlers["/"] = no_length
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    r = v.get("/api/x")
    assert r.status == 200 and r.body == b"y" * 100000


def test_head_through_proxy(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    with RawConn(v.port) as c:
        r = c.request("HEAD", "/api/download/5000")
        assert r.status == 200 and r.body == b""
        assert r.headers.get("Content-Length") == "5000"
        r = c.request("GET", "/api/status/204")
        assert r.status == 204
        assert c.request("GET", "/api/x").status == 200  # the connection is still in sync
    assert [x.method for x in a.requests] == ["HEAD", "GET", "GET"]


def test_encoded_path_forwarded_verbatim(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    with RawConn(v.port) as c:
        assert c.request("GET", "/api/a%2Fb/c%20d?q=%26x").status == 200
    assert a.requests[0].path == "/a%2Fb/c%20d?q=%26x"


def test_expect_continue_upload_with_curl(verge, origin, tmp_path):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a])), limits="{body_size: 10m}"))
    f = tmp_path / "up.bin"
    data = pattern_bytes(2 << 20)
    f.write_bytes(data)
    p = subprocess.run(["curl", "-sS", "--max-time", "20", "-H", "Expect: 100-continue", "-T", str(f),
                        "http://127.0.0.1:%d/api/put" % v.port], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["method"] == "PUT" and info["body_len"] == len(data)
    assert info["body_sha256"] == hashlib.sha256(data).hexdigest()


# ---- forwarder: backpressure, aborts, bad answers, timeouts ------------------------------


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, "closed before the head: %r" % buf
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def test_slow_client_download_is_backpressured(verge, origin):
    """A client that stops reading stops verge reading the origin: memory
    stays flat instead of buffering what the origin pushes, and the pause is
    not mistaken for an idle origin (read timeout 1s < the stall)."""
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 1s, total: 60s}"))))
    assert v.get("/api/x").status == 200  # warm up pools and buffers
    base = _rss_kib(v.proc.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(30)
    s.connect(("127.0.0.1", v.port))
    try:
        s.sendall(b"GET /api/download/%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
        head, body = _read_head(s)
        assert head.startswith("HTTP/1.1 200"), head
        time.sleep(2.5)  # the origin could push all 64 MiB meanwhile
        grown = _rss_kib(v.proc.pid) - base
        h = hashlib.sha256(body)
        n = len(body)
        while n < BIG:
            d = s.recv(1 << 20)
            assert d, "closed after %d bytes" % n
            h.update(d)
            n += len(d)
    finally:
        s.close()
    assert grown < 20 * 1024, "RSS grew by %d KiB while the client stalled" % grown
    assert n == BIG and h.hexdigest() == hashlib.sha256(pattern_bytes(BIG)).hexdigest()
    assert not [r for r in v.log_records() if r.get("msg") == "upstream failed"], v.logs()


def test_client_abort_mid_download_cuts_upstream(verge, origin):
    """The client leaves mid-body: the origin connection is closed, not
    parked in the keep-alive pool with half a response in it."""
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    s = socket.create_connection(("127.0.0.1", v.port), timeout=10)
    s.sendall(b"GET /api/download/%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
    got = 0
    while got < (1 << 20):
        d = s.recv(65536)
        assert d
        got += len(d)
    s.close()
    assert wait_for(lambda: not a.open_socks, 5), "origin connection still open"
    r = v.get("/api/x")
    assert r.status == 200 and served_by(r) == "a"


def test_h2_stream_gone_while_waiting_for_origin(verge, origin):
    """An HTTP/2 client gives up before the origin answers: the upstream
    exchange is cancelled (its connection closed, not pooled)."""
    a = origin("a", delay=1.0)
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    p = subprocess.run(["nghttp", "-t", "300ms", "http://127.0.0.1:%d/api/x" % v.port], capture_output=True,
                       timeout=10)
    assert b"Timeout" in p.stderr, p.stderr
    assert wait_for(lambda: a.count() == 1 and not a.open_socks, 5), "origin connection still open"
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "10",
                        "http://127.0.0.1:%d/api/download/%d" % (v.port, 8 << 20)], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert hashlib.sha256(p.stdout).hexdigest() == hashlib.sha256(pattern_bytes(8 << 20)).hexdigest()


def test_chunked_origin_response_large(verge, origin):
    a = origin("a")
    data = pattern_bytes(3 << 20)

    def chunked(h, rec):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), 50000):
            h._chunk(data[i:i + 50000])
        h._chunk(b"")

    a.handlers["/chunked"] = chunked
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    r = v.get("/api/chunked", timeout=30)
    assert r.status == 200 and r.body == data
    assert v.get("/api/x").status == 200
    assert len(a.conns) == 1, a.conns  # the connection went back to the pool after the last chunk


def _raw_answer(data):
    def handler(h, rec):
        h.wfile.write(data)
        h.wfile.flush()
        h.close_connection = True
    return handler


@pytest.mark.parametrize("answer", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
], ids=["garbage", "two-lengths", "unasked-101"])
def test_malformed_origin_response_is_502_not_retried(verge, origin, answer):
    a, b = origin("a"), origin("b")
    a.handlers["/"] = _raw_answer(answer)
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a, b], retries=1, passive="{max_fails: 0}"))))
    statuses = [v.get("/api/g%d" % i).status for i in range(4)]
    assert sorted(statuses) == [200, 200, 502, 502], statuses
    assert a.count() == 2 and b.count() == 2  # a response came back: no retry
    fails = [r for r in v.log_records() if r.get("msg") == "upstream failed"]
    assert len(fails) == 2 and all(r["server"] == a.url for r in fails), fails


class Blackhole:
    """A listening socket whose accept queue is full: connects to it hang."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.fillers = []
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(self.sock.getsockname())
            self.fillers.append(f)
        time.sleep(0.1)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        return self

    def __exit__(self, *a):
        for f in self.fillers:
            f.close()
        self.sock.close()


def test_connect_timeout_is_504_and_retried_even_for_post(verge, origin):
    b = origin("b")
    with Blackhole() as bh:
        timeouts = "{connect: 200ms, read: 3s, total: 10s}"
        v = verge(app_yaml(origins_yaml(api=dict(servers=[bh.url], retries=0, timeouts=timeouts))))
        t = time.monotonic()
        r = v.get("/api/x")
        assert r.status == 504, r
        assert time.monotonic() - t < 1.5
        (rec,) = [x for x in v.log_records() if x.get("msg") == "upstream failed"]
        assert rec["reason"] == "connect timeout" and rec["server"] == bh.url, rec

        # nothing was sent: a POST may go to the next server
        v = verge(app_yaml(origins_yaml(api=dict(servers=[bh.url, b], retries=1, timeouts=timeouts,
                                                 passive="{max_fails: 0}"))))
        statuses = [v.request("POST", "/api/p%d" % i, body=b"once").status for i in range(4)]
        assert statuses == [200] * 4, statuses
        assert b.count() == 4
        retried = [x for x in v.log_records() if x.get("msg") == "upstream attempt failed, retrying"]
        assert [x["reason"] for x in retried] == ["connect timeout"] * 2, retried


def test_read_timeout_after_head_aborts_stream(verge, origin):
    a = origin("a")

    def stall(h, rec):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"x" * 100)
        h.wfile.flush()
        time.sleep(3)

    a.handlers["/stall"] = stall
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 500ms, total: 10s}"))))
    t = time.monotonic()
    with RawConn(v.port, timeout=5) as c:
        c.send(b"GET /api/stall HTTP/1.1\r\nHost: x\r\n\r\n")
        _, status, _, h = c.read_head()
        assert status == 200 and h.get("Content-Length") == "1000"
        assert c.wait_closed(3), "stream not aborted"
        assert len(c.buf) < 1000
    assert time.monotonic() - t < 2.5
    assert [r["reason"] for r in v.log_records() if r.get("msg") == "upstream failed"] == ["read timeout"]


def test_error_after_head_aborts_stream(verge, origin):
    """The origin dies mid-body: the client must see a broken response, not
    a short one that looks complete."""
    a = origin("a")

    def die(h, rec):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h._chunk(b"partial")
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True

    a.handlers["/die"] = die
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    with RawConn(v.port, timeout=5) as c:
        c.send(b"GET /api/die HTTP/1.1\r\nHost: x\r\n\r\n")
        _, status, _, h = c.read_head()
        assert status == 200
        assert c.wait_closed(3)
        assert not c.buf.endswith(b"0\r\n\r\n"), c.buf  # no terminating chunk


def test_response_hop_by_hop_removed_and_via_added(verge, origin):
    a = origin("a")
    a.handlers["/hop"] = lambda h, rec: h.send_plain(200, b"ok\n", headers=[
        ("Connection", "X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"),
        ("Proxy-Authenticate", "Basic"), ("X-Kept", "yes"), ("Via", "1.0 inner")])
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a]))))
    r = v.get("/api/hop")
    assert r.status == 200 and r.body == b"ok\n"
    assert r.headers.get("X-Kept") == "yes"
    for name in ("X-Secret", "Keep-Alive", "Proxy-Authenticate"):
        assert r.headers.get(name) is None, r.headers
    vias = ", ".join(r.headers.get_all("Via"))
    assert "1.0 inner" in vias and "1.1 verge" in vias, vias
    assert len(r.headers.get_all("Server")) == 1 and len(r.headers.get_all("Date")) == 1, r.headers


def test_preserve_host(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], preserve_host="true"))))
    assert v.get("/api/x", host="shop.example").status == 200
    assert a.requests[0].headers.get("Host") == "shop.example"
