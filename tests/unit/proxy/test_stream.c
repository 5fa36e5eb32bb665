/* The forwarder with request bodies streamed from the client, end to end:
 * vg_proxy_forward on a real evloop, an origin thread on a real socket,
 * the response captured by an h2o output stream.
 *
 * verge's HTTP/1 server does not stream bodies yet, so this binary brings
 * its own vg_http_body_* (the linker then leaves http1.c's out): a body
 * source that hands out pieces of a known pattern from one buffer it
 * overwrites on every read (a piece used after the next read would
 * corrupt what the origin checks), answers from the loop, and can fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "http/http.h"
#include "proxy/proxy_int.h"

#define MiB (1024 * 1024)

static unsigned char pattern_at(size_t i)
{
    return (unsigned char)((i * 131) ^ (i >> 11));
}

/* ---- the client's body ------------------------------------------------------------- */

static h2o_timeout_t now; /* 0 ms: "later, from the loop" */

static struct body_src {
    bool streamed;
    size_t declared; /* vg_http_body_length */
    size_t total;    /* bytes to hand out */
    size_t piece;    /* per read (varied when vary) */
    bool vary;
    bool end_empty; /* END comes alone, after the last bytes */
    size_t fail_at; /* ERROR once this much went out (SIZE_MAX: never) */
    int fail_status;
    /* state */
    size_t out;
    unsigned reads;
    bool outstanding, done;
    vg_http_body_cb cb;
    void *cb_data;
    size_t limit;
    h2o_timeout_entry_t te;
    unsigned char *buf;
    volatile size_t *origin_got; /* for the lead over the origin */
    size_t max_lead;
} src;

bool vg_http_body_is_streamed(h2o_req_t *req)
{
    return src.streamed;
}

size_t vg_http_body_length(h2o_req_t *req)
{
    return src.declared;
}

static void src_answer(h2o_timeout_entry_t *e)
{
    src.outstanding = false;
    if (src.out >= src.fail_at) {
        src.done = true;
        src.cb(src.cb_data, h2o_iovec_init(NULL, 0), VG_HTTP_BODY_ERROR, src.fail_status, "client body failed");
        return;
    }
    size_t n = src.piece;
    if (src.vary)
        n = 1 + (src.reads * 7919) % src.piece;
    if (n > src.total - src.out)
        n = src.total - src.out;
    if (src.fail_at != SIZE_MAX && n > src.fail_at - src.out)
        n = src.fail_at - src.out;
    for (size_t i = 0; i < n; i++)
        src.buf[i] = pattern_at(src.out + i);
    src.out += n;
    bool end = src.out == src.total && (!src.end_empty || n == 0);
    src.done = end;
    src.cb(src.cb_data, h2o_iovec_init(src.buf, n), end ? VG_HTTP_BODY_END : VG_HTTP_BODY_MORE, 0, NULL);
}

void vg_http_body_read(h2o_req_t *req, size_t limit, vg_http_body_cb cb, void *data)
{
    assert_true(src.streamed);
    assert_false(src.outstanding); /* one read at a time */
    assert_false(src.done);        /* none after END or ERROR */
    src.outstanding = true;
    src.reads++;
    src.cb = cb;
    src.cb_data = data;
    src.limit = limit;
    if (src.origin_got) {
        size_t lead = src.out - *src.origin_got;
        if (lead > src.max_lead)
            src.max_lead = lead;
    }
    h2o_timeout_link(req->conn->ctx->loop, &now, &src.te); /* always later, from the loop */
}

/* ---- the origin ---------------------------------------------------------------------- */

enum script {
    ORIGIN_ECHO,        /* read the whole body, answer 200 with its size */
    ORIGIN_SLOW,        /* the same, slowly */
    ORIGIN_EARLY_413,   /* answer 413 after the head and close, body unread */
    ORIGIN_EARLY_200,   /* answer the head at once, read the body, then send the rest of the answer */
    ORIGIN_CLOSE_MID,   /* read 1 MiB of the body, close */
    ORIGIN_NEVER_READS, /* read the head, then nothing for 2 s */
};

