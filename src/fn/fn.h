/* fn: the Lua 5.4 runtime for edge functions — sandboxed states (one per
 * app per worker), per-app memory caps and per-call CPU budgets, coroutines
 * that yield on asynchronous calls, and the `verge` library handlers see.
 * Built as a general runtime: HTTP handlers are its first trigger; message,
 * ingest and cron handlers reuse it. See docs/lua-api.md. */
#ifndef VG_FN_H
#define VG_FN_H

#include "base/base.h"
#include "conf/conf.h"

#include <h2o.h>
#include <lua.h>
#include <uv.h>

/* ---- node-local shared dictionary (verge.shared) --------------------------------- */

/* One per app per node, shared by every worker (thread-safe), kept across
 * reloads. Keys map to strings, numbers or booleans with an optional TTL;
 * max_bytes bounds keys + values + bookkeeping, and a full dictionary
 * evicts expired entries first, then the least recently used. */
struct vg_fn_shared;

struct vg_fn_shared *vg_fn_shared_create(size_t max_bytes);
void vg_fn_shared_destroy(struct vg_fn_shared *d);

/* ---- apps ------------------------------------------------------------------------- */

/* Whether an app names any Lua function (route handlers or hooks). */
bool vg_fn_app_needed(const struct vg_conf_app *conf);

struct vg_fn_env {
    uv_loop_t *loop;             /* the worker's loop (verge.sleep); NULL when only checking code */
    struct vg_fn_shared *shared; /* verge.shared for this app; NULL: a private one */
    bool dev;                    /* script errors show their traceback in the response body */
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

#endif
