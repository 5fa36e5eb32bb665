/* Internals shared by the fn module's files and its unit tests. */
#ifndef VG_FN_INT_H
#define VG_FN_INT_H

#include "fn.h"

#include <lauxlib.h>
#include <lualib.h>

/* Each adds its functions to the table on top of the stack (the `verge`
 * table a sandbox sees) and leaves the stack as it found it. The tables
 * are also recorded as loaded modules ("verge.json", "verge.shared", ...)
 * in the registry, so that Lua's argument errors and tracebacks name the
 * functions however they are called. See docs/lua-api-lib.md. */
void vg__fn_open_codec(lua_State *L);                          /* json, base64, hex, crypto */
void vg__fn_open_shared(lua_State *L, struct vg_fn_shared *d); /* shared; d outlives L */
void vg__fn_open_fetch(lua_State *L);                          /* fetch, fetch_all */
void vg__fn_open_kv(lua_State *L);                             /* kv (env.kv_local, env.kv_global) */

/* ---- shared dictionary internals, open to unit tests ---- */

/* A clock in milliseconds, monotonic; tests inject a fake one. */
typedef uint64_t (*vg__fn_clock_fn)(void *ctx);

/* n_shards: a power of two (1 makes eviction order exact, for tests);
 * now NULL: vg_now_ms. */
struct vg_fn_shared *vg__fn_shared_create_ex(size_t max_bytes, unsigned n_shards, vg__fn_clock_fn now, void *ctx);

/* What one entry is charged against max_bytes. */
size_t vg__fn_shared_entry_cost(size_t klen, size_t vlen);

enum vg__fn_kill { /* MEMORY..TIMEOUT in the order of VG_FN_LIMIT_* (counted by that index) */
                   VG__FN_KILL_NONE,
                   VG__FN_KILL_MEMORY,       /* limits.lua_memory */
                   VG__FN_KILL_INSTRUCTIONS, /* limits.lua_instructions */
                   VG__FN_KILL_TIMEOUT,      /* limits.lua_timeout */
};
_Static_assert(VG__FN_KILL_TIMEOUT - VG__FN_KILL_MEMORY == VG_FN_LIMIT_TIMEOUT, "kill kinds follow VG_FN_LIMIT_*");

struct vg__fn_call;

/* What a kind of call does with its outcome. Both end the call: they must
 * call done (or arrange the response otherwise). */
struct vg__fn_call_ops {
    /* The function returned; its first result is at index 2 of c->co (or
     * absent). Releases the thread (vg__fn_release_thread). */
    void (*result)(struct vg__fn_call *c);
    /* An error or a limit: answer status with a short text body. */
    void (*fail)(struct vg__fn_call *c, int status, const char *body);
};

/* One run of a function for one request; lives on the request's pool. */
struct vg__fn_call {
    const struct vg__fn_call_ops *ops;
    const char *fname; /* for logs */
    void *ext;         /* the kind's own state (on_response: its output stream) */
    struct vg_fn_app *app;
    h2o_req_t *req; /* NULL once the request is over */
    h2o_iovec_t reqid;
    lua_State *co;                    /* the coroutine it runs in */
    int co_ref;                       /* registry reference keeping co alive */
    uint64_t instructions;            /* counted by the hook */
    uint64_t deadline_ms;             /* wall clock cap */
    enum vg__fn_kill kill;            /* set once: the call is ended at its next yield */
    bool waiting;                     /* suspended in an async call of ours */
    h2o_buffer_t *body;               /* req:read_body() collecting a streamed body */
    struct vg__fn_fetch_batch *fetch; /* verge.fetch(_all) in flight */
    struct kv_op *kv;                 /* a verge.kv write in flight */
    struct vg__fn_breq *breq;         /* a verge.request waiting for its answer */
    h2o_mem_pool_t *pool;             /* the call lives here: the request's, or a message's own */
    const char *traceparent;          /* a message call's trace context (requests: their header), or NULL */
    size_t body_max;
    bool finished;
    bool past_deadline; /* the timer below ends the call at its deadline */
    uv_timer_t *timer;  /* verge.sleep / the deadline while waiting */
    int body_ref;       /* the response body string being sent, or LUA_NOREF */
    vg_fn_done_cb done;
    void *data;
};