static struct origin {
    int fd, port;
    pthread_t thread;
    enum script script;
    pthread_mutex_t mu;
    unsigned conns, requests;
    volatile size_t got; /* body bytes of the request being read */
    size_t body_len;     /* of the last request */
    bool body_ok, chunked, has_length;
    char head[4096];
    pthread_t conn_threads[64];
    int conn_fds[64];
} org;

static void write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Checks body bytes against the pattern as they come. */
static void took(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] != pattern_at(org.got + i))
            org.body_ok = false;
    __atomic_store_n(&org.got, org.got + n, __ATOMIC_RELEASE);
    if (org.script == ORIGIN_SLOW)
        usleep(n / 256); /* ~256 MB/s */
}

/* Reads one request head into org.head (with what followed it in *rest).
 * Returns false at EOF. */
static bool read_head(int fd, char *buf, size_t cap, size_t *have, size_t *head_len)
{
    *have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + *have, cap - *have);
        if (r <= 0)
            return false;
        *have += (size_t)r;
        char *e = memmem(buf, *have, "\r\n\r\n", 4);
        if (e) {
            *head_len = (size_t)(e - buf) + 4;
            size_t k = *head_len < sizeof(org.head) - 1 ? *head_len : sizeof(org.head) - 1;
            memcpy(org.head, buf, k);
            org.head[k] = '\0';
            return true;
        }
    }
}

/* Reads the body whose first `have` bytes are in buf; up to `stop` bytes. */
static bool read_body(int fd, char *buf, size_t cap, size_t have, size_t stop)
{
    org.chunked = strcasestr(org.head, "\r\ntransfer-encoding: chunked\r\n") != NULL;
    const char *cl = strcasestr(org.head, "\r\ncontent-length: ");
    org.has_length = cl != NULL;
    if (!org.chunked) {
        size_t left = cl ? strtoull(cl + 18, NULL, 10) : 0;
        for (;;) {
            size_t n = have < left ? have : left;
            took(buf, n);
            left -= n;
            if (left == 0 || org.got >= stop)
                return true;
            ssize_t r = read(fd, buf, cap);
            if (r <= 0)
                return false;
            have = (size_t)r;
        }
    }
    struct phr_chunked_decoder d = {.consume_trailer = 1};
    for (;;) {
        size_t n = have;
        ssize_t rc = phr_decode_chunked(&d, buf, &n);
        took(buf, n);
        if (rc == -1)
            org.body_ok = false;
        if (rc != -2 || org.got >= stop)
            return rc >= 0;
        ssize_t r = read(fd, buf, cap);
        if (r <= 0)
            return false;
        have = (size_t)r;
    }
}

static const char *answer_for(size_t got, char *out, size_t cap)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "got %zu\n", got);
    snprintf(out, cap, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", n, body);
    return out;
}

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t cap = 256 * 1024;
    char *buf = malloc(cap), out[256];
    size_t have, head_len;
    while (read_head(fd, buf, cap, &have, &head_len)) {
        pthread_mutex_lock(&org.mu);
        org.requests++;
        pthread_mutex_unlock(&org.mu);
        __atomic_store_n(&org.got, 0, __ATOMIC_RELEASE);
        org.body_ok = true;
        memmove(buf, buf + head_len, have - head_len);
        have -= head_len;
        if (org.script == ORIGIN_EARLY_413) {
            static const char a[] =
                "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 9\r\n\r\ntoo big\r\n";
            write_all(fd, a, sizeof(a) - 1);
            break;
        }
        if (org.script == ORIGIN_NEVER_READS) {
            sleep(2);
            break;
        }
        if (org.script == ORIGIN_EARLY_200) {
            static const char a[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nearly\n\r\n";
            write_all(fd, a, sizeof(a) - 1);
        }
        bool whole = read_body(fd, buf, cap, have, org.script == ORIGIN_CLOSE_MID ? MiB : SIZE_MAX);
        org.body_len = org.got;
        if (org.script == ORIGIN_CLOSE_MID || !whole)
            break;
        if (org.script == ORIGIN_EARLY_200) {
            char tail[128];
            int n = snprintf(tail, sizeof(tail), "got %zu\n", org.got);
            char c[160];
            int k = snprintf(c, sizeof(c), "%x\r\n%s\r\n0\r\n\r\n", n, tail);
            write_all(fd, c, (size_t)k);
            continue;
        }
        answer_for(org.got, out, sizeof(out));
        write_all(fd, out, strlen(out));
    }
    free(buf);
    close(fd);
    return NULL;
}

