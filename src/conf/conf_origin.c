/* origins: named groups of upstream servers, and the implicit origins that
 * inline proxy URLs create. */
#include "conf/conf_int.h"

#include <string.h>

/* Per-origin state that only matters while reading it. */
struct origin_st {
    struct vg_conf_origin *o;
    const struct vg__conf_node *hash_on; /* to check it against balance afterwards */
};

static const char *const balance_names[] = {"round_robin", "least_conn", "hash"};

const char *vg_conf_balance_name(enum vg_conf_balance b)
{
    return (size_t)b < VG_ARRAY_LEN(balance_names) ? balance_names[b] : "unknown";
}

void vg__conf_origin_defaults(struct vg__conf_ld *ld, struct vg_conf_origin *o)
{
    o->balance = VG_CONF_BALANCE_ROUND_ROBIN;
    o->hash_on = VG_CONF_HASH_CLIENT_IP;
    o->health = (struct vg_conf_health){
        .enabled = false,
        .path = vg__conf_strdup(ld->pool, "/"),
        .interval_ms = 2000,
        .timeout_ms = 1000,
        .rise = 2,
        .fall = 3,
        .expect_status_min = 200,
        .expect_status_max = 399,
    };
    o->connect_timeout_ms = 2000;
    o->read_timeout_ms = 30000;
    o->total_timeout_ms = 60000;
    o->keepalive_ms = 30000;
    o->retries = 1;
    o->max_fails = 3;
    o->fail_timeout_ms = 10000;
    o->preserve_host = false;
}

/* --- servers -------------------------------------------------------------- */

static int bad_url(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                   const char *why)
{
    char shown[80];
    return vg__conf_fail(ld, val, "expected an origin URL like http://127.0.0.1:9000 for '%s', got '%s' (%s)", key->str,
                         vg__conf_show(val->str, shown, sizeof(shown)), why);
}

int vg__conf_server_from_url(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             struct vg_conf_server *srv)
{
    int rc = vg__conf_want_scalar(ld, key, val, "an origin URL like http://127.0.0.1:9000");
    if (rc)
        return rc;
    if (strncasecmp(val->str, "https://", 8) == 0)
        return vg__conf_fail(ld, val, "https origins are not supported yet");
    if (strncasecmp(val->str, "http://", 7) != 0)
        return bad_url(ld, key, val, "it must start with http://");
    const char *auth = val->str + 7, *slash = strchr(auth, '/');
    if (slash && slash[1] != '\0')
        return bad_url(ld, key, val, "origin URLs cannot have a path; use strip_prefix on the route");
    char *hostport = vg__conf_strndup(&ld->tmp, auth, slash ? (size_t)(slash - auth) : strlen(auth));
    const char *host, *why;
    size_t hlen;
    if (vg__conf_split_hostport(hostport, false, false, &host, &hlen, &srv->port, &why) != 0)
        return bad_url(ld, key, val, why);
    if (srv->port == 0)
        srv->port = 80;
    srv->url = vg__conf_strndup(ld->pool, val->str, val->len);
    srv->host = vg__conf_strndup(ld->pool, host, hlen);
    srv->weight = 1;
    return 0;
}

static int parse_url(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    struct vg_conf_server *srv = obj;
    uint32_t weight = srv->weight ? srv->weight : 1; /* weight: may come first */
    int rc = vg__conf_server_from_url(ld, key, val, srv);
    srv->weight = weight;
    return rc;
}

static int parse_weight(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_u32(ld, key, val, 1, 100, &((struct vg_conf_server *)obj)->weight);
}

static int parse_server(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        struct vg_conf_server *srv)
{
    static const struct vg__conf_key keys[] = {
        {"url", parse_url, true},
        {"weight", parse_weight, false},
    };
    if (val->type == VG__CONF_NODE_MAP)
        return vg__conf_map_walk(ld, val, "a server", keys, VG_ARRAY_LEN(keys), srv);
    if (val->type != VG__CONF_NODE_SCALAR)
        return vg__conf_fail(ld, val, "expected a URL or a mapping with 'url' in 'servers', got %s",
                             vg__conf_node_kind(val));
    return vg__conf_server_from_url(ld, key, val, srv);
}

