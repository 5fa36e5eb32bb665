/* routes: what to match (path/exact/glob, host, methods) and what to do
 * (static, proxy, respond, redirect). */
#include "conf/conf_int.h"

#include <ctype.h>
#include <string.h>

/* A proxy target as written; resolved once every origin is known. */
struct vg__conf_proxy_ref {
    const struct vg__conf_node *val; /* NULL: the route does not proxy */
    bool is_url;
    struct vg_conf_server srv; /* parsed inline URL when is_url */
};

struct route_st {
    struct vg_conf_route *r;
    struct vg__conf_proxy_ref *ref;
};

static const char *const method_names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};

uint32_t vg_conf_method_from_str(const char *m, size_t len)
{
    /* Methods are case-sensitive on the wire (RFC 9110); the manifest
     * uppercases before asking. */
    for (size_t i = 0; i < VG_ARRAY_LEN(method_names); i++)
        if (len == strlen(method_names[i]) && memcmp(m, method_names[i], len) == 0)
            return 1u << i;
    return 0;
}

/* --- matching ------------------------------------------------------------- */

static int parse_match(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       struct route_st *st, enum vg_conf_match_kind kind)
{
    st->r->match = kind;
    return vg__conf_want_path(ld, key, val, kind == VG_CONF_MATCH_GLOB ? VG__CONF_PATH_GLOB : 0, &st->r->path);
}

static int parse_path(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      void *obj)
{
    return parse_match(ld, key, val, obj, VG_CONF_MATCH_PREFIX);
}

static int parse_exact(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       void *obj)
{
    return parse_match(ld, key, val, obj, VG_CONF_MATCH_EXACT);
}

static int parse_glob(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      void *obj)
{
    return parse_match(ld, key, val, obj, VG_CONF_MATCH_GLOB);
}

static int parse_host(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      void *obj)
{
    return vg__conf_want_host_pattern(ld, key, val, &((struct route_st *)obj)->r->host);
}

static int parse_method(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        uint32_t *mask)
{
    char up[16], shown[80];
    int rc = vg__conf_want_scalar(ld, key, val, "an HTTP method like GET");
    if (rc)
        return rc;
    size_t len = val->len < sizeof(up) - 1 ? val->len : sizeof(up) - 1;
    for (size_t i = 0; i < len; i++)
        up[i] = (char)toupper((unsigned char)val->str[i]);
    up[len] = '\0';
    uint32_t m = val->len == len ? vg_conf_method_from_str(up, len) : 0;
    if (m) {
        *mask |= m;
        return 0;
    }
    const char *s = vg__conf_suggest(up, method_names, VG_ARRAY_LEN(method_names));
    vg__conf_show(val->str, shown, sizeof(shown));
    if (s)
        return vg__conf_fail(ld, val, "unknown method '%s'; did you mean '%s'?", shown, s);
    return vg__conf_fail(ld, val, "unknown method '%s' (expected GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS)",
                         shown);
}

static int parse_methods(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    struct vg_conf_route *r = ((struct route_st *)obj)->r;
    struct vg__conf_node *const *items;
    size_t n;
    int rc = vg__conf_list(ld, key, val, true, &items, &n);
    if (rc)
        return rc;
    if (n == 0)
        return vg__conf_fail(ld, val, "'methods' must list at least one method");
    r->methods = 0;
    for (size_t i = 0; i < n; i++)
        if ((rc = parse_method(ld, key, items[i], &r->methods)))
            return rc;
    return 0;
}

/* --- static --------------------------------------------------------------- */

static int parse_dir(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    return vg__conf_want_fs_path(ld, key, val, true, &((struct vg_conf_route *)obj)->u.static_.dir);
}

static int parse_index(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       void *obj)
{
    struct vg_conf_route *r = obj;
    struct vg__conf_node *const *items;
    size_t n;
    int rc = vg__conf_list(ld, key, val, true, &items, &n);
    if (rc)
        return rc;
    char **index = vg__conf_alloc_array(ld->pool, n + 1, sizeof(*index));
    for (size_t i = 0; i < n; i++) {
        const struct vg__conf_node *it = items[i];
        if ((rc = vg__conf_want_str(ld, key, it, &index[i])))
            return rc;
        /* Index names are looked up inside the served directory: a '/' or
         * '..' would let them point elsewhere. */
        if (!*index[i] || strchr(index[i], '/') || strcmp(index[i], ".") == 0 || strcmp(index[i], "..") == 0)
            return vg__conf_fail(ld, it, "expected a file name like index.html for 'index' (no '/')");
    }
    r->u.static_.index = index;
    return 0;
}

