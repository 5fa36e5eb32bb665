/* bus: the interface's checks and counts; the backends do the moving. */
#include "bus_int.h"

#include <stdlib.h>
#include <string.h>

struct vg__bus_rq {
    struct vg__bus_rq *next;
    uint64_t token;
    vg_bus_reply_fn fn;
    void *arg;
};

void vg__bus_init(struct vg_bus *b, const struct vg_bus_ops *ops)
{
    memset(b, 0, sizeof(*b));
    b->ops = ops;
    pthread_mutex_init(&b->rq_mu, NULL);
    pthread_cond_init(&b->rq_cv, NULL);
}

void vg__bus_fini(struct vg_bus *b)
{
    pthread_mutex_destroy(&b->rq_mu);
    pthread_cond_destroy(&b->rq_cv);
}

void vg_bus_destroy(struct vg_bus *b)
{
    if (!b)
        return;
    vg_bus_unsubscribe(b->rq_sub); /* no answer arrives after this */
    while (b->rq_list) {           /* requests nobody cancelled: their callbacks never run */
        struct vg__bus_rq *r = b->rq_list;
        b->rq_list = r->next;
        free(r);
    }
    vg__bus_fini(b);
    b->ops->destroy(b);
}

int vg_bus_publish_reply(struct vg_bus *b, const char *subject, const char *reply, const void *data, size_t len)
{
    return vg_bus_publish_traced(b, subject, reply, NULL, data, len);
}

int vg_bus_publish_traced(struct vg_bus *b, const char *subject, const char *reply, const char *traceparent,
                          const void *data, size_t len)
{
    int rc = 0;
    if (!vg_bus_subject_valid(subject, false) || (reply && !vg_bus_subject_valid(reply, false)))
        rc = VG_EINVAL;
    else if (len > VG_BUS_PAYLOAD_MAX)
        rc = VG_ELIMIT;
    else
        rc = b->ops->publish(b, subject, reply, traceparent, data, len);
    vg__bus_count(rc ? &b->publish_failed : &b->published, 1);
    return rc;
}

int vg_bus_publish(struct vg_bus *b, const char *subject, const void *data, size_t len)
{
    return vg_bus_publish_reply(b, subject, NULL, data, len);
}

