/* A proxy route's `cache:` block: true/on and false/off, or a mapping of
 * freshness rules and key rules (docs/manifest.md, "cache"). */
#include "conf/conf_int.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/* A TTL may be long (static assets are often kept for a year), unlike the
 * timeouts that VG__CONF_MAX_DURATION_MS caps. */
#define MAX_TTL_MS (366ull * 24 * 3600 * 1000)
#define DEFAULT_MAX_OBJECT (8ull << 20)

void vg__conf_cache_defaults(struct vg_conf_cache *c)
{
    *c = (struct vg_conf_cache){
        .enabled = false,
        .honour_origin = true,
        .max_object_size = DEFAULT_MAX_OBJECT,
        .key_host = true,
        .key_query = true,
    };
}

/* --- freshness ----------------------------------------------------------- */

static int parse_ttl(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    uint64_t ms = 0;
    int rc = vg__conf_want_duration(ld, key, val, 0, MAX_TTL_MS, &ms);
    if (rc)
        return rc;
    /* HTTP freshness counts whole seconds; rounding silently would surprise. */
    if (ms % 1000)
        return vg__conf_fail(ld, val, "'ttl' must be a whole number of seconds (like 30s or 5m)");
    ((struct vg_conf_cache *)obj)->ttl_s = ms / 1000;
    return 0;
}

static int parse_honour(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_bool(ld, key, val, &((struct vg_conf_cache *)obj)->honour_origin);
}

static int parse_heuristic(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return vg__conf_want_bool(ld, key, val, &((struct vg_conf_cache *)obj)->heuristic);
}

static int parse_set_cookie(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                            void *obj)
{
    return vg__conf_want_bool(ld, key, val, &((struct vg_conf_cache *)obj)->allow_set_cookie);
}

static int parse_max_object(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                            void *obj)
{
    return vg__conf_want_size(ld, key, val, 1, 1ull << 30, &((struct vg_conf_cache *)obj)->max_object_size);
}

/* --- key ------------------------------------------------------------------- */

/* A list of names (one may be given alone) into a NULL-terminated array;
 * check says whether one is acceptable and why not. */
typedef const char *(*name_check_fn)(const char *name);

static int want_names(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      name_check_fn check, bool lower, char ***out)
{
    struct vg__conf_node *const *items;
    size_t n;
    int rc = vg__conf_list(ld, key, val, true, &items, &n);
    if (rc)
        return rc;
    if (n == 0)
        return vg__conf_fail(ld, val, "'%s' must list at least one name", key->str);
    char **names = vg__conf_alloc_array(ld->pool, n + 1, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        if ((rc = vg__conf_want_str(ld, key, items[i], &names[i])))
            return rc;
        const char *why = check(names[i]);
        if (why) {
            char shown[80];
            return vg__conf_fail(ld, items[i], "invalid name '%s' in '%s': %s",
                                 vg__conf_show(names[i], shown, sizeof(shown)), key->str, why);
        }
        for (char *c = names[i]; lower && *c; c++)
            *c = (char)tolower((unsigned char)*c);
    }
    *out = names;
    return 0;
}

static const char *token_check(const char *name)
{
    return vg__conf_valid_token(name) ? NULL : "expected a token (letters, digits and !#$%&'*+-.^_`|~)";
}

/* Query parameter names as they appear after percent-normalisation; '*'
 * only as the last character (a prefix). */
static const char *param_check(const char *name)
{
    if (!*name)
        return "empty";
    size_t n = strlen(name);
    if (strcspn(name, "&=#? \t") != n)
        return "'&', '=', '#', '?' and spaces cannot appear in a parameter name";
    const char *star = strchr(name, '*');
    if (star && star != name + n - 1)
        return "'*' may only end a name (a prefix match like utm_*)";
    return NULL;
}

static int parse_k_host(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj)
{
    return vg__conf_want_bool(ld, key, val, &((struct vg_conf_cache *)obj)->key_host);
}

static int parse_q_include(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return want_names(ld, key, val, param_check, false, &((struct vg_conf_cache *)obj)->query_include);
}

static int parse_q_exclude(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return want_names(ld, key, val, param_check, false, &((struct vg_conf_cache *)obj)->query_exclude);
}

static int parse_k_query(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"include", parse_q_include, false},
        {"exclude", parse_q_exclude, false},
    };
    struct vg_conf_cache *c = obj;
    if (val->type != VG__CONF_NODE_MAP)
        return vg__conf_want_bool(ld, key, val, &c->key_query);
    int rc = vg__conf_map_check(ld, val, "'query'", keys, VG_ARRAY_LEN(keys));
    if (rc)
        return rc;
    /* include already drops everything else: both at once means one of
     * them is a mistake. */
    if (val->n_kids != 2)
        return vg__conf_fail(ld, val, "'query' takes one of 'include' or 'exclude', not both");
    return vg__conf_map_parse(ld, val, keys, VG_ARRAY_LEN(keys), c);
}

static int parse_k_headers(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    return want_names(ld, key, val, token_check, true, &((struct vg_conf_cache *)obj)->headers);
}

static int parse_k_cookies(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj)
{
    /* Cookie names are case-sensitive (RFC 6265): kept as written. */
    return want_names(ld, key, val, token_check, false, &((struct vg_conf_cache *)obj)->cookies);
}

static int parse_key(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                     void *obj)
{
    static const struct vg__conf_key keys[] = {
        {"host", parse_k_host, false},
        {"query", parse_k_query, false},
        {"headers", parse_k_headers, false},
        {"cookies", parse_k_cookies, false},
    };
    if (val->type != VG__CONF_NODE_MAP)
        return vg__conf_fail(ld, val, "expected a mapping with host, query, headers, cookies for 'key', got %s",
                             vg__conf_node_kind(val));
    return vg__conf_map_walk(ld, val, "'key'", keys, VG_ARRAY_LEN(keys), obj);
}

/* --- the block --------------------------------------------------------------- */

int vg__conf_cache_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         struct vg_conf_cache *c)
{
    static const struct vg__conf_key keys[] = {
        {"ttl", parse_ttl, false},
        {"honour_origin", parse_honour, false},
        {"heuristic", parse_heuristic, false},
        {"allow_set_cookie", parse_set_cookie, false},
        {"max_object_size", parse_max_object, false},
        {"key", parse_key, false},
    };
    vg__conf_cache_defaults(c);
    if (val->type == VG__CONF_NODE_MAP) {
        c->enabled = true;
        return vg__conf_map_walk(ld, val, "'cache'", keys, VG_ARRAY_LEN(keys), c);
    }
    /* on/off are not booleans elsewhere in the manifest; here they read
     * naturally ("cache: on") and cannot mean anything else. */
    if (val->type == VG__CONF_NODE_SCALAR && (strcasecmp(val->str, "true") == 0 || strcasecmp(val->str, "on") == 0)) {
        c->enabled = true;
        return 0;
    }
    if (val->type == VG__CONF_NODE_SCALAR && (strcasecmp(val->str, "false") == 0 || strcasecmp(val->str, "off") == 0))
        return 0;
    char shown[80];
    if (val->type == VG__CONF_NODE_SCALAR)
        return vg__conf_fail(ld, val, "expected true, false or a mapping of cache settings for 'cache', got '%s'",
                             vg__conf_show(val->str, shown, sizeof(shown)));
    return vg__conf_fail(ld, val, "expected true, false or a mapping of cache settings for 'cache', got %s",
                         vg__conf_node_kind(val));
}