static int parse_servers(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    struct vg_conf_origin *o = ((struct origin_st *)obj)->o;
    struct vg__conf_node *const *items;
    size_t n;
    int rc = vg__conf_list(ld, key, val, true, &items, &n);
    if (rc)
        return rc;
    if (n == 0)
        return vg__conf_fail(ld, val, "'servers' of origin '%s' must list at least one server", o->name);
    o->servers = vg__conf_alloc_array(ld->pool, n, sizeof(*o->servers));
    for (size_t i = 0; i < n; i++, o->n_servers++) {
        struct vg_conf_server *s = &o->servers[i];
        if ((rc = parse_server(ld, key, items[i], s)))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (o->servers[j].port == s->port && strcmp(o->servers[j].host, s->host) == 0)
                return vg__conf_fail(ld, items[i], "duplicate server %s:%u in origin '%s'", s->host, s->port, o->name);
    }
    return 0;
}

/* --- balancing ------------------------------------------------------------ */

static int parse_balance(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    int b;
    int rc = vg__conf_want_enum(ld, key, val, balance_names, VG_ARRAY_LEN(balance_names), &b);
    if (rc == 0)
        ((struct origin_st *)obj)->o->balance = (enum vg_conf_balance)b;
    return rc;
}

bool vg__conf_valid_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr("!#$%&'*+-.^_`|~", *s) && !((*s >= '0' && *s <= '9') || ((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z')))
            return false;
    return true;
}

static int parse_hash_on(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    struct origin_st *st = obj;
    const char *what = "client_ip, header:NAME or cookie:NAME";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    const char *s = val->str;
    st->hash_on = val;
    if (strcmp(s, "client_ip") == 0) {
        st->o->hash_on = VG_CONF_HASH_CLIENT_IP;
        return 0;
    }
    const char *name = NULL;
    if (strncmp(s, "header:", 7) == 0) {
        st->o->hash_on = VG_CONF_HASH_HEADER;
        name = s + 7;
    } else if (strncmp(s, "cookie:", 7) == 0) {
        st->o->hash_on = VG_CONF_HASH_COOKIE;
        name = s + 7;
    }
    if (!name || !vg__conf_valid_token(name)) {
        char shown[80];
        return vg__conf_fail(ld, val, "expected %s for 'hash_on', got '%s'", what,
                             vg__conf_show(s, shown, sizeof(shown)));
    }
    st->o->hash_name = vg__conf_strdup(ld->pool, name);
    return 0;
}

/* --- health ----------------------------------------------------------------- */

static int parse_h_path(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_path(ld, key, val, VG__CONF_PATH_QUERY, &((struct vg_conf_health *)obj)->path);
}

static int parse_h_interval(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                            void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS,
                                  &((struct vg_conf_health *)obj)->interval_ms);
}

static int parse_h_timeout(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS,
                                  &((struct vg_conf_health *)obj)->timeout_ms);
}

static int parse_h_rise(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_u32(ld, key, val, 1, 100, &((struct vg_conf_health *)obj)->rise);
}

static int parse_h_fall(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_u32(ld, key, val, 1, 100, &((struct vg_conf_health *)obj)->fall);
}

/* "200-399", "200" or 200. */
static bool parse_status_range(const char *s, uint32_t *lo, uint32_t *hi)
{
    unsigned a, b;
    int used = 0;
    if (sscanf(s, "%3u-%3u%n", &a, &b, &used) == 2 && s[used] == '\0' && strlen(s) == 7) {
        *lo = a;
        *hi = b;
    } else if (sscanf(s, "%3u%n", &a, &used) == 1 && s[used] == '\0' && strlen(s) == 3) {
        *lo = *hi = a;
    } else {
        return false;
    }
    return *lo >= 100 && *hi <= 599 && *lo <= *hi;
}

