"""HTTP/2 (http2.c on nghttp2): request bodies streamed with flow control as
the backpressure, limits at the boundary (413, 431), refused streams that
leave the connection usable, resets, idle close, and a large upload in
constant memory. The client is python3-h2 (a real HTTP/2 stack), or curl."""

import hashlib
import json
import socket
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from harness import wait_for
from test_40_proxy import app_yaml, origins_yaml
from test_45_streaming import BIG, PIECE, RSS_BOUND_KIB, RssWatch, piece, rss_kib


class H2:
    """A blocking HTTP/2 client on one prior-knowledge connection."""

    def __init__(self, port, window=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.c.initiate_connection()
        if window:
            self.c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.streams = {}  # id -> dict(status, headers, body, ended, reset)
        self.closed = False
        self.goaway = None

    def flush(self):
        d = self.c.data_to_send()
        if d:
            self.s.sendall(d)

    def pump(self, timeout=10):
        """Reads once and handles the events."""
        self.s.settimeout(timeout)
        d = self.s.recv(65536)
        if not d:
            self.closed = True
            return
        for ev in self.c.receive_data(d):
            st = self.streams.setdefault(getattr(ev, "stream_id", 0), {"body": b"", "ended": False, "reset": None})
            if isinstance(ev, h2.events.ResponseReceived):
                hd = dict(ev.headers)
                st["status"], st["headers"] = int(hd[":status"]), hd
            elif isinstance(ev, h2.events.DataReceived):
                st["body"] += ev.data
                self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                st["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
        self.flush()

    def headers(self, method, path, extra=(), end=False):
        sid = self.c.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "x.test")] + list(extra)
        self.c.send_headers(sid, hdrs, end_stream=end)
        self.flush()
        self.streams[sid] = {"body": b"", "ended": False, "reset": None}
        return sid

    def send(self, sid, data, end=False):
        """Sends data as the windows allow (reading while they are shut)."""
        while data:
            n = min(len(data), self.c.local_flow_control_window(sid), self.c.max_outbound_frame_size)
            if self.streams[sid]["reset"] is not None or self.streams[sid]["ended"]:
                return False
            if n <= 0:
                self.pump()
                continue
            self.c.send_data(sid, data[:n])
            self.flush()
            data = data[n:]
        if end:
            self.c.end_stream(sid)
            self.flush()
        return True

    def wait(self, sid, timeout=10):
        end = time.time() + timeout
        st = self.streams[sid]
        while not st["ended"] and st["reset"] is None and not self.closed:
            assert time.time() < end, "stream %d: no answer" % sid
            self.pump(timeout=end - time.time())
        return st

    def request(self, method, path, body=b"", extra=()):
        sid = self.headers(method, path, extra, end=not body)
        if body:
            self.send(sid, body, end=True)
        return self.wait(sid)

    def close(self):
        self.s.close()


def start(verge, origin, limits="{body_size: 1m}", args=()):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 60s, total: 300s}")),
                       limits=limits), args=args)
    return v, a


def test_small_body_arrives_whole(verge, origin):
    v, a = start(verge, origin)
    c = H2(v.port)
    st = c.request("POST", "/api/up", b"x" * 1000, extra=[("content-type", "text/plain")])
    assert st["status"] == 200
    info = json.loads(st["body"])
    assert info["body_len"] == 1000 and info["body_sha256"] == hashlib.sha256(b"x" * 1000).hexdigest()
    assert a.requests[-1].headers.get("Content-Length") == "1000"