static void *accept_loop(void *arg)
{
    for (;;) {
        int c = accept(org.fd, NULL, NULL);
        if (c < 0)
            return NULL;
        pthread_mutex_lock(&org.mu);
        unsigned i = org.conns++;
        VG_ASSERT(i < 64);
        org.conn_fds[i] = c;
        pthread_create(&org.conn_threads[i], NULL, serve, (void *)(intptr_t)c);
        pthread_mutex_unlock(&org.mu);
    }
}

static void origin_start(enum script s)
{
    memset(&org, 0, sizeof(org));
    pthread_mutex_init(&org.mu, NULL);
    org.script = s;
    org.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    VG_AZ(bind(org.fd, (struct sockaddr *)&sa, sizeof(sa)));
    VG_AZ(listen(org.fd, 16));
    VG_AZ(getsockname(org.fd, (struct sockaddr *)&sa, &len));
    org.port = ntohs(sa.sin_port);
    pthread_create(&org.thread, NULL, accept_loop, NULL);
}

static void origin_stop(void)
{
    shutdown(org.fd, SHUT_RDWR);
    pthread_join(org.thread, NULL);
    close(org.fd);
    for (unsigned i = 0; i < org.conns; i++) {
        shutdown(org.conn_fds[i], SHUT_RDWR);
        pthread_join(org.conn_threads[i], NULL);
    }
}

/* ---- the proxy side ------------------------------------------------------------------ */

struct capture {
    h2o_ostream_t super;
    h2o_req_t *req;
    int status;
    bool final, error;
    bool read_outstanding_at_end;
    size_t bytes;
    char body[256];
    h2o_timeout_entry_t proceed;
};

/* The loop and h2o's context live for the whole run (h2o 2.2.5 does not
 * free a context's queue on dispose); the rest is per test. */
static struct {
    h2o_evloop_t *loop;
    h2o_globalconf_t gconf;
    h2o_hostconf_t *host;
    h2o_pathconf_t *path;
    size_t n_filters;
    h2o_context_t ctx;
} env;

static struct world {
    h2o_evloop_t *loop;
    struct vg_conf_server servers[2];
    struct vg_conf_origin conf;
    struct vg_proxy_origin_state *state;
    struct vg_proxy_balancer *balancer;
    struct vg_proxy_timers timers;
    struct vg_proxy_pool *pools[2];
    char authority[2][32];
    char *auth_ptrs[2];
    h2o_conn_t *conn;
    h2o_req_t req;
    struct capture cap;
    bool req_live;
} w;

static socklen_t get_peername(h2o_conn_t *conn, struct sockaddr *sa)
{
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    *in = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(1)};
    return sizeof(*in);
}

static const h2o_conn_callbacks_t conn_callbacks = {.get_peername = get_peername};

static void on_proceed(h2o_timeout_entry_t *e)
{
    struct capture *c = H2O_STRUCT_FROM_MEMBER(struct capture, proceed, e);
    h2o_proceed_response(c->req);
}

