/* bus: subject syntax and matching; both backends through the same
 * interface — the NATS one against a real nats-server this test starts on
 * a free port (and kills and restarts, for the outage cases). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus.h"

/* ---- subjects ---- */

static void test_subject_valid(void **state)
{
    static const char *ok[] = {"a", "app.web.purge", "_INBOX.1", "a-b.c_d"};
    static const char *bad[] = {"", ".a", "a.", "a..b", "a b", "a\tb", "a.*", "a.>", "a*b.c", "\x7f"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(vg_bus_subject_valid(ok[i], false));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(vg_bus_subject_valid(bad[i], false));
    assert_true(vg_bus_subject_valid("a.*", true));
    assert_true(vg_bus_subject_valid("a.>", true));
    assert_true(vg_bus_subject_valid("*.b.>", true));
    assert_false(vg_bus_subject_valid("a.>.b", true));
    assert_false(vg_bus_subject_valid("a.b*", true));
    char big[VG_BUS_SUBJECT_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_false(vg_bus_subject_valid(big, false));
    big[VG_BUS_SUBJECT_MAX] = '\0';
    assert_true(vg_bus_subject_valid(big, false));
}

static void test_subject_match(void **state)
{
    assert_true(vg_bus_subject_match("a.b", "a.b"));
    assert_false(vg_bus_subject_match("a.b", "a.bc"));
    assert_false(vg_bus_subject_match("a.b", "a.b.c"));
    assert_true(vg_bus_subject_match("a.*", "a.b"));
    assert_false(vg_bus_subject_match("a.*", "a.b.c"));
    assert_false(vg_bus_subject_match("a.*", "a"));
    assert_true(vg_bus_subject_match("a.>", "a.b.c"));
    assert_false(vg_bus_subject_match("a.>", "a"));
    assert_true(vg_bus_subject_match("*.b.>", "x.b.c.d"));
    assert_true(vg_bus_subject_match(">", "x"));
}

/* ---- a collector of messages ---- */

struct box {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    char last[256];
    char last_subject[256];
    struct vg_bus *echo; /* answer requests on this bus */
};

static void box_init(struct box *b)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
}

static void on_msg(void *arg, const struct vg_bus_msg *m)
{
    struct box *b = arg;
    if (b->echo && m->reply)
        assert_int_equal(vg_bus_publish(b->echo, m->reply, m->data, m->len), 0);
    pthread_mutex_lock(&b->mu);
    b->n++;
    snprintf(b->last, sizeof(b->last), "%.*s", (int)m->len, (const char *)m->data);
    snprintf(b->last_subject, sizeof(b->last_subject), "%s", m->subject);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Waits until the box holds n messages (or 5 s). */
static int box_wait(struct box *b, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    pthread_mutex_lock(&b->mu);
    while (b->n < n && pthread_cond_timedwait(&b->cv, &b->mu, &ts) == 0)
        ;
    int got = b->n;
    pthread_mutex_unlock(&b->mu);
    return got;
}

/* ---- the same behaviour from both backends ---- */

static void pubsub_and_wildcards(struct vg_bus *bus)
{
    struct box a, w;
    box_init(&a);
    box_init(&w);
    struct vg_bus_sub *sa, *sw;
    assert_int_equal(vg_bus_subscribe(bus, "app.web.x", NULL, on_msg, &a, &sa), 0);
    assert_int_equal(vg_bus_subscribe(bus, "app.*.>", NULL, on_msg, &w, &sw), 0);
    assert_int_equal(vg_bus_subscribe(bus, "bad..subject", NULL, on_msg, &w, &sw), VG_EINVAL);
    usleep(50000); /* NATS: the subscriptions reach the server */
    assert_int_equal(vg_bus_publish(bus, "app.web.x", "one", 3), 0);
    assert_int_equal(vg_bus_publish(bus, "app.api.y.z", "two", 3), 0);
    assert_int_equal(vg_bus_publish(bus, "app.*", "x", 1), VG_EINVAL);
    assert_int_equal(box_wait(&a, 1), 1);
    assert_string_equal(a.last, "one");
    assert_int_equal(box_wait(&w, 2), 2);
    assert_string_equal(w.last_subject, "app.api.y.z");
    vg_bus_unsubscribe(sa);
    assert_int_equal(vg_bus_publish(bus, "app.web.x", "three", 5), 0);
    assert_int_equal(box_wait(&w, 3), 3);
    usleep(100000);
    assert_int_equal(a.n, 1); /* nothing after unsubscribe */
    vg_bus_unsubscribe(sw);
}

static void queue_groups(struct vg_bus *bus)
{
    struct box q1, q2;
    box_init(&q1);
    box_init(&q2);
    struct vg_bus_sub *s1, *s2;
    assert_int_equal(vg_bus_subscribe(bus, "work", "workers", on_msg, &q1, &s1), 0);
    assert_int_equal(vg_bus_subscribe(bus, "work", "workers", on_msg, &q2, &s2), 0);
    usleep(50000);
    for (int i = 0; i < 20; i++)
        assert_int_equal(vg_bus_publish(bus, "work", "j", 1), 0);
    for (int i = 0; i < 100 && q1.n + q2.n < 20; i++)
        usleep(20000);
    usleep(50000);
    assert_int_equal(q1.n + q2.n, 20); /* each job to one member */
    vg_bus_unsubscribe(s1);
    vg_bus_unsubscribe(s2);
}

static void request_reply(struct vg_bus *bus)
{
    struct box echo;
    box_init(&echo);
    echo.echo = bus;
    struct vg_bus_sub *s;
    assert_int_equal(vg_bus_subscribe(bus, "svc.echo", NULL, on_msg, &echo, &s), 0);
    usleep(50000);
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(vg_bus_request(bus, "svc.echo", "ping", 4, 2000, &reply, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(reply, "ping", 4);
    free(reply);
    assert_int_equal(vg_bus_request(bus, "svc.nobody", "x", 1, 500, &reply, &len), VG_ENOENT);
    vg_bus_unsubscribe(s);
}

static void limits_and_stats(struct vg_bus *bus)
{
    char *big = calloc(1, VG_BUS_PAYLOAD_MAX + 1);
    struct vg_bus_stats before, after;
    vg_bus_stats(bus, &before);
    assert_int_equal(vg_bus_publish(bus, "a.b", big, VG_BUS_PAYLOAD_MAX + 1), VG_ELIMIT);
    vg_bus_stats(bus, &after);
    assert_int_equal(after.publish_failed, before.publish_failed + 1); /* counted, not silent */
    assert_true(after.connected);
    free(big);
}

/* ---- asynchronous requests ---- */

struct answer {
    pthread_mutex_t mu;
    int calls, rc;
    char data[64];
    int slow_ms; /* the callback takes this long */
    bool finished;
};

static void on_answer(void *arg, int rc, const void *data, size_t len)
{
    struct answer *a = arg;
    pthread_mutex_lock(&a->mu);
    a->calls++;
    a->rc = rc;
    snprintf(a->data, sizeof(a->data), "%.*s", (int)len, (const char *)data);
    pthread_mutex_unlock(&a->mu);
    if (a->slow_ms)
        usleep((useconds_t)a->slow_ms * 1000);
    __atomic_store_n(&a->finished, true, __ATOMIC_SEQ_CST);
}

static int answer_wait(struct answer *a, int ms)
{
    for (int i = 0; i < ms / 10 && !__atomic_load_n(&a->finished, __ATOMIC_SEQ_CST); i++)
        usleep(10000);
    pthread_mutex_lock(&a->mu);
    int n = a->calls;
    pthread_mutex_unlock(&a->mu);
    return n;
}

static void async_request(struct vg_bus *bus, bool nats)
{
    struct box echo, silent;
    box_init(&echo);
    box_init(&silent);
    echo.echo = bus;
    struct vg_bus_sub *se, *ss;
    assert_int_equal(vg_bus_subscribe(bus, "svc.aecho", NULL, on_msg, &echo, &se), 0);
    assert_int_equal(vg_bus_subscribe(bus, "svc.silent", NULL, on_msg, &silent, &ss), 0);
    usleep(50000);
    /* an answer */
    struct answer a = {.rc = -1};
    pthread_mutex_init(&a.mu, NULL);
    uint64_t t1 = 0, t2 = 0;
    assert_int_equal(vg_bus_request_start(bus, "svc.aecho", "hi", 2, on_answer, &a, &t1), 0);
    assert_int_equal(answer_wait(&a, 3000), 1);
    assert_int_equal(a.rc, 0);
    assert_string_equal(a.data, "hi");
    assert_false(vg_bus_request_cancel(bus, t1)); /* it ran already */
    /* nobody listens: at once in-process, from the server with NATS */
    struct answer nr = {.rc = -1};
    pthread_mutex_init(&nr.mu, NULL);
    int rc = vg_bus_request_start(bus, "svc.nobody", "x", 1, on_answer, &nr, &t2);
    if (nats) {
        assert_int_equal(rc, 0);
        assert_int_equal(answer_wait(&nr, 3000), 1);
        assert_int_equal(nr.rc, VG_ENOENT);
    } else {
        assert_int_equal(rc, VG_ENOENT);
        assert_int_equal(answer_wait(&nr, 100), 0);
    }
    /* no answer: the caller times out and cancels; nothing runs after */
    struct answer to = {.rc = -1};
    pthread_mutex_init(&to.mu, NULL);
    assert_int_equal(vg_bus_request_start(bus, "svc.silent", "x", 1, on_answer, &to, &t1), 0);
    assert_int_equal(box_wait(&silent, 1), 1);
    assert_true(vg_bus_request_cancel(bus, t1));
    assert_false(vg_bus_request_cancel(bus, t1));
    assert_int_equal(vg_bus_publish(bus, "svc.unrelated", "x", 1), 0);
    assert_int_equal(answer_wait(&to, 200), 0);
    /* a cancel while the callback runs waits for it to return */
    struct answer sl = {.rc = -1, .slow_ms = 300};
    pthread_mutex_init(&sl.mu, NULL);
    assert_int_equal(vg_bus_request_start(bus, "svc.aecho", "slow", 4, on_answer, &sl, &t1), 0);
    for (int i = 0; i < 300; i++) { /* until the callback has started */
        pthread_mutex_lock(&sl.mu);
        int c = sl.calls;
        pthread_mutex_unlock(&sl.mu);
        if (c)
            break;
        usleep(1000);
    }
    assert_false(vg_bus_request_cancel(bus, t1));
    assert_true(__atomic_load_n(&sl.finished, __ATOMIC_SEQ_CST));
    /* tokens are distinct and bad subjects refused */
    assert_int_equal(vg_bus_request_start(bus, "svc.*", "x", 1, on_answer, &to, &t2), VG_EINVAL);
    vg_bus_unsubscribe(se);
    vg_bus_unsubscribe(ss);
}

static void behaviour(struct vg_bus *bus)
{
    pubsub_and_wildcards(bus);
    queue_groups(bus);
    request_reply(bus);
    limits_and_stats(bus);
}

static void test_inproc_async_request(void **state)
{
    struct vg_bus *bus;
    assert_int_equal(vg_bus_inproc_create(&bus), 0);
    async_request(bus, false);
    /* a request still waiting when the bus goes: its callback never runs */
    struct box silent;
    box_init(&silent);
    struct vg_bus_sub *ss;
    assert_int_equal(vg_bus_subscribe(bus, "svc.silent", NULL, on_msg, &silent, &ss), 0);
    struct answer a = {.rc = -1};
    pthread_mutex_init(&a.mu, NULL);
    uint64_t t;
    assert_int_equal(vg_bus_request_start(bus, "svc.silent", "x", 1, on_answer, &a, &t), 0);
    assert_int_equal(box_wait(&silent, 1), 1);
    vg_bus_unsubscribe(ss);
    vg_bus_destroy(bus);
    assert_int_equal(a.calls, 0);
}

static void test_inproc(void **state)
{
    struct vg_bus *bus;
    assert_int_equal(vg_bus_inproc_create(&bus), 0);
    behaviour(bus);
    struct vg_bus_stats st;
    vg_bus_stats(bus, &st);
    assert_true(st.delivered >= 25);
    vg_bus_destroy(bus);
}

/* ---- a real nats-server ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static pid_t nats_start(int port)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", p, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* until it accepts */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {
            .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (ok)
            return pid;
        usleep(50000);
    }
    fail_msg("nats-server did not start (is it installed? scripts/deps.sh)");
    return -1;
}

static void nats_stop(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static struct vg_bus *nats_bus(int port)
{
    char url[64], err[256];
    snprintf(url, sizeof(url), "nats://127.0.0.1:%d", port);
    const char *urls[] = {url};
    struct vg_bus_options o = {.urls = urls, .n_urls = 1, .name = "test", .reconnect_wait_ms = 100};
    struct vg_bus *bus = NULL;
    assert_int_equal(vg_bus_nats_create(&o, &bus, err, sizeof(err)), 0);
    return bus;
}

static void test_nats(void **state)
{
    int port = free_port();
    pid_t srv = nats_start(port);
    struct vg_bus *bus = nats_bus(port);
    behaviour(bus);
    async_request(bus, true);
    vg_bus_destroy(bus);
    nats_stop(srv);
}

static void test_nats_unreachable_fails_with_reason(void **state)
{
    char url[64], err[256] = "";
    snprintf(url, sizeof(url), "nats://127.0.0.1:%d", free_port());
    const char *urls[] = {url};
    struct vg_bus_options o = {.urls = urls, .n_urls = 1, .connect_timeout_ms = 500};
    struct vg_bus *bus = NULL;
    assert_int_equal(vg_bus_nats_create(&o, &bus, err, sizeof(err)), VG_ENET);
    assert_non_null(strstr(err, url));
}

/* The server goes away and comes back: publishes made meanwhile are
 * buffered and sent after the reconnect (libnats resubscribes first, so a
 * subscription of the same connection gets them), and the outage is
 * counted. Across connections core NATS is at most once: a subscriber
 * that comes back later misses them (durable delivery is JetStream's). */
static void test_nats_outage_buffers_and_reconnects(void **state)
{
    int port = free_port();
    pid_t srv = nats_start(port);
    struct vg_bus *pub = nats_bus(port), *sub = pub;
    struct box b;
    box_init(&b);
    struct vg_bus_sub *s;
    assert_int_equal(vg_bus_subscribe(sub, "o.x", NULL, on_msg, &b, &s), 0);
    usleep(50000);
    assert_int_equal(vg_bus_publish(pub, "o.x", "before", 6), 0);
    assert_int_equal(box_wait(&b, 1), 1);
    nats_stop(srv);
    usleep(300000);
    struct vg_bus_stats st;
    vg_bus_stats(pub, &st);
    assert_false(st.connected);
    assert_true(st.disconnects >= 1);
    assert_int_equal(vg_bus_publish(pub, "o.x", "during", 6), 0); /* buffered */
    srv = nats_start(port);
    for (int i = 0; i < 100; i++) { /* both reconnect (the subscriber resubscribes) */
        struct vg_bus_stats a, c;
        vg_bus_stats(pub, &a);
        vg_bus_stats(sub, &c);
        if (a.connected && c.connected)
            break;
        usleep(50000);
    }
    assert_int_equal(box_wait(&b, 2), 2);
    assert_string_equal(b.last, "during");
    vg_bus_stats(pub, &st);
    assert_true(st.reconnects >= 1);
    vg_bus_unsubscribe(s);
    vg_bus_destroy(pub);
    nats_stop(srv);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subject_valid),
        cmocka_unit_test(test_subject_match),
        cmocka_unit_test(test_inproc),
        cmocka_unit_test(test_inproc_async_request),
        cmocka_unit_test(test_nats),
        cmocka_unit_test(test_nats_unreachable_fails_with_reason),
        cmocka_unit_test(test_nats_outage_buffers_and_reconnects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
