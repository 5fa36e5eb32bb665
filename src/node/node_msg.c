/* The apps' subscriptions: a bus message runs a Lua handler on a worker.
 *
 *   bus thread    on_bus_msg copies the message into the next worker's
 *                 bounded queue (round robin) and wakes its loop; a full
 *                 queue drops the message, counted and logged;
 *   worker loop   on_queue finds the app and subscription *by name* in the
 *                 worker's current site and runs the handler there
 *                 (vg_fn_msg_run), holding the site like a request does.
 *
 * Looking up by name is what makes reloads simple: a message queued
 * before a reload runs on the new version; calls already running finish
 * on the old one (the site stays until its last call here ends). The bus
 * subscriptions themselves belong to the node, not to a site, and are kept
 * across reloads while an app still declares them (no window where an old
 * and a new subscription both deliver the same message); the bus
 * callbacks never touch a site or a Lua state, so removing an app only
 * needs its subscriptions gone before their memory (vg_bus_unsubscribe
 * waits for a callback in progress). */
#include "node_int.h"

#include <string.h>

#define QUEUE_MAX 4096 /* messages waiting per worker */
#define APP_PREFIX "verge.app."

enum { M_OK, M_ERROR, M_LIMIT, M_DROPPED, M_RESULTS };
static const char *const result_names[M_RESULTS] = {"ok", "error", "limit", "dropped"};

/* One bus subscription (main thread owns the list; a bus thread runs its
 * callback). Immutable after creation. */
struct msub {
    struct vg_node *node;
    char *app, *subject; /* subject: as in the manifest */
    bool all;
    size_t prefix_len; /* of "verge.app.APP." */
    struct vg_bus_sub *sub;
    struct vg_obs_counter *m[M_RESULTS];
    bool keep; /* sync's mark */
};

/* A message on its way to a worker: copies of everything. */
struct qmsg {
    struct qmsg *next;
    char *app, *sub_subject; /* which subscription (looked up again on the worker) */
    bool all;
    char *subject; /* relative to the app's prefix */
    char *reply;
    bool traced;
    struct vg_trace_parent parent; /* the publisher's trace context (traced) */
    struct vg_obs_counter *m[M_RESULTS];
    size_t len;
    char data[];
};

struct vg__node_msgq {
    pthread_mutex_t mu;
    struct qmsg *head, **tail; /* under mu */
    size_t n;                  /* under mu */
    bool closed;               /* under mu: the worker stopped */
    uv_async_t async;
    struct vg_worker *w;
    uint64_t seq; /* worker thread: message ids for logs */
};

struct vg__node_msg {
    struct msub **subs; /* main thread */
    size_t n_subs;
    unsigned rr;      /* atomic: the next worker */
    uint64_t dropped; /* atomic: for the log's throttle */
};

/* A call in flight: what its end needs. */
struct run {
    struct vg_worker *w;
    struct vg_site *site;
    struct vg_obs_counter *m[M_RESULTS];
    char app[VG_CONF_NAME_MAX + 1], sub[96]; /* for the trace record */
    struct vg_trace *trace;                  /* in tmem; NULL: tracing off */
    vg_span_t handler;
    _Alignas(16) char tmem[]; /* vg_trace_size() bytes */
};

static void qmsg_free(struct qmsg *q)
{
    free(q->app);
    free(q->sub_subject);
    free(q->subject);
    free(q->reply);
    free(q);
}

/* Dropped messages are counted each, logged at the first and then every
 * thousandth (a flood must not become a flood of log lines). */
static void drop(struct vg_node *node, struct vg_obs_counter *const *m, const char *app, const char *subject,
                 const char *why)
{
    vg_obs_counter_add(m[M_DROPPED], 1);
    uint64_t n = __atomic_add_fetch(&node->msg->dropped, 1, __ATOMIC_RELAXED);
    if (n == 1 || n % 1000 == 0) {
        char count[24];
        snprintf(count, sizeof(count), "%llu", (unsigned long long)n);
        vg_log(VG_LOG_WARN, "message dropped", "app", app, "subscription", subject, "reason", why, "dropped_total",
               count, NULL);
    }
}

