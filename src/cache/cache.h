/* cache: the HTTP cache of a node (RFC 9111, shared cache semantics).
 *
 * Three layers, each usable on its own:
 *   policy  pure functions over headers and times: what may be stored, how
 *           fresh a stored response is, whether it may answer a request,
 *           conditional requests, Vary, invalidation, Cache-Status
 *           (cache_policy.c; no I/O, no clock: `now` is always an argument);
 *   key     the cache key of a request under a route's key rules
 *           (cache_key.c);
 *   store   objects in memory under a byte budget with a scan-resistant
 *           eviction policy, an optional persistent tier (LMDB) so a
 *           restarted node comes back warm, purge by URL, prefix and tag,
 *           and request coalescing (cache_store.c, cache_disk.c).
 *
 * Threading: policy and key functions are reentrant. One vg_cache store is
 * shared by every worker of a node; its functions may be called from any
 * thread (it is sharded by key hash, one mutex per shard). Objects are
 * reference counted and immutable once inserted, so a worker sends a hit's
 * bytes without holding any lock.
 *
 * Times are seconds since the Unix epoch (int64_t), as HTTP dates are. */
#ifndef VG_CACHE_H
#define VG_CACHE_H

#include "base/base.h"

#include <h2o.h>

/* ==== policy ============================================================= */

/* Cache-Control directives (RFC 9111 5.2), request or response. Every
 * Cache-Control header of a message is parsed into one struct (call
 * vg_cache_cc_parse once per header value). Numeric directives are -1 when
 * absent; a malformed value of a numeric directive makes it count as the
 * most conservative reading (max-age/s-maxage: 0; stale-*: absent), per
 * RFC 9111 4.2.1 and 1.2.2. Unknown directives are ignored. */
enum {
    VG_CACHE_CC_NO_STORE = 1u << 0,
    VG_CACHE_CC_NO_CACHE = 1u << 1, /* unqualified no-cache */
    VG_CACHE_CC_PRIVATE = 1u << 2,  /* unqualified private */
    VG_CACHE_CC_PUBLIC = 1u << 3,
    VG_CACHE_CC_MUST_REVALIDATE = 1u << 4,
    VG_CACHE_CC_PROXY_REVALIDATE = 1u << 5,
    VG_CACHE_CC_NO_TRANSFORM = 1u << 6,
    VG_CACHE_CC_ONLY_IF_CACHED = 1u << 7,
    VG_CACHE_CC_IMMUTABLE = 1u << 8,
    VG_CACHE_CC_MUST_UNDERSTAND = 1u << 9,
    VG_CACHE_CC_MAX_STALE_ANY = 1u << 10, /* request max-stale without a value */
    /* no-cache="f1, f2" / private="f1": the named fields must not be sent
     * from a stored response without revalidation; a shared cache strips
     * them before storing (the names are not kept here: see
     * vg_cache_storable, which reads them from the headers itself). */
    VG_CACHE_CC_NO_CACHE_FIELDS = 1u << 11,
    VG_CACHE_CC_PRIVATE_FIELDS = 1u << 12,
};

struct vg_cache_cc {
    uint32_t flags;
    int64_t max_age, s_maxage, max_stale, min_fresh; /* seconds, -1 = absent */
    int64_t stale_while_revalidate, stale_if_error;  /* seconds, -1 = absent */
};

void vg_cache_cc_init(struct vg_cache_cc *cc);
/* Adds the directives of one Cache-Control field value to cc. Never fails:
 * bytes that do not parse are skipped up to the next comma. Reads
 * untrusted bytes (fuzzed). */
void vg_cache_cc_parse(struct vg_cache_cc *cc, const char *s, size_t len);
/* All Cache-Control headers of a header list into cc (after init). */
void vg_cache_cc_from_headers(struct vg_cache_cc *cc, const h2o_headers_t *headers);

/* An HTTP-date (IMF-fixdate, RFC 850 and asctime forms, RFC 9110 5.6.7) to
 * seconds since the epoch; -1 when it does not parse. Reads untrusted
 * bytes (fuzzed). */
int64_t vg_cache_date_parse(const char *s, size_t len);
/* IMF-fixdate of t into buf (at least 30 bytes, NUL-terminated). */
void vg_cache_date_format(int64_t t, char buf[30]);

