"""Static files: content, types, validators, ranges, indexes and confinement
to the root directory."""

import email.utils
import hashlib
import os

import pytest

from harness import RawConn, pattern_bytes

SECRET = b"TOPSECRET-7f3a9c\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
BIG = pattern_bytes(100000)
MTIME = 1500000000  # Fri, 14 Jul 2017 02:40:00 GMT

FILES = {
    "public/index.html": "<h1>home</h1>\n",
    "public/style.css": "body{}\n",
    "public/app.js": "let x=1;\n",
    "public/data.json": '{"a":1}\n',
    "public/img/logo.png": PNG,
    "public/img/photo.jpg": b"\xff\xd8\xff\xe0jpeg",
    "public/page.txt": "plain\n",
    "public/pic.svg": "<svg/>\n",
    "public/blob.weird-ext": b"\x00\x01",
    "public/big.bin": BIG,
    "public/sub/index.html": "<h1>sub</h1>\n",
    "public/sub/page.txt": "sub page\n",
    "public/noindex/file.txt": "x\n",
    "secret.txt": SECRET,
}

MANIFEST = """\
name: site
routes:
  - path: /
    static: public
"""


@pytest.fixture
def v(verge, tmp_path):
    v = verge(MANIFEST, FILES, wait=False)
    pub = v.app_dirs[0] / "public"
    os.utime(pub / "page.txt", (MTIME, MTIME))
    os.symlink("../secret.txt", pub / "leak.txt")
    os.symlink("..", pub / "leakdir")
    os.symlink("/etc/passwd", pub / "passwd.txt")
    os.symlink(str(v.app_dirs[0] / "secret.txt"), pub / "sub" / "abs-leak.txt")
    return v.wait_ready()


@pytest.mark.parametrize("path,ctype", [
    ("/index.html", "text/html"),
    ("/style.css", "text/css"),
    ("/app.js", ("application/javascript", "text/javascript")),
    ("/data.json", "application/json"),
    ("/img/logo.png", "image/png"),
    ("/img/photo.jpg", "image/jpeg"),
    ("/page.txt", "text/plain"),
    ("/pic.svg", "image/svg+xml"),
    ("/blob.weird-ext", "application/octet-stream"),
])
def test_content_and_type(v, path, ctype):
    r = v.get(path)
    assert r.status == 200, r
    want = FILES["public" + path]
    assert r.body == (want.encode() if isinstance(want, str) else want)
    assert r.headers.get("Content-Type", "").split(";")[0].strip() in (
        (ctype,) if isinstance(ctype, str) else ctype), r
    assert int(r.headers.get("Content-Length")) == len(r.body)


def test_big_file(v):
    r = v.get("/big.bin")
    assert r.status == 200
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(BIG).hexdigest()


def open_fds(v):
    d = "/proc/%d/fd" % v.proc.pid
    return sorted(os.readlink(os.path.join(d, f)) for f in os.listdir(d))


