/* conf internals shared by the conf_*.c files. Nothing here is visible to
 * other modules: they only ever see the model in conf.h.
 *
 * Pipeline: conf_load.c reads the bytes, conf_yaml.c turns libfyaml events
 * into a small position-carrying tree (enforcing the limits on untrusted
 * input while it builds), and conf_app.c / conf_origin.c / conf_route.c
 * walk that tree into the model, reporting the first error found. */
#ifndef VG_CONF_INT_H
#define VG_CONF_INT_H

#include "conf/conf.h"

/* Limits on untrusted input: no manifest can make the loader use unbounded
 * memory, time or stack. */
#define VG__CONF_MAX_BYTES (1u << 20) /* whole manifest */
#define VG__CONF_MAX_DEPTH 32         /* nested collections, top mapping = 1 */
#define VG__CONF_MAX_SCALAR 4096      /* bytes in one scalar */
#define VG__CONF_MAX_ITEMS 1000       /* entries in one list or mapping */

/* Every allocation of a model lives on one pool so that a single call frees
 * it all, on success (vg_conf_app_destroy) and on any error path alike.
 * Each allocation is its own malloc so that ASan sees overflows exactly. */
struct vg__conf_blk;
struct vg__conf_pool {
    struct vg__conf_blk *head;
};

void *vg__conf_alloc(struct vg__conf_pool *p, size_t n);                  /* zeroed; aborts on OOM */
void *vg__conf_alloc_array(struct vg__conf_pool *p, size_t n, size_t sz); /* zeroed */
char *vg__conf_strndup(struct vg__conf_pool *p, const char *s, size_t n);
char *vg__conf_strdup(struct vg__conf_pool *p, const char *s);
void vg__conf_pool_release(struct vg__conf_pool *p); /* frees every allocation; the pool is empty after */

/* The YAML tree. A null value ("key:", "~", "null") is its own type so the
 * schema can say "got nothing" instead of guessing. Mappings keep keys and
 * values interleaved in kids: key0, value0, key1, value1, ... */
enum vg__conf_node_type {
    VG__CONF_NODE_NULL,
    VG__CONF_NODE_SCALAR,
    VG__CONF_NODE_SEQ,
    VG__CONF_NODE_MAP,
};

struct vg__conf_node {
    enum vg__conf_node_type type;
    int line, col;   /* 1-based */
    const char *str; /* scalars: NUL-terminated, no embedded NUL; else NULL */
    size_t len;
    struct vg__conf_node **kids;
    size_t n_kids;              /* for a mapping: 2 * number of pairs */
    struct vg__conf_node *next; /* build-time sibling link only */
};

struct vg__conf_ld {
    struct vg__conf_pool *pool; /* the model's pool (owned by the app) */
    struct vg__conf_pool tmp;   /* YAML tree + scratch, released after loading */
    struct vg_conf_app *app;
    const char *file; /* name used in error messages */
    struct vg_conf_error *err;
    bool failed; /* only the first error is kept */
    /* Routes name their origin before or after origins: appear, so proxy
     * targets are resolved once the whole document has been read. */
    struct vg__conf_proxy_ref *proxy_refs; /* one per route, tmp pool */
    size_t origins_cap;                    /* room in app->origins */
    const struct vg__conf_node *placement; /* checked once the whole manifest is read */
};

/* Records the first error at node n (NULL: no position) and returns
 * VG_ECONF, so callers can write `return vg__conf_fail(...)`. */
int vg__conf_fail(struct vg__conf_ld *ld, const struct vg__conf_node *n, const char *fmt, ...) VG_PRINTF(3, 4);
int vg__conf_fail_at(struct vg__conf_ld *ld, int line, int col, const char *fmt, ...) VG_PRINTF(4, 5);

/* conf_yaml.c: parses yaml into *root (on ld->tmp). */
int vg__conf_yaml_parse(struct vg__conf_ld *ld, const char *yaml, size_t len, struct vg__conf_node **root);

/* A mapping key the schema accepts, and how its value is read. obj is
 * whatever the caller passed to vg__conf_map_walk. */
typedef int (*vg__conf_parse_fn)(struct vg__conf_ld *ld, const struct vg__conf_node *key,
                                 const struct vg__conf_node *val, void *obj);
struct vg__conf_key {
    const char *name;
    vg__conf_parse_fn parse;
    bool required;
};

/* Checks that n is a mapping of known, unique, string keys (unknown keys get
 * a "did you mean" among keys), that required keys are present, then calls
 * each key's parse in document order. what names the mapping in messages. */
int vg__conf_map_walk(struct vg__conf_ld *ld, const struct vg__conf_node *n, const char *what,
                      const struct vg__conf_key *keys, size_t n_keys, void *obj);
/* The first half of vg__conf_map_walk alone (for callers that check the
 * shape of the mapping before reading values), and the second half. */
