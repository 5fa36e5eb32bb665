/* The event loop's serving order: one poll's sockets are served in the
 * order epoll reported them (h2o alone serves them in reverse), and only
 * h2o's poll is touched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/http.h"

#define N 5

static int served[N], n_served;

static void on_read(h2o_socket_t *sock, const char *err)
{
    assert_null(err);
    served[n_served++] = (int)(intptr_t)sock->data;
    h2o_buffer_consume(&sock->input, sock->input->size);
}

static void test_a_poll_is_served_in_readiness_order(void **state)
{
    h2o_evloop_t *loop = h2o_evloop_create();
    h2o_socket_t *socks[N];
    int peers[N];
    for (int i = 0; i < N; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        socks[i] = h2o_evloop_socket_create(loop, sv[0], H2O_SOCKET_FLAG_DONT_READ);
        socks[i]->data = (void *)(intptr_t)i;
        h2o_socket_read_start(socks[i], on_read);
        peers[i] = sv[1];
    }
    assert_int_equal(vg_http_loop_run(loop, 0), 0); /* registers them, none ready */
    assert_int_equal(n_served, 0);
    /* ready in an order neither the creation order nor its reverse */
    const int order[N] = {2, 0, 4, 1, 3};
    for (int i = 0; i < N; i++)
        assert_int_equal(write(peers[order[i]], "x", 1), 1);
    assert_int_equal(vg_http_loop_run(loop, 1000), 0);
    assert_int_equal(n_served, N);
    assert_memory_equal(served, order, sizeof(order));
    for (int i = 0; i < N; i++) {
        h2o_socket_close(socks[i]);
        close(peers[i]);
    }
    vg_http_loop_run(loop, 0); /* lets the closes finish */
    vg_http_loop_done();
    h2o_evloop_destroy(loop);
}

/* Any other poll, such as libuv's, gets the kernel's order untouched. */
static void test_other_polls_are_untouched(void **state)
{
    int ep = epoll_create1(0), fds[N][2];
    assert_true(ep >= 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fds[i][0], &ev), 0);
    }
    const int order[N] = {3, 1, 4, 0, 2};
    for (int i = 0; i < N; i++)
        assert_int_equal(write(fds[order[i]][1], "x", 1), 1);
    struct epoll_event got[N];
    assert_int_equal(epoll_wait(ep, got, N, 1000), N);
    for (int i = 0; i < N; i++)
        assert_int_equal(got[i].data.u32, order[i]);
    for (int i = 0; i < N; i++) {
        close(fds[i][0]);
        close(fds[i][1]);
    }
    close(ep);
}

/* ---- connections are edge-triggered: what verge guards ---------------------- */

static h2o_socket_t *pair_sock(h2o_evloop_t *loop, int *peer, int id)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    h2o_socket_t *s = h2o_evloop_socket_create(loop, sv[0], 0);
    s->data = (void *)(intptr_t)id;
    *peer = sv[1];
    return s;
}

static h2o_socket_t *other;
static int reads[2], closes[2];

static void on_read_count(h2o_socket_t *sock, const char *err)
{
    int id = (int)(intptr_t)sock->data;
    if (err) {
        closes[id]++;
        h2o_socket_read_stop(sock);
        return;
    }
    reads[id]++;
    h2o_buffer_consume(&sock->input, sock->input->size);
}

/* Socket 0's callback pauses and resumes socket 1, whose readiness came in
 * the same poll and was not yet served: its bytes must still be read. */
static void on_read_pausing_other(h2o_socket_t *sock, const char *err)
{
    on_read_count(sock, err);
    h2o_socket_read_stop(other);
    vg_http_read_resume(other, on_read_count);
}

static void turns(h2o_evloop_t *loop, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(vg_http_loop_run(loop, 50), 0);
}

static void test_a_pause_and_resume_in_one_turn_loses_nothing(void **state)
{
    h2o_evloop_t *loop = h2o_evloop_create();
    turns(loop, 1); /* the loop's first turn: connections made after it are edge-triggered */
    int p0, p1;
    h2o_socket_t *s0 = pair_sock(loop, &p0, 0);
    other = pair_sock(loop, &p1, 1);
    h2o_socket_read_start(s0, on_read_pausing_other);
    h2o_socket_read_start(other, on_read_count);
    turns(loop, 1); /* registers them */
    memset(reads, 0, sizeof(reads));
    assert_int_equal(write(p0, "a", 1), 1); /* served first: pauses and resumes 1 */
    assert_int_equal(write(p1, "b", 1), 1);
    turns(loop, 3);
    assert_int_equal(reads[0], 1);
    assert_int_equal(reads[1], 1);
    h2o_socket_close(s0);
    h2o_socket_close(other);
    close(p0);
    close(p1);
    turns(loop, 1);
    vg_http_loop_done();
    h2o_evloop_destroy(loop);
}

/* The end of stream arriving with the last bytes: h2o's read stops without
 * an error then, and the close must still be seen. */
static void test_an_end_of_stream_with_the_last_bytes_is_seen(void **state)
{
    h2o_evloop_t *loop = h2o_evloop_create();
    turns(loop, 1);
    int p;
    h2o_socket_t *s = pair_sock(loop, &p, 0);
    h2o_socket_read_start(s, on_read_count);
    turns(loop, 1);
    memset(reads, 0, sizeof(reads));
    memset(closes, 0, sizeof(closes));
    assert_int_equal(write(p, "last", 4), 4);
    close(p);
    turns(loop, 3);
    assert_int_equal(reads[0], 1);
    assert_int_equal(closes[0], 1);
    h2o_socket_close(s);
    turns(loop, 1);
    vg_http_loop_done();
    h2o_evloop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_poll_is_served_in_readiness_order),
        cmocka_unit_test(test_other_polls_are_untouched),
        cmocka_unit_test(test_a_pause_and_resume_in_one_turn_loses_nothing),
        cmocka_unit_test(test_an_end_of_stream_with_the_last_bytes_is_seen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
