/* One turn of h2o's event loop, as nginx serves its own: connections
 * registered edge-triggered, one poll's sockets served in the order epoll
 * reports them.
 *
 * Order. h2o 2.2.5's evloop links each socket epoll reports onto its
 * pending list by prepending, so a batch is served in reverse. The list is
 * LIFO on purpose (a write's completion runs right after the write, which
 * keeps buffers few; h2o issue #656), and that part is kept: the batch is
 * reversed before h2o sees it. Served in reverse, the connections a poll
 * reports first are answered last, and under a saturated closed loop a
 * few percent of requests waited one more turn of the loop (2.2-3.8% of
 * requests at twice the median, against nginx's 0.01-0.05%).
 *
 * Edge triggering. h2o registers every socket level-triggered; verge
 * registers connections (connected stream sockets) edge-triggered, as
 * nginx does, which is what brought the p99 under nginx's. h2o assumes
 * level triggering in three places, which this file and its callers
 * guard:
 *  - h2o_socket_read_stop forgets a readiness epoll already reported, and
 *    a read_start in the same turn changes no registration: verge resumes
 *    reading with vg_http_read_resume, which registers the socket again;
 *  - h2o's read loop stops without an error when a read returns 0 after
 *    data: a connection whose peer closed (EPOLLRDHUP, HUP, ERR) goes back
 *    to level triggering, so the end of stream is read next turn;
 *  - h2o_socket_notify_write on a socket that is still writable waits for
 *    an edge that will not come: http1.c's sendfile goes on with a zero
 *    timer when its turn's share is used, and asks for writability only
 *    after EAGAIN.
 * Listeners, libuv's epoll fd and sockets registered before the loop's
 * first turn stay level-triggered.
 *
 * How. vg_http_loop_run arms a per-thread flag before h2o_evloop_run, whose
 * first call that waits is its epoll_wait: that call (verge's epoll_wait,
 * which interposes the C library's for the process: the executable comes
 * first in symbol lookup) learns h2o's epoll fd and reverses the batch;
 * libuv's polls later in the turn pass through. verge's epoll_ctl adds
 * EPOLLET and EPOLLRDHUP to h2o's registrations of connections, and
 * remembers what h2o asked for. The real calls are epoll_pwait with no
 * signal mask (epoll(7): the same call) and the epoll_ctl system call.
 * docs/decisions.md "Serving order" has the measurements. */
#include "http_int.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

enum fd_mode { MODE_UNKNOWN, MODE_LEVEL, MODE_EDGE };

struct fd_state {
    uint32_t events; /* what h2o registered, before EPOLLET */
    uint8_t mode;
};

/* One loop thread's view of h2o's epoll registrations (created by its
 * first turn, freed by vg_http_loop_done). */
struct loop_state {
    int ep; /* h2o's epoll fd */
    struct fd_state *fds;
    size_t n_fds;
};

static _Thread_local bool reverse_next_poll;
static _Thread_local struct loop_state *lst;

static int raw_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
    return (int)syscall(SYS_epoll_ctl, ep, op, fd, ev);
}

static struct fd_state *fd_at(struct loop_state *s, int fd)
{
    if ((size_t)fd >= s->n_fds) {
        size_t n = s->n_fds ? s->n_fds : 256;
        while (n <= (size_t)fd)
            n *= 2;
        s->fds = vg_xrealloc(s->fds, n * sizeof(*s->fds));
        memset(s->fds + s->n_fds, 0, (n - s->n_fds) * sizeof(*s->fds));
        s->n_fds = n;
    }
    return &s->fds[fd];
}

/* A connection (a connected TCP or Unix stream socket) is registered
 * edge-triggered; listeners, libuv's epoll fd and anything else stay
 * level-triggered. */
static uint8_t classify(int fd)
{
    int type = 0, listening = 1;
    socklen_t l1 = sizeof(type), l2 = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) != 0 || type != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l2) != 0 || listening)
        return MODE_LEVEL;
    return MODE_EDGE;
}