/* The allocator's size classes (see l_alloc in fn_runtime.c). */
#define VG__FN_SMALL_STEP 16
#define VG__FN_SMALL_MAX 256
#define VG__FN_SMALL_CLASSES (VG__FN_SMALL_MAX / VG__FN_SMALL_STEP)
#define VG__FN_SMALL_KEEP 512 /* free blocks kept per class: about 1 MiB at most, all classes */

/* The response table's fields, by registry ref (vg_fn_app.key_ref). */
enum { VG__FN_KEY_STATUS, VG__FN_KEY_BODY, VG__FN_KEY_HEADERS, VG__FN_KEYS };

struct vg_fn_app {
    lua_State *L;
    void *small[VG__FN_SMALL_CLASSES]; /* free blocks, linked through their first word */
    uint32_t n_small[VG__FN_SMALL_CLASSES];
    const struct vg_conf_app *conf;
    struct vg_fn_env env;
    struct vg_fn_shared *own_shared; /* when env.shared was NULL */
    struct vg__fn_kv_box *kv_box;    /* verge.kv write results come back here (fn_kv.c) */
    struct vg__fn_bus_box *bus_box;  /* verge.request answers come back here (fn_bus.c) */
    size_t used, cap;                /* allocator accounting */
    struct vg__fn_call *current;     /* the call running now, for the allocator and the hook */
    bool lazy_hook;                  /* calls start unhooked: the ticker arms the hook (fn_tick.c) */
    bool loading;                    /* files are being run: limits apply to the load */
    bool building;                   /* C code pushes a call's arguments: no cap (see l_alloc) */
    uint64_t load_instructions;
    int *route_ref; /* per route: registry ref of its handler, or LUA_NOREF */
    int on_request_ref;
    int on_response_ref;
    int *sub_ref;      /* per subscription: registry ref of its handler */
    int sandbox_ref;   /* the read-only base every file's environment inherits */
    int *free_threads; /* finished coroutines kept for reuse */
    size_t n_free_threads;
    /* registry refs of what every request touches (fn_request.c): an
     * integer key reads the registry's array part, where a name
     * (luaL_setmetatable, lua_pushliteral) is hashed and interned first */
    int req_mt_ref, headers_mt_ref;
    int key_ref[VG__FN_KEYS];
};

/* ---- fn_tick.c: when the count hook starts ----
 *
 * With a count hook set, Lua 5.4 traps every VM instruction (the count is
 * kept in luaG_traceexec), which was 7% of a short handler's CPU. Apps
 * whose instruction budget is large (vg_fn_app.lazy_hook) start each call
 * unhooked; a timer on the thread's CPU time fires every millisecond of
 * it, and its signal handler arms the hook on the call running then
 * (lua_sethook is safe in a signal handler: lua.c stops scripts that
 * way). A call that runs longer than a tick is counted from then on;
 * coroutines a script creates are hooked from birth (fn_runtime.c). */

/* The call whose coroutine runs on this thread now (set around
 * lua_resume), read by the signal handler. */
extern _Thread_local struct vg__fn_call *volatile vg__fn_running;
/* Starts this thread's ticker on the first use; false when it cannot run
 * (the caller then hooks the call from its first instruction). */
bool vg__fn_tick_ready(void);
/* The signal handler's work (fn_runtime.c): arm the running call's hook. */
void vg__fn_tick(void);

/* The tail of the sandbox's wrappers (setmetatable, coroutine.create,
 * string.find, ...): calls upvalue 1, the function wrapped, with the
 * wrapper's arguments and returns all its results. */
int vg__fn_call_wrapped(lua_State *L);

/* ---- fn_pattern.c: pattern matching with a bounded worst case ---- */

/* The worst-case steps of matching pattern p on an n-byte subject, from
 * its shape (0: malformed, left to Lua to report). may_anchor: a leading
 * ^ anchors (not in gmatch). */
double vg__fn_pattern_cost(const char *p, size_t pl, size_t n, bool may_anchor);
/* Wraps find, match, gmatch and gsub of the string library at index
 * strlib: over the bound, an error instead of the match. */
void vg__fn_pattern_guard(lua_State *L, int strlib);