static int parse_h_expect(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          void *obj)
{
    struct vg_conf_health *h = obj;
    const char *what = "a status or status range like 200-399";
    int rc = vg__conf_want_scalar(ld, key, val, what);
    if (rc)
        return rc;
    if (!parse_status_range(val->str, &h->expect_status_min, &h->expect_status_max)) {
        char shown[80];
        return vg__conf_fail(ld, val, "expected %s (100 to 599) for 'expect', got '%s'", what,
                             vg__conf_show(val->str, shown, sizeof(shown)));
    }
    return 0;
}

static int parse_health(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"path", parse_h_path, false}, {"interval", parse_h_interval, false}, {"timeout", parse_h_timeout, false},
        {"rise", parse_h_rise, false}, {"fall", parse_h_fall, false},         {"expect", parse_h_expect, false},
    };
    struct vg_conf_health *h = &((struct origin_st *)obj)->o->health;
    h->enabled = true;
    return vg__conf_map_walk(ld, val, "'health'", keys, VG_ARRAY_LEN(keys), h);
}

/* --- timeouts, retries, passive checks ------------------------------------ */

static int parse_t_connect(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS,
                                  &((struct vg_conf_origin *)obj)->connect_timeout_ms);
}

static int parse_t_read(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS,
                                  &((struct vg_conf_origin *)obj)->read_timeout_ms);
}

static int parse_t_total(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS,
                                  &((struct vg_conf_origin *)obj)->total_timeout_ms);
}

static int parse_timeouts(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"connect", parse_t_connect, false},
        {"read", parse_t_read, false},
        {"total", parse_t_total, false},
    };
    return vg__conf_map_walk(ld, val, "'timeouts'", keys, VG_ARRAY_LEN(keys), ((struct origin_st *)obj)->o);
}

static int parse_keepalive(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    /* 0 is allowed: it turns upstream connection reuse off. */
    return vg__conf_want_duration(ld, key, val, 0, VG__CONF_MAX_DURATION_MS,
                                  &((struct origin_st *)obj)->o->keepalive_ms);
}

static int parse_retries(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    return vg__conf_want_u32(ld, key, val, 0, 10, &((struct origin_st *)obj)->o->retries);
}

static int parse_max_fails(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return vg__conf_want_u32(ld, key, val, 0, 1000, &((struct vg_conf_origin *)obj)->max_fails);
}

static int parse_fail_timeout(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                              void *obj)
{
    return vg__conf_want_duration(ld, key, val, 1, VG__CONF_MAX_DURATION_MS,
                                  &((struct vg_conf_origin *)obj)->fail_timeout_ms);
}

static int parse_passive(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"max_fails", parse_max_fails, false},
        {"fail_timeout", parse_fail_timeout, false},
    };
    return vg__conf_map_walk(ld, val, "'passive'", keys, VG_ARRAY_LEN(keys), ((struct origin_st *)obj)->o);
}

static int parse_preserve_host(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                               void *obj)
{
    return vg__conf_want_bool(ld, key, val, &((struct origin_st *)obj)->o->preserve_host);
}

/* --- origins -------------------------------------------------------------- */

static int parse_origin(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        struct vg_conf_origin *o)
{
    static const struct vg__conf_key keys[] = {
        {"servers", parse_servers, true},
        {"balance", parse_balance, false},
        {"hash_on", parse_hash_on, false},
        {"health", parse_health, false},
        {"timeouts", parse_timeouts, false},
        {"keepalive", parse_keepalive, false},
        {"retries", parse_retries, false},
        {"passive", parse_passive, false},
        {"preserve_host", parse_preserve_host, false},
    };
    char what[96], shown[80];
    struct origin_st st = {.o = o};
    vg__conf_origin_defaults(ld, o);
    o->name = vg__conf_strndup(ld->pool, key->str, key->len);
    o->line = key->line;
    o->col = key->col;
    snprintf(what, sizeof(what), "origin '%s'", vg__conf_show(key->str, shown, sizeof(shown)));
    int rc = vg__conf_map_walk(ld, val, what, keys, VG_ARRAY_LEN(keys), &st);
    if (rc == 0 && st.hash_on && o->balance != VG_CONF_BALANCE_HASH)
        rc = vg__conf_fail(ld, st.hash_on, "'hash_on' needs 'balance: hash' in origin '%s'", o->name);
    return rc;
}