static int parse_static(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"dir", parse_dir, true},
        {"index", parse_index, false},
    };
    struct vg_conf_route *r = ((struct route_st *)obj)->r;
    r->action = VG_CONF_ACTION_STATIC;
    r->u.static_.index = vg__conf_alloc_array(ld->pool, 2, sizeof(char *));
    r->u.static_.index[0] = vg__conf_strdup(ld->pool, "index.html");
    if (val->type == VG__CONF_NODE_MAP)
        return vg__conf_map_walk(ld, val, "'static'", keys, VG_ARRAY_LEN(keys), r);
    return vg__conf_want_fs_path(ld, key, val, true, &r->u.static_.dir);
}

/* --- proxy ---------------------------------------------------------------- */

static int parse_proxy(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       void *obj)
{
    struct route_st *st = obj;
    st->r->action = VG_CONF_ACTION_PROXY;
    int rc = vg__conf_want_scalar(ld, key, val, "an origin name or a URL like http://127.0.0.1:9000");
    if (rc)
        return rc;
    st->ref->val = val;
    st->ref->is_url = strstr(val->str, "://") != NULL;
    return st->ref->is_url ? vg__conf_server_from_url(ld, key, val, &st->ref->srv) : 0;
}

static int parse_strip_prefix(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                              void *obj)
{
    return vg__conf_want_path(ld, key, val, 0, &((struct route_st *)obj)->r->u.proxy.strip_prefix);
}

static int parse_cache(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       void *obj)
{
    return vg__conf_cache_parse(ld, key, val, &((struct route_st *)obj)->r->cache);
}

/* --- respond -------------------------------------------------------------- */

/* Values that end up in response headers: CR or LF would split the header. */
static int want_header_value(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             char **out)
{
    int rc = vg__conf_want_str(ld, key, val, out);
    if (rc)
        return rc;
    if (!**out)
        return vg__conf_fail(ld, val, "'%s' must not be empty", key->str);
    for (const unsigned char *c = (const unsigned char *)*out; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return vg__conf_fail(ld, val, "'%s' must not contain control characters or line breaks", key->str);
    return 0;
}

static int parse_r_status(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          void *obj)
{
    uint64_t v = 0;
    int rc = vg__conf_want_uint(ld, key, val, 100, 599, &v);
    if (rc == 0)
        ((struct vg_conf_route *)obj)->u.respond.status = (int)v;
    return rc;
}

static int parse_r_body(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_str(ld, key, val, &((struct vg_conf_route *)obj)->u.respond.body);
}

static int parse_r_type(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return want_header_value(ld, key, val, &((struct vg_conf_route *)obj)->u.respond.content_type);
}

static int parse_respond(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"status", parse_r_status, false},
        {"body", parse_r_body, false},
        {"content_type", parse_r_type, false},
    };
    struct vg_conf_route *r = ((struct route_st *)obj)->r;
    r->action = VG_CONF_ACTION_RESPOND;
    r->u.respond.status = 200;
    r->u.respond.body = vg__conf_strdup(ld->pool, "");
    r->u.respond.content_type = vg__conf_strdup(ld->pool, "text/plain; charset=utf-8");
    if (val->type == VG__CONF_NODE_MAP)
        return vg__conf_map_walk(ld, val, "'respond'", keys, VG_ARRAY_LEN(keys), r);
    if (val->type != VG__CONF_NODE_SCALAR)
        return vg__conf_fail(ld, val,
                             "expected a body text or a mapping with status, body, content_type for "
                             "'respond', got %s",
                             vg__conf_node_kind(val));
    return vg__conf_want_str(ld, key, val, &r->u.respond.body);
}

/* --- redirect ------------------------------------------------------------- */

