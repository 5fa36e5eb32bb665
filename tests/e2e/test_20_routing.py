"""Routing: prefix/exact/glob matching, methods, host-selected apps, redirects
and fixed responses."""

import time

import pytest


def respond(body, extra=""):
    return "respond: {status: 200, body: \"%s\", content_type: text/plain}%s" % (body, extra)


ROUTES = """\
name: routing
routes:
  - path: /api
    %s
  - exact: /ping
    %s
  - glob: /img/*.png
    %s
  - glob: /deep/**/x.txt
    %s
  - path: /first
    %s
  - path: /first/second
    %s
  - path: /slash/
    %s
""" % (respond("api"), respond("pong"), respond("png"), respond("deep"), respond("first"), respond("unreachable"),
       respond("slash"))


@pytest.fixture
def v(verge):
    return verge(ROUTES)


@pytest.mark.parametrize("path,body", [
    ("/api", "api"),
    ("/api/", "api"),
    ("/api/users/42", "api"),
    ("/api?x=1", "api"),
    ("/api/x?y=/z", "api"),
])
def test_prefix_matches_whole_segments(v, path, body):
    r = v.get(path)
    assert (r.status, r.text) == (200, body), r


@pytest.mark.parametrize("path", ["/apix", "/ap", "/API", "/xapi", "/"])
def test_prefix_does_not_match_partial_segment(v, path):
    assert v.get(path).status == 404


def test_prefix_with_trailing_slash_requires_it(v):
    assert v.get("/slash/a").text == "slash"
    assert v.get("/slash/").text == "slash"
    assert v.get("/slash").status == 404


@pytest.mark.parametrize("path,status", [("/ping", 200), ("/ping?q=1", 200), ("/ping/", 404), ("/pingx", 404),
                                         ("/ping/x", 404)])
def test_exact(v, path, status):
    r = v.get(path)
    assert r.status == status, r
    if status == 200:
        assert r.text == "pong"


@pytest.mark.parametrize("path,status", [
    ("/img/a.png", 200),
    ("/img/.png", 200),
    ("/img/a.jpg", 404),
    ("/img/sub/a.png", 404),     # '*' stays within a segment
    ("/img/a.pngx", 404),
    ("/deep/a/x.txt", 200),
    ("/deep/a/b/c/x.txt", 200),  # '**' crosses segments
    ("/deep/a/y.txt", 404),
])
def test_glob(v, path, status):
    r = v.get(path)
    assert r.status == status, r


def test_glob_is_not_exponential(v):
    """A path built to make a naive backtracking glob explode answers fast."""
    t = time.monotonic()
    r = v.get("/deep/" + "a/" * 200 + "y.txt")
    assert r.status == 404
    assert time.monotonic() - t < 2


def test_first_match_wins(v):
    r = v.get("/first/second")
    assert r.text == "first"


def test_no_route_is_404(verge):
    v = verge("""\
        name: nr
        routes:
          - exact: /only
            respond: {body: only}
        """)
    assert v.get("/only").status == 200
    for path in ["/", "/other", "/only/x", "/onlyx"]:
        assert v.get(path).status == 404, path


def test_methods(verge):
    v = verge("""\
        name: m
        routes:
          - path: /rw
            methods: [GET, POST]
            respond: {body: rw}
          - path: /ro
            methods: [GET]
            respond: {body: ro-get}
          - path: /ro
            methods: [DELETE]
            respond: {body: ro-delete}
        """)
    assert v.request("GET", "/rw").text == "rw"
    assert v.request("POST", "/rw", body=b"x").text == "rw"
    assert v.request("PUT", "/rw", body=b"x").status == 405
    assert v.request("DELETE", "/rw").status == 405
    # a later route with the same path and the method wins over 405
    assert v.request("DELETE", "/ro").text == "ro-delete"
    assert v.request("PATCH", "/ro", body=b"x").status == 405
    # no route at all is 404, not 405
    assert v.request("PUT", "/none", body=b"x").status == 404