int vg__conf_map_check(struct vg__conf_ld *ld, const struct vg__conf_node *n, const char *what,
                       const struct vg__conf_key *keys, size_t n_keys);
int vg__conf_map_parse(struct vg__conf_ld *ld, const struct vg__conf_node *n, const struct vg__conf_key *keys,
                       size_t n_keys, void *obj);
const struct vg__conf_node *vg__conf_map_get(const struct vg__conf_node *map, const char *key);

/* Best candidate within edit distance 2 of s, or NULL. */
const char *vg__conf_suggest(const char *s, const char *const *cands, size_t n);

/* "a list", "a mapping", "a string 'x'", "nothing": for "got ..." messages. */
const char *vg__conf_node_kind(const struct vg__conf_node *n);
/* Printable, clipped copy of s for messages (control bytes escaped). */
const char *vg__conf_show(const char *s, char *buf, size_t cap);

/* A value that may be one item or a list of them: returns the items. */
int vg__conf_list(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                  bool allow_scalar, struct vg__conf_node *const **items, size_t *n);

/* Typed scalar readers: each fails with "expected ... for 'key', got ...". */
int vg__conf_want_scalar(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         const char *expected);
int vg__conf_want_str(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      char **out);
int vg__conf_want_uint(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       uint64_t min, uint64_t max, uint64_t *out);
int vg__conf_want_u32(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                      uint32_t min, uint32_t max, uint32_t *out);
int vg__conf_want_duration(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           uint64_t min_ms, uint64_t max_ms, uint64_t *out);
int vg__conf_want_size(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       uint64_t min, uint64_t max, uint64_t *out);
int vg__conf_want_bool(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       bool *out);
int vg__conf_want_enum(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       const char *const *names, size_t n, int *out);

/* URL paths. */
enum {
    VG__CONF_PATH_QUERY = 1 << 0, /* '?' allowed (health checks) */
    VG__CONF_PATH_GLOB = 1 << 1,  /* '*' and '**' segments allowed */
};
int vg__conf_want_path(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                       unsigned flags, char **out);
/* Host names as matched against Host: "api.example.com", "*", "*.example.com"; stored lowercase. */
int vg__conf_want_host_pattern(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                               char **out);
/* A file system path relative to the app dir, resolved with realpath(3):
 * must exist and be a directory (want_dir) or a regular file. */
int vg__conf_want_fs_path(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          bool want_dir, char **out);
/* "file.lua:name" (or "file.lua", meaning `handle`): a Lua file inside the
 * app directory and a function name. */
int vg__conf_want_fnref(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        struct vg_conf_fnref *out);
/* "host:port", "[v6]:port" or ":port" (empty host only if allow_empty_host);
 * host returned without brackets. */
int vg__conf_split_hostport(const char *s, bool allow_empty_host, bool need_port, const char **host, size_t *host_len,
                            uint16_t *port, const char **why);

/* Durations are capped so timers never overflow; one day is far above any
 * sensible timeout. */
#define VG__CONF_MAX_DURATION_MS (24ull * 3600 * 1000)

/* conf_app.c */
int vg__conf_app_parse(struct vg__conf_ld *ld, const struct vg__conf_node *root);

/* conf_origin.c */
int vg__conf_origins_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj);
int vg__conf_server_from_url(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             struct vg_conf_server *srv);
void vg__conf_origin_defaults(struct vg__conf_ld *ld, struct vg_conf_origin *o);
/* Makes room for n more origins, so that implicit ones never move the array
 * more than once. */
void vg__conf_origins_reserve(struct vg__conf_ld *ld, size_t n);
/* Index of the origin for an inline proxy URL, creating it on first use. */
size_t vg__conf_origin_implicit(struct vg__conf_ld *ld, const struct vg_conf_server *srv, int line, int col);

/* RFC 9110 token: what a header or cookie name may contain. */
bool vg__conf_valid_token(const char *s);

/* conf_cache.c: a route's `cache:` value (true/on, false/off or a mapping). */
void vg__conf_cache_defaults(struct vg_conf_cache *c);
int vg__conf_cache_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                         struct vg_conf_cache *c);

/* conf_rollout.c: the `rollout:` section. */
int vg__conf_rollout_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                           void *obj);

/* conf_sub.c: the `subscriptions:` section. */
int vg__conf_subs_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                        void *obj);

/* conf_placement.c: the `placement:` section, and its checks against the
 * bundled locations once the app's name is known. */
int vg__conf_placement_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                             void *obj);
int vg__conf_placement_check(struct vg__conf_ld *ld);

/* conf_route.c */
int vg__conf_routes_parse(struct vg__conf_ld *ld, const struct vg__conf_node *key, const struct vg__conf_node *val,
                          void *obj);
int vg__conf_routes_resolve(struct vg__conf_ld *ld);

#endif
