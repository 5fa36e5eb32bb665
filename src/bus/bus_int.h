/* bus: what the two backends share. */
#ifndef VG_BUS_INT_H
#define VG_BUS_INT_H

#include "bus.h"

#include <pthread.h>

struct vg_bus_ops {
    int (*publish)(struct vg_bus *b, const char *subject, const char *reply, const char *traceparent, const void *data,
                   size_t len);
    int (*subscribe)(struct vg_bus *b, struct vg_bus_sub *s, const char *pattern, const char *queue);
    void (*unsubscribe)(struct vg_bus_sub *s); /* after vg__bus_sub_close: no more callbacks are running */
    int (*request)(struct vg_bus *b, const char *subject, const void *data, size_t len, uint32_t timeout_ms,
                   void **reply, size_t *reply_len);
    void (*destroy)(struct vg_bus *b);
    /* A subject prefix unique to this bus for reply inboxes. */
    void (*inbox)(struct vg_bus *b, char *buf, size_t cap);
    /* Whether anyone listens on subject; NULL when the backend cannot tell
     * (NATS answers "no responders" itself). */
    bool (*listened)(struct vg_bus *b, const char *subject);
};

struct vg__bus_rq; /* an asynchronous request waiting for its answer */

struct vg_bus {
    const struct vg_bus_ops *ops;
    /* relaxed atomics */
    bool connected;
    uint64_t published, publish_failed, delivered, dropped, reconnects, disconnects;
    /* asynchronous requests (bus.c): under rq_mu */
    pthread_mutex_t rq_mu;
    pthread_cond_t rq_cv;
    struct vg_bus_sub *rq_sub; /* "<inbox>.*", made on the first request */
    char rq_prefix[96];
    uint64_t rq_seq;
    struct vg__bus_rq *rq_list; /* waiting; few at a time, a list is enough */
    uint64_t rq_running;        /* the token whose callback runs now, 0: none */
    pthread_t rq_thread;        /* ... and on which thread */
};

/* A subscription: the backend's handle in impl. Callbacks go through
 * vg__bus_sub_deliver, which lets vg__bus_sub_close wait for a callback
 * in progress (unless the close comes from inside it). */
struct vg_bus_sub {
    struct vg_bus *bus;
    vg_bus_msg_fn fn;
    void *arg;
    void *impl;
    char *pattern, *queue;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closed;
    bool in_cb;
    pthread_t cb_thread;
    uint64_t dropped_seen; /* NATS: the subscription's drops already counted */
};

void vg__bus_init(struct vg_bus *b, const struct vg_bus_ops *ops);
/* What vg__bus_init set up; backends that fail after init call it. */
void vg__bus_fini(struct vg_bus *b);
/* Runs the subscription's callback unless it is closed; counts it. */
void vg__bus_sub_deliver(struct vg_bus_sub *s, const struct vg_bus_msg *m);
/* Marks s closed and waits for a callback in progress on another thread. */
void vg__bus_sub_close(struct vg_bus_sub *s);

static inline void vg__bus_count(uint64_t *c, uint64_t n)
{
    __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

#endif
