/* The Lua runtime: sandboxed states with a memory cap, coroutines per
 * call with instruction and wall-clock budgets, and the core of the
 * `verge` library (log, now, sleep).
 *
 * Limits cannot be escaped with pcall: the count hook does not raise an
 * error (which pcall would catch) but *yields* the call's coroutine (Lua
 * 5.4 lets count hooks yield, and pcall is yieldable), and a killed call is
 * never resumed. Where a yield is impossible (inside a C function such as
 * table.sort's comparator) the hook's yield raises an error, which unwinds
 * to a yieldable frame; from then on the hook runs on every instruction,
 * so the next one there yields; the kill flag stays set throughout. Files
 * load in a coroutine under the same scheme (with a load budget). Coroutines the script creates inherit the hook; their
 * yields return to the script, whose own coroutine is then stopped at its next hook. The allocator refuses growth past
 * the cap and marks the running call killed, so a script that catches "not enough memory" still ends. */
#include "fn_int.h"
#include "http/http.h"
#include "obs/obs.h"

#include <string.h>

#define HOOK_EVERY 1000     /* instructions between hook calls */
#define MAX_FREE_THREADS 64 /* finished coroutines kept for reuse */
#define LOAD_INSTRUCTIONS 100000000ull
/* Budgets from this many instructions up count from the first tick that
 * lands in a call (fn_tick.c: at most a millisecond of CPU, some 0.2-0.5 M
 * instructions here, left out); smaller ones, where that would matter,
 * count from the first instruction. */
#define LAZY_MIN_INSTRUCTIONS 10000000ull

static void finish(struct vg__fn_call *c);
static void resume(struct vg__fn_call *c, int nargs);

/* ---- memory -------------------------------------------------------------------- */

/* Small blocks. Lua allocates and frees small objects (tables, their
 * parts, closures, strings, userdata) by the dozen per request and always
 * says how big the block it frees is, so size classes of 16 bytes with a
 * free list each need no header: most allocations become a pointer pop,
 * most frees a push (glibc's malloc + free cost ~350 instructions a pair
 * on this path, measured with callgrind). Each list keeps at most
 * SMALL_KEEP blocks, the rest go back to malloc; the lists belong to the
 * state and are emptied when it closes. Under AddressSanitizer every block
 * goes to malloc, so that a use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define SMALL_LISTS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SMALL_LISTS 0
#endif
#endif
#ifndef SMALL_LISTS
#define SMALL_LISTS 1
#endif

static size_t small_class(size_t n)
{
    return (n + VG__FN_SMALL_STEP - 1) / VG__FN_SMALL_STEP - 1;
}

static void *block_alloc(struct vg_fn_app *a, size_t n)
{
    if (!SMALL_LISTS || n > VG__FN_SMALL_MAX)
        return malloc(n);
    size_t c = small_class(n);
    void *p = a->small[c];
    if (p) {
        a->small[c] = *(void **)p;
        a->n_small[c]--;
        return p;
    }
    return malloc((c + 1) * VG__FN_SMALL_STEP);
}

static void block_free(struct vg_fn_app *a, void *p, size_t n)
{
    if (!SMALL_LISTS || n > VG__FN_SMALL_MAX) {
        free(p);
        return;
    }
    size_t c = small_class(n);
    if (a->n_small[c] >= VG__FN_SMALL_KEEP) {
        free(p);
        return;
    }
    *(void **)p = a->small[c];
    a->small[c] = p;
    a->n_small[c]++;
}

static void *block_realloc(struct vg_fn_app *a, void *p, size_t old, size_t n)
{
    if (!p)
        return block_alloc(a, n);
    if (!SMALL_LISTS || (old > VG__FN_SMALL_MAX && n > VG__FN_SMALL_MAX))
        return realloc(p, n);
    if (old <= VG__FN_SMALL_MAX && n <= VG__FN_SMALL_MAX && small_class(old) == small_class(n))
        return p; /* the block has its class's size */
    void *q = block_alloc(a, n);
    if (!q)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    block_free(a, p, old);
    return q;
}

static void small_lists_free(struct vg_fn_app *a)
{
    for (size_t c = 0; c < VG__FN_SMALL_CLASSES; c++)
        while (a->small[c]) {
            void *p = a->small[c];
            a->small[c] = *(void **)p;
            free(p);
        }
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct vg_fn_app *a = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
    if (nsize == 0) {
        a->used -= old;
        if (ptr)
            block_free(a, ptr, old);
        return NULL;
    }
    /* C code that builds a call's arguments runs outside any protected
     * call, where a refusal would abort the process: it may overshoot (by
     * little: a request object, a bounded response), the script may not */
    if (nsize > old && a->used + (nsize - old) > a->cap && !a->building) {
        if (a->current && !a->current->kill)
            a->current->kill = VG__FN_KILL_MEMORY;
        return NULL; /* Lua raises "not enough memory" */
    }
    void *p = block_realloc(a, ptr, old, nsize);
    if (!p)
        return NULL;
    a->used = a->used - old + nsize;
    return p;
}