static int parse_to(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val, void *obj)
{
    struct vg_conf_route *r = obj;
    int rc = want_header_value(ld, key, val, &r->u.redirect.location);
    if (rc == 0 && strchr(r->u.redirect.location, ' '))
        return vg__conf_fail(ld, val, "a redirect target must not contain spaces (encode them as %%20)");
    return rc;
}

static int parse_rd_status(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    static const char *const allowed[] = {"301", "302", "303", "307", "308"};
    const char *what = "301, 302, 303, 307 or 308";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    for (size_t i = 0; i < VG_ARRAY_LEN(allowed); i++) {
        if (strcmp(val->str, allowed[i]) == 0) {
            ((struct vg_conf_route *)obj)->u.redirect.status = atoi(allowed[i]);
            return 0;
        }
    }
    char shown[80];
    return vg__conf_fail(ld, val, "expected %s for 'status', got '%s'", what,
                         vg__conf_show(val->str, shown, sizeof(shown)));
}

static int parse_redirect(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"to", parse_to, true},
        {"status", parse_rd_status, false},
    };
    struct vg_conf_route *r = ((struct route_st *)obj)->r;
    r->action = VG_CONF_ACTION_REDIRECT;
    r->u.redirect.status = 302;
    if (val->type == VG__CONF_NODE_MAP)
        return vg__conf_map_walk(ld, val, "'redirect'", keys, VG_ARRAY_LEN(keys), r);
    return parse_to(ld, key, val, r);
}

/* --- handler --------------------------------------------------------------- */

static int parse_handler(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    struct vg_conf_route *r = ((struct route_st *)obj)->r;
    r->action = VG_CONF_ACTION_HANDLER;
    return vg__conf_want_fnref(ld, key, val, &r->u.handler);
}

/* --- one route ------------------------------------------------------------ */

static const struct vg__conf_key route_keys[] = {
    {"path", parse_path, false},         {"exact", parse_exact, false},
    {"glob", parse_glob, false},         {"host", parse_host, false},
    {"methods", parse_methods, false},   {"static", parse_static, false},
    {"proxy", parse_proxy, false},       {"respond", parse_respond, false},
    {"redirect", parse_redirect, false}, {"strip_prefix", parse_strip_prefix, false},
    {"handler", parse_handler, false},   {"cache", parse_cache, false},
};

/* Which of names appear as keys of route n: count and the first two. */
static size_t present(const struct vg__conf_node *n, const char *const *names, size_t n_names, const char **two)
{
    size_t count = 0;
    for (size_t i = 0; i < n->n_kids; i += 2)
        for (size_t j = 0; j < n_names; j++)
            if (strcmp(n->kids[i]->str, names[j]) == 0 && count++ < 2)
                two[count - 1] = names[j];
    return count;
}

/* The shape of a route is checked before its values so that "two actions"
 * is reported as such, not as an error inside whichever comes first. */
static int check_shape(struct vg__conf_ld *ld, const struct vg__conf_node *n)
{
    static const char *const matches[] = {"path", "exact", "glob"};
    static const char *const actions[] = {"static", "proxy", "respond", "redirect", "handler"};
    const char *two[2];
    if (present(n, matches, VG_ARRAY_LEN(matches), two) > 1)
        return vg__conf_fail(ld, n, "a route takes one of 'path', 'exact' or 'glob', but this one has '%s' and '%s'",
                             two[0], two[1]);
    size_t n_actions = present(n, actions, VG_ARRAY_LEN(actions), two);
    if (n_actions == 0)
        return vg__conf_fail(ld, n,
                             "a route needs an action: one of 'static', 'proxy', 'respond', 'redirect' or 'handler'");
    if (n_actions > 1)
        return vg__conf_fail(ld, n, "a route takes exactly one action, but this one has '%s' and '%s'", two[0], two[1]);
    /* Checked here, not after parsing: strip_prefix shares the action
     * union. Only proxied responses are cached for now: the other actions
     * answer from memory or disk already. */
    bool proxy = vg__conf_map_get(n, "proxy") != NULL;
    for (size_t i = 0; i < n->n_kids && !proxy; i += 2) {
        const char *k = n->kids[i]->str;
        if (strcmp(k, "strip_prefix") == 0)
            return vg__conf_fail(ld, n->kids[i], "'strip_prefix' only applies to routes with 'proxy'");
        if (strcmp(k, "cache") == 0)
            return vg__conf_fail(ld, n->kids[i], "'cache' only applies to routes with 'proxy' (for now)");
    }
    return 0;
}