/* ---- bus thread ---- */

static struct qmsg *qmsg_make(struct msub *s, const struct vg_bus_msg *m)
{
    struct qmsg *q = vg_xmalloc(sizeof(*q) + m->len + 1);
    memset(q, 0, sizeof(*q));
    q->app = vg_xstrdup(s->app);
    q->sub_subject = vg_xstrdup(s->subject);
    q->all = s->all;
    size_t sl = strlen(m->subject);
    q->subject = vg_xstrdup(sl > s->prefix_len ? m->subject + s->prefix_len : m->subject);
    q->reply = m->reply ? vg_xstrdup(m->reply) : NULL;
    q->traced = m->traceparent && vg_trace_parse_traceparent(m->traceparent, strlen(m->traceparent), &q->parent);
    memcpy(q->m, s->m, sizeof(q->m));
    q->len = m->len;
    if (m->len)
        memcpy(q->data, m->data, m->len);
    q->data[m->len] = '\0';
    return q;
}

static void on_bus_msg(void *arg, const struct vg_bus_msg *m)
{
    struct msub *s = arg;
    struct vg_node *node = s->node;
    unsigned i = __atomic_fetch_add(&node->msg->rr, 1, __ATOMIC_RELAXED) % node->n_workers;
    struct vg__node_msgq *mq = node->workers[i].msgq;
    struct qmsg *q = qmsg_make(s, m);
    pthread_mutex_lock(&mq->mu);
    bool ok = !mq->closed && mq->n < QUEUE_MAX;
    const char *why = mq->closed ? "the node is stopping" : "the worker's queue is full";
    if (ok) {
        *mq->tail = q;
        mq->tail = &q->next;
        mq->n++;
        uv_async_send(&mq->async); /* under mu: the worker cannot close it meanwhile */
    }
    pthread_mutex_unlock(&mq->mu);
    if (!ok) {
        drop(node, s->m, s->app, s->subject, why);
        qmsg_free(q);
    }
}

/* ---- worker loop ---- */

static void on_done(void *data, enum vg_fn_msg_result r)
{
    struct run *run = data;
    static const int map[VG_FN_MSG_RESULTS] = {M_OK, M_ERROR, M_LIMIT};
    vg_obs_counter_add(run->m[map[r]], 1);
    if (run->trace) {
        if (r != VG_FN_MSG_OK)
            vg_trace_fail(run->trace, run->handler);
        vg_trace_end(run->trace, run->handler);
        struct vg_trace_meta meta = {.app = run->app,
                                     .route = run->sub,
                                     .node = run->w->node->node_id,
                                     .location = run->w->node->opt.location,
                                     .status = r == VG_FN_MSG_OK ? 200 : 500};
        vg__node_trace_end(run->w, run->trace, &meta);
    }
    vg__node_worker_request_done(run->w, run->site); /* may retire the site, and its Lua state */
    free(run);
}

/* The subscription's app and index in site, by name. */
static bool find(struct vg_site *site, const struct qmsg *q, size_t *app, size_t *sub)
{
    for (size_t a = 0; site && a < site->n_apps; a++) {
        const struct vg_conf_app *c = site->apps[a].conf;
        if (strcmp(c->name, q->app) != 0)
            continue;
        for (size_t k = 0; k < c->n_subs; k++)
            if (c->subs[k].deliver_all == q->all && strcmp(c->subs[k].subject, q->sub_subject) == 0) {
                *app = a;
                *sub = k;
                return true;
            }
    }
    return false;
}