/* ---- CPU ----------------------------------------------------------------------------- */

static void hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct vg_fn_app *a = vg__fn_app_of(L);
    struct vg__fn_call *c = a->current;
    if (!c) { /* loading runs in a coroutine too: a yield ends it (see below for the count of 1) */
        if (a->loading && (a->load_instructions += HOOK_EVERY) > LOAD_INSTRUCTIONS) {
            lua_sethook(L, hook, LUA_MASKCOUNT, 1);
            lua_yield(L, 0);
        }
        return;
    }
    if (!c->kill) {
        c->instructions += HOOK_EVERY;
        if (c->instructions > a->conf->limits.lua_instructions)
            c->kill = VG__FN_KILL_INSTRUCTIONS;
        else if ((c->instructions & 0xffff) < HOOK_EVERY && vg_now_ms() > c->deadline_ms)
            c->kill = VG__FN_KILL_TIMEOUT;
    }
    if (c->kill) {
        /* Where a yield is impossible (inside table.sort's comparator, say)
         * it raises an error instead; hooking every instruction from now on
         * makes the next attempt land right after that error unwinds to a
         * frame that can yield. */
        lua_sethook(L, hook, LUA_MASKCOUNT, 1);
        lua_yield(L, 0);
    }
}

int vg__fn_call_wrapped(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static void hook_now(lua_State *co)
{
    if (lua_gethookmask(co) == 0)
        lua_sethook(co, hook, LUA_MASKCOUNT, HOOK_EVERY);
}

/* In the ticker's signal handler: no allocation, no locks. The call's
 * coroutine may not be the one running (a script's own coroutine is):
 * those were hooked at birth (co_hooked). */
void vg__fn_tick(void)
{
    struct vg__fn_call *c = vg__fn_running;
    if (c && c->co)
        hook_now(c->co);
}

/* coroutine.create and coroutine.wrap: the creating coroutine is hooked
 * first, and the new one inherits its hook (lua_newthread copies it).
 * Otherwise a coroutine made before the first tick would run unhooked
 * where the tick, which hooks the call's own coroutine, does not reach. */
static int co_hooked(lua_State *L)
{
    hook_now(L);
    return vg__fn_call_wrapped(L);
}

static void hook_coroutine_lib(lua_State *L, int loaded)
{
    static const char *const makers[] = {"create", "wrap"};
    lua_getfield(L, loaded, LUA_COLIBNAME);
    for (size_t i = 0; i < 2; i++) {
        lua_getfield(L, -1, makers[i]);
        lua_pushcclosure(L, co_hooked, 1);
        lua_setfield(L, -2, makers[i]);
    }
    lua_pop(L, 1);
}

/* ---- the sandbox ------------------------------------------------------------------------ */

/* load(chunk [, name [, mode [, env]]]): text only; the environment
 * defaults to the sandbox, never the real globals. */
static int sb_load(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len); /* no reader functions: keeps it simple and bounded */
    const char *name = luaL_optstring(L, 2, "=(load)");
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (!lua_isnoneornil(L, 4))
        lua_pushvalue(L, 4);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, vg__fn_app_of(L)->sandbox_ref);
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    return 1;
}

static int sb_collectgarbage(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT) + (lua_Number)lua_gc(L, LUA_GCCOUNTB) / 1024.0);
    return 1; /* "count" only: a script must not stop or tune the collector */
}

static int sb_print(lua_State *L);

/* setmetatable without finalizers: Lua runs __gc with debug hooks off
 * (GCTM sets allowhook = 0), so a finalizer's endless loop would escape
 * every limit and hold the worker for good. A metatable marks its object
 * for finalization only if it has __gc when it is set, so checking here is
 * enough. Upvalue 1: the real setmetatable. */
static int sb_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not available to scripts (finalizers run outside the limits)");
        lua_pop(L, 1);
    }
    return vg__fn_call_wrapped(L);
}

static void copy_fields(lua_State *L, int from, const char *const *names)
{
    for (; *names; names++) {
        lua_getfield(L, from, *names);
        lua_setfield(L, -2, *names);
    }
}

/* The real libraries stay in the registry; the sandbox gets copies of the
 * safe parts. string.dump goes from the real table too: strings reach it
 * through their metatable. */
