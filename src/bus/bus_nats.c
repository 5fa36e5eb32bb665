/* The NATS bus: libnats against nats-server. libnats delivers each
 * subscription's messages on its own thread, reconnects by itself
 * (forever, reconnect_wait apart) and keeps publishes made while
 * disconnected in a bounded buffer; we count and log what it reports.
 *
 * A connection that breaks loses what was written to it but not yet read
 * by the server (a server killed with our bytes in its socket buffer), and
 * libnats cannot tell which publishes those were. So the bus keeps a copy
 * of every publish until the server has confirmed it — a PING/PONG round
 * trip after it on the same connection, made by a confirmer thread — and
 * sends the unconfirmed ones again after a reconnect: delivery is at least
 * once across a connection loss (a subscriber may see a message twice),
 * at most once only for what the server itself drops. */
#include "bus_int.h"

#include <nats/nats.h>
#include <string.h>
#include <time.h>

/* A publish the server has not confirmed yet. */
struct unconf {
    struct unconf *next;
    uint64_t epoch;                   /* nbus.epoch when it was (re)sent */
    size_t bytes;                     /* what it counts against nbus.ucap */
    const char *subject, *reply, *tp; /* tp: a traceparent, or NULL */
    size_t len;
    char mem[]; /* subject, reply, traceparent, data */
};

struct nbus {
    struct vg_bus super;
    natsConnection *nc;
    natsOptions *opts;
    pthread_mutex_t mu; /* subs: to count a slow subscription's drops */
    struct vg_bus_sub **subs;
    size_t n_subs;
    /* unconfirmed publishes, in the order they were written (under umu,
     * which publishes hold, so list order is wire order) */
    pthread_mutex_t umu;
    pthread_cond_t ucv;
    struct unconf *uhead, *ulast;
    size_t ubytes, ucap;
    uint64_t epoch; /* connections lost so far (on_disconnected) */
    bool ustop;
    bool closed; /* on_closed ran: libnats calls nothing of ours after it */
    pthread_t confirmer;
    natsStatistics *stats; /* the confirmer's */
};

static struct nbus *of(struct vg_bus *b)
{
    return (struct nbus *)b;
}

static int from_status(natsStatus s)
{
    switch (s) {
    case NATS_OK:
        return 0;
    case NATS_TIMEOUT:
        return VG_ETIMEDOUT;
    case NATS_NO_RESPONDERS:
        return VG_ENOENT;
    case NATS_INSUFFICIENT_BUFFER:
    case NATS_MAX_PAYLOAD:
        return VG_ELIMIT;
    case NATS_NO_MEMORY:
        return VG_ENOMEM;
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_ARG:
        return VG_EINVAL;
    default:
        return VG_ENET;
    }
}

static void on_disconnected(natsConnection *nc, void *arg)
{
    struct nbus *n = arg;
    pthread_mutex_lock(&n->umu);
    n->epoch++; /* what is unconfirmed now may be lost with the connection */
    pthread_mutex_unlock(&n->umu);
    __atomic_store_n(&n->super.connected, false, __ATOMIC_RELAXED);
    vg__bus_count(&n->super.disconnects, 1);
    vg_log(VG_LOG_WARN, "bus: disconnected from NATS, publishes are buffered until it is back", NULL);
}

/* The last callback libnats makes (its callbacks run in order on its
 * own thread, after natsConnection_Close has returned): nb_destroy waits
 * for it before freeing what the others use. */
static void on_closed(natsConnection *nc, void *arg)
{
    struct nbus *n = arg;
    pthread_mutex_lock(&n->umu);
    n->closed = true;
    pthread_cond_broadcast(&n->ucv);
    pthread_mutex_unlock(&n->umu);
}

static natsStatus publish_traced(natsConnection *nc, const char *subject, const char *reply, const char *tp,
                                 const void *data, size_t len);

static natsStatus send_one(natsConnection *nc, const char *subject, const char *reply, const char *tp, const void *data,
                           size_t len)
{
    return tp      ? publish_traced(nc, subject, reply, tp, data, len)
           : reply ? natsConnection_PublishRequest(nc, subject, reply, data, (int)len)
                   : natsConnection_Publish(nc, subject, data, (int)len);
}

/* Sends again what was written to a connection that broke before the
 * server confirmed it (what was published since went to libnats' reconnect
 * buffer and is flushed by libnats itself). */
