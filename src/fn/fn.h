/* fn: the Lua 5.4 runtime for edge functions — sandboxed states (one per
 * app per worker), per-app memory caps and per-call CPU budgets, coroutines
 * that yield on asynchronous calls, and the `verge` library handlers see.
 * Built as a general runtime: HTTP handlers are its first trigger; message,
 * ingest and cron handlers reuse it. See docs/lua-api.md. */
#ifndef VG_FN_H
#define VG_FN_H

#include "base/base.h"
#include "conf/conf.h"
#include "state/state.h"

#include <h2o.h>
#include <lua.h>
#include <uv.h>

/* ---- node-local shared dictionary (verge.shared) --------------------------------- */

/* One per app per node, shared by every worker (thread-safe), kept across
 * reloads. Keys map to strings, numbers or booleans with an optional TTL;
 * max_bytes bounds keys + values + bookkeeping, and a full dictionary
 * evicts expired entries first, then the least recently used. */
struct vg_fn_shared;
struct vg_bus;

#define VG_FN_SHARED_MAX_KEY 1024         /* bytes */
#define VG_FN_SHARED_NO_EXPIRY UINT64_MAX /* vg_fn_shared_ttl: the key has no TTL */

/* Values are verge.kv's typed values (struct vg_state_value, state/state.h):
 * one notion of a typed value for both dictionaries. */

/* Every entry costs its key and value bytes plus a fixed bookkeeping
 * overhead (about 100 bytes) against max_bytes. The caller owns the
 * result; destroy it only when no worker can call into it any more. */
struct vg_fn_shared *vg_fn_shared_create(size_t max_bytes);
void vg_fn_shared_destroy(struct vg_fn_shared *d);

/* The longest string value accepted: max_bytes / 8. */
size_t vg_fn_shared_max_value(const struct vg_fn_shared *d);

/* Looks key up and makes it the most recently used. A string value is
 * copied into buf (cap bytes) and v->str points there; if it does not fit,
 * returns VG_ELIMIT with v->str.len = the length needed and nothing copied
 * (call again: the value may have changed meanwhile). 0, VG_ENOENT (absent
 * or expired), VG_ELIMIT (also: key longer than VG_FN_SHARED_MAX_KEY). */
int vg_fn_shared_get(struct vg_fn_shared *d, const char *key, size_t klen, struct vg_state_value *v, char *buf,
                     size_t cap) VG_MUST_CHECK;

/* Stores a copy of v under key, replacing any previous value and TTL;
 * ttl_ms 0 means no expiry. Evicts expired entries, then the least
 * recently used, to make room. 0; VG_ELIMIT: key longer than
 * VG_FN_SHARED_MAX_KEY or string value longer than vg_fn_shared_max_value;
 * VG_ENOMEM: it does not fit even after eviction (the old value stays). */
int vg_fn_shared_set(struct vg_fn_shared *d, const char *key, size_t klen, const struct vg_state_value *v,
                     uint64_t ttl_ms) VG_MUST_CHECK;

/* Atomically adds delta (an INTEGER or NUMBER; integers wrap, a float on
 * either side gives a float) to the number under key and stores the result
 * in *out. A missing key starts at *init (NULL: integer 0) and gets ttl_ms
 * (0: none); an existing key keeps its TTL. 0; VG_EINVAL: the value is not
 * a number (unchanged); VG_ELIMIT: key too long; VG_ENOMEM: no room. */
int vg_fn_shared_incr(struct vg_fn_shared *d, const char *key, size_t klen, const struct vg_state_value *delta,
                      const struct vg_state_value *init, uint64_t ttl_ms, struct vg_state_value *out) VG_MUST_CHECK;

/* 0 when a live key was deleted, VG_ENOENT when there was none. */
int vg_fn_shared_delete(struct vg_fn_shared *d, const char *key, size_t klen);

/* Milliseconds until key expires (VG_FN_SHARED_NO_EXPIRY without a TTL).
 * 0, VG_ENOENT, VG_ELIMIT (key too long). */
int vg_fn_shared_ttl(struct vg_fn_shared *d, const char *key, size_t klen, uint64_t *ms_left) VG_MUST_CHECK;

/* Bytes charged against max_bytes and number of entries (expired ones not
 * yet evicted included). Either pointer may be NULL. */
void vg_fn_shared_usage(struct vg_fn_shared *d, size_t *bytes, size_t *entries);

/* ---- apps ------------------------------------------------------------------------- */

/* Whether an app names any Lua function (route handlers or hooks). */
bool vg_fn_app_needed(const struct vg_conf_app *conf);

/* verge.fetch: the node does the HTTP (its origins, pools and balancers);
 * the runtime only asks. */
struct vg_fn_fetch_req {
    h2o_iovec_t target; /* an origin of the app ("api") or an http:// URL with an IP address or localhost */
    h2o_iovec_t method, path;
    const h2o_header_t *headers; /* lower-case names */
    size_t n_headers;
    h2o_iovec_t body;
    uint64_t timeout_ms; /* the whole exchange */
    size_t max_body;     /* response bodies longer than this fail */
};

struct vg_fn_fetch_res {
    int status;      /* 0 on failure */
    const char *err; /* on failure: why */
    const h2o_header_t *headers;
    size_t n_headers;
    h2o_iovec_t body;
};

/* done runs once, from the loop (never inside the call); res and what it
 * points to are valid only during done. */
typedef void (*vg_fn_fetch_done)(void *data, const struct vg_fn_fetch_res *res);

struct vg_fn_fetcher {
    /* Starts a fetch for req (pool memory lives as long as req); returns a
     * handle for cancel. */
    void *(*start)(void *ctx, h2o_req_t *req, const struct vg_fn_fetch_req *f, vg_fn_fetch_done done, void *data);
    /* Stops a fetch whose done has not run; done will not run. */
    void (*cancel)(void *handle);
    void *ctx;
};