static void build_sandbox(lua_State *L)
{
    static const char *const base[] = {"assert", "error",        "ipairs",       "next",     "pairs",
                                       "pcall",  "rawequal",     "rawget",       "rawlen",   "rawset",
                                       "select", "setmetatable", "getmetatable", "tonumber", "tostring",
                                       "type",   "xpcall",       "_VERSION",     NULL};
    static const char *const os_safe[] = {"time", "clock", "date", "difftime", NULL};
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_COLIBNAME, luaopen_coroutine},
                                    {LUA_OSLIBNAME, luaopen_os},     {NULL, NULL}};
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 0);
        lua_pop(L, 1);
    }
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    int loaded = lua_gettop(L);
    lua_getfield(L, loaded, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    vg__fn_pattern_guard(L, -1); /* s:find(...) reaches this table too */
    lua_pop(L, 1);
    hook_coroutine_lib(L, loaded);

    lua_newtable(L); /* the sandbox */
    lua_pushglobaltable(L);
    lua_insert(L, -2);
    copy_fields(L, -2, base);
    lua_remove(L, -2);
    static const char *const libnames[] = {LUA_STRLIBNAME,  LUA_TABLIBNAME, LUA_MATHLIBNAME,
                                           LUA_UTF8LIBNAME, LUA_COLIBNAME,  NULL};
    copy_fields(L, loaded, libnames);
    lua_newtable(L);
    lua_getfield(L, loaded, LUA_OSLIBNAME);
    lua_insert(L, -2);
    copy_fields(L, -2, os_safe);
    lua_remove(L, -2);
    lua_setfield(L, -2, "os");
    lua_pushcfunction(L, sb_load);
    lua_setfield(L, -2, "load");
    lua_pushcfunction(L, sb_collectgarbage);
    lua_setfield(L, -2, "collectgarbage");
    lua_getfield(L, -1, "setmetatable");
    lua_pushcclosure(L, sb_setmetatable, 1);
    lua_setfield(L, -2, "setmetatable");
    lua_pushcfunction(L, sb_print);
    lua_setfield(L, -2, "print");
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    lua_remove(L, loaded);
}

/* ---- verge.log, verge.now, verge.sleep -------------------------------------------------------------- */

/* The trace id of a call (32 hex digits into out), or false: a request's
 * trace, else a message handler's context. */
static bool call_trace_id(const struct vg__fn_call *c, char out[VG_TRACE_ID_HEX + 1])
{
    struct vg_trace *t = c->req ? vg_http_req_trace(c->req) : NULL;
    if (t) {
        vg_trace_hex(vg_trace_id(t), 16, out);
        return true;
    }
    if (!c->traceparent || strlen(c->traceparent) < 35)
        return false;
    memcpy(out, c->traceparent + 3, VG_TRACE_ID_HEX); /* "00-" TRACE "-" SPAN "-" FLAGS */
    out[VG_TRACE_ID_HEX] = '\0';
    return true;
}

static void log_from_lua(lua_State *L, enum vg_log_level lvl)
{
    struct vg_fn_app *a = vg__fn_app_of(L);
    const char *msg = luaL_checkstring(L, 1);
    const char *kv[2 * VG_LOG_MAX_FIELDS];
    size_t n = 0;
    kv[n++] = "app";
    kv[n++] = a->conf->name;
    char tid[VG_TRACE_ID_HEX + 1];
    if (a->current) {
        kv[n++] = "request_id";
        kv[n++] = lua_pushlstring(L, a->current->reqid.base, a->current->reqid.len);
        if (call_trace_id(a->current, tid)) { /* the line joins the request's trace and access line */
            kv[n++] = "trace_id";
            kv[n++] = tid;
        }
    }
    if (lua_istable(L, 2)) {
        /* string copies of each field stay on the stack until the line is out */
        int idx[2 * VG_LOG_MAX_FIELDS];
        size_t first = n;
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) == LUA_TSTRING && n + 2 <= 2 * VG_LOG_MAX_FIELDS && lua_checkstack(L, 4)) {
                lua_pushvalue(L, -2);
                luaL_tolstring(L, -2, NULL); /* key value kcopy vstr */
                lua_rotate(L, -4, 2);        /* kcopy vstr key value */
                idx[n++] = lua_gettop(L) - 3;
                idx[n++] = lua_gettop(L) - 2;
            }
            lua_pop(L, 1);
        }
        for (size_t i = first; i < n; i++)
            kv[i] = lua_tostring(L, idx[i]);
    }
    vg_log_fields(lvl, msg, kv, n / 2);
}

static int l_log_debug(lua_State *L)
{
    log_from_lua(L, VG_LOG_DEBUG);
    return 0;
}

static int l_log_info(lua_State *L)
{
    log_from_lua(L, VG_LOG_INFO);
    return 0;
}

static int l_log_warn(lua_State *L)
{
    log_from_lua(L, VG_LOG_WARN);
    return 0;
}

static int l_log_error(lua_State *L)
{
    log_from_lua(L, VG_LOG_ERROR);
    return 0;
}