static void resend_unconfirmed(struct nbus *n)
{
    size_t resent = 0;
    pthread_mutex_lock(&n->umu);
    for (struct unconf *u = n->uhead; u; u = u->next) {
        if (u->epoch >= n->epoch)
            continue;
        u->epoch = n->epoch;
        if (send_one(n->nc, u->subject, u->reply, u->tp, u->mem + (u->bytes - sizeof(*u) - u->len), u->len) == NATS_OK)
            resent++;
    }
    pthread_cond_signal(&n->ucv);
    pthread_mutex_unlock(&n->umu);
    if (resent) {
        char c[24];
        snprintf(c, sizeof(c), "%zu", resent);
        vg_log(VG_LOG_INFO, "bus: publishes the server had not confirmed before the disconnect sent again", "count", c,
               NULL);
    }
}

static void on_reconnected(natsConnection *nc, void *arg)
{
    struct nbus *n = arg;
    resend_unconfirmed(n);
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof(url));
    __atomic_store_n(&n->super.connected, true, __ATOMIC_RELAXED);
    vg__bus_count(&n->super.reconnects, 1);
    vg_log(VG_LOG_INFO, "bus: reconnected to NATS", "url", url, NULL);
}

/* Slow consumers: libnats dropped messages a subscription could not take. */
static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *arg)
{
    struct nbus *n = arg;
    const char *subject = "";
    if (err == NATS_SLOW_CONSUMER && sub) {
        pthread_mutex_lock(&n->mu);
        for (size_t i = 0; i < n->n_subs; i++) {
            struct vg_bus_sub *s = n->subs[i];
            int64_t dropped = 0;
            if (s->impl != sub || natsSubscription_GetDropped(sub, &dropped) != NATS_OK)
                continue;
            if ((uint64_t)dropped > s->dropped_seen) {
                vg__bus_count(&n->super.dropped, (uint64_t)dropped - s->dropped_seen);
                s->dropped_seen = (uint64_t)dropped;
            }
            subject = s->pattern;
        }
        pthread_mutex_unlock(&n->mu);
    }
    vg_log(VG_LOG_WARN, "bus: NATS reported an error", "error", natsStatus_GetText(err), "subject", subject, NULL);
}

/* A message with a traceparent header (NATS 2.2+ headers). */
static natsStatus publish_traced(natsConnection *nc, const char *subject, const char *reply, const char *tp,
                                 const void *data, size_t len)
{
    natsMsg *msg = NULL;
    natsStatus s = natsMsg_Create(&msg, subject, reply, data, (int)len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "traceparent", tp);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(nc, msg);
    natsMsg_Destroy(msg);
    return s;
}

static int nb_publish(struct vg_bus *b, const char *subject, const char *reply, const char *traceparent,
                      const void *data, size_t len)
{
    struct nbus *n = of(b);
    size_t sl = strlen(subject) + 1, rl = reply ? strlen(reply) + 1 : 0, tl = traceparent ? strlen(traceparent) + 1 : 0;
    size_t bytes = sizeof(struct unconf) + sl + rl + tl + len;
    pthread_mutex_lock(&n->umu);
    if (n->ubytes + bytes > n->ucap) { /* the server confirms slower than we publish */
        pthread_mutex_unlock(&n->umu);
        return VG_ELIMIT;
    }
    natsStatus s = send_one(n->nc, subject, reply, traceparent, data, len);
    if (s != NATS_OK) {
        pthread_mutex_unlock(&n->umu);
        return from_status(s);
    }
    struct unconf *u = vg_xmalloc(bytes);
    u->next = NULL;
    u->epoch = n->epoch;
    u->bytes = bytes;
    u->len = len;
    memcpy(u->mem, subject, sl);
    u->subject = u->mem;
    u->reply = NULL;
    if (reply) {
        memcpy(u->mem + sl, reply, rl);
        u->reply = u->mem + sl;
    }
    u->tp = NULL;
    if (traceparent) {
        memcpy(u->mem + sl + rl, traceparent, tl);
        u->tp = u->mem + sl + rl;
    }
    if (len)
        memcpy(u->mem + sl + rl + tl, data, len);
    if (n->ulast)
        n->ulast->next = u;
    else
        n->uhead = u;
    n->ulast = u;
    n->ubytes += bytes;
    pthread_cond_signal(&n->ucv);
    pthread_mutex_unlock(&n->umu);
    return 0;
}

static uint64_t reconnects(struct nbus *n)
{
    uint64_t r = 0;
    if (natsConnection_GetStats(n->nc, n->stats) != NATS_OK ||
        natsStatistics_GetCounts(n->stats, NULL, NULL, NULL, NULL, &r) != NATS_OK)
        return UINT64_MAX;
    return r;
}