static int parse_route(struct vg__conf_ld *ld, const struct vg__conf_node *n, struct vg_conf_route *r,
                       struct vg__conf_proxy_ref *ref)
{
    struct route_st st = {.r = r, .ref = ref};
    int rc = vg__conf_map_check(ld, n, "a route", route_keys, VG_ARRAY_LEN(route_keys));
    if (rc == 0)
        rc = check_shape(ld, n);
    if (rc)
        return rc;
    r->match = VG_CONF_MATCH_PREFIX;
    r->path = vg__conf_strdup(ld->pool, "/");
    r->methods = VG_CONF_METHOD_ALL;
    vg__conf_cache_defaults(&r->cache);
    r->line = n->line;
    r->col = n->col;
    return vg__conf_map_parse(ld, n, route_keys, VG_ARRAY_LEN(route_keys), &st);
}

int vg__conf_routes_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          void *obj)
{
    if (val->type != VG__CONF_NODE_SEQ)
        return vg__conf_fail(ld, val, "expected a list of routes for 'routes', got %s", vg__conf_node_kind(val));
    if (val->n_kids == 0)
        return vg__conf_fail(ld, val, "'routes' must list at least one route");
    struct vg_conf_app *app = ld->app;
    app->routes = vg__conf_alloc_array(ld->pool, val->n_kids, sizeof(*app->routes));
    ld->proxy_refs = vg__conf_alloc_array(&ld->tmp, val->n_kids, sizeof(*ld->proxy_refs));
    for (size_t i = 0; i < val->n_kids; i++, app->n_routes++) {
        int rc = parse_route(ld, val->kids[i], &app->routes[i], &ld->proxy_refs[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* --- proxy targets, once all origins are known ---------------------------- */

static int unknown_origin(struct vg__conf_ld *ld, const struct vg__conf_node *val)
{
    struct vg_conf_app *app = ld->app;
    const char **names = vg__conf_alloc_array(&ld->tmp, app->n_origins + 1, sizeof(*names));
    for (size_t i = 0; i < app->n_origins; i++)
        names[i] = app->origins[i].name;
    const char *s = vg__conf_suggest(val->str, names, app->n_origins);
    char shown[80];
    vg__conf_show(val->str, shown, sizeof(shown));
    if (s)
        return vg__conf_fail(ld, val, "unknown origin '%s'; did you mean '%s'?", shown, s);
    return vg__conf_fail(
        ld, val, "unknown origin '%s': declare it under 'origins:' or use a URL like http://127.0.0.1:9000", shown);
}

static int resolve_named(struct vg__conf_ld *ld, const struct vg__conf_node *val, size_t *idx)
{
    /* Only named origins exist while names are resolved (see below). */
    for (size_t i = 0; i < ld->app->n_origins; i++) {
        if (strcmp(ld->app->origins[i].name, val->str) == 0) {
            *idx = i;
            return 0;
        }
    }
    return unknown_origin(ld, val);
}

int vg__conf_routes_resolve(struct vg__conf_ld *ld)
{
    struct vg_conf_app *app = ld->app;
    size_t n_urls = 0;
    for (size_t i = 0; i < app->n_routes; i++) {
        struct vg__conf_proxy_ref *ref = &ld->proxy_refs[i];
        if (!ref->val)
            continue;
        if (ref->is_url)
            n_urls++;
        else if (resolve_named(ld, ref->val, &app->routes[i].u.proxy.origin))
            return VG_ECONF;
    }
    vg__conf_origins_reserve(ld, n_urls);
    for (size_t i = 0; i < app->n_routes; i++) {
        struct vg__conf_proxy_ref *ref = &ld->proxy_refs[i];
        if (ref->val && ref->is_url)
            app->routes[i].u.proxy.origin = vg__conf_origin_implicit(ld, &ref->srv, ref->val->line, ref->val->col);
    }
    return 0;
}
