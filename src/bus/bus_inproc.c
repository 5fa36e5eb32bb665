/* The in-process bus: one node, nothing to run. Publishes go to a bounded
 * queue; a dispatcher thread delivers them, so a callback never runs on
 * the publisher's thread (the NATS backend behaves the same way). */
#include "bus_int.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define QUEUE_MAX_BYTES (64u << 20)

struct qmsg {
    struct qmsg *next;
    char *subject, *reply, *traceparent;
    size_t len;
    char data[];
};

struct inproc {
    struct vg_bus super;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool stop;
    struct qmsg *head, **tail;
    size_t queued_bytes;
    struct vg_bus_sub **subs; /* under mu */
    size_t n_subs;
    uint64_t rr; /* queue-group rotation */
    uint64_t inbox_seq;
};

static struct inproc *of(struct vg_bus *b)
{
    return (struct inproc *)b;
}

static int ip_publish(struct vg_bus *b, const char *subject, const char *reply, const char *traceparent,
                      const void *data, size_t len)
{
    struct inproc *ip = of(b);
    struct qmsg *m = vg_xmalloc(sizeof(*m) + len + 1);
    m->next = NULL;
    m->subject = vg_xstrdup(subject);
    m->reply = reply ? vg_xstrdup(reply) : NULL;
    m->traceparent = traceparent ? vg_xstrdup(traceparent) : NULL;
    m->len = len;
    if (len)
        memcpy(m->data, data, len);
    m->data[len] = '\0';
    pthread_mutex_lock(&ip->mu);
    if (ip->queued_bytes + len > QUEUE_MAX_BYTES) {
        pthread_mutex_unlock(&ip->mu);
        free(m->subject);
        free(m->reply);
        free(m->traceparent);
        free(m);
        vg_log(VG_LOG_WARN, "bus: in-process queue full, publish refused", "subject", subject, NULL);
        return VG_ELIMIT;
    }
    ip->queued_bytes += len;
    *ip->tail = m;
    ip->tail = &m->next;
    pthread_cond_signal(&ip->cv);
    pthread_mutex_unlock(&ip->mu);
    return 0;
}

/* The subscriptions a message goes to: every plain match, and one member
 * per queue group (rotating). Called with mu held; refs into out. */
static size_t targets(struct inproc *ip, const char *subject, struct vg_bus_sub **out)
{
    size_t n = 0;
    for (size_t i = 0; i < ip->n_subs; i++) {
        struct vg_bus_sub *s = ip->subs[i];
        if (!vg_bus_subject_match(s->pattern, subject))
            continue;
        if (!s->queue) {
            out[n++] = s;
            continue;
        }
        bool seen = false; /* one member per group: the group's first match decides */
        for (size_t j = 0; j < i && !seen; j++)
            seen = ip->subs[j]->queue && strcmp(ip->subs[j]->queue, s->queue) == 0 &&
                   vg_bus_subject_match(ip->subs[j]->pattern, subject);
        if (seen)
            continue;
        struct vg_bus_sub *members[64];
        size_t k = 0;
        for (size_t j = i; j < ip->n_subs && k < 64; j++)
            if (ip->subs[j]->queue && strcmp(ip->subs[j]->queue, s->queue) == 0 &&
                vg_bus_subject_match(ip->subs[j]->pattern, subject))
                members[k++] = ip->subs[j];
        out[n++] = members[ip->rr++ % k];
    }
    return n;
}

static void *dispatch_main(void *arg)
{
    struct inproc *ip = arg;
    pthread_mutex_lock(&ip->mu);
    for (;;) {
        while (!ip->head && !ip->stop)
            pthread_cond_wait(&ip->cv, &ip->mu);
        if (!ip->head)
            break;
        struct qmsg *m = ip->head;
        ip->head = m->next;
        if (!ip->head)
            ip->tail = &ip->head;
        ip->queued_bytes -= m->len;
        struct vg_bus_sub **to = vg_xcalloc(ip->n_subs + 1, sizeof(*to));
        size_t n = targets(ip, m->subject, to);
        struct vg_bus_msg msg = {
            .subject = m->subject, .reply = m->reply, .data = m->data, .len = m->len, .traceparent = m->traceparent};
        for (size_t i = 0; i < n; i++) {
            /* still subscribed? (checked by address, never dereferenced
             * otherwise); claimed under mu, so an unsubscribe waits for us */
            struct vg_bus_sub *s = NULL;
            for (size_t j = 0; j < ip->n_subs && !s; j++)
                if (ip->subs[j] == to[i])
                    s = to[i];
            if (!s)
                continue;
            pthread_mutex_lock(&s->mu);
            bool run = !s->closed;
            s->in_cb = true;
            s->cb_thread = pthread_self();
            pthread_mutex_unlock(&s->mu);
            pthread_mutex_unlock(&ip->mu); /* callbacks may publish */
            if (run) {
                s->fn(s->arg, &msg);
                vg__bus_count(&ip->super.delivered, 1);
            }
            pthread_mutex_lock(&s->mu);
            s->in_cb = false;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            pthread_mutex_lock(&ip->mu);
        }
        free(to);
        free(m->subject);
        free(m->reply);
        free(m->traceparent);
        free(m);
    }
    pthread_mutex_unlock(&ip->mu);
    return NULL;
}