/* Confirms publishes: a PONG answers a PING the server read after them on
 * the same connection, so everything written before the PING arrived. A
 * reconnect in between (libnats would send the PING on the new connection)
 * confirms nothing. */
static void *confirmer_main(void *arg)
{
    struct nbus *n = arg;
    pthread_mutex_lock(&n->umu);
    while (!n->ustop) {
        if (!n->uhead) {
            pthread_cond_wait(&n->ucv, &n->umu);
            continue;
        }
        struct unconf *last = n->ulast;
        uint64_t epoch = n->epoch;
        pthread_mutex_unlock(&n->umu);
        uint64_t r0 = reconnects(n);
        bool ok = natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED && r0 != UINT64_MAX &&
                  natsConnection_FlushTimeout(n->nc, 2000) == NATS_OK && reconnects(n) == r0;
        pthread_mutex_lock(&n->umu);
        if (!ok || n->epoch != epoch) {
            struct timespec ts = {0, 20 * 1000 * 1000}; /* disconnected: wait for the reconnect */
            pthread_mutex_unlock(&n->umu);
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&n->umu);
            continue;
        }
        /* entries up to last were written before the PING; those of an
         * older connection wait for resend_unconfirmed */
        struct unconf **pp = &n->uhead, *prev = NULL;
        for (bool more = true; more && *pp;) {
            struct unconf *u = *pp;
            more = u != last;
            if (u->epoch == epoch) {
                *pp = u->next;
                n->ubytes -= u->bytes;
                free(u);
            } else {
                prev = u;
                pp = &u->next;
            }
        }
        if (!*pp)
            n->ulast = prev;
    }
    pthread_mutex_unlock(&n->umu);
    return NULL;
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *arg)
{
    struct vg_bus_msg m = {.subject = natsMsg_GetSubject(msg),
                           .reply = natsMsg_GetReply(msg),
                           .data = natsMsg_GetData(msg),
                           .len = (size_t)natsMsg_GetDataLength(msg),
                           .no_responders = natsMsg_IsNoResponders(msg)};
    if (natsMsgHeader_Get(msg, "traceparent", &m.traceparent) != NATS_OK)
        m.traceparent = NULL;
    vg__bus_sub_deliver(arg, &m);
    natsMsg_Destroy(msg);
}

static int nb_subscribe(struct vg_bus *b, struct vg_bus_sub *s, const char *pattern, const char *queue)
{
    natsSubscription *sub = NULL;
    natsStatus st = queue ? natsConnection_QueueSubscribe(&sub, of(b)->nc, pattern, queue, on_msg, s)
                          : natsConnection_Subscribe(&sub, of(b)->nc, pattern, on_msg, s);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(sub, 65536, 64 * 1024 * 1024);
    if (st != NATS_OK) {
        natsSubscription_Destroy(sub);
        return from_status(st);
    }
    s->impl = sub;
    struct nbus *n = of(b);
    pthread_mutex_lock(&n->mu);
    n->subs = vg_xrealloc(n->subs, (n->n_subs + 1) * sizeof(*n->subs));
    n->subs[n->n_subs++] = s;
    pthread_mutex_unlock(&n->mu);
    return 0;
}

static void nb_unsubscribe(struct vg_bus_sub *s)
{
    natsSubscription *sub = s->impl;
    struct nbus *n = of(s->bus);
    pthread_mutex_lock(&n->mu);
    for (size_t i = 0; i < n->n_subs; i++) {
        if (n->subs[i] == s) {
            n->subs[i] = n->subs[--n->n_subs];
            break;
        }
    }
    int64_t dropped = 0;
    if (natsSubscription_GetDropped(sub, &dropped) == NATS_OK && (uint64_t)dropped > s->dropped_seen)
        vg__bus_count(&n->super.dropped, (uint64_t)dropped - s->dropped_seen);
    pthread_mutex_unlock(&n->mu);
    /* Unsubscribe, then Destroy: libnats stops the delivery thread's
     * callbacks; vg__bus_sub_close already waited for one in progress */
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
}

static int nb_request(struct vg_bus *b, const char *subject, const void *data, size_t len, uint32_t timeout_ms,
                      void **reply, size_t *reply_len)
{
    natsMsg *r = NULL;
    natsStatus st = natsConnection_Request(&r, of(b)->nc, subject, data, (int)len, timeout_ms);
    if (st != NATS_OK)
        return from_status(st);
    size_t n = (size_t)natsMsg_GetDataLength(r);
    char *p = vg_xmalloc(n + 1);
    memcpy(p, natsMsg_GetData(r), n);
    p[n] = '\0';
    natsMsg_Destroy(r);
    *reply = p;
    *reply_len = n;
    return 0;
}