static void cap_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t st)
{
    struct capture *c = (struct capture *)self;
    c->status = req->res.status;
    for (size_t i = 0; i < n; i++) {
        size_t room = sizeof(c->body) - 1 - (c->bytes < sizeof(c->body) ? c->bytes : sizeof(c->body) - 1);
        size_t k = bufs[i].len < room ? bufs[i].len : room;
        memcpy(c->body + (c->bytes < sizeof(c->body) ? c->bytes : sizeof(c->body) - 1), bufs[i].base, k);
        c->bytes += bufs[i].len;
    }
    if (st == H2O_SEND_STATE_IN_PROGRESS) {
        h2o_timeout_link(w.loop, &now, &c->proceed); /* the client took it */
        return;
    }
    c->final = true;
    c->error = st == H2O_SEND_STATE_ERROR;
    c->read_outstanding_at_end = src.outstanding;
}

/* Server 1 is a port nobody listens on, when two are asked for. */
static void world_init(bool dead_first, uint64_t read_ms)
{
    memset(&w, 0, sizeof(w));
    w.loop = env.loop;
    size_t n = 0;
    if (dead_first) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        VG_AZ(bind(s, (struct sockaddr *)&sa, sizeof(sa)));
        VG_AZ(getsockname(s, (struct sockaddr *)&sa, &len));
        close(s); /* bound once, now refused */
        w.servers[n++] =
            (struct vg_conf_server){.url = "http://dead", .host = "127.0.0.1", .port = ntohs(sa.sin_port), .weight = 1};
    }
    w.servers[n++] =
        (struct vg_conf_server){.url = "http://origin", .host = "127.0.0.1", .port = (uint16_t)org.port, .weight = 1};
    w.conf = (struct vg_conf_origin){.name = "o",
                                     .servers = w.servers,
                                     .n_servers = n,
                                     .connect_timeout_ms = 1000,
                                     .read_timeout_ms = read_ms,
                                     .total_timeout_ms = 20000,
                                     .keepalive_ms = 30000,
                                     .retries = 1,
                                     .fail_timeout_ms = 1000};
    w.state = vg_proxy_origin_state_create(&w.conf);
    w.balancer = vg_proxy_balancer_create(&w.conf);
    vg_proxy_timers_init(&w.timers, w.loop, &w.conf);
    for (size_t i = 0; i < n; i++) {
        w.pools[i] = vg_proxy_pool_create(&w.servers[i], &w.timers);
        snprintf(w.authority[i], sizeof(w.authority[i]), "127.0.0.1:%u", w.servers[i].port);
        w.auth_ptrs[i] = w.authority[i];
    }
    w.conn = h2o_create_connection(sizeof(*w.conn), &env.ctx, NULL, (struct timeval){0}, &conn_callbacks);
}

static void run_until(bool *flag, uint64_t max_ms)
{
    uint64_t end = vg_now_ms() + max_ms;
    while (!*flag && vg_now_ms() < end)
        h2o_evloop_run(w.loop, 10);
}

static void forward(const char *method, h2o_iovec_t entity)
{
    h2o_req_t *req = &w.req;
    h2o_init_request(req, w.conn, NULL);
    w.req_live = true;
    req->version = 0x101;
    req->method = h2o_iovec_init(method, strlen(method));
    req->path = h2o_iovec_init(H2O_STRLIT("/up"));
    req->authority = h2o_iovec_init(H2O_STRLIT("x.test"));
    req->scheme = &H2O_URL_SCHEME_HTTP;
    req->input.method = req->method;
    req->input.path = req->path;
    req->input.authority = req->authority;
    req->input.scheme = req->scheme;
    req->pathconf = env.path;
    req->entity = entity;
    w.cap = (struct capture){.super = {.do_send = cap_send}, .req = req};
    w.cap.proceed.cb = on_proceed;
    req->_ostr_top = &w.cap.super;
    struct vg_proxy_target t = {.conf = &w.conf,
                                .state = w.state,
                                .balancer = w.balancer,
                                .pools = w.pools,
                                .timers = &w.timers,
                                .authority = w.auth_ptrs,
                                .app = "t",
                                .body_limit = 1ull << 40};
    if (src.streamed)
        t.body_limit = src.limit ? src.limit : 1ull << 40;
    vg_proxy_forward(req, &t, req->path, h2o_iovec_init(NULL, 0), NULL, NULL);
}