def test_large_file_to_a_slow_reader_then_keep_alive(verge):
    # The file goes out with sendfile in turns, waiting for the socket to
    # drain; the connection then serves the next request.
    import time
    big = pattern_bytes(8 << 20)
    v = verge(MANIFEST, {"public/large.bin": big, "public/page.txt": "plain\n"})
    c = RawConn(v.port, rcvbuf=65536)
    c.send(b"GET /large.bin HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.3)  # the node waits on a full socket meanwhile, and serves others
    assert v.get("/page.txt").body == b"plain\n"
    r = c.read_response()
    assert r.status == 200 and len(r.body) == len(big)
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(big).hexdigest()
    c.send(b"GET /page.txt HTTP/1.1\r\nHost: h\r\n\r\n")
    assert c.read_response().body == b"plain\n"


def test_client_leaving_mid_file_frees_everything(verge):
    import socket
    import time
    v = verge(MANIFEST, {"public/large.bin": pattern_bytes(8 << 20), "public/page.txt": "plain\n"},
              args=["--workers", "1"])
    before = open_fds(v)
    for _ in range(5):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.connect(("127.0.0.1", v.port))
        s.sendall(b"GET /large.bin HTTP/1.1\r\nHost: h\r\n\r\n")
        s.recv(1000)
        s.close()
    assert v.get("/page.txt").body == b"plain\n"
    # neither the files nor the sockets stay open (the node closes its side
    # of the last connection a moment after the client did)
    deadline = time.monotonic() + 3
    while len(open_fds(v)) > len(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(open_fds(v)) <= len(before), set(open_fds(v)) - set(before)
    assert v.alive()


def test_head(v):
    r = v.request("HEAD", "/big.bin")
    assert r.status == 200 and r.body == b""
    assert r.headers.get("Content-Length") == str(len(BIG))


def test_missing_file_404(v):
    assert v.get("/nope.html").status == 404
    assert v.get("/sub/nope").status == 404


def test_etag_if_none_match(v):
    r = v.get("/style.css")
    etag = r.headers.get("ETag")
    assert etag, r
    r2 = v.get("/style.css", headers={"If-None-Match": etag})
    assert r2.status == 304 and r2.body == b"", r2
    assert r2.headers.get("ETag") == etag
    r3 = v.get("/style.css", headers={"If-None-Match": '"not-the-etag"'})
    assert r3.status == 200 and r3.body == b"body{}\n"


def test_if_none_match_list(v):
    etag = v.get("/style.css").headers.get("ETag")
    r = v.get("/style.css", headers={"If-None-Match": '"x", %s' % etag})
    assert r.status == 304, r
    r = v.get("/style.css", headers={"If-None-Match": "*"})
    assert r.status == 304, r


def test_etag_changes_with_content(v):
    etag = v.get("/style.css").headers.get("ETag")
    p = v.app_dirs[0] / "public" / "style.css"
    p.write_bytes(b"body{color:red}\n")
    os.utime(p, (MTIME + 100, MTIME + 100))
    r = v.get("/style.css", headers={"If-None-Match": etag})
    assert r.status == 200 and r.body == b"body{color:red}\n", r
    assert r.headers.get("ETag") != etag


def test_last_modified_if_modified_since(v):
    r = v.get("/page.txt")
    lm = r.headers.get("Last-Modified")
    assert lm == email.utils.formatdate(MTIME, usegmt=True), r
    r2 = v.get("/page.txt", headers={"If-Modified-Since": lm})
    assert r2.status == 304 and r2.body == b""
    later = email.utils.formatdate(MTIME + 3600, usegmt=True)
    assert v.get("/page.txt", headers={"If-Modified-Since": later}).status == 304
    earlier = email.utils.formatdate(MTIME - 3600, usegmt=True)
    r3 = v.get("/page.txt", headers={"If-Modified-Since": earlier})
    assert r3.status == 200 and r3.body == b"plain\n"


@pytest.mark.parametrize("rng,start,end", [
    ("bytes=0-9", 0, 9),
    ("bytes=99990-", 99990, 99999),
    ("bytes=-5", 99995, 99999),
    ("bytes=100-99999999", 100, 99999),
    ("bytes=50000-50000", 50000, 50000),
])
def test_range(v, rng, start, end):
    r = v.get("/big.bin", headers={"Range": rng})
    assert r.status == 206, r
    assert r.headers.get("Content-Range") == "bytes %d-%d/%d" % (start, end, len(BIG)), r
    assert r.body == BIG[start:end + 1]
    assert int(r.headers.get("Content-Length")) == end - start + 1


@pytest.mark.parametrize("rng", ["bytes=200000-300000", "bytes=100000-"])
def test_range_unsatisfiable(v, rng):
    r = v.get("/big.bin", headers={"Range": rng})
    assert r.status == 416, r
    assert r.headers.get("Content-Range") == "bytes */%d" % len(BIG), r


def test_index_html(v):
    r = v.get("/")
    assert r.status == 200 and r.body == b"<h1>home</h1>\n", r
    assert r.headers.get("Content-Type", "").startswith("text/html")
    r = v.get("/sub/")
    assert r.status == 200 and r.body == b"<h1>sub</h1>\n", r


def test_directory_without_slash(v):
    r = v.get("/sub")
    if r.status in (301, 302, 307, 308):
        assert r.headers.get("Location", "").endswith("/sub/"), r
    else:
        assert r.status == 200 and r.body == b"<h1>sub</h1>\n", r


def test_directory_without_index_is_not_listed(v):
    r = v.get("/noindex/")
    assert r.status in (403, 404), r
    assert b"file.txt" not in r.body


def test_custom_index(verge):
    v = verge("""\
        name: site
        routes:
          - path: /
            static: {dir: www, index: [home.htm, index.html]}
        """, {"www/home.htm": "custom home\n", "www/index.html": "not me\n", "www/d/index.html": "d index\n"})
    assert v.get("/").body == b"custom home\n"
    assert v.get("/d/").body == b"d index\n"


def test_glob_static(verge):
    v = verge("""\
        name: site
        routes:
          - glob: /img/*.png
            static: public
        """, FILES)
    r = v.get("/img/logo.png")
    assert r.status == 200 and r.body == PNG
    assert v.get("/img/photo.jpg").status == 404
    assert v.get("/index.html").status == 404


TRAVERSALS = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/../etc/passwd",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/sub/../../secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/sub/..%2f..%2fsecret.txt",
    "/./../secret.txt",
    "//../secret.txt",
    "/..\\secret.txt",
    "/%2e%2e%5csecret.txt",
    "/%252e%252e/secret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/..;/secret.txt",
    "/sub/..%00/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/leak.txt",
    "/leakdir/secret.txt",
    "/leakdir/public/index.html/../../secret.txt",
    "/passwd.txt",
    "/sub/abs-leak.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_refused(v, path):
    with RawConn(v.port) as c:
        c.send("GET %s HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n" % path)
        try:
            r = c.read_response()
        except EOFError:
            return  # closing the connection refuses too
    assert SECRET.strip() not in r.body, r
    assert b"root:" not in r.body, r
    assert r.status in (400, 403, 404), r


def test_symlink_inside_root_to_outside_refused_even_via_index(verge):
    v = verge(MANIFEST, {"public/ok.txt": "ok\n", "outside/index.html": "OUTSIDE-INDEX\n"}, wait=False)
    os.symlink("../outside", v.app_dirs[0] / "public" / "linked")
    v.wait_ready()
    assert v.get("/ok.txt").status == 200
    for path in ["/linked/", "/linked", "/linked/index.html"]:
        r = v.get(path)
        assert b"OUTSIDE-INDEX" not in r.body, (path, r)
        assert r.status in (301, 302, 307, 308, 403, 404), (path, r)


def test_prefix_route_maps_prefix_away(verge):
    """`path: /assets` + `static: public`: /assets/x is public/x (alias)."""
    v = verge("""\
        name: site
        routes:
          - path: /assets
            static: public
        """, FILES)
    r = v.get("/assets/style.css")
    assert r.status == 200 and r.body == b"body{}\n", r
    assert v.get("/assets/sub/page.txt").body == b"sub page\n"
    assert v.get("/assets/").body == b"<h1>home</h1>\n"
    r = v.get("/assets")
    assert r.status in (301, 308) and r.headers.get("Location", "").endswith("/assets/"), r
    assert v.get("/style.css").status == 404


def test_nul_byte_cannot_bypass_glob_route(verge):
    """A glob route that serves only *.png must not serve other files of its
    directory through a %00 that truncates the path on open()."""
    v = verge("""\
        name: site
        routes:
          - glob: /img/*.png
            static: public
        """, {"public/img/a.png": PNG, "public/img/notes.txt": "PRIVATE-NOTES\n"})
    assert v.get("/img/a.png").status == 200
    for path in ["/img/notes.txt%00.png", "/img/notes.txt%00/x.png"]:
        with RawConn(v.port) as c:
            r = c.request("GET", path)
        assert b"PRIVATE-NOTES" not in r.body, (path, r)
        assert r.status in (400, 403, 404), (path, r)


def test_non_get_on_static_405(v):
    r = v.request("POST", "/page.txt", body=b"x")
    assert r.status == 405, r
    assert "GET" in (r.headers.get("Allow") or ""), r
    r = v.request("DELETE", "/page.txt")
    assert r.status == 405, r
    assert v.get("/page.txt").body == b"plain\n"


def test_changed_file_served_fresh(v):
    """Deploying a new version of a file: the next request gets all of it
    (not the old length, not the old validators)."""
    p = v.app_dirs[0] / "public" / "page.txt"
    first = v.get("/page.txt")
    assert first.body == b"plain\n"
    p.write_bytes(b"a much longer second version\n")
    r = v.get("/page.txt")
    assert r.body == b"a much longer second version\n", r
    assert r.headers.get("Content-Length") == str(len(r.body))
    p.write_bytes(b"v3\n")
    assert v.get("/page.txt").body == b"v3\n"


def test_symlinks_that_stay_inside_are_served(v):
    """Containment is about where a path ends up: a relative symlink to a
    sibling inside the root, and an absolute one pointing back inside (the
    kernel's fast check refuses those; the slow path must accept them)."""
    pub = v.app_dirs[0] / "public"
    os.symlink("page.txt", pub / "rel-alias.txt")
    os.symlink(str(pub / "page.txt"), pub / "sub" / "abs-alias.txt")
    want = FILES["public/page.txt"]
    want = want.encode() if isinstance(want, str) else want
    for path in ("/rel-alias.txt", "/sub/abs-alias.txt"):
        r = v.get(path)
        assert (r.status, r.body) == (200, want), (path, r)
