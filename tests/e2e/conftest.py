"""Fixtures for the end-to-end tests of verge.

Run: /usr/bin/python3 -m pytest tests/e2e   (VERGE_BIN, default build/verge)

    verge(manifest, files={...}, args=[...], workers=1, ...)  -> a started, healthy Verge
    verge(apps=[(manifest, files), ...])                       -> several --app
    origin(name, delay=...)                                    -> a started Origin
    scripted_origin(name)                                      -> a started ScriptedOrigin
    tls_cert                                                   -> (cert_path, key_path)

Every process and origin started by a test is stopped when the test ends,
whatever happened; a verge that died of a signal during a test fails it.
"""

import os
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402

from harness import Origin, ScriptedOrigin, Verge, free_port, verge_bin as _verge_bin, write_app  # noqa: E402

# A test that hangs is a failure, not a stuck suite.
TEST_TIMEOUT = int(os.environ.get("VERGE_E2E_TEST_TIMEOUT", "90"))

CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


class WatchdogTimeout(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "budget(seconds): this test's watchdog, when it needs more than "
                            "VERGE_E2E_TEST_TIMEOUT (a GiB through an ASan build on a busy machine)")


@pytest.fixture(autouse=True)
def _watchdog(request):
    m = request.node.get_closest_marker("budget")
    limit = max(TEST_TIMEOUT, m.args[0]) if m else TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise WatchdogTimeout("test took longer than %ds" % limit)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def verge_bin():
    p = _verge_bin()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail("verge binary not found at %s (build with `make all` or set VERGE_BIN)" % p, pytrace=False)
    return p


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows the logs of the verge processes it started."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, v in enumerate(getattr(item, "_verges", [])):
            if v.proc is None:
                continue  # never started (the exception says why)
            state = "running" if v.alive() else "exited with %s" % v.proc.returncode
            rep.sections.append(("verge #%d (%s)" % (i, state), v.logs(3000)))


@pytest.fixture
def verge(request, tmp_path, verge_bin):
    started = []
    request.node._verges = started

    def start(manifest=None, files=None, *, apps=None, args=(), workers=1, ports=None, access_log="on",
              log_level="debug", tls=None, wait=True, ready_timeout=10.0):
        """Writes the app dir(s) under tmp_path and starts `verge node`.
        tls=(cert, key) adds --tls-listen on a free port (v.tls_port)."""
        if apps is None:
            apps = [(manifest, files)]
        dirs = []
        for i, (m, f) in enumerate(apps):
            d = tmp_path / ("%sapp%s" % ("v%d_" % len(started) if started else "", i if len(apps) > 1 else ""))
            write_app(d, m, f)
            dirs.append(d)
        kw = {}
        if tls:
            kw = dict(tls_port=free_port(), cert=tls[0], key=tls[1])
        v = Verge(verge_bin, tmp_path, dirs, args=args, listen_ports=ports, workers=workers,
                  access_log=access_log, log_level=log_level, **kw)
        started.append(v)
        v.start()
        if wait:
            v.wait_ready(ready_timeout)
        return v

    yield start

    problems = []
    for v in started:
        was_running = v.alive()
        rc = v.stop()
        if rc is not None and rc < 0 and -rc in CRASH_SIGNALS:
            problems.append("verge %s died of signal %d%s\n%s" % (
                v.argv, -rc, "" if was_running else " during the test", v.logs()))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def origin():
    started = []

    def start(name=None, delay=0.0, health_path="/healthz", port=0):
        o = Origin(name or "o%d" % len(started), delay=delay, health_path=health_path)
        o.start(port)
        started.append(o)
        return o

    yield start
    for o in started:
        o.stream_event.set()
        o.kill()


@pytest.fixture
def scripted_origin():
    started = []

    def start(name=None, port=0):
        o = ScriptedOrigin(name or "s%d" % len(started))
        o.start(port)
        started.append(o)
        return o

    yield start
    for o in started:
        o.stream_event.set()
        o.kill()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def port():
    return free_port()


class NatsServer:
    """A nats-server of the test's own on 127.0.0.1 and a free port."""

    def __init__(self, tmp_path, jetstream=False):
        self.port = free_port()
        self.url = "nats://127.0.0.1:%d" % self.port
        self.argv = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port)]
        if jetstream:
            self.argv += ["-js", "-sd", str(tmp_path / ("js-%d" % self.port))]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nats-server did not start: %s" % self.argv)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def publish(self, subject, payload):
        """A plain NATS client's publish (the protocol by hand, as any client)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.recv(4096)  # INFO
        s.sendall(b'CONNECT {"verbose":false}\r\nPUB %s %d\r\n%s\r\nPING\r\n' % (subject.encode(), len(payload), payload))
        buf = b""
        while b"PONG" not in buf:
            buf += s.recv(4096)
        s.close()


@pytest.fixture
def nats_server(tmp_path):
    started = []

    def start(jetstream=False):
        n = NatsServer(tmp_path, jetstream).start()
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()