/* What a route's manifest says about caching (conf owns the values). */
struct vg_cache_rules {
    bool honour_origin;     /* use the origin's Cache-Control/Expires (default true) */
    int64_t default_ttl;    /* seconds of freshness when the origin gives none (or always, when
                               !honour_origin); 0 = do not store such responses */
    bool heuristic;         /* heuristic freshness (10% of Date - Last-Modified), off by default */
    bool allow_set_cookie;  /* store responses carrying Set-Cookie (off by default) */
    size_t max_object_size; /* bytes of body; bigger responses stream through uncached */
};

/* What the store keeps about a stored response: everything freshness,
 * revalidation and Cache-Status need, computed once at store time. */
struct vg_cache_meta {
    int64_t request_time;  /* when the request that fetched it went out */
    int64_t response_time; /* when its head arrived */
    int64_t date;          /* Date header, or response_time when absent/invalid */
    int64_t age;           /* Age header value, 0 when absent/invalid */
    int64_t lifetime;      /* freshness lifetime, seconds (>= 0) */
    int64_t swr;           /* stale-while-revalidate seconds, -1 = none */
    int64_t sie;           /* stale-if-error seconds, -1 = none */
    int64_t last_modified; /* Last-Modified, -1 = none */
    uint32_t flags;        /* VG_CACHE_META_* */
};

enum {
    VG_CACHE_META_MUST_REVALIDATE = 1u << 0, /* must-revalidate or proxy-revalidate or s-maxage present */
    VG_CACHE_META_NO_CACHE = 1u << 1,        /* stored, but every use needs revalidation */
    VG_CACHE_META_AUTH_OK = 1u << 2,         /* may answer requests carrying Authorization */
    VG_CACHE_META_HAS_ETAG = 1u << 3,
    VG_CACHE_META_IMMUTABLE = 1u << 4,
};

/* The request as the cache needs it. */
struct vg_cache_req {
    h2o_iovec_t method;
    const h2o_headers_t *headers;
};

/* Why a response is not stored (VG_CACHE_STORE_OK: it is). */
enum vg_cache_store_verdict {
    VG_CACHE_STORE_OK = 0,
    VG_CACHE_NOSTORE_METHOD,       /* not GET/HEAD */
    VG_CACHE_NOSTORE_STATUS,       /* not a status the cache understands / cacheable by default or explicitly */
    VG_CACHE_NOSTORE_DIRECTIVE,    /* no-store or private (response), no-store (request) */
    VG_CACHE_NOSTORE_AUTH,         /* request had Authorization and the response does not allow sharing */
    VG_CACHE_NOSTORE_SET_COOKIE,   /* Set-Cookie and the route does not allow it */
    VG_CACHE_NOSTORE_VARY_STAR,    /* Vary: * */
    VG_CACHE_NOSTORE_NO_FRESHNESS, /* no explicit freshness, no default TTL, no heuristic, and no validator */
    VG_CACHE_NOSTORE_TOO_BIG,      /* Content-Length above max_object_size */
};
const char *vg_cache_store_verdict_str(enum vg_cache_store_verdict v);

/* Decides whether a response may be stored (RFC 9111 3) and fills *meta
 * when it may. request_time/response_time as in RFC 9111 4.2.3.
 * The response headers are the origin's, before verge adds its own. */
enum vg_cache_store_verdict vg_cache_storable(const struct vg_cache_req *req, int status, const h2o_headers_t *res,
                                              const struct vg_cache_rules *rules, int64_t request_time,
                                              int64_t response_time, struct vg_cache_meta *meta);

/* current_age of a stored response at now (RFC 9111 4.2.3), seconds. */
int64_t vg_cache_age(const struct vg_cache_meta *meta, int64_t now);

/* How a stored response may be used for a request (RFC 9111 4, 4.2.4,
 * RFC 5861). */
enum vg_cache_use {
    VG_CACHE_USE_FRESH,      /* serve it */
    VG_CACHE_USE_STALE_SWR,  /* serve it stale and refresh it in the background */
    VG_CACHE_USE_REVALIDATE, /* forward a conditional request; a failure may fall back to
                                stale-if-error (see vg_cache_stale_if_error_ok) */
    VG_CACHE_USE_NONE,       /* may not answer this request at all (e.g. Authorization) */
};
/* The request's own directives count (max-age, min-fresh, max-stale,
 * no-cache, Pragma: no-cache without Cache-Control). */