static uint32_t registered(const struct fd_state *f)
{
    if (f->mode == MODE_EDGE && (f->events & (EPOLLIN | EPOLLOUT)))
        return f->events | EPOLLET | EPOLLRDHUP;
    return f->events;
}

int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
    struct loop_state *s = lst;
    if (!s || ep != s->ep || fd < 0) /* not h2o's poll: libuv's, another thread's */
        return raw_ctl(ep, op, fd, ev);
    if (op == EPOLL_CTL_DEL || !ev) {
        if ((size_t)fd < s->n_fds)
            s->fds[fd] = (struct fd_state){0};
        return raw_ctl(ep, op, fd, ev);
    }
    struct fd_state *f = fd_at(s, fd);
    if (op == EPOLL_CTL_ADD || f->mode == MODE_UNKNOWN)
        f->mode = classify(fd);
    f->events = ev->events;
    struct epoll_event e = *ev;
    e.events = registered(f);
    return raw_ctl(ep, op, fd, &e);
}

/* A connection whose peer has closed goes back to level triggering: h2o's
 * read loop stops without an error when the end of stream comes with the
 * last bytes, and only a later readiness makes it read the end. */
static void on_peer_closed(struct loop_state *s, const struct epoll_event *ev)
{
    int fd = h2o_socket_get_fd(ev->data.ptr);
    if (fd < 0 || (size_t)fd >= s->n_fds || s->fds[fd].mode != MODE_EDGE)
        return;
    s->fds[fd].mode = MODE_LEVEL;
    struct epoll_event e = {.events = s->fds[fd].events, .data = ev->data};
    raw_ctl(s->ep, EPOLL_CTL_MOD, fd, &e);
}

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    int n = epoll_pwait(epfd, events, maxevents, timeout, NULL);
    if (!reverse_next_poll)
        return n;
    reverse_next_poll = false;
    if (!lst) {
        lst = vg_xcalloc(1, sizeof(*lst));
        lst->ep = -1;
    }
    if (lst->ep != epfd) { /* this thread's first loop, or a new one */
        if (lst->n_fds)
            memset(lst->fds, 0, lst->n_fds * sizeof(*lst->fds));
        lst->ep = epfd;
    }
    for (int i = 0; i < n; i++)
        if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            on_peer_closed(lst, &events[i]);
    for (int i = 0, j = n - 1; i < j; i++, j--) {
        struct epoll_event t = events[i];
        events[i] = events[j];
        events[j] = t;
    }
    return n;
}

int vg_http_loop_run(h2o_evloop_t *loop, int32_t max_wait)
{
    reverse_next_poll = true;
    int r = h2o_evloop_run(loop, max_wait);
    reverse_next_poll = false; /* a turn that failed before it polled */
    return r;
}

void vg_http_loop_done(void)
{
    if (lst) {
        free(lst->fds);
        free(lst);
        lst = NULL;
    }
}

/* h2o's read_stop forgets a readiness epoll already reported, and a
 * read_start in the same turn changes no registration: under edge
 * triggering those bytes would wait for the next ones. Registering again
 * makes epoll look at the socket now. */
void vg_http_read_resume(h2o_socket_t *sock, h2o_socket_cb cb)
{
    bool was_reading = h2o_socket_is_reading(sock);
    h2o_socket_read_start(sock, cb);
    struct loop_state *s = lst;
    int fd = h2o_socket_get_fd(sock);
    if (was_reading || !s || fd < 0 || (size_t)fd >= s->n_fds)
        return;
    struct fd_state *f = &s->fds[fd];
    if (f->mode != MODE_EDGE || !(f->events & EPOLLIN))
        return;
    struct epoll_event e = {.events = registered(f), .data.ptr = sock};
    raw_ctl(s->ep, EPOLL_CTL_MOD, fd, &e);
}
