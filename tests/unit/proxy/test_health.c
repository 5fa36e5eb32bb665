/* Active health checks against a tiny origin served from the same loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/proxy.h"

/* ---- a scriptable origin --------------------------------------------------- */

enum srv_mode {
    SRV_OK,        /* 200 */
    SRV_503,       /* 503 */
    SRV_SILENT,    /* reads the request, never answers */
    SRV_GARBAGE,   /* 2000 bytes without a line end */
    SRV_MALFORMED, /* "HTTP/1.1 2x0 OK" */
    SRV_SPLIT,     /* "HTTP/1.1 2" ... 20 ms ... "04 No Content" */
    SRV_N_MODES,
};

struct srv_conn;

struct test_srv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    enum srv_mode mode;
    int answered[SRV_N_MODES]; /* responses sent, by mode */
    int conns_total;
    struct srv_conn *conns; /* open ones, for teardown */
    char last_req[512];
};

struct srv_conn {
    struct test_srv *srv;
    struct srv_conn *next, **pprev;
    uv_tcp_t tcp;
    uv_timer_t timer; /* SRV_SPLIT only */
    bool has_timer;
    int open_handles;
    uv_write_t wr, wr2;
    char buf[1024];
    size_t len;
    bool answered;
};

static const char RESP_200[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
static const char RESP_503[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
static const char RESP_MALFORMED[] = "HTTP/1.1 2x0 OK\r\n\r\n";
static const char RESP_SPLIT_1[] = "HTTP/1.1 2";
static const char RESP_SPLIT_2[] = "04 No Content\r\n\r\n";
static char resp_garbage[2000];

static void conn_handle_closed(uv_handle_t *handle)
{
    struct srv_conn *c = handle->data;
    if (--c->open_handles == 0)
        free(c);
}

static void conn_close(struct srv_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->pprev) {
        *c->pprev = c->next;
        if (c->next)
            c->next->pprev = c->pprev;
        c->pprev = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    if (c->has_timer)
        uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_srv_written(uv_write_t *req, int status)
{
    conn_close(req->data); /* Connection: close */
}

static void srv_write(struct srv_conn *c, uv_write_t *wr, const char *data, size_t len, uv_write_cb cb)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    wr->data = c;
    assert_int_equal(uv_write(wr, (uv_stream_t *)&c->tcp, &b, 1, cb), 0);
}

static void on_split_part1_written(uv_write_t *req, int status)
{
    (void)req;
    (void)status; /* the timer sends the rest, or the close path cleans up */
}

static void on_split_timer(uv_timer_t *t)
{
    struct srv_conn *c = t->data;
    c->srv->answered[SRV_SPLIT]++;
    srv_write(c, &c->wr2, RESP_SPLIT_2, strlen(RESP_SPLIT_2), on_srv_written);
}

static void srv_answer(struct srv_conn *c)
{
    struct test_srv *srv = c->srv;
    c->answered = true;
    snprintf(srv->last_req, sizeof(srv->last_req), "%.*s", (int)c->len, c->buf);
    switch (srv->mode) {
    case SRV_OK:
        srv_write(c, &c->wr, RESP_200, strlen(RESP_200), on_srv_written);
        break;
    case SRV_503:
        srv_write(c, &c->wr, RESP_503, strlen(RESP_503), on_srv_written);
        break;
    case SRV_MALFORMED:
        srv_write(c, &c->wr, RESP_MALFORMED, strlen(RESP_MALFORMED), on_srv_written);
        break;
    case SRV_GARBAGE:
        srv_write(c, &c->wr, resp_garbage, sizeof(resp_garbage), on_srv_written);
        break;
    case SRV_SPLIT:
        srv_write(c, &c->wr, RESP_SPLIT_1, strlen(RESP_SPLIT_1), on_split_part1_written);
        assert_int_equal(uv_timer_init(srv->loop, &c->timer), 0);
        c->timer.data = c;
        c->has_timer = true;
        c->open_handles++;
        uv_timer_start(&c->timer, on_split_timer, 20, 0);
        return; /* counted when the rest is sent */
    case SRV_SILENT:
    case SRV_N_MODES:
        return;
    }
    srv->answered[srv->mode]++;
}

static void on_srv_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct srv_conn *c = handle->data;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void on_srv_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct srv_conn *c = stream->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    c->buf[c->len] = '\0';
    if (!c->answered && strstr(c->buf, "\r\n\r\n"))
        srv_answer(c);
}

static void on_srv_connection(uv_stream_t *listener, int status)
{
    struct test_srv *srv = listener->data;
    assert_int_equal(status, 0);
    struct srv_conn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->srv = srv;
    assert_int_equal(uv_tcp_init(srv->loop, &c->tcp), 0);
    c->tcp.data = c;
    c->open_handles = 1;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->pprev = &c->next;
    c->pprev = &srv->conns;
    srv->conns = c;
    assert_int_equal(uv_accept(listener, (uv_stream_t *)&c->tcp), 0);
    srv->conns_total++;
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, on_srv_alloc, on_srv_read), 0);
}