/* print(...) goes to the node log at debug level, tab-joined like Lua's. */
static int sb_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_replace(L, 1);
    lua_settop(L, 1);
    log_from_lua(L, VG_LOG_DEBUG);
    return 0;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)vg_wall_us() / 1e6);
    return 1;
}

struct vg__fn_call *vg__fn_call_checked(lua_State *L, const char *what)
{
    struct vg__fn_call *c = vg__fn_app_of(L)->current;
    if (!c)
        luaL_error(L, "%s can only be called while handling a request", what);
    if (c->co != L)
        luaL_error(L, "%s cannot be called inside a coroutine the script created", what);
    return c;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h);
}

void vg__fn_call_stop_timer(struct vg__fn_call *c)
{
    if (!c->timer)
        return;
    uv_close((uv_handle_t *)c->timer, on_timer_closed);
    c->timer = NULL;
}

void vg__fn_call_wake(struct vg__fn_call *c, int nres)
{
    c->app->building = false;
    c->waiting = false;
    if (c->past_deadline || vg_now_ms() > c->deadline_ms) {
        c->kill = VG__FN_KILL_TIMEOUT;
        finish(c);
        return;
    }
    resume(c, nres);
}

static void on_sleep_done(uv_timer_t *t)
{
    struct vg__fn_call *c = t->data;
    vg__fn_call_stop_timer(c);
    vg__fn_call_wake(c, 0);
}

static int l_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    struct vg__fn_call *c = vg__fn_call_checked(L, "verge.sleep");
    struct vg_fn_app *a = c->app;
    if (!a->env.loop)
        return luaL_error(L, "verge.sleep is not available here");
    uint64_t now = vg_now_ms(), left = c->deadline_ms > now ? c->deadline_ms - now : 0;
    uint64_t wait = ms <= 0 ? 0 : (uint64_t)ms;
    c->timer = vg_xmalloc(sizeof(*c->timer));
    uv_timer_init(a->env.loop, c->timer);
    c->timer->data = c;
    c->past_deadline = wait >= left; /* the deadline comes first: wake up to end the call */
    uv_timer_start(c->timer, on_sleep_done, c->past_deadline ? left : wait, 0);
    c->waiting = true;
    return lua_yield(L, 0);
}

static void open_verge(lua_State *L, struct vg_fn_app *a)
{
    static const luaL_Reg log[] = {
        {"debug", l_log_debug}, {"info", l_log_info}, {"warn", l_log_warn}, {"error", l_log_error}, {NULL, NULL}};
    lua_newtable(L);
    luaL_newlib(L, log);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_sleep);
    lua_setfield(L, -2, "sleep");
    vg__fn_open_codec(L);
    vg__fn_open_shared(L, a->env.shared);
    vg__fn_open_fetch(L);
    vg__fn_open_kv(L);
    vg__fn_open_bus(L);
    lua_setfield(L, -2, "verge");
}

/* ---- loading ---------------------------------------------------------------------------------- */

bool vg_fn_app_needed(const struct vg_conf_app *conf)
{
    if (conf->on_request.file || conf->on_response.file || conf->n_subs)
        return true;
    for (size_t i = 0; i < conf->n_routes; i++)
        if (conf->routes[i].action == VG_CONF_ACTION_HANDLER)
            return true;
    return false;
}

/* Runs a coroutine to completion for loading; a yield means the load hit a
 * limit. Leaves the results on co's stack. */
static int run_loading(struct vg_fn_app *a, lua_State *co, int nargs, char *err, size_t errcap, const char *what)
{
    int nres;
    a->loading = true;
    a->load_instructions = 0;
    int st = lua_resume(co, a->L, nargs, &nres);
    a->loading = false;
    if (st == LUA_OK)
        return 0;
    const char *msg = st != LUA_YIELD ? lua_tostring(co, -1)
                      : a->load_instructions > LOAD_INSTRUCTIONS
                          ? "instruction limit while loading (an endless loop at the top level?)"
                          : "yielded while loading";
    snprintf(err, errcap, "%s: %s", what, msg ? msg : "error object is not a string");
    return -1;
}

/* Each file runs once in an environment of its own that inherits the
 * sandbox; its functions are looked up in what it returns (a table) or in
 * that environment. The environment is kept in the registry by file name. */