def test_405_lists_allowed_methods(verge):
    v = verge("""\
        name: m
        routes:
          - path: /rw
            methods: [GET, POST]
            respond: {body: rw}
        """)
    r = v.request("PUT", "/rw", body=b"x")
    assert r.status == 405
    allow = {m.strip() for m in (r.headers.get("Allow") or "").split(",")}
    assert {"GET", "POST"} <= allow, r


def app(name, hosts, body):
    h = "hosts: [%s]\n" % ", ".join('"%s"' % x for x in hosts) if hosts is not None else ""
    return ("name: %s\n%sroutes:\n  - path: /\n    respond: {body: %s}\n" % (name, h, body), {})


def test_host_selects_app(verge):
    v = verge(apps=[app("a", ["a.test"], "from-a"), app("b", ["b.test", "*.wild.test"], "from-b")])
    assert v.get("/", host="a.test").text == "from-a"
    assert v.get("/", host="b.test").text == "from-b"
    assert v.get("/", host="A.TEST").text == "from-a"
    assert v.get("/", host="a.test:%d" % v.port).text == "from-a"
    assert v.get("/", host="x.wild.test").text == "from-b"
    assert v.get("/", host="y.x.wild.test").text == "from-b"
    r = v.get("/", host="c.test")
    assert r.status in (404, 421), r
    assert r.text not in ("from-a", "from-b")


def test_host_falls_back_to_default_app(verge):
    v = verge(apps=[app("a", ["a.test"], "from-a"), app("dflt", None, "from-default"),
                    app("b", ["b.test"], "from-b")])
    assert v.get("/", host="a.test").text == "from-a"
    assert v.get("/", host="b.test").text == "from-b"
    assert v.get("/", host="nowhere.test").text == "from-default"
    assert v.get("/", host="127.0.0.1:%d" % v.port).text == "from-default"


def test_exact_host_beats_wildcard(verge):
    v = verge(apps=[app("w", ["*.x.test"], "wild"), app("e", ["api.x.test"], "exact")])
    assert v.get("/", host="api.x.test").text == "exact"
    assert v.get("/", host="www.x.test").text == "wild"


def test_redirect(verge):
    v = verge("""\
        name: r
        routes:
          - path: /old
            redirect: {to: /new, status: 301}
          - path: /tmp
            redirect: {to: "https://example.test/elsewhere"}
          - path: /perm
            redirect: {to: /p, status: 308}
        """)
    r = v.get("/old")
    assert r.status == 301 and r.headers.get("Location") == "/new", r
    r = v.get("/tmp")
    assert r.status == 302 and r.headers.get("Location") == "https://example.test/elsewhere", r
    r = v.request("POST", "/perm", body=b"x")
    assert r.status == 308 and r.headers.get("Location") == "/p", r


def test_respond(verge):
    v = verge("""\
        name: r
        routes:
          - exact: /teapot
            respond: {status: 418, body: "short and stout\\n", content_type: text/x-teapot}
          - exact: /default
            respond: {body: hi}
          - exact: /empty
            respond: {status: 204}
        """)
    r = v.get("/teapot")
    assert (r.status, r.body, r.headers.get("Content-Type")) == (418, b"short and stout\n", "text/x-teapot"), r
    r = v.get("/default")
    assert r.status == 200 and r.body == b"hi"
    assert r.headers.get("Content-Type", "").startswith("text/plain")
    r = v.get("/empty")
    assert r.status == 204 and r.body == b""
    r = v.request("HEAD", "/teapot")
    assert r.status == 418 and r.body == b""


def test_route_host_key(verge):
    v = verge("""\
        name: rh
        routes:
          - path: /
            host: admin.test
            respond: {body: admin}
          - path: /
            respond: {body: public}
        """)
    assert v.get("/", host="admin.test").text == "admin"
    assert v.get("/", host="www.test").text == "public"