static void run_one(struct vg_worker *w, struct qmsg *q)
{
    struct vg_site *site = w->site;
    size_t a, k;
    if (w->draining || !find(site, q, &a, &k)) {
        drop(w->node, q->m, q->app, q->sub_subject,
             w->draining ? "the node is stopping" : "the app no longer subscribes to it");
        return;
    }
    struct vg_site_worker *sw = &site->workers[w->id];
    if (!sw->fn[a]) { /* its Lua state failed to load here (logged then) */
        vg_obs_counter_add(q->m[M_ERROR], 1);
        return;
    }
    struct run *run = vg_xmalloc(sizeof(*run) + vg_trace_size());
    run->w = w;
    run->site = site;
    memcpy(run->m, q->m, sizeof(run->m));
    snprintf(run->app, sizeof(run->app), "%s", q->app);
    snprintf(run->sub, sizeof(run->sub), "sub:%s", q->sub_subject);
    sw->inflight++;
    char id[48], tp[VG_TRACEPARENT_LEN + 1];
    snprintf(id, sizeof(id), "msg-%s-%llu", w->reqid_prefix, (unsigned long long)++w->msgq->seq);
    /* a trace per message: a child of the publisher's when it sent one */
    run->trace = w->node->opt.trace_off
                     ? NULL
                     : vg_trace_init(run->tmem, q->traced ? &q->parent : NULL, w->node->opt.trace_sample, "message");
    vg_trace_detail(run->trace, 0, q->subject, strlen(q->subject));
    run->handler = vg_trace_begin(run->trace, "handler", 0);
    if (run->trace)
        vg_trace_child_header(run->trace, run->handler, tp);
    struct vg_fn_msg m = {.subject = q->subject,
                          .data = q->data,
                          .len = q->len,
                          .reply = q->reply,
                          .traceparent = run->trace ? tp : NULL};
    vg_fn_msg_run(sw->fn[a], k, &m, id, on_done, run);
}

static void on_queue(uv_async_t *h)
{
    struct vg__node_msgq *mq = h->data;
    struct vg_worker *w = mq->w;
    vg__node_worker_commands(w); /* a message for a version just deployed: adopt it first */
    pthread_mutex_lock(&mq->mu);
    struct qmsg *list = mq->head;
    mq->head = NULL;
    mq->tail = &mq->head;
    mq->n = 0;
    pthread_mutex_unlock(&mq->mu);
    while (list) {
        struct qmsg *q = list;
        list = q->next;
        run_one(w, q);
        qmsg_free(q);
    }
}

void vg__node_msg_worker_init(struct vg_worker *w)
{
    struct vg__node_msgq *mq = vg_xcalloc(1, sizeof(*mq));
    pthread_mutex_init(&mq->mu, NULL);
    mq->tail = &mq->head;
    mq->w = w;
    uv_async_init(&w->uv, &mq->async, on_queue);
    mq->async.data = mq;
    w->msgq = mq;
    if (!w->node->msg)
        w->node->msg = vg_xcalloc(1, sizeof(*w->node->msg));
}

void vg__node_msg_worker_close(struct vg_worker *w)
{
    struct vg__node_msgq *mq = w->msgq;
    pthread_mutex_lock(&mq->mu);
    mq->closed = true;
    struct qmsg *list = mq->head;
    mq->head = NULL;
    mq->tail = &mq->head;
    pthread_mutex_unlock(&mq->mu);
    while (list) {
        struct qmsg *q = list;
        list = q->next;
        drop(w->node, q->m, q->app, q->sub_subject, "the node is stopping");
        qmsg_free(q);
    }
    uv_close((uv_handle_t *)&mq->async, NULL);
}

/* ---- subscriptions (main thread) ---- */

static struct msub *msub_find(struct vg__node_msg *nm, const char *app, const struct vg_conf_sub *cs)
{
    for (size_t i = 0; i < nm->n_subs; i++) {
        struct msub *s = nm->subs[i];
        if (strcmp(s->app, app) == 0 && strcmp(s->subject, cs->subject) == 0 && s->all == cs->deliver_all)
            return s;
    }
    return NULL;
}

static void msub_free(struct msub *s)
{
    vg_bus_unsubscribe(s->sub); /* no callback of s runs after this */
    free(s->app);
    free(s->subject);
    free(s);
}