static int load_file(struct vg_fn_app *a, const char *path, const char *rel, char *err, size_t errcap)
{
    lua_State *L = a->L;
    lua_getfield(L, LUA_REGISTRYINDEX, path);
    bool done = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (done)
        return 0;
    char name[600];
    snprintf(name, sizeof(name), "@%s", rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errcap, "%s: cannot open", rel);
        return -1;
    }
    char *buf = NULL;
    size_t len = 0;
    char chunk[16384];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        buf = vg_xrealloc(buf, len + n);
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    lua_State *co = lua_newthread(L);
    int rc = luaL_loadbufferx(co, buf ? buf : "", len, name, "t");
    free(buf);
    if (rc != LUA_OK) {
        snprintf(err, errcap, "%s", lua_tostring(co, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_newtable(co); /* the file's environment */
    lua_newtable(co);
    lua_rawgeti(co, LUA_REGISTRYINDEX, a->sandbox_ref);
    lua_setfield(co, -2, "__index");
    lua_setmetatable(co, -2);
    lua_pushvalue(co, -1);
    lua_setupvalue(co, -3, 1);
    lua_insert(co, 1); /* env below the chunk */
    if (run_loading(a, co, 0, err, errcap, rel) != 0) {
        lua_pop(L, 1);
        return -1;
    }
    /* stack of co: env, results... */
    if (lua_gettop(co) >= 2 && lua_istable(co, 2))
        lua_pushvalue(co, 2); /* the module table */
    else
        lua_pushvalue(co, 1);
    lua_xmove(co, L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, path);
    lua_pop(L, 1); /* the thread */
    return 0;
}

static int find_function(struct vg_fn_app *a, const struct vg_conf_fnref *ref, int *out, char *err, size_t errcap)
{
    lua_State *L = a->L;
    if (load_file(a, ref->file, ref->rel, err, errcap) != 0)
        return -1;
    lua_getfield(L, LUA_REGISTRYINDEX, ref->file);
    lua_getfield(L, -1, ref->func);
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errcap, "%s:%d:%d: %s has no function '%s'", a->conf->manifest_path, ref->line, ref->col,
                 ref->rel, ref->func);
        lua_pop(L, 2);
        return -1;
    }
    *out = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

static int load_functions(struct vg_fn_app *a, char *err, size_t errcap)
{
    const struct vg_conf_app *conf = a->conf;
    a->route_ref = vg_xmalloc(sizeof(int) * (conf->n_routes ? conf->n_routes : 1));
    for (size_t i = 0; i < conf->n_routes; i++) {
        a->route_ref[i] = LUA_NOREF;
        if (conf->routes[i].action == VG_CONF_ACTION_HANDLER &&
            find_function(a, &conf->routes[i].u.handler, &a->route_ref[i], err, errcap) != 0)
            return -1;
    }
    a->on_request_ref = a->on_response_ref = LUA_NOREF;
    if (conf->on_request.file && find_function(a, &conf->on_request, &a->on_request_ref, err, errcap) != 0)
        return -1;
    if (conf->on_response.file && find_function(a, &conf->on_response, &a->on_response_ref, err, errcap) != 0)
        return -1;
    a->sub_ref = vg_xmalloc(sizeof(int) * (conf->n_subs ? conf->n_subs : 1));
    for (size_t i = 0; i < conf->n_subs; i++)
        a->sub_ref[i] = LUA_NOREF;
    for (size_t i = 0; i < conf->n_subs; i++)
        if (find_function(a, &conf->subs[i].handler, &a->sub_ref[i], err, errcap) != 0)
            return -1;
    return 0;
}

struct vg_fn_app *vg_fn_app_create(const struct vg_conf_app *conf, const struct vg_fn_env *env, char *err,
                                   size_t errcap)
{
    struct vg_fn_app *a = vg_xcalloc(1, sizeof(*a));
    a->conf = conf;
    a->env = *env;
    a->cap = conf->limits.lua_memory;
    if (!a->env.shared)
        a->env.shared = a->own_shared = vg_fn_shared_create(1 << 20);
    vg__fn_kv_app_init(a);
    vg__fn_bus_app_init(a);
    a->L = lua_newstate(l_alloc, a);
    if (!a->L) {
        snprintf(err, errcap, "cannot create a Lua state within limits.lua_memory");
        vg_fn_app_destroy(a);
        return NULL;
    }
    *(struct vg_fn_app **)lua_getextraspace(a->L) = a;  /* new coroutines copy it */
    lua_sethook(a->L, hook, LUA_MASKCOUNT, HOOK_EVERY); /* ... and inherit the hook */
    build_sandbox(a->L);
    open_verge(a->L, a);
    a->sandbox_ref = luaL_ref(a->L, LUA_REGISTRYINDEX);
    vg__fn_request_open(a->L);
    if (load_functions(a, err, errcap) != 0) {
        vg_fn_app_destroy(a);
        return NULL;
    }
    lua_gc(a->L, LUA_GCGEN, 0, 0); /* short-lived per-request garbage: generational mode fits */
    a->lazy_hook = conf->limits.lua_instructions >= LAZY_MIN_INSTRUCTIONS;
    if (a->lazy_hook)
        lua_sethook(a->L, NULL, 0, 0); /* the calls' coroutines start unhooked (fn_tick.c) */
    return a;
}

void vg_fn_app_destroy(struct vg_fn_app *a)
{
    if (!a)
        return;
    if (a->L)
        lua_close(a->L);
    vg__fn_kv_app_fini(a);
    vg__fn_bus_app_fini(a);
    small_lists_free(a);
    if (a->own_shared)
        vg_fn_shared_destroy(a->own_shared);
    free(a->route_ref);
    free(a->sub_ref);
    free(a->free_threads);
    free(a);
}

/* ---- calls ------------------------------------------------------------------------------------------ */

static const char *kill_reason(enum vg__fn_kill k)
{
    switch (k) {
    case VG__FN_KILL_MEMORY:
        return "limits.lua_memory";
    case VG__FN_KILL_INSTRUCTIONS:
        return "limits.lua_instructions";
    case VG__FN_KILL_TIMEOUT:
        return "limits.lua_timeout";
    case VG__FN_KILL_NONE:
        break;
    }
    return "";
}

static void log_call(struct vg__fn_call *c, enum vg_log_level lvl, const char *msg, const char *k, const char *v)
{
    char id[80], tid[VG_TRACE_ID_HEX + 1] = "";
    snprintf(id, sizeof(id), "%.*s", (int)(c->reqid.len > 64 ? 64 : c->reqid.len), c->reqid.base);
    call_trace_id(c, tid);
    vg_log(lvl, msg, "app", c->app->conf->name, "function", c->fname, "request_id", id, "trace_id", tid, k, v, NULL);
}

/* Handlers and on_request answer errors themselves: nothing went out yet. */
static void handler_fail(struct vg__fn_call *c, int status, const char *body)
{
    h2o_req_t *req = c->req;
    req->res.status = status;
    req->res.reason = vg_http_reason_phrase(status);
    req->res.content_length = strlen(body);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; charset=utf-8"));
    h2o_send_inline(req, body, strlen(body));
    c->done(c->data, VG_FN_ANSWERED);
}

/* The coroutine is done with: reuse it when it ended cleanly. */
void vg__fn_release_thread(struct vg__fn_call *c, bool reusable)
{
    struct vg_fn_app *a = c->app;
    lua_State *co = c->co;
    if (!co)
        return;
    void *ud = lua_touserdata(co, 1); /* the request object stays at the bottom of the stack */
    if (ud)
        *(struct vg__fn_call **)ud = NULL; /* a script that kept it finds the request over */
    c->co = NULL;
    if (reusable && a->n_free_threads < MAX_FREE_THREADS) {
        lua_settop(co, 0);
        if (a->lazy_hook)
            lua_sethook(co, NULL, 0, 0);
        else
            lua_sethook(co, hook, LUA_MASKCOUNT, HOOK_EVERY); /* a fresh count */
        if (!a->free_threads)
            a->free_threads = vg_xmalloc(MAX_FREE_THREADS * sizeof(int));
        a->free_threads[a->n_free_threads++] = c->co_ref;
        return;
    }
    luaL_unref(a->L, LUA_REGISTRYINDEX, c->co_ref);
}

const char *const VG_FN_LIMIT_NAMES[VG_FN_LIMITS] = {"lua_memory", "lua_instructions", "lua_timeout"};

static void finish_killed(struct vg__fn_call *c)
{
    struct vg_obs_counter *m = c->app->env.limits[c->kill - VG__FN_KILL_MEMORY]; /* the same order */
    if (m)
        vg_obs_counter_add(m, 1);
    log_call(c, VG_LOG_WARN, "function stopped at a limit", "limit", kill_reason(c->kill));
    vg__fn_release_thread(c, false);
    if (c->kill == VG__FN_KILL_MEMORY)
        lua_gc(c->app->L, LUA_GCCOLLECT); /* give the memory back to the other requests now */
    char body[96];
    snprintf(body, sizeof(body), "function stopped: %s\n", kill_reason(c->kill));
    c->ops->fail(c, 503, body);
}

static void finish_error(struct vg__fn_call *c)
{
    lua_State *L = c->app->L;
    const char *msg = lua_tostring(c->co, -1);
    luaL_traceback(L, c->co, msg ? msg : "(error object is not a string)", 0);
    const char *tb = lua_tostring(L, -1);
    log_call(c, VG_LOG_ERROR, "function failed", "error", tb);
    if (c->app->env.errors)
        vg_obs_counter_add(c->app->env.errors, 1);
    const char *body = "function failed (see the node log)\n";
    if (c->app->env.dev && c->req) {
        size_t n = strlen(tb);
        char *b = h2o_mem_alloc_pool(&c->req->pool, n + 2);
        memcpy(b, tb, n);
        memcpy(b + n, "\n", 2);
        body = b;
    }
    lua_pop(L, 1);
    vg__fn_release_thread(c, false);
    c->ops->fail(c, 500, body);
}

void vg__fn_call_bad_result(struct vg__fn_call *c, const char *why)
{
    lua_pushfstring(c->co, "bad result: %s", why);
    finish_error(c);
}

/* The coroutine returned: its first result (above the request object at
 * index 1; lua_resume counts that one as a result too) is the response or
 * nil. */
static void handler_result(struct vg__fn_call *c)
{
    lua_State *co = c->co;
    int idx = 2;
    if (lua_gettop(co) < idx || lua_isnil(co, idx)) {
        vg__fn_release_thread(c, true);
        c->done(c->data, VG_FN_PASS);
        return;
    }
    const char *why = NULL;
    if (!lua_istable(co, idx) || !vg__fn_response_send(co, idx, c->req, &c->body_ref, &why)) {
        vg__fn_call_bad_result(c, why ? why : "expected a response table {status=, headers=, body=} or nil");
        return;
    }
    vg__fn_release_thread(c, true);
    c->done(c->data, VG_FN_ANSWERED);
}

static const struct vg__fn_call_ops handler_ops = {.result = handler_result, .fail = handler_fail};

static void finish(struct vg__fn_call *c)
{
    c->finished = true;
    vg__fn_call_stop_timer(c);
    finish_killed(c);
}

static void resume(struct vg__fn_call *c, int nargs)
{
    struct vg_fn_app *a = c->app;
    int nres = 0;
    if (a->lazy_hook && !vg__fn_tick_ready())
        hook_now(c->co);
    struct vg__fn_call *outer = vg__fn_running;
    a->current = c;
    vg__fn_running = c;
    int st = lua_resume(c->co, a->L, nargs, &nres);
    vg__fn_running = outer;
    a->current = NULL;
    if (c->kill) {
        finish(c);
        return;
    }
    if (st == LUA_YIELD) {
        if (c->waiting)
            return; /* an async call of ours resumes it */
        lua_pushstring(c->co, "the function yielded outside an async verge call");
        c->finished = true;
        finish_error(c);
        return;
    }
    c->finished = true;
    if (st == LUA_OK) {
        c->ops->result(c);
        return;
    }
    finish_error(c);
}

/* The request ended (normally, or the client left while the call waited). */
static void on_call_dispose(void *p)
{
    struct vg__fn_call *c = p;
    vg__fn_call_stop_timer(c);
    vg__fn_fetch_abort(c);
    vg__fn_kv_abort(c);
    vg__fn_bus_abort(c);
    if (c->body)
        h2o_buffer_dispose(&c->body);
    if (c->body_ref != LUA_NOREF) /* the response is out: the request's pool is going */
        luaL_unref(c->app->L, LUA_REGISTRYINDEX, c->body_ref);
    if (!c->finished)
        vg__fn_release_thread(c, false); /* abandoned mid-way: the collector takes the coroutine */
}

static lua_State *take_thread(struct vg_fn_app *a, int *ref)
{
    if (a->n_free_threads) {
        *ref = a->free_threads[--a->n_free_threads];
        lua_rawgeti(a->L, LUA_REGISTRYINDEX, *ref);
        lua_State *co = lua_tothread(a->L, -1);
        lua_pop(a->L, 1);
        return co;
    }
    lua_State *co = lua_newthread(a->L);
    *ref = luaL_ref(a->L, LUA_REGISTRYINDEX);
    return co;
}

struct vg_fn_req {
    struct vg_fn_app *app;
    int ud_ref; /* the request object, in the registry while the request lives */
};

static void on_fn_req_dispose(void *p)
{
    struct vg_fn_req *fr = p;
    lua_State *L = fr->app->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fr->ud_ref);
    *(struct vg__fn_call **)lua_touserdata(L, -1) = NULL;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, fr->ud_ref);
}