static void srv_start(struct test_srv *srv, uv_loop_t *loop)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    struct sockaddr_in sa;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sa), 0);
    assert_int_equal(uv_tcp_init(loop, &srv->listener), 0);
    srv->listener.data = srv;
    assert_int_equal(uv_tcp_bind(&srv->listener, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&srv->listener, 16, on_srv_connection), 0);
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    assert_int_equal(uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len), 0);
    srv->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

static void srv_stop(struct test_srv *srv)
{
    while (srv->conns)
        conn_close(srv->conns);
    if (!uv_is_closing((uv_handle_t *)&srv->listener))
        uv_close((uv_handle_t *)&srv->listener, NULL);
}

/* A port nobody listens on: bind one, learn it, close it. */
static int closed_port(uv_loop_t *loop)
{
    struct test_srv tmp;
    srv_start(&tmp, loop);
    int port = tmp.port;
    srv_stop(&tmp);
    uv_run(loop, UV_RUN_NOWAIT);
    return port;
}

/* ---- fixture ------------------------------------------------------------------ */

struct env {
    uv_loop_t loop;
    struct test_srv srv;
    struct vg_conf_server servers[2];
    char urls[2][64];
    char hosts[2][32];
    struct vg_conf_origin o;
    struct vg_proxy_origin_state *st;
    struct vg_proxy_health *h;
    int saved_stderr;
    char log_path[64];
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    srv_start(&e->srv, &e->loop);
    e->saved_stderr = -1;
    memset(resp_garbage, 'x', sizeof(resp_garbage));
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e->saved_stderr >= 0) { /* a test failed while capturing: give stderr back */
        dup2(e->saved_stderr, 2);
        close(e->saved_stderr);
        unlink(e->log_path);
    }
    vg_proxy_health_stop(e->h);
    srv_stop(&e->srv);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0); /* every handle was closed */
    vg_proxy_origin_state_destroy(e->st);
    free(e);
    return 0;
}

/* Server i at host:port; checks every 30 ms with a 200 ms deadline. */
static void env_origin(struct env *e, size_t n, const char *host, const int *ports)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(e->hosts[i], sizeof(e->hosts[i]), "%s", host);
        snprintf(e->urls[i], sizeof(e->urls[i]), "http://%s:%d", host, ports[i]);
        e->servers[i] = (struct vg_conf_server){e->urls[i], e->hosts[i], (uint16_t)ports[i], 1};
    }
    e->o.name = "backend";
    e->o.servers = e->servers;
    e->o.n_servers = n;
    e->o.health = (struct vg_conf_health){
        .enabled = true,
        .path = "/healthz",
        .interval_ms = 30,
        .timeout_ms = 200,
        .rise = 2,
        .fall = 3,
        .expect_status_min = 200,
        .expect_status_max = 399,
    };
    e->st = vg_proxy_origin_state_create(&e->o);
}

static void env_start(struct env *e)
{
    e->h = vg_proxy_health_start(&e->loop, &e->o, "shop", e->st);
    assert_non_null(e->h);
}

typedef bool (*pred_fn)(struct env *e);