/* Ends the request the way the server would (h2o's pool teardown). */
static void request_end(void)
{
    if (!w.req_live)
        return;
    if (h2o_timeout_is_linked(&w.cap.proceed))
        h2o_timeout_unlink(&w.cap.proceed);
    h2o_dispose_request(&w.req);
    w.req_live = false;
}

static void world_fini(void)
{
    request_end();
    if (h2o_timeout_is_linked(&src.te))
        h2o_timeout_unlink(&src.te);
    for (size_t i = 0; i < w.conf.n_servers; i++)
        vg_proxy_pool_destroy(w.pools[i]);
    vg_proxy_timers_dispose(&w.timers);
    vg_proxy_balancer_destroy(w.balancer);
    vg_proxy_origin_state_destroy(w.state);
    free(w.conn);
    for (int i = 0; i < 3; i++) /* the evloop frees closed sockets on its next pass */
        h2o_evloop_run(w.loop, 0);
}

static void src_init(size_t declared, size_t total, size_t piece)
{
    unsigned char *buf = src.buf;
    memset(&src, 0, sizeof(src));
    src.buf = buf;
    src.streamed = true;
    src.declared = declared;
    src.total = total;
    src.piece = piece;
    src.fail_at = SIZE_MAX;
    src.te.cb = src_answer;
}

