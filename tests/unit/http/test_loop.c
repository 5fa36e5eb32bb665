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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_poll_is_served_in_readiness_order),
        cmocka_unit_test(test_other_polls_are_untouched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