static int ip_subscribe(struct vg_bus *b, struct vg_bus_sub *s, const char *pattern, const char *queue)
{
    struct inproc *ip = of(b);
    pthread_mutex_lock(&ip->mu);
    ip->subs = vg_xrealloc(ip->subs, (ip->n_subs + 1) * sizeof(*ip->subs));
    ip->subs[ip->n_subs++] = s;
    pthread_mutex_unlock(&ip->mu);
    return 0;
}

static void ip_unsubscribe(struct vg_bus_sub *s)
{
    struct inproc *ip = of(s->bus);
    pthread_mutex_lock(&ip->mu);
    for (size_t i = 0; i < ip->n_subs; i++) {
        if (ip->subs[i] == s) {
            memmove(&ip->subs[i], &ip->subs[i + 1], (ip->n_subs - i - 1) * sizeof(*ip->subs));
            ip->n_subs--;
            break;
        }
    }
    pthread_mutex_unlock(&ip->mu);
    /* the dispatcher may have claimed s for a message just before: it
     * checks closed under s->mu and clears in_cb; wait for that */
    pthread_mutex_lock(&s->mu);
    while (s->in_cb && !pthread_equal(s->cb_thread, pthread_self()))
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

/* ---- request/reply ---- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    void *data;
    size_t len;
};

static void on_reply(void *arg, const struct vg_bus_msg *m)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    if (!w->done) {
        w->data = vg_xmalloc(m->len + 1);
        memcpy(w->data, m->data, m->len);
        ((char *)w->data)[m->len] = '\0';
        w->len = m->len;
        w->done = true;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
}

static bool has_listener(struct inproc *ip, const char *subject)
{
    pthread_mutex_lock(&ip->mu);
    bool any = false;
    for (size_t i = 0; i < ip->n_subs && !any; i++)
        any = vg_bus_subject_match(ip->subs[i]->pattern, subject);
    pthread_mutex_unlock(&ip->mu);
    return any;
}

static int ip_request(struct vg_bus *b, const char *subject, const void *data, size_t len, uint32_t timeout_ms,
                      void **reply, size_t *reply_len)
{
    struct inproc *ip = of(b);
    if (!has_listener(ip, subject))
        return VG_ENOENT;
    char inbox[64];
    snprintf(inbox, sizeof(inbox), "_INBOX.%llu",
             (unsigned long long)__atomic_add_fetch(&ip->inbox_seq, 1, __ATOMIC_RELAXED));
    struct waiter w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cv, &ca);
    pthread_condattr_destroy(&ca);
    struct vg_bus_sub *s = NULL;
    int rc = vg_bus_subscribe(b, inbox, NULL, on_reply, &w, &s);
    if (rc == 0)
        rc = vg_bus_publish_reply(b, subject, inbox, data, len);
    if (rc == 0) {
        struct timespec ts = vg_deadline(CLOCK_MONOTONIC, timeout_ms);
        pthread_mutex_lock(&w.mu);
        while (!w.done && pthread_cond_timedwait(&w.cv, &w.mu, &ts) != ETIMEDOUT)
            ;
        rc = w.done ? 0 : VG_ETIMEDOUT;
        pthread_mutex_unlock(&w.mu);
    }
    if (s)
        vg_bus_unsubscribe(s);
    if (rc == 0) {
        *reply = w.data;
        *reply_len = w.len;
    } else {
        free(w.data);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

static bool ip_listened(struct vg_bus *b, const char *subject)
{
    return has_listener(of(b), subject);
}

static void ip_inbox(struct vg_bus *b, char *buf, size_t cap)
{
    static uint64_t seq; /* several in-process buses in one process (tests) */
    snprintf(buf, cap, "_INBOX.ip%llu", (unsigned long long)__atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
}

static void ip_destroy(struct vg_bus *b)
{
    struct inproc *ip = of(b);
    pthread_mutex_lock(&ip->mu);
    ip->stop = true; /* what is queued is still delivered */
    pthread_cond_signal(&ip->cv);
    pthread_mutex_unlock(&ip->mu);
    pthread_join(ip->thread, NULL);
    free(ip->subs);
    pthread_mutex_destroy(&ip->mu);
    pthread_cond_destroy(&ip->cv);
    free(ip);
}

static const struct vg_bus_ops inproc_ops = {
    .publish = ip_publish,
    .subscribe = ip_subscribe,
    .unsubscribe = ip_unsubscribe,
    .request = ip_request,
    .destroy = ip_destroy,
    .inbox = ip_inbox,
    .listened = ip_listened,
};

int vg_bus_inproc_create(struct vg_bus **out)
{
    struct inproc *ip = vg_xcalloc(1, sizeof(*ip));
    vg__bus_init(&ip->super, &inproc_ops);
    ip->super.connected = true;
    pthread_mutex_init(&ip->mu, NULL);
    pthread_cond_init(&ip->cv, NULL);
    ip->tail = &ip->head;
    if (pthread_create(&ip->thread, NULL, dispatch_main, ip) != 0) {
        pthread_mutex_destroy(&ip->mu);
        pthread_cond_destroy(&ip->cv);
        vg__bus_fini(&ip->super);
        free(ip);
        return VG_ENOMEM;
    }
    *out = &ip->super;
    return 0;
}