enum vg_cache_use vg_cache_usable(const struct vg_cache_meta *meta, const struct vg_cache_req *req, int64_t now);

/* Whether a stored response may answer when revalidation failed (origin
 * error, 5xx or timeout) at now: stale-if-error from the response or the
 * request, and never past must-revalidate. */
bool vg_cache_stale_if_error_ok(const struct vg_cache_meta *meta, const struct vg_cache_req *req, int64_t now);

/* Client conditional request against a stored response (RFC 9110 13.2.2):
 * true when the answer is 304 Not Modified (If-None-Match with a weak
 * comparison, or, without it, If-Modified-Since against Last-Modified).
 * etag: the stored ETag value (empty when none). */
bool vg_cache_not_modified(const struct vg_cache_req *req, h2o_iovec_t etag, int64_t last_modified);

/* Vary (RFC 9111 4.1). vg_cache_vary_names collects the field names listed
 * by the response's Vary headers, lower-cased, comma-separated without
 * spaces, sorted, duplicates removed, into pool memory (empty when none;
 * "*" when Vary: *). vg_cache_vary_key builds the values of those fields
 * in the request, normalised (each field's values joined with ", ",
 * whitespace around values trimmed; absent and empty are different), so
 * two requests select the same variant when their keys are equal. */
h2o_iovec_t vg_cache_vary_names(h2o_mem_pool_t *pool, const h2o_headers_t *res);
h2o_iovec_t vg_cache_vary_key(h2o_mem_pool_t *pool, h2o_iovec_t names, const h2o_headers_t *req);

/* The headers a 304 from the origin replaces in the stored response (RFC
 * 9111 3.2, 4.3.4): every header of the 304 except Content-Length,
 * Content-Encoding, Transfer-Encoding, Content-Range and hop-by-hop ones.
 * Returns a new list in pool memory: stored's headers with those updated. */
h2o_headers_t vg_cache_merge_304(h2o_mem_pool_t *pool, const h2o_headers_t *stored, const h2o_headers_t *fresh);

/* The headers kept with a stored response: res without the fields that
 * qualified no-cache="..." / private="..." directives name (RFC 9111
 * 5.2.2.4, 5.2.2.7: verge never revalidates single fields), without Age
 * (recomputed on every use), Content-Length (the body says it on every
 * use) and X-Request-Id (one request's).
 * pool memory; the values are res's. */
h2o_headers_t vg_cache_headers_to_store(h2o_mem_pool_t *pool, const h2o_headers_t *res);

/* RFC 9111 4.4: whether a response to an unsafe request invalidates the
 * target URI (true for non-error responses: status 200..399, method not
 * GET/HEAD/OPTIONS/TRACE). Location and Content-Location are invalidated
 * too when on the same host: see vg_cache_invalidation_target. */
bool vg_cache_invalidates(h2o_iovec_t method, int status);
/* The path of a Location/Content-Location value when it names the same
 * authority (or is relative), else an empty iovec. pool memory. */
h2o_iovec_t vg_cache_invalidation_target(h2o_mem_pool_t *pool, h2o_iovec_t value, h2o_iovec_t authority);

/* Cache-Status (RFC 9211) value for this cache ("verge"), e.g.
 * "verge; hit; ttl=42", "verge; fwd=miss; stored; ttl=60",
 * "verge; fwd=stale; fwd-status=304", "verge; fwd=uri-miss; detail=too-big". */
struct vg_cache_status {
    bool hit;
    const char *fwd; /* NULL on a plain hit; "miss", "uri-miss", "vary-miss", "stale", "request", "bypass" */
    int fwd_status;  /* 0 = omit */
    bool stored;
    bool collapsed;     /* served from a coalesced origin request */
    int64_t ttl;        /* remaining freshness (may be negative when stale); INT64_MIN = omit */
    const char *detail; /* NULL = omit; a token */
};
h2o_iovec_t vg_cache_status_format(h2o_mem_pool_t *pool, const struct vg_cache_status *st);

/* ==== key ================================================================= */

