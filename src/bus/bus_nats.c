/* The NATS bus: libnats against nats-server. libnats delivers each
 * subscription's messages on its own thread, reconnects by itself
 * (forever, reconnect_wait apart) and keeps publishes made while
 * disconnected in a bounded buffer; we count and log what it reports. */
#include "bus_int.h"

#include <nats/nats.h>
#include <string.h>

struct nbus {
    struct vg_bus super;
    natsConnection *nc;
    natsOptions *opts;
    pthread_mutex_t mu; /* subs: to count a slow subscription's drops */
    struct vg_bus_sub **subs;
    size_t n_subs;
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
    __atomic_store_n(&n->super.connected, false, __ATOMIC_RELAXED);
    vg__bus_count(&n->super.disconnects, 1);
    vg_log(VG_LOG_WARN, "bus: disconnected from NATS, publishes are buffered until it is back", NULL);
}

static void on_reconnected(natsConnection *nc, void *arg)
{
    struct nbus *n = arg;
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
    natsConnection *nc = of(b)->nc;
    natsStatus s = traceparent ? publish_traced(nc, subject, reply, traceparent, data, len)
                   : reply     ? natsConnection_PublishRequest(nc, subject, reply, data, (int)len)
                               : natsConnection_Publish(nc, subject, data, (int)len);
    return from_status(s);
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
    natsConnection_FlushTimeout(n->nc, 1000);
    natsConnection_Close(n->nc);
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
    natsStatus s = set_options(n, o);
    if (s == NATS_OK)
        s = natsConnection_Connect(&n->nc, n->opts);
    if (s != NATS_OK) {
        snprintf(err, errcap, "%s: %s", o->urls[0], natsStatus_GetText(s));
        natsOptions_Destroy(n->opts);
        pthread_mutex_destroy(&n->mu);
        vg__bus_fini(&n->super);
        free(n);
        return VG_ENET;
    }
    n->super.connected = true;
    *out = &n->super;
    return 0;
}
