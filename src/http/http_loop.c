/* One turn of h2o's event loop, serving the sockets of one poll in the
 * order epoll reports them.
 *
 * h2o 2.2.5's evloop links each socket epoll reports onto its pending list
 * by prepending, so a batch is served in reverse. The list is LIFO on
 * purpose (a write's completion runs right after the write, which keeps
 * buffers few; h2o issue #656), and that part is kept. The cost shows in
 * a saturated closed loop: the connections a poll reports first are
 * answered last, and a connection answered at the end of a turn sends its
 * next request too late for the next poll and waits a whole extra turn;
 * served in reverse, that keeps happening to some connection every turn.
 * A per-request client trace (50 connections, one worker) showed 2.2-3.8%
 * of requests at twice the median, spread evenly over time, against
 * 0.01-0.05% for nginx (which serves in order); with the batch reversed
 * back, 0.1-0.8%. See docs/decisions.md "Serving order" (with what is left:
 * level-triggered registration).
 *
 * Only h2o's poll is reversed: libuv, whose loop runs inside the same
 * workers, also calls epoll_wait. vg_http_loop_run arms a per-thread flag
 * just before h2o_evloop_run, whose first call that waits is its
 * epoll_wait; the wrapper disarms it on that call, so libuv's polls made
 * from callbacks later in the turn pass through untouched. The definition
 * here interposes the C library's for the process (the executable comes
 * first in symbol lookup); the real call is epoll_pwait with no signal
 * mask, which epoll(7) documents as the same call. */
#include "http_int.h"

#include <stdbool.h>
#include <sys/epoll.h>

static _Thread_local bool reverse_next_poll;

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    int n = epoll_pwait(epfd, events, maxevents, timeout, NULL);
    if (!reverse_next_poll)
        return n;
    reverse_next_poll = false;
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