/* A route's cache key rules (conf owns the strings). The key always has the
 * scheme-independent host (lower-cased, default port removed) and the path;
 * the query is normalised (parameters sorted by name then value, stable,
 * percent-encoding of unreserved characters decoded, empty query = none). */
struct vg_cache_keyrules {
    bool ignore_host;     /* key on path only (a single-host app) */
    bool ignore_query;    /* drop the query altogether */
    char **query_include; /* NULL-terminated; when set, only these parameters count */
    char **query_exclude; /* NULL-terminated; these parameters never count (utm_*, etc.: a
                             trailing '*' matches a prefix) */
    char **headers;       /* NULL-terminated request header names added to the key */
    char **cookies;       /* NULL-terminated cookie names added to the key */
};

/* Builds the key of a request into pool memory. The layout is
 * "host\npath?query\nh:name=value...\nc:name=value..." (only the parts that
 * exist); purge by URL and by prefix match on its first two parts, so they
 * come first and unescaped. Under ignore_host the host is empty but its
 * '\n' stays ("\n/path?query"), so the layout is the same for every route.
 * Control bytes in host, path and query are percent-encoded (they are not
 * valid in a URI, %XX is their only spelling), so no part holds a '\n'.
 * Reads untrusted bytes (fuzzed). */
h2o_iovec_t vg_cache_key_build(h2o_mem_pool_t *pool, const struct vg_cache_keyrules *rules, h2o_iovec_t host,
                               h2o_iovec_t path_and_query, const h2o_headers_t *headers);

/* ==== store ================================================================ */

struct vg_cache;     /* the node's store: memory tier + optional disk tier */
struct vg_cache_obj; /* one stored response (one variant of one key) */

struct vg_cache_config {
    size_t mem_bytes;      /* byte budget of the memory tier (objects' bytes + their overhead) */
    const char *disk_path; /* directory of the persistent tier (LMDB), NULL = memory only */
    size_t disk_bytes;     /* byte budget of the persistent tier */
};

/* Caller owns the result. Opens (creating if needed) the persistent tier;
 * entries that fail their checksum are dropped and logged on first read. */
int vg_cache_create(const struct vg_cache_config *cfg, struct vg_cache **out) VG_MUST_CHECK;
/* Every object reference must have been released. Flushes the disk tier. */
void vg_cache_destroy(struct vg_cache *c);

/* -- objects: built by one thread, then immutable and shared ------------ */

/* A new object under construction (refcount 1, the builder's). The key
 * and vary data (names and this response's key under them) are copied.
 * headers: the stored response's headers (copied; hop-by-hop ones and
 * those meant only for this client should already be gone). tags: the
 * object's purge tags (Surrogate-Key / Cache-Tag values, split on spaces
 * and commas), copied. */
struct vg_cache_obj *vg_cache_obj_new(h2o_iovec_t key, h2o_iovec_t vary_names, h2o_iovec_t vary_key, int status,
                                      const h2o_headers_t *headers, const struct vg_cache_meta *meta,
                                      const h2o_iovec_t *tags, size_t n_tags);
/* Appends body bytes; VG_ELIMIT (object unchanged) past max bytes. */
int vg_cache_obj_append(struct vg_cache_obj *o, const void *p, size_t len, size_t max) VG_MUST_CHECK;

/* Accessors (valid while a reference is held). */
int vg_cache_obj_status(const struct vg_cache_obj *o);
/* A copy: objects keep their meta compact (see cache_int.h). */
void vg_cache_obj_meta(const struct vg_cache_obj *o, struct vg_cache_meta *out);
/* Header i of n (name lower-cased as stored). */
size_t vg_cache_obj_n_headers(const struct vg_cache_obj *o);
void vg_cache_obj_header(const struct vg_cache_obj *o, size_t i, h2o_iovec_t *name, h2o_iovec_t *value);
h2o_iovec_t vg_cache_obj_body(const struct vg_cache_obj *o);
h2o_iovec_t vg_cache_obj_etag(const struct vg_cache_obj *o);     /* empty when none */
bool vg_cache_obj_is_stale_marked(const struct vg_cache_obj *o); /* soft-purged */

void vg_cache_obj_retain(struct vg_cache_obj *o);
void vg_cache_obj_release(struct vg_cache_obj *o);

/* -- lookup and insert ----------------------------------------------------- */