/* The limits a call can stop at, for counting. */
enum { VG_FN_LIMIT_MEMORY, VG_FN_LIMIT_INSTRUCTIONS, VG_FN_LIMIT_TIMEOUT, VG_FN_LIMITS };
extern const char *const VG_FN_LIMIT_NAMES[VG_FN_LIMITS]; /* "lua_memory", ... */
struct vg_obs_counter;

struct vg_fn_env {
    uv_loop_t *loop;                /* the worker's loop (verge.sleep); NULL when only checking code */
    struct vg_fn_fetcher fetch;     /* verge.fetch; start NULL: not available */
    struct vg_fn_shared *shared;    /* verge.shared for this app; NULL: a private one */
    struct vg_state_db *kv_local;   /* verge.kv, scope "local"; NULL: not available */
    struct vg_state_gdb *kv_global; /* verge.kv, scope "global"; NULL: the node has no --nats */
    const char *kv_global_off;      /* with kv_global NULL on a node with --nats: why (static) */
    struct vg_bus *bus;             /* verge.publish; NULL: not available */
    bool dev;                       /* script errors show their traceback in the response body */
    /* counted when a call fails with a script error / stops at a limit
     * (memory, instructions, timeout); NULL: not counted */
    struct vg_obs_counter *errors;
    struct vg_obs_counter *limits[VG_FN_LIMITS];
};

/* One app's Lua state on one worker: a sandbox (no io, os.execute,
 * require, debug, binary chunks; string, table, math, utf8, coroutine and
 * the `verge` library), every file the manifest names run once, every
 * named function found. Memory is capped at conf->limits.lua_memory for
 * the whole state. NULL on failure, with "file:line: message" in err. */
struct vg_fn_app *vg_fn_app_create(const struct vg_conf_app *conf, const struct vg_fn_env *env, char *err,
                                   size_t errcap);
/* No call may be running or suspended (the node destroys a site's states
 * once its last request there has ended). */
void vg_fn_app_destroy(struct vg_fn_app *a);

struct vg_fn_req;

/* The app's on_response hook: when a has one, vg_fn_on_response (called
 * before the request's response starts) holds the response back, up to
 * 1 MiB, and lets on_response(req, res) change its status, headers and
 * body before it goes out (larger responses go out unhooked, logged). */
bool vg_fn_has_on_response(const struct vg_fn_app *a);
void vg_fn_on_response(struct vg_fn_app *a, h2o_req_t *req, h2o_iovec_t reqid, struct vg_fn_req **shared);

/* Loads the app's Lua code once (as vg_fn_app_create) to report errors
 * as file:line:col; 0 when it loads or there is none. */
int vg_fn_check(const struct vg_conf_app *conf, struct vg_conf_error *err) VG_MUST_CHECK;

/* What to run: a route's handler (its index in conf->routes) or a hook. */
enum { VG_FN_ON_REQUEST = -1 };

enum vg_fn_outcome {
    VG_FN_ANSWERED, /* a response was sent (the function's, or 500/503 on error or limit) */
    VG_FN_PASS,     /* the function returned nil: the pipeline goes on */
};
typedef void (*vg_fn_done_cb)(void *data, enum vg_fn_outcome o);

/* What the calls of one request share (the request object, so req.ctx
 * set by on_request is there for the handler). The caller keeps a pointer
 * per request, NULL before the first call; the runtime allocates it on the
 * request's pool. */
struct vg_fn_req;

/* Runs the function in a coroutine of its own; it may wait (verge.sleep,
 * verge.fetch) while the worker serves other requests. done runs once,
 * later or before this returns. If the request ends first (client gone),
 * the coroutine is abandoned and done never runs. reqid is the request id
 * for logs (pool memory). Limits per call: conf->limits.lua_instructions
 * and lua_timeout_ms; over either, or over the memory cap, the request
 * gets 503 and a log line naming the limit. A script error gets 500 and
 * its traceback in the log. */
void vg_fn_run(struct vg_fn_app *a, int which, h2o_req_t *req, h2o_iovec_t reqid, struct vg_fn_req **shared,
               vg_fn_done_cb done, void *data);

/* ---- message handlers (the app's `subscriptions:`) -------------------------------- */

struct vg_fn_msg {
    const char *subject; /* relative to the app's prefix verge.app.APP. */
    const void *data;
    size_t len;
    const char *reply;       /* where the answer goes (a request), or NULL */
    const char *traceparent; /* the handler's trace context: what verge.publish/request pass on, or NULL */
};

enum vg_fn_msg_result {
    VG_FN_MSG_OK,
    VG_FN_MSG_ERROR, /* a script error or a result of the wrong kind (logged) */
    VG_FN_MSG_LIMIT, /* stopped at lua_instructions, lua_timeout or lua_memory (logged) */
    VG_FN_MSG_RESULTS
};
typedef void (*vg_fn_msg_done_cb)(void *data, enum vg_fn_msg_result r);

/* Runs subscription sub's handler (its index in conf->subs) on a copy of
 * m in a coroutine of its own, with the limits of a request: it may wait
 * (verge.sleep, verge.kv, verge.request) while the worker serves others.
 * The handler gets {subject=, data=, reply=bool}; when m has a reply
 * subject and the handler returns a string (or a table: as JSON), that
 * is published as the answer. done runs once, from the loop, after the call has let go of
 * everything (a's state may be destroyed in it); id names the call in
 * logs. Needs env.loop and env.bus. */
void vg_fn_msg_run(struct vg_fn_app *a, size_t sub, const struct vg_fn_msg *m, const char *id, vg_fn_msg_done_cb done,
                   void *data);

#endif
