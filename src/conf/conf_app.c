/* The top level of verge.yaml: name, hosts, listen, limits, and the
 * dispatch to origins and routes. */
#include "conf/conf_int.h"

#include <string.h>

static bool valid_app_name(const char *s, size_t len)
{
    if (len < 1 || len > VG_CONF_NAME_MAX || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static int parse_name(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      void *obj)
{
    const char *what = "an app name of lowercase letters, digits and '-' (1 to 63, not starting with '-')";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    if (!valid_app_name(val->str, val->len)) {
        char shown[80];
        return vg__conf_fail(ld, val, "expected %s for 'name', got '%s'", what,
                             vg__conf_show(val->str, shown, sizeof(shown)));
    }
    ld->app->name = vg__conf_strndup(ld->pool, val->str, val->len);
    return 0;
}

static int parse_hosts(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       void *obj)
{
    struct vg__conf_node *const *items;
    size_t n;
    int rc = vg__conf_list(ld, key, val, true, &items, &n);
    if (rc)
        return rc;
    struct vg_conf_app *app = ld->app;
    app->hosts = vg__conf_alloc_array(ld->pool, n, sizeof(*app->hosts));
    for (size_t i = 0; i < n; i++, app->n_hosts++)
        if ((rc = vg__conf_want_host_pattern(ld, key, items[i], &app->hosts[i])))
            return rc;
    return 0;
}

/* --- listen --------------------------------------------------------------- */

static int parse_addr(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      void *obj)
{
    struct vg_conf_listen *l = obj;
    const char *what = "an address like 127.0.0.1:8080, [::1]:8443 or :8080";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    const char *host, *why;
    size_t hlen;
    uint16_t port;
    char shown[80];
    if (vg__conf_split_hostport(val->str, true, true, &host, &hlen, &port, &why) != 0) {
        return vg__conf_fail(ld, val, "expected %s for '%s', got '%s' (%s)", what, key->str,
                             vg__conf_show(val->str, shown, sizeof(shown)), why);
    }
    for (size_t i = 0; i < ld->app->n_listen; i++)
        if (strcmp(ld->app->listen[i].addr, val->str) == 0)
            return vg__conf_fail(ld, val, "duplicate listen address '%s'",
                                 vg__conf_show(val->str, shown, sizeof(shown)));
    l->addr = vg__conf_strndup(ld->pool, val->str, val->len);
    return 0;
}

static int parse_cert(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      void *obj)
{
    return vg__conf_want_fs_path(ld, key, val, false, &((struct vg_conf_listen *)obj)->tls_cert);
}

static int parse_key(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    return vg__conf_want_fs_path(ld, key, val, false, &((struct vg_conf_listen *)obj)->tls_key);
}

static int parse_tls(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"cert", parse_cert, true},
        {"key", parse_key, true},
    };
    return vg__conf_map_walk(ld, val, "'tls'", keys, VG_ARRAY_LEN(keys), obj);
}

static int parse_listen_item(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             struct vg_conf_listen *l)
{
    static const struct vg__conf_key keys[] = {
        {"addr", parse_addr, true},
        {"tls", parse_tls, false},
    };
    if (val->type == VG__CONF_NODE_SCALAR)
        return parse_addr(ld, key, val, l);
    if (val->type != VG__CONF_NODE_MAP)
        return vg__conf_fail(ld, val, "expected an address or a mapping with 'addr' in 'listen', got %s",
                             vg__conf_node_kind(val));
    return vg__conf_map_walk(ld, val, "a 'listen' entry", keys, VG_ARRAY_LEN(keys), l);
}

static int parse_listen(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    struct vg__conf_node *const *items;
    size_t n;
    int rc = vg__conf_list(ld, key, val, true, &items, &n);
    if (rc)
        return rc;
    struct vg_conf_app *app = ld->app;
    app->listen = vg__conf_alloc_array(ld->pool, n, sizeof(*app->listen));
    for (size_t i = 0; i < n; i++, app->n_listen++)
        if ((rc = parse_listen_item(ld, key, items[i], &app->listen[i])))
            return rc;
    return 0;
}

/* --- limits --------------------------------------------------------------- */