static void nb_inbox(struct vg_bus *b, char *buf, size_t cap)
{
    natsInbox *in = NULL;
    if (natsInbox_Create(&in) == NATS_OK) /* "_INBOX.<nuid>": unique across nodes */
        snprintf(buf, cap, "%s", (const char *)in);
    else
        snprintf(buf, cap, "_INBOX.vg%p%llu", (void *)b, (unsigned long long)vg_wall_us());
    natsInbox_Destroy(in);
}

static void nb_destroy(struct vg_bus *b)
{
    struct nbus *n = of(b);
    pthread_mutex_lock(&n->umu);
    n->ustop = true;
    pthread_cond_signal(&n->ucv);
    pthread_mutex_unlock(&n->umu);
    pthread_join(n->confirmer, NULL);
    natsConnection_FlushTimeout(n->nc, 1000);
    natsConnection_Close(n->nc);
    pthread_mutex_lock(&n->umu);
    while (!n->closed)
        pthread_cond_wait(&n->ucv, &n->umu);
    pthread_mutex_unlock(&n->umu);
    for (struct unconf *u = n->uhead, *next; u; u = next) {
        next = u->next;
        free(u);
    }
    natsStatistics_Destroy(n->stats);
    pthread_mutex_destroy(&n->umu);
    pthread_cond_destroy(&n->ucv);
    natsConnection_Destroy(n->nc);
    natsOptions_Destroy(n->opts);
    free(n->subs);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

static const struct vg_bus_ops nats_ops = {
    .publish = nb_publish,
    .subscribe = nb_subscribe,
    .unsubscribe = nb_unsubscribe,
    .request = nb_request,
    .destroy = nb_destroy,
    .inbox = nb_inbox,
};

static natsStatus set_options(struct nbus *n, const struct vg_bus_options *o)
{
    natsStatus s = natsOptions_Create(&n->opts);
    if (s == NATS_OK)
        s = natsOptions_SetServers(n->opts, (const char **)o->urls, (int)o->n_urls);
    if (s == NATS_OK && o->name)
        s = natsOptions_SetName(n->opts, o->name);
    if (s == NATS_OK && o->creds_file)
        s = natsOptions_SetUserCredentialsFromFiles(n->opts, o->creds_file, NULL);
    if (s == NATS_OK && o->tls)
        s = natsOptions_SetSecure(n->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(n->opts, o->connect_timeout_ms ? o->connect_timeout_ms : 2000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(n->opts, -1); /* forever: an edge node rides outages out */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(n->opts, o->reconnect_wait_ms ? o->reconnect_wait_ms : 250);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(n->opts, (int)(o->reconnect_buf_bytes ? o->reconnect_buf_bytes : 8u << 20));
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(n->opts, on_disconnected, n);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(n->opts, on_reconnected, n);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(n->opts, on_error, n);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(n->opts, on_closed, n);
    return s;
}

int vg_bus_nats_create(const struct vg_bus_options *o, struct vg_bus **out, char *err, size_t errcap)
{
    if (!o->n_urls) {
        snprintf(err, errcap, "no NATS server URL");
        return VG_EINVAL;
    }
    struct nbus *n = vg_xcalloc(1, sizeof(*n));
    vg__bus_init(&n->super, &nats_ops);
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->umu, NULL);
    pthread_cond_init(&n->ucv, NULL);
    /* twice libnats' reconnect buffer: during an outage that one fills first */
    n->ucap = 2 * (o->reconnect_buf_bytes ? o->reconnect_buf_bytes : 8u << 20);
    natsStatus s = set_options(n, o);
    if (s == NATS_OK)
        s = natsStatistics_Create(&n->stats);
    if (s == NATS_OK)
        s = natsConnection_Connect(&n->nc, n->opts);
    if (s != NATS_OK) {
        snprintf(err, errcap, "%s: %s", o->urls[0], natsStatus_GetText(s));
        natsStatistics_Destroy(n->stats);
        natsOptions_Destroy(n->opts);
        pthread_mutex_destroy(&n->mu);
        pthread_mutex_destroy(&n->umu);
        pthread_cond_destroy(&n->ucv);
        vg__bus_fini(&n->super);
        free(n);
        return VG_ENET;
    }
    VG_AZ(pthread_create(&n->confirmer, NULL, confirmer_main, n));
    n->super.connected = true;
    *out = &n->super;
    return 0;
}
