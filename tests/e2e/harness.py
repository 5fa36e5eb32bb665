"""Helpers for the end-to-end tests: the verge process, scripted origins,
raw HTTP/1 clients. Standard library only.

Fixtures that hand these out live in conftest.py; test modules import the
helpers directly (`from harness import ...`)."""

import email.utils
import errno
import hashlib
import http.client
import http.server
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Ports handed out in this session: never hand the same one out twice.
_ports_given = set()
_ports_lock = threading.Lock()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    with _ports_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free port")


def verge_bin():
    """VERGE_BIN (relative to the current directory or the repo), else build/verge."""
    env = os.environ.get("VERGE_BIN")
    if env:
        p = Path(env)
        if not p.is_absolute():
            p = (Path.cwd() / p) if (Path.cwd() / p).exists() else (REPO / p)
        return p
    return REPO / "build" / "verge"


def dedent(s):
    return textwrap.dedent(s).lstrip("\n")


def write_app(app_dir, manifest=None, files=None):
    """Writes app_dir/verge.yaml (dedented) and files {relpath: str|bytes}."""
    app_dir = Path(app_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    for rel, content in (files or {}).items():
        p = app_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        p.write_bytes(content)
    if manifest is not None:
        (app_dir / "verge.yaml").write_text(dedent(manifest))
    return app_dir


def wait_for(pred, timeout, interval=0.05):
    """Polls pred() until it returns a truthy value (returned) or timeout (None)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# ---- responses ---------------------------------------------------------------


class Headers:
    """Case-insensitive multi-valued header list."""

    def __init__(self, items=()):
        self.items = [(k, v) for k, v in items]

    def get(self, name, default=None):
        n = name.lower()
        for k, v in self.items:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name):
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def __contains__(self, name):
        return self.get(name) is not None

    def __repr__(self):
        return repr(self.items)


class Resp:
    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.version = version

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Resp %s %s %r body=%r>" % (self.version, self.status, self.headers, self.body[:200])


def http_request(port, method, path, body=None, headers=None, host=None, timeout=10, tls=False):
    """One request on a fresh connection (http.client), read fully."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        return conn_request(conn, method, path, body=body, headers=headers, host=host)
    finally:
        conn.close()


def conn_request(conn, method, path, body=None, headers=None, host=None):
    """One request on an existing http.client connection (keep-alive)."""
    hdrs = dict(headers or {})
    if host is not None:
        hdrs["Host"] = host
    conn.request(method, path, body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    version = {10: "HTTP/1.0", 11: "HTTP/1.1"}.get(r.version, str(r.version))
    return Resp(r.status, r.reason, Headers(r.getheaders()), data, version)


class RawConn:
    """A raw TCP (or TLS) connection with a tiny HTTP/1 response parser, for
    what http.client refuses to send or hides (pipelining, malformed input,
    timeouts)."""

    def __init__(self, port, timeout=5.0, host="127.0.0.1", rcvbuf=None):
        if rcvbuf:  # a small receive window (set before connecting): a slow reader
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _read_until(self, marker):
        while marker not in self.buf:
            if not self._fill():
                raise EOFError("connection closed; got %r" % self.buf[:500])
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_n(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError("bad status line %r" % lines[0])
        items = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                items.append((k.strip(), v.strip()))
        return parts[0], int(parts[1]), (parts[2] if len(parts) > 2 else ""), Headers(items)

    def read_chunk(self):
        """Reads one chunk of a chunked body; b"" for the last one."""
        line = self._read_until(b"\r\n")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while self._read_until(b"\r\n") != b"\r\n":  # trailers
                pass
            return b""
        data = self._read_n(size)
        self._read_n(2)
        return data

    def read_response(self, method="GET"):
        """Reads one complete response (skipping 1xx)."""
        while True:
            version, status, reason, h = self.read_head()
            if not (100 <= status < 200):
                break
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in (h.get("transfer-encoding") or "").lower():
            body = b""
            while True:
                c = self.read_chunk()
                if not c:
                    break
                body += c
        elif h.get("content-length") is not None:
            body = self._read_n(int(h.get("content-length")))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Resp(status, reason, h, body, version)

    def request(self, method, path, headers=None, body=b"", host="x.test"):
        hdrs = {"Host": host}
        hdrs.update(headers or {})
        if body and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        req = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n"
        self.send(req.encode("latin-1") + (body or b""))
        return self.read_response(method)

    def wait_closed(self, timeout):
        """True when the peer closes (EOF or reset) within timeout. Data that
        arrives meanwhile is kept in self.buf."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                self._fill()
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ---- the verge process ---------------------------------------------------------


class Verge:
    """One `verge node` process with its app dirs and log files."""

    def __init__(self, bin_path, workdir, app_dirs, args=(), listen_ports=None, workers=1,
                 access_log="on", log_level="debug", tls_port=None, cert=None, key=None):
        self.bin = str(bin_path)
        self.workdir = Path(workdir)
        self.app_dirs = [Path(d) for d in app_dirs]
        self.ports = list(listen_ports or [free_port()])
        self.port = self.ports[0]
        self.tls_port = tls_port
        self.argv = [self.bin, "node"]
        for d in self.app_dirs:
            self.argv += ["--app", str(d)]
        for p in self.ports:
            self.argv += ["--listen", "127.0.0.1:%d" % p]
        if tls_port:
            self.argv += ["--tls-listen", "127.0.0.1:%d" % tls_port, "--cert", str(cert), "--key", str(key)]
        if workers is not None:
            self.argv += ["--workers", str(workers)]
        if access_log is not None:
            self.argv += ["--access-log", access_log]
        if log_level is not None:
            self.argv += ["--log-level", log_level]
        self.argv += list(args)
        n = 0
        while (self.workdir / ("verge%d.stdout" % n)).exists():
            n += 1
        self.stdout_path = self.workdir / ("verge%d.stdout" % n)
        self.stderr_path = self.workdir / ("verge%d.stderr" % n)
        self.proc = None
        self.returncode = None
        self.killed = False

    # -- lifecycle --

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            for attempt in range(20):
                try:
                    self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                                 cwd=str(self.workdir), start_new_session=True)
                    break
                except (PermissionError, OSError) as e:
                    # the binary is being relinked (ETXTBSY/EACCES): wait for it
                    if attempt == 19 or e.errno not in (errno.ETXTBSY, errno.EACCES):
                        raise
                    time.sleep(0.1)
        finally:
            out.close()
            err.close()
        return self

    def wait_ready(self, timeout=10.0):
        """Waits for GET /_verge/health == 200; raises AssertionError with the
        logs if the process dies or does not get ready in time."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("verge exited with %s before getting ready\n%s"
                                     % (self.proc.returncode, self.logs()))
            try:
                r = http_request(self.port, "GET", "/_verge/health", timeout=1)
                if r.status == 200:
                    return self
                last = "status %d" % r.status
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.05)
        raise AssertionError("verge not ready after %.0fs (last: %s)\n%s" % (timeout, last, self.logs()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def freeze(self, timeout=5.0):
        """SIGSTOP, and wait until every thread has stopped: the signal is
        only queued when kill returns, and on a busy machine a thread can
        still run (and answer) for a while after it."""
        self.proc.send_signal(signal.SIGSTOP)
        task = "/proc/%d/task" % self.proc.pid

        def stopped():
            for t in os.listdir(task):
                try:
                    with open("%s/%s/stat" % (task, t)) as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    continue  # the thread ended
                if state not in ("T", "t"):
                    return False
            return True
        deadline = time.monotonic() + timeout
        while not stopped():
            if time.monotonic() > deadline:
                raise AssertionError("verge did not stop within %.0fs of SIGSTOP" % timeout)
            time.sleep(0.005)

    def reload(self):
        self.signal(signal.SIGHUP)

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL (to its process group) after timeout.
        Returns the exit status (negative: killed by that signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        # Workers forked into our session (if any) must not outlive the node.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.returncode = self.proc.returncode
        return self.returncode

    # -- logs --

    def stdout(self):
        return self.stdout_path.read_bytes().decode("utf-8", "replace")

    def stderr(self):
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def logs(self, tail=6000):
        return "--- argv: %s\n--- stderr (tail):\n%s\n--- stdout (tail):\n%s" % (
            " ".join(self.argv), self.stderr()[-tail:], self.stdout()[-tail:])

    @staticmethod
    def _json_lines(text):
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def access_log(self):
        """JSON objects printed on stdout, one per line (other lines skipped)."""
        return self._json_lines(self.stdout())

    def log_records(self):
        """JSON lines of the node log (stderr)."""
        return self._json_lines(self.stderr())

    # -- clients --

    def request(self, method, path, body=None, headers=None, host=None, timeout=10, port=None):
        return http_request(port or self.port, method, path, body=body, headers=headers, host=host,
                            timeout=timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def raw(self, timeout=5.0):
        return RawConn(self.port, timeout=timeout)

    def metrics(self):
        r = self.get("/_verge/metrics")
        assert r.status == 200, r
        return parse_metrics(r.text)


def parse_metrics(text):
    """Prometheus text -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        # Allow an optional timestamp after the value.
        if "}" in value or not name_labels:
            continue
        try:
            v = float(value)
        except ValueError:
            parts = line.split()
            try:
                name_labels, v = " ".join(parts[:-2]), float(parts[-2])
            except (ValueError, IndexError):
                continue
        labels = {}
        if "{" in name_labels:
            name, _, rest = name_labels.partition("{")
            rest = rest.rstrip("}")
            for m in _label_iter(rest):
                labels[m[0]] = m[1]
        else:
            name = name_labels
        out.append((name.strip(), labels, v))
    return out


def _label_iter(s):
    i = 0
    while i < len(s):
        eq = s.index("=", i)
        key = s[i:eq].strip().lstrip(",").strip()
        assert s[eq + 1] == '"', s
        j = eq + 2
        val = ""
        while s[j] != '"':
            if s[j] == "\\":
                j += 1
                val += {"n": "\n"}.get(s[j], s[j])
            else:
                val += s[j]
            j += 1
        yield key, val
        i = j + 1
        while i < len(s) and s[i] in ", ":
            i += 1


def metric_sum(samples, name, **labels):
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == val for k, val in labels.items()))


# ---- origins ---------------------------------------------------------------------


def pattern_bytes(n):
    """n deterministic bytes (the /download/N body)."""
    block = b"".join(hashlib.sha256(b"verge%d" % i).digest() for i in range(2048))  # 64 KiB
    full, rest = divmod(n, len(block))
    return block * full + block[:rest]


class Record:
    def __init__(self, method, path, headers, body, body_len, body_sha256, peer, chunked):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.body_len = body_len
        self.body_sha256 = body_sha256
        self.peer = peer
        self.chunked = chunked

    def __repr__(self):
        return "<Record %s %s from %s>" % (self.method, self.path, self.peer)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, origin, *a, **kw):
        self.origin = origin
        super().__init__(*a, **kw)

    def process_request(self, request, client_address):
        # headers and body go out in separate writes: without this, Nagle +
        # delayed ACKs add 40 ms to every response on a reused connection
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.origin.lock:
            self.origin.open_socks.add(request)
            self.origin.conns.add(client_address)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.origin.lock:
            self.origin.open_socks.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # a proxy closing a connection mid-response is not an error here


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "origin"

    def log_message(self, *a):
        pass

    def _read_body(self):
        h = hashlib.sha256()
        kept = []
        kept_len = 0
        total = 0
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

        def take(data):
            nonlocal kept_len, total
            h.update(data)
            total += len(data)
            if kept_len < (1 << 20):
                kept.append(data)
                kept_len += len(data)

        if chunked:
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    d = self.rfile.read(min(left, 1 << 20))
                    if not d:
                        break
                    take(d)
                    left -= len(d)
                self.rfile.readline(16)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                d = self.rfile.read(min(left, 1 << 20))
                if not d:
                    break
                take(d)
                left -= len(d)
        return b"".join(kept), total, h.hexdigest(), chunked

    def _handle(self):
        o = self.server.origin
        body, total, digest, chunked = self._read_body()
        rec = Record(self.command, self.path, Headers(self.headers.items()), body, total, digest,
                     self.client_address, chunked)
        rec.time = time.monotonic()
        path = urllib.parse.urlsplit(self.path).path
        if path == o.health_path:
            with o.lock:
                o.health_hits += 1
            self.send_plain(o.health_status, b"health\n")
            return
        with o.lock:
            o.requests.append(rec)
            o.active += 1
            o.max_active = max(o.max_active, o.active)
        try:
            script = o.scripts.get(rec.path) or o.scripts.get(path) if o.scripts else None
            if script is not None:
                self._scripted(o, rec, script)
                return
            for prefix, fn in o.handlers.items():
                if path.startswith(prefix):
                    fn(self, rec)
                    return
            self._builtin(o, rec, path)
        finally:
            with o.lock:
                o.active -= 1

    def _builtin(self, o, rec, path):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        delay = float(q.get("delay", [o.delay])[0])
        if delay:
            time.sleep(delay)
        if "/download/" in path:  # also under an unstripped prefix
            n = int(path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            if self.command != "HEAD":
                data = pattern_bytes(n)
                for i in range(0, n, 1 << 20):
                    self.wfile.write(data[i:i + (1 << 20)])
            return
        if path.startswith("/status/"):
            self.send_plain(int(path.rsplit("/", 1)[1]), b"status\n")
            return
        if path == "/stream":
            # First chunk, then wait for the test to say it saw it.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"first\n")
            o.stream_event.wait(8)
            self._chunk(b"second\n")
            self._chunk(b"")
            return
        info = {
            "server": o.name,
            "method": rec.method,
            "path": rec.path,
            "body_len": rec.body_len,
            "body_sha256": rec.body_sha256,
            "chunked": rec.chunked,
            "headers": [[k, v] for k, v in rec.headers.items],
        }
        self.send_plain(200, (json.dumps(info) + "\n").encode(), ctype="application/json")

    def _scripted(self, o, rec, sc):
        """Answers from a ScriptedOrigin script (see ScriptedOrigin.script)."""
        if sc.delay:
            time.sleep(sc.delay)
        if sc.fn is not None:
            status, headers, body = sc.fn(rec)
        else:
            status, headers, body = sc.status, sc.headers, sc.body
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
        if isinstance(body, str):
            body = body.encode()
        h = Headers(items)
        if sc.conditional and status == 200 and rec.method in ("GET", "HEAD") and _not_modified(rec.headers, h):
            status, body = 304, b""
            items = [(k, v) for k, v in items if k.lower() not in ("content-length", "content-type",
                                                                   "content-encoding", "transfer-encoding")]
        with o.lock:
            o.answered.append((rec.path, status))
        self.send_response_only(status)
        names = {k.lower() for k, _ in items}
        if "date" not in names:
            self.send_header("Date", http_date(time.time()))
        self.send_header("X-Origin", o.name)
        for k, v in items:
            if v is not None:
                self.send_header(k, v)
        if status != 304 and "content-length" not in names and "transfer-encoding" not in names:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD" or status in (204, 304):
            return
        if "chunked" in (h.get("transfer-encoding") or "").lower():
            for i in range(0, len(body), 1 << 16):  # chunks of 64 KiB
                self._chunk(body[i:i + (1 << 16)])
            self._chunk(b"")
        elif body:
            for i in range(0, len(body), 1 << 20):
                self.wfile.write(body[i:i + (1 << 20)])

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def send_plain(self, status, body, ctype="text/plain", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Origin", self.server.origin.name)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


def http_date(t):
    """IMF-fixdate of a Unix time."""
    return email.utils.formatdate(t, usegmt=True)


def _etag_list(v):
    return [t.strip() for t in (v or "").split(",") if t.strip()]


def _weak(tag):
    return tag[2:] if tag.startswith("W/") else tag


def _not_modified(req, res):
    """RFC 9110 13.2.2 on the origin side: If-None-Match (weak comparison)
    first; only without it, If-Modified-Since against Last-Modified."""
    inm = req.get("if-none-match")
    etag = res.get("etag")
    if inm is not None:
        if etag is None:
            return False
        tags = _etag_list(inm)
        return "*" in tags or _weak(etag) in [_weak(t) for t in tags]
    ims, lm = req.get("if-modified-since"), res.get("last-modified")
    if ims is None or lm is None:
        return False
    try:
        a = email.utils.parsedate_to_datetime(ims)
        b = email.utils.parsedate_to_datetime(lm)
    except (TypeError, ValueError):
        return False
    return b <= a


class Script:
    def __init__(self, status, headers, body, delay, fn, conditional):
        self.status = status
        self.headers = headers
        self.body = body
        self.delay = delay
        self.fn = fn
        self.conditional = conditional


class Origin:
    """A scripted HTTP/1.1 origin (ThreadingHTTPServer on 127.0.0.1:0) that
    records every request. Built-in paths: /healthz (health_status),
    /download/N, /status/CODE, /stream (chunked, waits for stream_event),
    ?delay=SECONDS; anything else answers 200 with a JSON description of
    the request. `handlers` maps a path prefix to fn(handler, record)."""

    def __init__(self, name="origin", delay=0.0, health_path="/healthz"):
        self.name = name
        self.delay = delay
        self.health_path = health_path
        self.health_status = 200
        self.health_hits = 0
        self.handlers = {}
        self.scripts = {}
        self.answered = []
        self.lock = threading.Lock()
        self.requests = []
        self.conns = set()
        self.open_socks = set()
        self.active = 0
        self.max_active = 0
        self.stream_event = threading.Event()
        self.server = None
        self.thread = None
        self.port = None

    def start(self, port=0):
        self.server = _Server(self, ("127.0.0.1", port), _Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def count(self):
        with self.lock:
            return len(self.requests)

    def reset(self):
        with self.lock:
            self.requests = []
            self.conns = set()
            self.max_active = 0

    def kill(self):
        """Stops listening and cuts every open connection (like a crash)."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            socks = list(self.open_socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self.server = None


class ScriptedOrigin(Origin):
    """An Origin whose answers a test scripts per path:

        o.script("/a", status=200, headers={"Cache-Control": "max-age=60"}, body=b"A")
        o.script("/b", fn=lambda rec: (200, {...}, b"..."))   # per request
        o.count("/a"); o.seen("/a")                          # what reached it

    A script matches the request's path+query exactly, else its path. Every
    scripted answer has a Date (now, unless the script gives one) and
    Content-Length. With conditional=True (the default) a GET/HEAD whose
    If-None-Match matches the scripted ETag (weak comparison) or, without
    If-None-Match, whose If-Modified-Since is not older than the scripted
    Last-Modified gets a 304 carrying the scripted headers (minus the
    Content-* ones), as an origin would. Unscripted paths behave as in
    Origin. `answered` lists (path, status) of every scripted answer."""

    def script(self, path, status=200, headers=None, body=b"", delay=0.0, fn=None, conditional=True):
        with self.lock:
            self.scripts[path] = Script(status, headers or {}, body, delay, fn, conditional)

    def _match(self, rec, path):
        if "?" in path:
            return rec.path == path
        return urllib.parse.urlsplit(rec.path).path == path

    def seen(self, path=None):
        """Records of requests for path (path only, or path?query exactly)."""
        with self.lock:
            reqs = list(self.requests)
        return [r for r in reqs if path is None or self._match(r, path)]

    def count(self, path=None):
        return len(self.seen(path))

    def statuses(self, path):
        with self.lock:
            return [st for p, st in self.answered if self._match(type("R", (), {"path": p}), path)]

    def restart(self):
        """Starts listening again on the same port after kill()."""
        port = self.port
        self.start(port)
        return self


# ---- Cache-Status (RFC 9211) ---------------------------------------------------------


def parse_cache_status(value):
    """A Cache-Status field value -> list of (cache_name, [(param, value)])
    in order, closest-to-origin first. Boolean parameters (hit, stored,
    collapsed) have the value True; integers are ints; quoted strings are
    unquoted; other tokens stay strings."""
    out = []
    for member in _split_outside_quotes(value, ","):
        parts = _split_outside_quotes(member, ";")
        if not parts or not parts[0].strip():
            continue
        name = _sf_value(parts[0].strip())
        params = []
        for p in parts[1:]:
            p = p.strip()
            if not p:
                continue
            k, eq, v = p.partition("=")
            params.append((k.strip(), _sf_value(v.strip()) if eq else True))
        out.append((name, params))
    return out


def _split_outside_quotes(s, sep):
    parts, cur, q, esc = [], "", False, False
    for ch in s:
        if esc:
            cur += ch
            esc = False
        elif ch == "\\" and q:
            cur += ch
            esc = True
        elif ch == '"':
            cur += ch
            q = not q
        elif ch == sep and not q:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _sf_value(v):
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if v[:1] == "?" and v[1:] in ("0", "1"):
        return v == "?1"
    try:
        return int(v)
    except ValueError:
        return v
