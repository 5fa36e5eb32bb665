/* bus: messages between verge processes — publish/subscribe and
 * request/reply on subjects — behind one interface with two backends:
 *
 *   in-process  one node, nothing to run (the embedded default): a
 *               dispatcher thread delivers from a bounded queue;
 *   NATS        libnats against nats-server (`--nats URL`, several URLs
 *               for a cluster): reconnects with backoff, buffers a bounded
 *               amount while disconnected, and sends again after a
 *               reconnect what the server had not confirmed when the
 *               connection broke (at least once across reconnects).
 *
 * Subjects follow NATS: tokens separated by '.', '*' matches one token,
 * '>' (last) matches one or more. Namespacing per app is the callers'
 * (e.g. "app.<name>.…"), the bus only checks syntax.
 *
 * Threads: message callbacks run on a bus thread (never the caller's of
 * publish), one at a time per subscription; a callback hands the message
 * to its own loop and returns quickly. Every message not delivered — a full
 * queue, a slow subscriber, a publish while disconnected beyond the buffer —
 * is counted (vg_bus_stats) and logged, never dropped silently. */
#ifndef VG_BUS_H
#define VG_BUS_H

#include "base/base.h"

struct vg_bus;
struct vg_bus_sub;

#define VG_BUS_SUBJECT_MAX 256
#define VG_BUS_PAYLOAD_MAX (1u << 20) /* nats-server's default max_payload */

struct vg_bus_msg {
    const char *subject;
    const char *reply; /* where an answer goes (request/reply), or NULL */
    const void *data;
    size_t len;
    const char *traceparent; /* the W3C trace context it was published in (a header), or NULL */
    bool no_responders;      /* NATS: the server's answer to a request nobody listens to */
};

/* The message and its fields are valid during the call only. */
typedef void (*vg_bus_msg_fn)(void *arg, const struct vg_bus_msg *m);

struct vg_bus_options {
    const char *const *urls; /* nats://host:port, several for a cluster */
    size_t n_urls;
    const char *name;            /* shown by the server (connz) */
    const char *creds_file;      /* NATS credentials (JWT + seed), or NULL */
    bool tls;                    /* require TLS to the servers */
    uint32_t reconnect_wait_ms;  /* between attempts (default 250, jittered by libnats) */
    size_t reconnect_buf_bytes;  /* publishes kept while disconnected (default 8 MiB); beyond: refused, counted */
    size_t sub_pending_msgs;     /* per subscription queue before messages are dropped (default 65536) */
    uint32_t connect_timeout_ms; /* the first connection (default 2000); the bus then retries in the background */
};

struct vg_bus_stats {
    bool connected;
    uint64_t published;      /* accepted by publish */
    uint64_t publish_failed; /* refused: disconnected past the buffer, too large, bad subject */
    uint64_t delivered;      /* to subscription callbacks */
    uint64_t dropped;        /* never delivered: slow subscriber / full dispatch queue */
    uint64_t reconnects;
    uint64_t disconnects;
};

/* The in-process bus (one node). */
int vg_bus_inproc_create(struct vg_bus **out) VG_MUST_CHECK;
/* The NATS bus. Fails (VG_ENET, reason in err) when no server answers
 * within connect_timeout_ms; after that, outages are ridden out. */
int vg_bus_nats_create(const struct vg_bus_options *o, struct vg_bus **out, char *err, size_t errcap) VG_MUST_CHECK;
/* Flushes what is buffered (NATS: up to a second), then closes; no
 * callback runs after this returns. */
void vg_bus_destroy(struct vg_bus *b);

/* Queues data for subject. 0, VG_EINVAL (subject syntax: no wildcards
 * when publishing), VG_ELIMIT (over VG_BUS_PAYLOAD_MAX, or the disconnect
 * buffer is full) or VG_ENET; the failures are counted. */
int vg_bus_publish(struct vg_bus *b, const char *subject, const void *data, size_t len) VG_MUST_CHECK;
/* The same with a reply subject (answers to a request). */
int vg_bus_publish_reply(struct vg_bus *b, const char *subject, const char *reply, const void *data,
                         size_t len) VG_MUST_CHECK;
/* The same in a trace: traceparent (NULL: none) travels as a message
 * header (NATS headers; a field in-process), so the receiver's spans join
 * the publisher's trace. */
int vg_bus_publish_traced(struct vg_bus *b, const char *subject, const char *reply, const char *traceparent,
                          const void *data, size_t len) VG_MUST_CHECK;

/* Calls fn(arg, msg) for messages on subjects matching pattern. With a
 * queue group, each message goes to one member of the group only. */
int vg_bus_subscribe(struct vg_bus *b, const char *pattern, const char *queue, vg_bus_msg_fn fn, void *arg,
                     struct vg_bus_sub **out) VG_MUST_CHECK;
/* No callback of s runs after this returns. Not from inside s's own
 * callback (asserted). */
void vg_bus_unsubscribe(struct vg_bus_sub *s);

/* Sends a request and waits (blocking: a helper thread's call, never an
 * event loop's) up to timeout_ms for the first answer; *reply (malloc'd)
 * and *reply_len are the caller's. VG_ETIMEDOUT, VG_ENOENT (nobody
 * listens), VG_ENET. */
int vg_bus_request(struct vg_bus *b, const char *subject, const void *data, size_t len, uint32_t timeout_ms,
                   void **reply, size_t *reply_len) VG_MUST_CHECK;

/* Asynchronous request/reply, for event loops. fn runs once on a bus
 * thread with rc 0 and the first answer (valid during the call), or with
 * VG_ENOENT when NATS reports that nobody listens — unless cancelled
 * first. The bus has no timeout of its own: the caller's loop keeps one
 * and cancels. Answers come back on one inbox subscription per bus
 * (made on the first request), told apart by token. Returns 0 and the
 * token, or VG_EINVAL, VG_ELIMIT, VG_ENET, and VG_ENOENT at once when the
 * backend knows nobody listens (in-process); fn does not run then. */
typedef void (*vg_bus_reply_fn)(void *arg, int rc, const void *data, size_t len);
int vg_bus_request_start(struct vg_bus *b, const char *subject, const void *data, size_t len, vg_bus_reply_fn fn,
                         void *arg, uint64_t *token) VG_MUST_CHECK;
/* The same in a trace (see vg_bus_publish_traced). */
int vg_bus_request_start_traced(struct vg_bus *b, const char *subject, const char *traceparent, const void *data,
                                size_t len, vg_bus_reply_fn fn, void *arg, uint64_t *token) VG_MUST_CHECK;
/* After this returns, fn of token is not running and never will: true
 * when it had not run (the request is forgotten), false when it already
 * ran (or the token is unknown). Not from inside a reply callback. */
bool vg_bus_request_cancel(struct vg_bus *b, uint64_t token);

void vg_bus_stats(struct vg_bus *b, struct vg_bus_stats *out);

/* ---- subjects (pure) ----------------------------------------------------------------- */

/* Whether s is a valid subject: 1..VG_BUS_SUBJECT_MAX bytes of printable
 * ASCII without spaces, non-empty tokens; wildcards ('*' as a whole token,
 * '>' as the whole last token) only when wild. */
bool vg_bus_subject_valid(const char *s, bool wild);
/* Whether subject (no wildcards) matches pattern. */
bool vg_bus_subject_match(const char *pattern, const char *subject);

#endif