/* Pushes the request's object onto co (creating it on the first call). */
static void push_request(struct vg__fn_call *c, struct vg_fn_req **slot)
{
    struct vg_fn_app *a = c->app;
    if (a->on_request_ref == LUA_NOREF && a->on_response_ref == LUA_NOREF) {
        vg__fn_request_push(c->co, c); /* the only call of its request: nothing to share */
        return;
    }
    if (!*slot) {
        struct vg_fn_req *fr = h2o_mem_alloc_shared(&c->req->pool, sizeof(*fr), on_fn_req_dispose);
        fr->app = a;
        vg__fn_request_push(c->co, c);
        lua_pushvalue(c->co, -1);
        fr->ud_ref = luaL_ref(c->co, LUA_REGISTRYINDEX);
        *slot = fr;
        return;
    }
    lua_rawgeti(c->co, LUA_REGISTRYINDEX, (*slot)->ud_ref);
    *(struct vg__fn_call **)lua_touserdata(c->co, -1) = c;
}

struct vg__fn_call *vg__fn_call_alloc(struct vg_fn_app *a, const char *fname, h2o_mem_pool_t *pool, h2o_req_t *req,
                                      h2o_iovec_t reqid, const struct vg__fn_call_ops *ops, vg_fn_done_cb done,
                                      void *data)
{
    struct vg__fn_call *c = h2o_mem_alloc_shared(pool, sizeof(*c), on_call_dispose);
    *c = (struct vg__fn_call){.app = a,
                              .req = req,
                              .pool = pool,
                              .reqid = reqid,
                              .fname = fname,
                              .ops = ops,
                              .done = done,
                              .data = data,
                              .body_ref = LUA_NOREF};
    c->deadline_ms = vg_now_ms() + a->conf->limits.lua_timeout_ms;
    a->building = true;
    c->co = take_thread(a, &c->co_ref);
    VG_AN(lua_checkstack(c->co, 8));
    return c;
}