/* Runs the loop until pred holds; false after timeout_ms. */
static bool run_until(struct env *e, pred_fn pred, uint64_t timeout_ms)
{
    uint64_t deadline = vg_now_ms() + timeout_ms;
    while (!pred(e)) {
        if (vg_now_ms() > deadline)
            return false;
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    return true;
}

static bool is_down(struct env *e)
{
    return !vg_proxy_origin_state_active_up(e->st, 0);
}

static bool is_up(struct env *e)
{
    return vg_proxy_origin_state_active_up(e->st, 0);
}

/* Log capture: vg_log writes to fd 2. */
static void capture_logs(struct env *e)
{
    snprintf(e->log_path, sizeof(e->log_path), "/tmp/verge-test-health-XXXXXX");
    int fd = mkstemp(e->log_path);
    assert_true(fd >= 0);
    fflush(stderr);
    e->saved_stderr = dup(2);
    assert_true(e->saved_stderr >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    close(fd);
}

/* Restores stderr; returns the captured text (caller frees). */
static char *captured_logs(struct env *e)
{
    fflush(stderr);
    assert_int_equal(dup2(e->saved_stderr, 2), 2);
    close(e->saved_stderr);
    e->saved_stderr = -1;
    FILE *f = fopen(e->log_path, "r");
    assert_non_null(f);
    char *text = calloc(1, 65536);
    assert_non_null(text);
    size_t n = fread(text, 1, 65535, f);
    text[n] = '\0';
    fclose(f);
    unlink(e->log_path);
    return text;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_disabled_returns_null(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    e->o.health.enabled = false;
    assert_null(vg_proxy_health_start(&e->loop, &e->o, "shop", e->st));
    uv_run(&e->loop, UV_RUN_NOWAIT);
    assert_int_equal(e->srv.conns_total, 0);
}

static bool three_ok(struct env *e)
{
    return e->srv.answered[SRV_OK] >= 3 || is_down(e);
}

static void test_request_format_and_stays_up(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    env_start(e);
    assert_true(run_until(e, three_ok, 3000));
    assert_true(is_up(e));
    char want[256];
    snprintf(want, sizeof(want),
             "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: verge-health\r\nConnection: close\r\n\r\n",
             port);
    assert_string_equal(e->srv.last_req, want);
}

static bool two_ok(struct env *e)
{
    return e->srv.answered[SRV_OK] >= 2;
}

static void test_down_after_fall_up_after_rise(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    capture_logs(e);
    env_start(e);
    assert_true(run_until(e, two_ok, 3000));
    assert_true(is_up(e));

    e->srv.mode = SRV_503;
    assert_true(run_until(e, is_down, 3000));
    assert_int_equal(e->srv.answered[SRV_503], 3); /* exactly fall failures */
    assert_false(vg_proxy_origin_state_usable(e->st, 0, vg_now_ms()));

    e->srv.answered[SRV_OK] = 0;
    e->srv.mode = SRV_OK;
    assert_true(run_until(e, is_up, 3000));
    assert_int_equal(e->srv.answered[SRV_OK], 2); /* exactly rise successes */
    assert_true(vg_proxy_origin_state_usable(e->st, 0, vg_now_ms()));

    char *logs = captured_logs(e);
    char server[96];
    snprintf(server, sizeof(server), "\"server\":\"http://127.0.0.1:%d\"", port);
    const char *down = strstr(logs, "\"msg\":\"origin server down\"");
    assert_non_null(down);
    const char *down_end = strchr(down, '\n');
    assert_non_null(down_end);
    char line[1024];
    snprintf(line, sizeof(line), "%.*s", (int)(down_end - down), down);
    assert_non_null(strstr(line, "\"app\":\"shop\""));
    assert_non_null(strstr(line, "\"origin\":\"backend\""));
    assert_non_null(strstr(line, server));
    assert_non_null(strstr(line, "\"reason\":\"status 503\""));
    const char *up = strstr(logs, "\"msg\":\"origin server up\"");
    assert_non_null(up);
    assert_true(up > down);
    assert_null(strstr(up + 1, "\"msg\":\"origin server")); /* one transition each way */
    free(logs);
}

/* Asserts server 0 goes down with `reason` in its log line. */
static void expect_down_with_reason(struct env *e, const char *reason)
{
    capture_logs(e);
    env_start(e);
    bool down = run_until(e, is_down, 3000);
    char *logs = captured_logs(e);
    assert_true(down);
    char want[160];
    snprintf(want, sizeof(want), "\"reason\":\"%s\"", reason);
    if (!strstr(logs, want))
        fail_msg("no %s in logs: %s", want, logs);
    free(logs);
}

static void test_timeout_marks_down(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    e->o.health.timeout_ms = 80;
    e->o.health.fall = 2;
    e->srv.mode = SRV_SILENT;
    uint64_t t0 = vg_now_ms();
    expect_down_with_reason(e, "timeout");
    assert_true(vg_now_ms() - t0 >= 2 * 80);
    assert_true(e->srv.conns_total >= 2);
}

static void test_refused_marks_down(void **state)
{
    struct env *e = *state;
    int port = closed_port(&e->loop);
    env_origin(e, 1, "127.0.0.1", &port);
    e->o.health.fall = 2;
    expect_down_with_reason(e, "connect: connection refused");
}

static void test_status_line_bounded(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    e->o.health.fall = 1;
    e->srv.mode = SRV_GARBAGE;
    expect_down_with_reason(e, "status line longer than 1 KiB");
}

static void test_malformed_status_line(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    e->o.health.fall = 1;
    e->srv.mode = SRV_MALFORMED;
    expect_down_with_reason(e, "malformed status line");
}

static bool four_conns(struct env *e)
{
    return e->srv.conns_total >= 4 || is_down(e);
}

/* The status arrives in two segments 20 ms apart; the prober must wait for
 * the whole line: only 204 is accepted, so reading "2" alone would fail. */
static void test_split_status_line_is_reassembled(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    e->o.health.fall = 1;
    e->o.health.expect_status_min = e->o.health.expect_status_max = 204;
    e->srv.mode = SRV_SPLIT;
    env_start(e);
    assert_true(run_until(e, four_conns, 3000)); /* attempts never overlap: 3 done */
    assert_true(is_up(e));
    assert_true(e->srv.answered[SRV_SPLIT] >= 3);
}

static void test_status_outside_expected_range(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    e->o.health.fall = 1;
    e->o.health.expect_status_min = e->o.health.expect_status_max = 200;
    e->srv.mode = SRV_SPLIT; /* 204 */
    expect_down_with_reason(e, "status 204");
}

static bool one_conn(struct env *e)
{
    return e->srv.conns_total >= 1;
}

static void test_stop_with_probe_in_flight(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "127.0.0.1", &port);
    e->o.health.timeout_ms = 10000;
    e->srv.mode = SRV_SILENT;
    env_start(e);
    assert_true(run_until(e, one_conn, 3000));
    vg_proxy_health_stop(e->h);
    e->h = NULL;
    /* The shared state may go right away: no callback touches it after stop. */
    vg_proxy_origin_state_destroy(e->st);
    e->st = NULL;
    /* teardown drains the loop and checks that every handle got closed */
}

static bool second_down_first_answered(struct env *e)
{
    return !vg_proxy_origin_state_active_up(e->st, 1) && e->srv.answered[SRV_OK] >= 2;
}

static void test_servers_are_independent(void **state)
{
    struct env *e = *state;
    int ports[2] = {e->srv.port, closed_port(&e->loop)};
    env_origin(e, 2, "127.0.0.1", ports);
    e->o.health.fall = 1;
    env_start(e);
    assert_true(run_until(e, second_down_first_answered, 3000));
    assert_true(vg_proxy_origin_state_active_up(e->st, 0));
}

static void test_host_name_is_resolved(void **state)
{
    struct env *e = *state;
    int port = e->srv.port;
    env_origin(e, 1, "localhost", &port);
    e->o.health.rise = e->o.health.fall = 1;
    e->srv.mode = SRV_503;
    env_start(e);
    assert_true(run_until(e, is_down, 3000));
    e->srv.mode = SRV_OK;
    assert_true(run_until(e, is_up, 3000));
    char want[64];
    snprintf(want, sizeof(want), "Host: localhost:%d\r\n", port);
    assert_non_null(strstr(e->srv.last_req, want));
}

int main(void)
{
    vg_log_set_level(VG_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_disabled_returns_null, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_format_and_stays_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down_after_fall_up_after_rise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_marks_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_marks_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_line_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_status_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_status_line_is_reassembled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_outside_expected_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_probe_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_servers_are_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_name_is_resolved, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
