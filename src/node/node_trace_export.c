/* The OTLP/HTTP JSON exporter: workers push kept trace records into a
 * bounded queue (a mutex and a condition variable; pushing never waits on
 * the network), one thread takes batches and posts them to the collector.
 * A failed post is retried with doubling backoff a bounded number of times,
 * then the batch is dropped and counted: a slow or dead collector costs
 * this thread's time and the queue's memory, never a request's. */
#include "node_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vg__node_exporter {
    struct vg__node_exporter_options o;
    char *url, *service, *node, *location;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;                  /* under mu */
    struct vg_trace_rec **ring; /* the queue, under mu */
    size_t head, len;
    struct vg__node_exporter_stats st; /* under mu */
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void vg__node_exporter_push(struct vg__node_exporter *x, struct vg_trace_rec *r)
{
    pthread_mutex_lock(&x->mu);
    if (x->len == x->o.queue_max) {
        x->st.dropped_queue++;
        pthread_mutex_unlock(&x->mu);
        return;
    }
    vg_trace_rec_ref(r);
    x->ring[(x->head + x->len) % x->o.queue_max] = r;
    if (++x->len == x->o.batch_max)
        pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static struct timespec deadline_in(uint32_t ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    uint64_t ns = (uint64_t)t.tv_nsec + (uint64_t)ms * 1000000u;
    t.tv_sec += (time_t)(ns / 1000000000u);
    t.tv_nsec = (long)(ns % 1000000000u);
    return t;
}

/* Takes up to batch_max records once a batch is full, flush_ms passed
 * with something queued, or the exporter stops. Returns how many (0:
 * stopping with nothing left). */
static size_t take_batch(struct vg__node_exporter *x, struct vg_trace_rec **out)
{
    struct timespec until = deadline_in(x->o.flush_ms);
    pthread_mutex_lock(&x->mu);
    while (!x->stop && x->len < x->o.batch_max) {
        if (pthread_cond_timedwait(&x->cv, &x->mu, &until) != ETIMEDOUT)
            continue;
        if (x->len)
            break;
        until = deadline_in(x->o.flush_ms); /* nothing yet: wait another round */
    }
    size_t n = x->len < x->o.batch_max ? x->len : x->o.batch_max;
    for (size_t i = 0; i < n; i++)
        out[i] = x->ring[(x->head + i) % x->o.queue_max];
    x->head = (x->head + n) % x->o.queue_max;
    x->len -= n;
    pthread_mutex_unlock(&x->mu);
    return n;
}

static bool post(struct vg__node_exporter *x, const char *body)
{
    struct vg_http_sync_req q = {.method = "POST",
                                 .url = x->url,
                                 .content_type = "application/json",
                                 .body = body,
                                 .body_len = strlen(body),
                                 .timeout_ms = x->o.timeout_ms,
                                 .max_bytes = 1 << 20};
    struct vg_http_sync_res res;
    char err[256];
    int rc = vg_http_sync_request(&q, &res, err, sizeof(err));
    bool ok = rc == 0 && res.status >= 200 && res.status < 300;
    if (rc == 0) {
        if (!ok)
            snprintf(err, sizeof(err), "the collector answered %d", res.status);
        vg_http_sync_res_free(&res);
    }
    if (!ok) {
        pthread_mutex_lock(&x->mu);
        x->st.failed_requests++;
        pthread_mutex_unlock(&x->mu);
        vg_log(VG_LOG_WARN, "trace export failed", "collector", x->url, "reason", err, NULL);
    }
    return ok;
}

/* Waits ms unless the exporter stops meanwhile (then false). */
static bool backoff(struct vg__node_exporter *x, uint32_t ms)
{
    struct timespec until = deadline_in(ms);
    pthread_mutex_lock(&x->mu);
    while (!x->stop && pthread_cond_timedwait(&x->cv, &x->mu, &until) != ETIMEDOUT)
        ;
    bool go_on = !x->stop;
    pthread_mutex_unlock(&x->mu);
    return go_on;
}

static void send_batch(struct vg__node_exporter *x, struct vg_trace_rec **recs, size_t n)
{
    char *body = vg_trace_otlp_json(recs, n, x->service, x->node, x->location);
    bool ok = post(x, body);
    uint32_t wait = 200;
    for (uint32_t a = 0; !ok && a < x->o.retries && backoff(x, wait); a++, wait *= 2)
        ok = post(x, body);
    free(body);
    pthread_mutex_lock(&x->mu);
    if (ok)
        x->st.exported += n;
    else
        x->st.dropped_failed += n;
    pthread_mutex_unlock(&x->mu);
    for (size_t i = 0; i < n; i++)
        vg_trace_rec_unref(recs[i]);
}

static void *exporter_main(void *arg)
{
    struct vg__node_exporter *x = arg;
    struct vg_trace_rec **batch = vg_xmalloc(x->o.batch_max * sizeof(*batch));
    size_t n;
    while ((n = take_batch(x, batch)) > 0)
        send_batch(x, batch, n);
    free(batch);
    return NULL;
}

int vg__node_exporter_create(const struct vg__node_exporter_options *o, struct vg__node_exporter **out, char *err,
                             size_t errcap)
{
    char host[256], port[16];
    const char *path;
    if (vg_http_url_split(o->url, host, sizeof(host), port, sizeof(port), &path) != 0) {
        snprintf(err, errcap, "the collector URL must be http://HOST:PORT/PATH, not '%s'", o->url);
        return VG_EINVAL;
    }
    struct vg__node_exporter *x = vg_xcalloc(1, sizeof(*x));
    x->o = *o;
    x->o.queue_max = o->queue_max ? o->queue_max : 8192;
    x->o.batch_max = o->batch_max ? o->batch_max : 256;
    x->o.flush_ms = o->flush_ms ? o->flush_ms : 1000;
    x->o.timeout_ms = o->timeout_ms ? o->timeout_ms : 2000;
    x->o.retries = o->retries ? o->retries : 3;
    x->url = strdup(o->url);
    x->service = dup_or_null(o->service ? o->service : "verge");
    x->node = dup_or_null(o->node);
    x->location = dup_or_null(o->location);
    x->ring = vg_xcalloc(x->o.queue_max, sizeof(*x->ring));
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    if (pthread_create(&x->thread, NULL, exporter_main, x) != 0) {
        snprintf(err, errcap, "cannot start the exporter thread");
        x->thread = 0;
        vg__node_exporter_destroy(x);
        return VG_EIO;
    }
    *out = x;
    return 0;
}

void vg__node_exporter_destroy(struct vg__node_exporter *x)
{
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    x->stop = true;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    if (x->thread)
        pthread_join(x->thread, NULL); /* it sends what is left, one try per batch */
    for (size_t i = 0; i < x->len; i++)
        vg_trace_rec_unref(x->ring[(x->head + i) % x->o.queue_max]);
    free(x->ring);
    pthread_cond_destroy(&x->cv);
    pthread_mutex_destroy(&x->mu);
    free(x->url);
    free(x->service);
    free(x->node);
    free(x->location);
    free(x);
}

void vg__node_exporter_stats(struct vg__node_exporter *x, struct vg__node_exporter_stats *out)
{
    pthread_mutex_lock(&x->mu);
    *out = x->st;
    pthread_mutex_unlock(&x->mu);
}