/* Names are referenced from routes and appear in logs and metrics, so keep
 * them to a safe alphabet; it also keeps them apart from inline URLs. */
static bool valid_origin_name(const char *s, size_t len)
{
    if (len < 1 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr("-_.", s[i]) && !((s[i] >= '0' && s[i] <= '9') || ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z')))
            return false;
    return true;
}

static int check_origin_name(struct vg__conf_ld *ld, const struct vg__conf_node *k, size_t idx)
{
    char shown[80];
    if (k->type != VG__CONF_NODE_SCALAR || !valid_origin_name(k->str, k->len))
        return vg__conf_fail(ld, k, "expected an origin name of letters, digits, '-', '_' or '.' (1 to 63), got %s%s%s",
                             k->str ? "'" : "",
                             k->str ? vg__conf_show(k->str, shown, sizeof(shown)) : vg__conf_node_kind(k),
                             k->str ? "'" : "");
    for (size_t i = 0; i < idx; i++)
        if (strcmp(ld->app->origins[i].name, k->str) == 0)
            return vg__conf_fail(ld, k, "duplicate key '%s' in 'origins' (first given at line %d)", k->str,
                                 ld->app->origins[i].line);
    return 0;
}

int vg__conf_origins_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    if (val->type != VG__CONF_NODE_MAP)
        return vg__conf_fail(ld, val, "expected a mapping of origin names to origins for 'origins', got %s",
                             vg__conf_node_kind(val));
    struct vg_conf_app *app = ld->app;
    size_t n = val->n_kids / 2;
    app->origins = vg__conf_alloc_array(ld->pool, n, sizeof(*app->origins));
    ld->origins_cap = n;
    for (size_t i = 0; i < n; i++) {
        const struct vg__conf_node *k = val->kids[2 * i];
        int rc = check_origin_name(ld, k, i);
        if (rc == 0)
            rc = parse_origin(ld, k, val->kids[2 * i + 1], &app->origins[i]);
        if (rc)
            return rc;
        app->n_origins++;
    }
    return 0;
}

void vg__conf_origins_reserve(struct vg__conf_ld *ld, size_t n)
{
    struct vg_conf_app *app = ld->app;
    if (app->n_origins + n <= ld->origins_cap)
        return;
    struct vg_conf_origin *o = vg__conf_alloc_array(ld->pool, app->n_origins + n, sizeof(*o));
    if (app->n_origins)
        memcpy(o, app->origins, app->n_origins * sizeof(*o));
    app->origins = o; /* the old array stays on the pool until destroy */
    ld->origins_cap = app->n_origins + n;
}

size_t vg__conf_origin_implicit(struct vg__conf_ld *ld, const struct vg_conf_server *srv, int line, int col)
{
    struct vg_conf_app *app = ld->app;
    /* Named origins cannot contain ':', so only implicit ones match a URL. */
    for (size_t i = 0; i < app->n_origins; i++)
        if (strcmp(app->origins[i].name, srv->url) == 0)
            return i;
    VG_ASSERT(app->n_origins < ld->origins_cap);
    struct vg_conf_origin *o = &app->origins[app->n_origins];
    memset(o, 0, sizeof(*o));
    vg__conf_origin_defaults(ld, o);
    o->name = srv->url;
    o->servers = vg__conf_alloc(ld->pool, sizeof(*o->servers));
    o->servers[0] = *srv;
    o->n_servers = 1;
    o->line = line;
    o->col = col;
    return app->n_origins++;
}