void vg__fn_call_push_fn(struct vg__fn_call *c, int ref)
{
    VG_ASSERT(ref != LUA_NOREF && lua_gettop(c->co) == 1);
    lua_rawgeti(c->co, LUA_REGISTRYINDEX, ref);
    lua_pushvalue(c->co, 1);
    c->app->building = false;
}

struct vg__fn_call *vg__fn_call_new(struct vg_fn_app *a, int ref, const char *fname, h2o_req_t *req, h2o_iovec_t reqid,
                                    struct vg_fn_req **shared, const struct vg__fn_call_ops *ops, vg_fn_done_cb done,
                                    void *data)
{
    VG_ASSERT(ref != LUA_NOREF);
    struct vg__fn_call *c = vg__fn_call_alloc(a, fname, &req->pool, req, reqid, ops, done, data);
    push_request(c, shared); /* index 1: stays for the call's life */
    vg__fn_call_push_fn(c, ref);
    return c;
}

void vg__fn_call_start(struct vg__fn_call *c, int nargs)
{
    c->app->building = false;
    resume(c, nargs);
}

void vg_fn_run(struct vg_fn_app *a, int which, h2o_req_t *req, h2o_iovec_t reqid, struct vg_fn_req **shared,
               vg_fn_done_cb done, void *data)
{
    const struct vg_conf_app *conf = a->conf;
    int ref = which == VG_FN_ON_REQUEST ? a->on_request_ref : a->route_ref[which];
    const char *fname = which == VG_FN_ON_REQUEST ? conf->on_request.func : conf->routes[which].u.handler.func;
    struct vg__fn_call *c = vg__fn_call_new(a, ref, fname, req, reqid, shared, &handler_ops, done, data);
    vg__fn_call_start(c, 1);
}