/* The variant of key that matches the request headers (Vary), with a new
 * reference; NULL when the key has no stored variant matching (the memory
 * tier first, then the disk tier, which promotes what it finds). *key_known
 * (may be NULL) says whether the key had any variant at all, to tell
 * uri-miss from vary-miss. Never returns an object past its usefulness for
 * any request (lifetime + max(swr, sie) + a grace period: the caller still
 * asks the policy). */
struct vg_cache_obj *vg_cache_lookup(struct vg_cache *c, h2o_iovec_t key, const h2o_headers_t *req_headers, int64_t now,
                                     bool *key_known);

/* Publishes a finished object (takes the caller's reference): it replaces
 * the variant with the same vary key, evicts as the budget requires (the
 * object itself when it is larger than a shard's budget), and is written
 * to the disk tier in the background. */
void vg_cache_insert(struct vg_cache *c, struct vg_cache_obj *o);

/* Replaces a stored object's headers and meta after a 304 (keeps the body);
 * same as inserting a copy. Returns the new object with a reference. */
struct vg_cache_obj *vg_cache_refresh(struct vg_cache *c, struct vg_cache_obj *o, const h2o_headers_t *headers,
                                      const struct vg_cache_meta *meta);

/* -- purge ------------------------------------------------------------------ */

enum vg_cache_purge_kind { VG_CACHE_PURGE_URL, VG_CACHE_PURGE_PREFIX, VG_CACHE_PURGE_TAG };

/* A purge request: the same struct whether it comes from the HTTP API, the
 * CLI or (later) the bus, so it can travel as a message. value, matched
 * against the keys vg_cache_key_build makes:
 *   URL     "host\npath?query": every object whose key is exactly that or
 *           continues with '\n' (every variant, every header/cookie part);
 *   PREFIX  "host\npathprefix": every object whose key starts with it;
 *   TAG     one tag: every object carrying it.
 * soft: mark stale (stale-while-revalidate / stale-if-error still apply,
 * and the next use revalidates) instead of removing. Returns how many
 * objects it hit, memory and disk tiers together (an object in both
 * counts once). */
struct vg_cache_purge {
    enum vg_cache_purge_kind kind;
    h2o_iovec_t value;
    bool soft;
};
size_t vg_cache_purge(struct vg_cache *c, const struct vg_cache_purge *p);

/* -- coalescing ---------------------------------------------------------------- */

/* At most one origin request per key at a time (RFC 9111 4: "collapsed
 * requests"). vg_cache_join asks for key: VG_CACHE_LEADER means the caller
 * fetches and must call vg_cache_leave when it knows the outcome;
 * VG_CACHE_WAITER means another request is fetching and wake(data) will be
 * called once, from the leader's thread, when it is done (the waiter then
 * looks up again; when nothing usable was stored it goes to the origin
 * itself without joining again, so an uncacheable object never serialises
 * requests). At most max_waiters wait per key (VG_CACHE_BYPASS beyond: go
 * to the origin directly). vg_cache_cancel_wait withdraws a waiter that
 * went away (returns false when the wake is already under way). */
enum vg_cache_join { VG_CACHE_LEADER, VG_CACHE_WAITER, VG_CACHE_BYPASS };
struct vg_cache_waiter {
    void (*wake)(struct vg_cache_waiter *w); /* called without store locks held */
    struct vg_cache_waiter *next;            /* the store's */
};
enum vg_cache_join vg_cache_join(struct vg_cache *c, h2o_iovec_t key, struct vg_cache_waiter *w, size_t max_waiters);
void vg_cache_leave(struct vg_cache *c, h2o_iovec_t key);
bool vg_cache_cancel_wait(struct vg_cache *c, h2o_iovec_t key, struct vg_cache_waiter *w);

/* -- numbers, for metrics and tests ------------------------------------------------ */

struct vg_cache_stats {
    uint64_t objects, bytes;           /* memory tier now */
    uint64_t disk_objects, disk_bytes; /* disk tier now */
    uint64_t hits, misses, inserts, evictions, purged, disk_hits, disk_corrupt;
    uint64_t disk_writes, disk_dropped; /* records written; writes dropped (writer queue full, disk full) */
};
void vg_cache_stats(struct vg_cache *c, struct vg_cache_stats *out);

#endif