int vg_bus_subscribe(struct vg_bus *b, const char *pattern, const char *queue, vg_bus_msg_fn fn, void *arg,
                     struct vg_bus_sub **out)
{
    if (!vg_bus_subject_valid(pattern, true) || (queue && !vg_bus_subject_valid(queue, false)))
        return VG_EINVAL;
    struct vg_bus_sub *s = vg_xcalloc(1, sizeof(*s));
    s->bus = b;
    s->fn = fn;
    s->arg = arg;
    s->pattern = vg_xstrdup(pattern);
    s->queue = queue ? vg_xstrdup(queue) : NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = b->ops->subscribe(b, s, pattern, queue);
    if (rc) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s->pattern);
        free(s->queue);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void vg__bus_sub_deliver(struct vg_bus_sub *s, const struct vg_bus_msg *m)
{
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->in_cb = true;
    s->cb_thread = pthread_self();
    pthread_mutex_unlock(&s->mu);
    s->fn(s->arg, m);
    vg__bus_count(&s->bus->delivered, 1);
    pthread_mutex_lock(&s->mu);
    s->in_cb = false;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void vg__bus_sub_close(struct vg_bus_sub *s)
{
    pthread_mutex_lock(&s->mu);
    /* from inside its own callback the bus would free it under the caller */
    VG_ASSERT(!(s->in_cb && pthread_equal(s->cb_thread, pthread_self())));
    s->closed = true;
    while (s->in_cb && !pthread_equal(s->cb_thread, pthread_self()))
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void vg_bus_unsubscribe(struct vg_bus_sub *s)
{
    if (!s)
        return;
    vg__bus_sub_close(s);
    s->bus->ops->unsubscribe(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->pattern);
    free(s->queue);
    free(s);
}

int vg_bus_request(struct vg_bus *b, const char *subject, const void *data, size_t len, uint32_t timeout_ms,
                   void **reply, size_t *reply_len)
{
    if (!vg_bus_subject_valid(subject, false))
        return VG_EINVAL;
    if (len > VG_BUS_PAYLOAD_MAX)
        return VG_ELIMIT;
    return b->ops->request(b, subject, data, len, timeout_ms, reply, reply_len);
}

/* ---- asynchronous requests ---- */

/* An answer on the inbox: its token is the subject's last token. The
 * request leaves the list before its callback runs, so a cancel that
 * finds it gone waits for rq_running to change instead. */
static void on_inbox(void *arg, const struct vg_bus_msg *m)
{
    struct vg_bus *b = arg;
    const char *dot = strrchr(m->subject, '.');
    uint64_t token = dot ? strtoull(dot + 1, NULL, 10) : 0;
    pthread_mutex_lock(&b->rq_mu);
    struct vg__bus_rq **pp = &b->rq_list, *r = NULL;
    while (*pp && (*pp)->token != token)
        pp = &(*pp)->next;
    if (token && *pp) {
        r = *pp;
        *pp = r->next;
        b->rq_running = token;
        b->rq_thread = pthread_self();
    }
    pthread_mutex_unlock(&b->rq_mu);
    if (!r)
        return; /* cancelled, or a second answer to the same request */
    r->fn(r->arg, m->no_responders ? VG_ENOENT : 0, m->data, m->len);
    free(r);
    pthread_mutex_lock(&b->rq_mu);
    b->rq_running = 0;
    pthread_cond_broadcast(&b->rq_cv);
    pthread_mutex_unlock(&b->rq_mu);
}

/* Under rq_mu. */
static int inbox_open(struct vg_bus *b)
{
    if (b->rq_sub)
        return 0;
    char pattern[sizeof(b->rq_prefix) + 4];
    b->ops->inbox(b, b->rq_prefix, sizeof(b->rq_prefix));
    snprintf(pattern, sizeof(pattern), "%s.*", b->rq_prefix);
    return vg_bus_subscribe(b, pattern, NULL, on_inbox, b, &b->rq_sub);
}

int vg_bus_request_start(struct vg_bus *b, const char *subject, const void *data, size_t len, vg_bus_reply_fn fn,
                         void *arg, uint64_t *token)
{
    return vg_bus_request_start_traced(b, subject, NULL, data, len, fn, arg, token);
}

int vg_bus_request_start_traced(struct vg_bus *b, const char *subject, const char *traceparent, const void *data,
                                size_t len, vg_bus_reply_fn fn, void *arg, uint64_t *token)
{
    if (!vg_bus_subject_valid(subject, false))
        return VG_EINVAL;
    if (len > VG_BUS_PAYLOAD_MAX)
        return VG_ELIMIT;
    if (b->ops->listened && !b->ops->listened(b, subject))
        return VG_ENOENT;
    struct vg__bus_rq *r = vg_xcalloc(1, sizeof(*r));
    r->fn = fn;
    r->arg = arg;
    char reply[sizeof(b->rq_prefix) + 24];
    pthread_mutex_lock(&b->rq_mu);
    int rc = inbox_open(b);
    if (rc == 0) {
        r->token = ++b->rq_seq;
        r->next = b->rq_list;
        b->rq_list = r;
        snprintf(reply, sizeof(reply), "%s.%llu", b->rq_prefix, (unsigned long long)r->token);
    }
    pthread_mutex_unlock(&b->rq_mu);
    if (rc) {
        free(r);
        return rc;
    }
    uint64_t t = r->token; /* r may be gone as soon as the publish is out */
    rc = vg_bus_publish_traced(b, subject, reply, traceparent, data, len);
    if (rc) {
        (void)vg_bus_request_cancel(b, t);
        return rc;
    }
    *token = t;
    return 0;
}

bool vg_bus_request_cancel(struct vg_bus *b, uint64_t token)
{
    pthread_mutex_lock(&b->rq_mu);
    struct vg__bus_rq **pp = &b->rq_list;
    while (*pp && (*pp)->token != token)
        pp = &(*pp)->next;
    struct vg__bus_rq *r = *pp;
    if (r)
        *pp = r->next;
    else
        while (b->rq_running == token) {
            VG_ASSERT(!pthread_equal(b->rq_thread, pthread_self())); /* from inside its own callback */
            pthread_cond_wait(&b->rq_cv, &b->rq_mu);
        }
    pthread_mutex_unlock(&b->rq_mu);
    bool found = r != NULL;
    free(r);
    return found;
}

void vg_bus_stats(struct vg_bus *b, struct vg_bus_stats *out)
{
    out->connected = __atomic_load_n(&b->connected, __ATOMIC_RELAXED);
    out->published = __atomic_load_n(&b->published, __ATOMIC_RELAXED);
    out->publish_failed = __atomic_load_n(&b->publish_failed, __ATOMIC_RELAXED);
    out->delivered = __atomic_load_n(&b->delivered, __ATOMIC_RELAXED);
    out->dropped = __atomic_load_n(&b->dropped, __ATOMIC_RELAXED);
    out->reconnects = __atomic_load_n(&b->reconnects, __ATOMIC_RELAXED);
    out->disconnects = __atomic_load_n(&b->disconnects, __ATOMIC_RELAXED);
}

/* ---- subjects ---- */

bool vg_bus_subject_valid(const char *s, bool wild)
{
    size_t n = strlen(s);
    if (!n || n > VG_BUS_SUBJECT_MAX)
        return false;
    const char *tok = s;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t tl = (size_t)(p - tok);
            if (!tl)
                return false; /* empty token: "a..b", ".a", "a." */
            bool star = tl == 1 && tok[0] == '*', gt = tl == 1 && tok[0] == '>';
            if ((star || gt) && !wild)
                return false;
            if (gt && *p != '\0')
                return false; /* '>' only last */
            if (*p == '\0')
                return true;
            tok = p + 1;
            continue;
        }
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f)
            return false;
        if ((c == '*' || c == '>') && !(p == tok && (p[1] == '.' || p[1] == '\0')))
            return false; /* a wildcard character inside a token */
    }
}

bool vg_bus_subject_match(const char *pattern, const char *subject)
{
    const char *p = pattern, *s = subject;
    for (;;) {
        size_t pl = strcspn(p, "."), sl = strcspn(s, ".");
        if (pl == 1 && p[0] == '>')
            return sl > 0;
        if (!(pl == 1 && p[0] == '*') && (pl != sl || memcmp(p, s, pl) != 0))
            return false;
        p += pl;
        s += sl;
        if (!*p || !*s)
            return !*p && !*s;
        p++;
        s++;
    }
}