/* "edge.lua:12: message" (Lua's shape) -> file:line:col; anything else is
 * reported against the manifest. */
static void lua_error_to_conf(const struct vg_conf_app *conf, const char *msg, struct vg_conf_error *err)
{
    const char *c1 = strchr(msg, ':');
    char *end = NULL;
    long line = c1 ? strtol(c1 + 1, &end, 10) : 0;
    if (c1 && end && end != c1 + 1 && *end == ':' && line > 0) {
        snprintf(err->file, sizeof(err->file), "%s/%.*s", conf->dir, (int)(c1 - msg), msg);
        err->line = (int)line;
        err->col = 1;
        snprintf(err->msg, sizeof(err->msg), "%.*s", (int)sizeof(err->msg) - 1, end[1] == ' ' ? end + 2 : end + 1);
        return;
    }
    snprintf(err->file, sizeof(err->file), "%s", conf->manifest_path);
    err->line = 1;
    err->col = 1;
    snprintf(err->msg, sizeof(err->msg), "%.*s", (int)sizeof(err->msg) - 1, msg);
}

int vg_fn_check(const struct vg_conf_app *conf, struct vg_conf_error *err)
{
    if (!vg_fn_app_needed(conf))
        return 0;
    char msg[1024];
    struct vg_fn_env env = {0};
    struct vg_fn_app *a = vg_fn_app_create(conf, &env, msg, sizeof(msg));
    if (!a) {
        const char *m = msg;
        size_t ml = strlen(conf->manifest_path);
        if (strncmp(m, conf->manifest_path, ml) == 0 && m[ml] == ':') { /* already file:line:col */
            unsigned line = 0, col = 0;
            int used = 0;
            if (sscanf(m + ml + 1, "%u:%u: %n", &line, &col, &used) == 2 && used > 0) {
                snprintf(err->file, sizeof(err->file), "%s", conf->manifest_path);
                err->line = (int)line;
                err->col = (int)col;
                snprintf(err->msg, sizeof(err->msg), "%.*s", (int)sizeof(err->msg) - 1, m + ml + 1 + used);
                return VG_ECONF;
            }
        }
        lua_error_to_conf(conf, m, err);
        return VG_ECONF;
    }
    vg_fn_app_destroy(a);
    return 0;
}