/* The app a state (or any of its coroutines) belongs to. */
static inline struct vg_fn_app *vg__fn_app_of(lua_State *L)
{
    return *(struct vg_fn_app **)lua_getextraspace(L);
}

/* The call running on L, or a Lua error when there is none or L is not its
 * coroutine (async calls only work in the function's own coroutine). */
struct vg__fn_call *vg__fn_call_checked(lua_State *L, const char *what);

/* Prepares a call of the function at registry ref: its coroutine holds
 * [request, function, request]; push more arguments (the memory cap is
 * lifted until the start), then start it with their count (+1 for the
 * request). */
struct vg__fn_call *vg__fn_call_new(struct vg_fn_app *a, int ref, const char *fname, h2o_req_t *req, h2o_iovec_t reqid,
                                    struct vg_fn_req **shared, const struct vg__fn_call_ops *ops, vg_fn_done_cb done,
                                    void *data);
void vg__fn_call_start(struct vg__fn_call *c, int nargs);
/* The general form: a call on pool (req NULL: not for a request) whose
 * coroutine is empty and c->app->building set; push its first argument,
 * then vg__fn_call_push_fn, then start it. */
struct vg__fn_call *vg__fn_call_alloc(struct vg_fn_app *a, const char *fname, h2o_mem_pool_t *pool, h2o_req_t *req,
                                      h2o_iovec_t reqid, const struct vg__fn_call_ops *ops, vg_fn_done_cb done,
                                      void *data);
/* Pushes the function at ref and a copy of the first argument; ends building. */
void vg__fn_call_push_fn(struct vg__fn_call *c, int ref);
/* An async operation the call waits for (c->waiting) is done: with
 * c->app->building set, push its nres results onto c->co, then wake it. */
void vg__fn_call_wake(struct vg__fn_call *c, int nres);
/* Closes the call's timer (verge.sleep, a fetch batch's timeout), if any. */
void vg__fn_call_stop_timer(struct vg__fn_call *c);
void vg__fn_release_thread(struct vg__fn_call *c, bool reusable);
/* A result of the wrong shape: logged like a script error, then ops->fail(500). */
void vg__fn_call_bad_result(struct vg__fn_call *c, const char *why);

/* Cancels the call's fetches still running (the request is over). */
void vg__fn_fetch_abort(struct vg__fn_call *c);
/* verge.kv (fn_kv.c): the app's result mailbox, made when env has a loop
 * and a store; a write whose call is over has its result dropped. */
void vg__fn_open_bus(lua_State *L); /* verge.publish, verge.request (fn_bus.c) */
/* verge.request's mailbox (fn_bus.c), made when env has a loop and a bus. */
void vg__fn_bus_app_init(struct vg_fn_app *a);
void vg__fn_bus_app_fini(struct vg_fn_app *a);
/* Cancels the call's verge.request (the call is over): no answer reaches it. */
void vg__fn_bus_abort(struct vg__fn_call *c);
/* Typed values (verge.shared and verge.kv) to and from Lua (fn_shared.c). */
void vg__fn_push_value(lua_State *L, const struct vg_state_value *v);
void vg__fn_to_number(lua_State *L, int idx, struct vg_state_value *v);
void vg__fn_kv_app_init(struct vg_fn_app *a);
void vg__fn_kv_app_fini(struct vg_fn_app *a);
void vg__fn_kv_abort(struct vg__fn_call *c);

/* fn_request.c: the request object handlers receive. */
void vg__fn_request_open(lua_State *L); /* registers its metatable */
void vg__fn_request_push(lua_State *L, struct vg__fn_call *call);
/* Pushes a read-only headers view (like req.headers: case-insensitive,
 * values joined, pairs) holding its own copy of the n entries. */
void vg__fn_headers_push_copy(lua_State *L, const h2o_header_t *entries, size_t n);
/* Sends the response table at index idx of L; false (and a reason) when it
 * is malformed. A large body may be sent from the Lua string itself: then
 * *pin (when pin is not NULL) is a registry reference to release once the
 * request is over. */
bool vg__fn_response_send(lua_State *L, int idx, h2o_req_t *req, int *pin, const char **why);
/* Adds the "headers" table of the response at idx (raw reads only). */
bool vg__fn_response_headers(lua_State *L, int idx, h2o_req_t *req, const char **why);

#endif