def test_large_body_of_unknown_length_streams_to_origin(verge, origin):
    """No content-length: buffered up to 64 KiB, then streamed (chunked to
    the origin); every byte arrives in order."""
    v, a = start(verge, origin, limits="{body_size: 64m}")
    c = H2(v.port)
    body = b"".join(piece(i) for i in range(6))
    st = c.request("PUT", "/api/up", body)
    assert st["status"] == 200, st
    info = json.loads(st["body"])
    assert info["body_len"] == len(body) and info["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert a.requests[-1].chunked


def test_declared_length_body_streams_and_keeps_its_length(verge, origin):
    v, a = start(verge, origin, limits="{body_size: 64m}")
    c = H2(v.port)
    body = b"".join(piece(i) for i in range(3))
    st = c.request("PUT", "/api/up", body, extra=[("content-length", str(len(body)))])
    assert st["status"] == 200, st
    assert json.loads(st["body"])["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert a.requests[-1].headers.get("Content-Length") == str(len(body)) and not a.requests[-1].chunked


def test_server_holds_the_window_until_the_body_is_taken(verge, origin):
    """A body nobody takes (the origin accepts no connection) stops the
    client at the windows: what verge and the kernel's socket buffers hold
    is all that can be sent, and verge's memory does not grow with it."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)  # never accepted: the kernel completes the handshake, nobody reads
    try:
        url = "http://127.0.0.1:%d" % hole.getsockname()[1]
        v = verge(app_yaml(origins_yaml(api=dict(servers=[url], timeouts="{connect: 1s, read: 60s, total: 60s}")),
                           limits="{body_size: 1g}"))
        base = rss_kib(v.proc.pid)
        c = H2(v.port)
        sid = c.headers("PUT", "/api/up")
        sent = 0
        t0 = time.time()
        while time.time() - t0 < 1.0:
            n = min(c.c.local_flow_control_window(sid), c.c.max_outbound_frame_size)
            if n <= 0:
                try:
                    c.pump(timeout=0.1)
                except socket.timeout:
                    pass
                continue
            c.c.send_data(sid, b"z" * n)
            c.flush()
            sent += n
        grown = rss_kib(v.proc.pid) - base
        # unbounded, loopback takes hundreds of MiB a second; the kernel's
        # buffers on the way to the origin hold a few MiB at most
        assert sent < 16 * PIECE, "the client could send %d bytes into a body nobody reads" % sent
        assert grown < RSS_BOUND_KIB, "RSS grew by %d KiB" % grown
        c.c.reset_stream(sid)
        c.flush()
        assert v.alive()
    finally:
        hole.close()


def test_a_stalled_upload_does_not_hold_up_the_others(verge, origin):
    """Each stream's window is its own backpressure; the connection's window
    goes back on arrival, so an upload nobody reads leaves the other streams
    of the connection free to send."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    try:
        a = origin("a")
        routes = "  - path: /hole\n    proxy: hole\n  - path: /api\n    proxy: api\n    strip_prefix: /api\n"
        v = verge(app_yaml(origins_yaml(api=dict(servers=[a]),
                                        hole=dict(servers=["http://127.0.0.1:%d" % hole.getsockname()[1]])),
                           routes=routes, limits="{body_size: 64m}"))
        c = H2(v.port)
        stalled = []
        for _ in range(6):  # 6 x 256 KiB windows filled: more than a 1 MiB connection window
            sid = c.headers("PUT", "/hole/up")
            sent = 0
            while c.c.local_flow_control_window(sid) > 0:
                n = min(c.c.local_flow_control_window(sid), c.c.max_outbound_frame_size)
                c.c.send_data(sid, b"h" * n)
                c.flush()
                sent += n
            stalled.append(sid)
        body = b"".join(piece(i) for i in range(2))
        st = c.request("PUT", "/api/up", body)
        assert st["status"] == 200
        assert json.loads(st["body"])["body_sha256"] == hashlib.sha256(body).hexdigest()
    finally:
        hole.close()


def test_content_length_over_limit_is_413_at_once(verge, origin):
    v, a = start(verge, origin)
    c = H2(v.port)
    sid = c.headers("POST", "/api/up", [("content-length", str(2 << 20))])
    st = c.wait(sid)
    assert st["status"] == 413
    assert not a.requests
    assert any(r.get("status") == "413" for r in v.log_records())


def test_body_over_limit_midway_is_413_and_the_connection_lives_on(verge, origin):
    """Unknown length, over limits.body_size: 413, the stream is reset, and
    the bytes it held go back to the connection's window (a second upload
    on the same connection still flows)."""
    v, a = start(verge, origin)
    c = H2(v.port)
    for _ in range(3):  # more than the connection window (1 MiB) in refused bodies
        sid = c.headers("POST", "/api/up")
        c.send(sid, b"y" * (2 << 20))
        st = c.wait(sid)
        assert st["status"] == 413, st
    st = c.request("POST", "/api/up", b"ok" * 1000)
    assert st["status"] == 200
    assert json.loads(st["body"])["body_len"] == 2000


def test_header_list_over_limit_is_431(verge, origin):
    v, a = start(verge, origin, limits="{body_size: 1m, header_size: 4k}")
    c = H2(v.port)
    st = c.request("GET", "/api/x", extra=[("x-big", "v" * 6000)])
    assert st["status"] == 431
    st = c.request("GET", "/api/x")
    assert st["status"] == 200


def test_client_reset_mid_upload_leaves_the_connection_usable(verge, origin):
    v, a = start(verge, origin, limits="{body_size: 64m}")
    c = H2(v.port)
    sid = c.headers("PUT", "/api/up")
    c.send(sid, b"q" * (200 * 1024))
    c.c.reset_stream(sid)
    c.flush()
    st = c.request("GET", "/api/after")
    assert st["status"] == 200
    assert v.alive()


def test_concurrent_uploads_on_one_connection(verge, origin):
    v, a = start(verge, origin, limits="{body_size: 64m}")
    c = H2(v.port)
    bodies = {}
    for i in range(4):
        sid = c.headers("PUT", "/api/up/%d" % i)
        bodies[sid] = piece(i) + piece(i + 10)
    pending = dict(bodies)
    while pending:  # interleave: a slice of each until all are out
        for sid in list(pending):
            chunk, pending[sid] = pending[sid][: 64 * 1024], pending[sid][64 * 1024:]
            c.send(sid, chunk, end=not pending[sid])
            if not pending[sid]:
                del pending[sid]
    for sid, body in bodies.items():
        st = c.wait(sid, timeout=30)
        assert st["status"] == 200
        assert json.loads(st["body"])["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_idle_connection_gets_goaway(verge, origin):
    v, a = start(verge, origin, limits="{body_size: 1m, idle_timeout: 300ms}")
    c = H2(v.port)
    assert c.request("GET", "/api/x")["status"] == 200
    t0 = time.time()
    while not c.closed and time.time() - t0 < 5:
        c.pump(timeout=5)
    assert c.goaway == 0 and c.closed
    assert 0.2 < time.time() - t0 < 3


def test_response_keeps_origin_date_and_drops_connection_fields(verge, origin):
    v, a = start(verge, origin)
    c = H2(v.port)
    st = c.request("GET", "/api/x")
    assert st["status"] == 200
    assert "connection" not in st["headers"] and "keep-alive" not in st["headers"]
    assert st["headers"]["date"]


@pytest.mark.budget(280)  # a GiB on a busy machine (curl's --max-time is 300)
def test_1gib_h2_upload_in_constant_memory(verge, origin):
    """curl over h2c, body from a pipe (no length): every byte reaches the
    origin in order, and verge's RSS stays within a few MiB."""
    v, a = start(verge, origin, limits="{body_size: 2g}")
    assert v.get("/api/warm").status == 200
    base = rss_kib(v.proc.pid)
    watch = RssWatch(v.proc.pid)
    total = BIG
    h = hashlib.sha256()
    p = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", "-T", "-", "--max-time", "300",
                          "http://127.0.0.1:%d/api/upload" % v.port],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def feed():
        for i in range(total // PIECE):
            x = piece(i)
            h.update(x)
            p.stdin.write(x)
        p.stdin.close()

    t = threading.Thread(target=feed)
    t.start()
    out = p.stdout.read()  # not communicate(): it would close the pipe the feeder writes to
    err = p.stderr.read()
    p.wait(timeout=300)
    t.join()
    peak = watch.done()
    assert p.returncode == 0, err
    info = json.loads(out)
    assert info["body_len"] == total and info["body_sha256"] == h.hexdigest()
    print("1 GiB h2 upload: RSS grew by %d KiB" % (peak - base))
    assert peak - base < RSS_BOUND_KIB, "RSS grew by %d KiB during a 1 GiB h2 upload" % (peak - base)


def test_sigterm_sends_goaway_and_open_streams_finish(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 10s, total: 10s}"))))
    idle = H2(v.port)
    assert idle.request("GET", "/api/x")["status"] == 200
    # curl, because python-h2 treats a GOAWAY as the end of every stream
    slow = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "10",
                             "http://127.0.0.1:%d/api/slow?delay=0.7" % v.port], stdout=subprocess.PIPE)
    # the slow request is with the origin (not `active`, which the first
    # request leaves only after its response is out: seen first, it let
    # SIGTERM close the listener before curl connected)
    assert wait_for(lambda: any(r.path.startswith("/slow") for r in list(a.requests)), 5)
    v.signal(15)
    t0 = time.time()
    while not idle.closed and time.time() - t0 < 5:
        idle.pump(timeout=5)
    assert idle.goaway == 0 and idle.closed
    out, _ = slow.communicate(timeout=10)
    assert slow.returncode == 0 and json.loads(out)["path"] == "/slow?delay=0.7"
    assert v.proc.wait(timeout=10) == 0


def test_small_body_not_completed_in_time_is_408(verge, origin):
    """A body small enough to be read whole must arrive within
    header_timeout (as on HTTP/1): 408, and the connection lives on."""
    v, a = start(verge, origin, limits="{body_size: 1m, header_timeout: 300ms}")
    c = H2(v.port)
    sid = c.headers("POST", "/api/up", [("content-length", "1000")])
    c.send(sid, b"x" * 10)  # and then nothing
    t0 = time.time()
    st = c.wait(sid, timeout=5)
    assert st["status"] == 408 and 0.2 < time.time() - t0 < 3
    assert not a.requests
    assert c.request("GET", "/api/x")["status"] == 200


def test_header_block_left_open_gets_goaway_after_header_timeout(verge, origin):
    """HEADERS without END_HEADERS and no CONTINUATION: the connection can
    carry nothing else, so after header_timeout it is closed (GOAWAY)."""
    import struct
    from hpack import Encoder
    v, a = start(verge, origin, limits="{body_size: 1m, header_timeout: 300ms}")
    s = socket.create_connection(("127.0.0.1", v.port), timeout=5)
    block = Encoder().encode([(":method", "GET"), (":path", "/api/x"), (":scheme", "http"), (":authority", "x")])
    frame = lambda t, fl, sid, p: struct.pack(">I", len(p))[1:] + bytes([t, fl]) + struct.pack(">I", sid) + p
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 0x1, 1, block))
    t0 = time.time()
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    took = time.time() - t0
    s.close()
    types = []
    i = 0
    while i + 9 <= len(got):
        n = int.from_bytes(got[i:i + 3], "big")
        types.append(got[i + 3])
        i += 9 + n
    assert 7 in types, types  # GOAWAY
    assert 0.2 < took < 3
    assert any(r.get("status") == "408" for r in v.log_records())