/* deliver: one -> a queue group per app and subscription, the same name
 * on every node: "verge.q.APP.<hash of the subject>" (a queue name may not
 * hold the subject's wildcards). */
static void queue_name(const char *app, const char *subject, char *buf, size_t cap)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = subject; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    snprintf(buf, cap, "verge.q.%s.%016llx", app, (unsigned long long)h);
}

static struct msub *msub_create(struct vg_node *node, const char *app, const struct vg_conf_sub *cs)
{
    struct msub *s = vg_xcalloc(1, sizeof(*s));
    s->node = node;
    s->app = vg_xstrdup(app);
    s->subject = vg_xstrdup(cs->subject);
    s->all = cs->deliver_all;
    char full[VG_BUS_SUBJECT_MAX + 64], queue[128], esc_app[96], esc_sub[400], labels[600];
    s->prefix_len = (size_t)snprintf(full, sizeof(full), APP_PREFIX "%s.", app);
    snprintf(full + s->prefix_len, sizeof(full) - s->prefix_len, "%s", cs->subject);
    queue_name(app, cs->subject, queue, sizeof(queue));
    vg_obs_label_escape(esc_app, sizeof(esc_app), app);
    vg_obs_label_escape(esc_sub, sizeof(esc_sub), cs->subject);
    for (int r = 0; r < M_RESULTS; r++) {
        snprintf(labels, sizeof(labels), "app=\"%s\",subscription=\"%s\",result=\"%s\"", esc_app, esc_sub,
                 result_names[r]);
        s->m[r] = vg_obs_counter_get(node->metrics, "verge_fn_messages_total",
                                     "Messages handed to the apps' subscription handlers, by outcome.", labels);
    }
    int rc = vg_bus_subscribe(node->bus, full, s->all ? NULL : queue, on_bus_msg, s, &s->sub);
    if (rc) {
        vg_log(VG_LOG_ERROR, "cannot subscribe", "app", app, "subject", full, "reason", vg_strerror(rc), NULL);
        free(s->app);
        free(s->subject);
        free(s);
        return NULL;
    }
    vg_log(VG_LOG_INFO, "subscribed", "app", app, "subject", full, "deliver", s->all ? "all" : "one", NULL);
    return s;
}

void vg__node_msg_sync(struct vg_node *node, struct vg_site *site)
{
    struct vg__node_msg *nm = node->msg;
    if (!nm)
        return; /* no worker yet */
    for (size_t i = 0; i < nm->n_subs; i++)
        nm->subs[i]->keep = false;
    for (size_t a = 0; site && a < site->n_apps; a++) {
        const struct vg_conf_app *c = site->apps[a].conf;
        for (size_t k = 0; k < c->n_subs; k++) {
            struct msub *s = msub_find(nm, c->name, &c->subs[k]);
            if (!s && (s = msub_create(node, c->name, &c->subs[k])) != NULL) {
                nm->subs = vg_xrealloc(nm->subs, (nm->n_subs + 1) * sizeof(*nm->subs));
                nm->subs[nm->n_subs++] = s;
            }
            if (s)
                s->keep = true;
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < nm->n_subs; i++) {
        if (nm->subs[i]->keep)
            nm->subs[kept++] = nm->subs[i];
        else
            msub_free(nm->subs[i]);
    }
    nm->n_subs = kept;
}

void vg__node_msg_fini(struct vg_node *node)
{
    struct vg__node_msg *nm = node->msg;
    if (!nm)
        return;
    vg__node_msg_sync(node, NULL);
    free(nm->subs);
    for (unsigned i = 0; i < node->n_workers; i++) {
        struct vg__node_msgq *mq = node->workers[i].msgq;
        if (!mq)
            continue;
        while (mq->head) { /* a worker that never ran its close */
            struct qmsg *q = mq->head;
            mq->head = q->next;
            qmsg_free(q);
        }
        pthread_mutex_destroy(&mq->mu);
        free(mq);
        node->workers[i].msgq = NULL;
    }
    free(nm);
    node->msg = NULL;
}