static int parse_header_size(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             void *obj)
{
    return vg__conf_want_size(ld, key, val, 1u << 10, VG_CONF_HEADER_SIZE_MAX, &ld->app->limits.header_size);
}

static int parse_body_size(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return vg__conf_want_size(ld, key, val, 0, VG_CONF_BODY_SIZE_MAX, &ld->app->limits.body_size);
}

static int parse_header_timeout(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                const struct vg__conf_node *val, void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS, &ld->app->limits.header_timeout_ms);
}

static int parse_idle_timeout(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                              void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS, &ld->app->limits.idle_timeout_ms);
}

static int parse_max_connections(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                 const struct vg__conf_node *val, void *obj)
{
    return vg__conf_want_uint(ld, key, val, 1, 1000000, &ld->app->limits.max_connections);
}

static int parse_lua_memory(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                            void *obj)
{
    return vg__conf_want_size(ld, key, val, 1u << 20, 4ull << 30, &ld->app->limits.lua_memory);
}

static int parse_lua_instructions(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                  const struct vg__conf_node *val, void *obj)
{
    return vg__conf_want_uint(ld, key, val, 1000, 1ull << 40, &ld->app->limits.lua_instructions);
}

static int parse_lua_timeout(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS, &ld->app->limits.lua_timeout_ms);
}

static int parse_kv_global_size(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                const struct vg__conf_node *val, void *obj)
{
    return vg__conf_want_size(ld, key, val, VG_CONF_KV_GLOBAL_SIZE_MIN, VG_CONF_KV_GLOBAL_SIZE_MAX,
                              &ld->app->limits.kv_global_size);
}

static int parse_limits(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"header_size", parse_header_size, false},           {"body_size", parse_body_size, false},
        {"header_timeout", parse_header_timeout, false},     {"idle_timeout", parse_idle_timeout, false},
        {"max_connections", parse_max_connections, false},   {"lua_memory", parse_lua_memory, false},
        {"lua_instructions", parse_lua_instructions, false}, {"lua_timeout", parse_lua_timeout, false},
        {"kv_global_size", parse_kv_global_size, false},
    };
    return vg__conf_map_walk(ld, val, "'limits'", keys, VG_ARRAY_LEN(keys), NULL);
}

void vg_conf_limits_default(struct vg_conf_limits *l)
{
    l->header_size = 16u << 10;
    l->body_size = 16u << 20;
    l->header_timeout_ms = 10000;
    l->idle_timeout_ms = 60000;
    l->max_connections = 10000;
    l->lua_memory = 64u << 20;
    l->lua_instructions = 100000000;
    l->lua_timeout_ms = 30000;
    l->kv_global_size = 64u << 20;
}

/* --- hooks ---------------------------------------------------------------- */

static int parse_on_request(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                            void *obj)
{
    return vg__conf_want_fnref(ld, key, val, &ld->app->on_request);
}

static int parse_on_response(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             void *obj)
{
    return vg__conf_want_fnref(ld, key, val, &ld->app->on_response);
}

static int parse_hooks(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"on_request", parse_on_request, false},
        {"on_response", parse_on_response, false},
    };
    return vg__conf_map_walk(ld, val, "'hooks'", keys, VG_ARRAY_LEN(keys), NULL);
}

int vg__conf_app_parse(struct vg__conf_ld *ld, const struct vg__conf_node *root)
{
    static const struct vg__conf_key keys[] = {
        {"name", parse_name, true},
        {"hosts", parse_hosts, false},
        {"listen", parse_listen, false},
        {"limits", parse_limits, false},
        {"hooks", parse_hooks, false},
        {"origins", vg__conf_origins_parse, false},
        {"routes", vg__conf_routes_parse, true},
        {"rollout", vg__conf_rollout_parse, false},
        {"subscriptions", vg__conf_subs_parse, false},
        {"placement", vg__conf_placement_parse, false},
    };
    vg_conf_limits_default(&ld->app->limits);
    vg_conf_rollout_default(&ld->app->rollout);
    vg_conf_placement_default(&ld->app->placement);
    int rc = vg__conf_map_walk(ld, root, "the manifest", keys, VG_ARRAY_LEN(keys), NULL);
    if (rc == 0)
        rc = vg__conf_routes_resolve(ld);
    return rc ? rc : vg__conf_placement_check(ld);
}