static int setup(void **state)
{
    src.buf = malloc(1 << 20);
    env.loop = h2o_evloop_create();
    h2o_config_init(&env.gconf);
    env.host = h2o_config_register_host(&env.gconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    env.path = h2o_config_register_path(env.host, "/", 0);
    /* no filters (h2o's chunked encoder): the capture gets the body as the forwarder sends it */
    env.n_filters = env.path->filters.size;
    env.path->filters.size = 0;
    h2o_context_init(&env.ctx, env.loop, &env.gconf);
    h2o_timeout_init(env.loop, &now, 0);
    return 0;
}

static int teardown(void **state)
{
    free(src.buf);
    src.buf = NULL;
    h2o_timeout_dispose(env.loop, &now);
    env.path->filters.size = env.n_filters;
    return 0; /* the context and its loop stay (see env) */
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void expect_origin_got_all(size_t n)
{
    assert_int_equal(w.cap.status, 200);
    assert_false(w.cap.error);
    assert_true(org.body_ok);
    assert_int_equal(org.body_len, n);
    char want[64];
    snprintf(want, sizeof(want), "got %zu\n", n);
    assert_non_null(strstr(w.cap.body, want));
}

static void test_content_length(void **state)
{
    origin_start(ORIGIN_ECHO);
    src_init(32 * MiB, 32 * MiB, 64 * 1024);
    world_init(false, 2000);
    forward("POST", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 20000);
    expect_origin_got_all(32 * MiB);
    assert_true(org.has_length && !org.chunked);
    assert_non_null(strcasestr(org.head, "\r\ncontent-length: 33554432\r\n"));
    assert_false(w.cap.read_outstanding_at_end);
    world_fini();
    origin_stop();
}

static void test_chunked(void **state)
{
    origin_start(ORIGIN_ECHO);
    for (int end_empty = 0; end_empty < 2; end_empty++) {
        src_init(SIZE_MAX, 3 * MiB + 17, 70000);
        src.vary = true;
        src.end_empty = end_empty;
        world_init(false, 2000);
        forward("PUT", h2o_iovec_init(NULL, 0));
        run_until(&w.cap.final, 20000);
        expect_origin_got_all(3 * MiB + 17);
        assert_true(org.chunked && !org.has_length);
        world_fini();
    }
    assert_int_equal(org.conns, 2);
    origin_stop();
}

static void test_constant_memory_with_slow_origin(void **state)
{
    origin_start(ORIGIN_SLOW);
    size_t total = 256 * (size_t)MiB;
    src_init(total, total, 256 * 1024);
    src.origin_got = &org.got;
    world_init(false, 2000);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    forward("POST", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 60000);
    getrusage(RUSAGE_SELF, &after);
    expect_origin_got_all(total);
    /* what verge read from the client but the origin had not got yet: the
     * kernel's socket buffers and one piece, not the body */
    assert_true(src.max_lead < 24 * MiB);
    assert_true(after.ru_maxrss - before.ru_maxrss < 16 * 1024); /* KiB */
    world_fini();
    origin_stop();
}

static void test_streamed_body_takes_a_new_connection(void **state)
{
    origin_start(ORIGIN_ECHO);
    src_init(0, 0, 1);
    src.streamed = false;
    world_init(false, 2000);
    forward("GET", h2o_iovec_init(NULL, 0)); /* leaves a pooled connection */
    run_until(&w.cap.final, 5000);
    assert_int_equal(w.cap.status, 200);
    request_end();
    src_init(100000, 100000, 30000);
    forward("POST", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 5000);
    expect_origin_got_all(100000);
    assert_int_equal(org.conns, 2);
    request_end();
    src_init(0, 0, 1); /* both are reusable afterwards */
    src.streamed = false;
    forward("GET", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 5000);
    assert_int_equal(w.cap.status, 200);
    assert_int_equal(org.conns, 2);
    world_fini();
    origin_stop();
}

static void body_error(int status, int want)
{
    origin_start(ORIGIN_ECHO);
    src_init(8 * MiB, 8 * MiB, 64 * 1024);
    src.fail_at = MiB;
    src.fail_status = status;
    world_init(false, 2000);
    forward("POST", h2o_iovec_init(NULL, 0));
    if (want) {
        run_until(&w.cap.final, 5000);
        assert_int_equal(w.cap.status, want);
        assert_true(w.cap.final && !w.cap.error);
    } else {
        run_until(&src.done, 5000);
        for (int i = 0; i < 10; i++)
            h2o_evloop_run(w.loop, 10);
        assert_false(w.cap.final); /* nobody to answer */
    }
    uint64_t end = vg_now_ms() + 2000; /* the origin thread may still be reading */
    while (org.requests == 0 && vg_now_ms() < end)
        usleep(1000);
    usleep(50000);
    assert_int_equal(org.conns, 1); /* not sent again */
    assert_int_equal(org.requests, 1);
    assert_true(org.got <= MiB);
    world_fini();
    origin_stop();
}

static void test_body_error_413(void **state)
{
    body_error(413, 413);
}

static void test_body_error_408(void **state)
{
    body_error(408, 408);
}

static void test_body_error_400(void **state)
{
    body_error(400, 400);
}

static void test_body_error_client_gone(void **state)
{
    body_error(0, 0);
}

static void test_declared_over_limit(void **state)
{
    origin_start(ORIGIN_ECHO);
    src_init(10 * MiB, 10 * MiB, 64 * 1024);
    src.limit = MiB;
    world_init(false, 2000);
    forward("POST", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 2000);
    assert_int_equal(w.cap.status, 413);
    assert_int_equal(src.reads, 0);
    assert_int_equal(org.conns, 0);
    world_fini();
    origin_stop();
}

static void test_limit_passed_on(void **state)
{
    origin_start(ORIGIN_ECHO);
    src_init(SIZE_MAX, 1000, 1000);
    src.limit = 12345;
    world_init(false, 2000);
    forward("POST", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 5000);
    expect_origin_got_all(1000);
    assert_int_equal(src.limit, 12345);
    world_fini();
    origin_stop();
}

static void test_early_413_from_origin(void **state)
{
    origin_start(ORIGIN_EARLY_413);
    src_init(64 * MiB, 64 * MiB, 64 * 1024);
    world_init(false, 2000);
    forward("POST", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 5000);
    assert_int_equal(w.cap.status, 413);
    assert_false(w.cap.error);
    assert_non_null(strstr(w.cap.body, "too big"));
    assert_false(w.cap.read_outstanding_at_end); /* the end waited for the read */
    assert_true(src.out < 32 * MiB);             /* sending stopped */
    world_fini();
    origin_stop();
}

static void test_early_200_origin_still_reading(void **state)
{
    origin_start(ORIGIN_EARLY_200);
    src_init(SIZE_MAX, 8 * MiB, 64 * 1024);
    world_init(false, 2000);
    forward("POST", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 10000);
    assert_int_equal(w.cap.status, 200);
    assert_false(w.cap.error);
    assert_true(org.body_ok);
    assert_int_equal(org.body_len, 8 * MiB);
    assert_string_equal(w.cap.body, "early\ngot 8388608\n");
    world_fini();
    origin_stop();
}

static void test_connect_failure_retried(void **state)
{
    origin_start(ORIGIN_ECHO);
    for (int i = 0; i < 2; i++) { /* the dead server may be picked first or second */
        src_init(2 * MiB, 2 * MiB, 64 * 1024);
        world_init(true, 2000);
        forward("POST", h2o_iovec_init(NULL, 0));
        run_until(&w.cap.final, 5000);
        expect_origin_got_all(2 * MiB);
        world_fini();
    }
    assert_int_equal(org.requests, 2);
    origin_stop();
}

static void test_origin_closes_mid_body_not_retried(void **state)
{
    origin_start(ORIGIN_CLOSE_MID);
    src_init(16 * MiB, 16 * MiB, 64 * 1024);
    world_init(false, 2000);
    w.conf.retries = 3;
    forward("PUT", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 5000);
    assert_int_equal(w.cap.status, 502);
    assert_false(w.cap.read_outstanding_at_end);
    assert_int_equal(org.conns, 1);
    world_fini();
    origin_stop();
}

static void test_origin_not_reading_times_out(void **state)
{
    origin_start(ORIGIN_NEVER_READS);
    src_init(256 * (size_t)MiB, 256 * (size_t)MiB, 256 * 1024);
    world_init(false, 300);
    uint64_t t0 = vg_now_ms();
    forward("POST", h2o_iovec_init(NULL, 0));
    run_until(&w.cap.final, 5000);
    assert_int_equal(w.cap.status, 504);
    assert_true(vg_now_ms() - t0 < 1500);
    assert_int_equal(org.conns, 1);
    world_fini();
    origin_stop();
}

static void test_whole_body(void **state)
{
    origin_start(ORIGIN_ECHO);
    src_init(0, 0, 1);
    src.streamed = false;
    char *body = malloc(3 * MiB);
    for (size_t i = 0; i < 3 * MiB; i++)
        body[i] = (char)pattern_at(i);
    world_init(false, 2000);
    forward("POST", h2o_iovec_init(body, 3 * MiB));
    run_until(&w.cap.final, 5000);
    expect_origin_got_all(3 * MiB);
    assert_true(org.has_length);
    world_fini();
    free(body);
    origin_stop();
}

int main(void)
{
    vg_log_set_level(VG_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN); /* as the node does: writes to closed sockets fail instead */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_constant_memory_with_slow_origin),
        cmocka_unit_test(test_streamed_body_takes_a_new_connection),
        cmocka_unit_test(test_body_error_413),
        cmocka_unit_test(test_body_error_408),
        cmocka_unit_test(test_body_error_400),
        cmocka_unit_test(test_body_error_client_gone),
        cmocka_unit_test(test_declared_over_limit),
        cmocka_unit_test(test_limit_passed_on),
        cmocka_unit_test(test_early_413_from_origin),
        cmocka_unit_test(test_early_200_origin_still_reading),
        cmocka_unit_test(test_connect_failure_retried),
        cmocka_unit_test(test_origin_closes_mid_body_not_retried),
        cmocka_unit_test(test_origin_not_reading_times_out),
        cmocka_unit_test(test_whole_body),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
