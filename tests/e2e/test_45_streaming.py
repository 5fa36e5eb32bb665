"""Request bodies streamed through the proxy in constant memory: a 1 GiB
upload (Content-Length) and a chunked one of unknown length reach the origin
intact while verge's RSS stays within a few MiB of where it started."""

import hashlib
import json
import os
import socket
import threading
import time

import pytest

from test_40_proxy import app_yaml, origins_yaml

GIB = 1 << 30
PIECE = 1 << 20
# Under ASan freed memory sits in a quarantine (256 MiB by default): RSS says
# nothing about what verge holds, so only the bodies are checked there.
SANITIZED = bool(os.environ.get("ASAN_OPTIONS"))
RSS_BOUND_KIB = 1 << 40 if SANITIZED else 8 * 1024
# The GiB is for the memory bound; with that off, a smaller body checks
# the streaming as well (a GiB through ASan took over 90 s on a busy machine)
BIG = GIB // 8 if SANITIZED else GIB


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssWatch:
    """Samples a process's RSS every 20 ms; .peak is the highest seen."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, rss_kib(pid), False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def done(self):
        self.stop = True
        self.t.join()
        return self.peak


def piece(i):
    """1 MiB that differs per index, so reordering or loss changes the hash."""
    return (b"%08d" % i) * (PIECE // 8)


def read_json_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, "closed before the response head: %r" % buf[:200]
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = [int(l.split(":", 1)[1]) for l in lines[1:] if l.lower().startswith("content-length:")]
    while length and len(body) < length[0]:
        d = s.recv(65536)
        assert d
        body += d
    return status, body


def start(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a], timeouts="{connect: 1s, read: 60s, total: 300s}")),
                       limits="{body_size: 2g}"))
    assert v.get("/api/warm").status == 200  # pools and buffers exist before the baseline
    return v


@pytest.mark.budget(280)  # a GiB on a busy machine
def test_1gib_upload_in_constant_memory(verge, origin):
    v = start(verge, origin)
    base = rss_kib(v.proc.pid)
    watch = RssWatch(v.proc.pid)
    h = hashlib.sha256()
    s = socket.create_connection(("127.0.0.1", v.port), timeout=120)
    try:
        s.sendall(b"PUT /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BIG)
        for i in range(BIG // PIECE):
            p = piece(i)
            h.update(p)
            s.sendall(p)
        status, body = read_json_response(s)
    finally:
        s.close()
        peak = watch.done()
    assert status == 200, body[:300]
    info = json.loads(body)
    assert info["body_len"] == BIG and info["body_sha256"] == h.hexdigest()
    print("1 GiB upload: RSS grew by %d KiB" % (peak - base))
    assert peak - base < RSS_BOUND_KIB, "RSS grew by %d KiB during a 1 GiB upload" % (peak - base)


def test_chunked_upload_of_unknown_length_streams(verge, origin):
    v = start(verge, origin)
    base = rss_kib(v.proc.pid)
    watch = RssWatch(v.proc.pid)
    h = hashlib.sha256()
    total = 256 * PIECE
    s = socket.create_connection(("127.0.0.1", v.port), timeout=120)
    try:
        s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(total // PIECE):
            p = piece(i)
            h.update(p)
            s.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        status, body = read_json_response(s)
    finally:
        s.close()
        peak = watch.done()
    assert status == 200, body[:300]
    info = json.loads(body)
    assert info["body_len"] == total and info["body_sha256"] == h.hexdigest()
    print("256 MiB chunked upload: RSS grew by %d KiB" % (peak - base))
    assert peak - base < RSS_BOUND_KIB, "RSS grew by %d KiB during a chunked upload" % (peak - base)


def test_upload_over_limit_midway_is_413_and_not_completed(verge, origin):
    a = origin("a")
    v = verge(app_yaml(origins_yaml(api=dict(servers=[a])), limits="{body_size: 1m}"))
    s = socket.create_connection(("127.0.0.1", v.port), timeout=20)
    status = None
    try:
        s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for i in range(8):
                p = piece(i)
                s.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status, _ = read_json_response(s)
        except (AssertionError, ConnectionResetError):
            status = None  # the node may close before the answer is read: also refused
    finally:
        s.close()
    assert status in (413, None), status
    assert not [r for r in a.requests if r.body_len >= 8 * PIECE], "an over-limit body reached the origin whole"
