/* The cache key of a request (see vg_cache_key_build in cache.h).
 *
 * Two rules make keys safe to compare as bytes:
 *   - no part can contain '\n', the part separator: host, path and query
 *     percent-encode control bytes (a raw control byte is not valid in a
 *     URI, and %XX is its only valid spelling, so this merges no two
 *     different resources), and header/cookie values encode '%' too, so
 *     their encoding is reversible;
 *   - equivalent URLs get one key: host case and default port, query
 *     parameter order and percent-encoding of unreserved characters. */
#include "cache/cache_int.h"

#include <string.h>

struct qparam {
    h2o_iovec_t name, value; /* normalised */
    bool has_eq;             /* "a" and "a=" may mean different things to an origin */
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool unreserved(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

/* RFC 3986 6.2.2: %XX of an unreserved character is that character, and
 * hex digits are case-insensitive (upper case is the normal form). A '%'
 * not followed by two hex digits is left as it is. */
static void add_uri_norm(struct vg__cache_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int hi, lo;
        if (c == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
            int v = hi * 16 + lo;
            if (unreserved(v)) {
                vg__cache_buf_addc(b, (char)v);
            } else {
                char e[3] = {'%', hex[hi], hex[lo]};
                vg__cache_buf_add(b, e, 3);
            }
            i += 2;
        } else if (c < 0x20 || c == 0x7f) {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            vg__cache_buf_add(b, e, 3);
        } else {
            vg__cache_buf_addc(b, (char)c);
        }
    }
}

/* Control bytes only (host and path come normalised from the caller). */
static void add_ctl_escaped(struct vg__cache_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            vg__cache_buf_add(b, e, 3);
        } else {
            vg__cache_buf_addc(b, (char)c);
        }
    }
}

static h2o_iovec_t uri_norm(h2o_mem_pool_t *pool, const char *s, size_t len)
{
    struct vg__cache_buf b;
    vg__cache_buf_init(&b, pool, len + 8);
    add_uri_norm(&b, s, len);
    return vg__cache_buf_iov(&b);
}

/* --- host ------------------------------------------------------------------ */

static void add_host(struct vg__cache_buf *b, h2o_mem_pool_t *pool, h2o_iovec_t host)
{
    /* The key is scheme-independent, so either default port goes. */
    if (host.len > 3 && memcmp(host.base + host.len - 3, ":80", 3) == 0)
        host.len -= 3;
    else if (host.len > 4 && memcmp(host.base + host.len - 4, ":443", 4) == 0)
        host.len -= 4;
    h2o_iovec_t lc = h2o_strdup(pool, host.base, host.len);
    h2o_strtolower(lc.base, lc.len);
    add_ctl_escaped(b, lc.base, lc.len);
}

/* --- query ----------------------------------------------------------------- */

/* A pattern with a trailing '*' matches a prefix; otherwise the whole name. */
static bool name_listed(h2o_iovec_t name, char *const *list)
{
    for (; list && *list; list++) {
        size_t n = strlen(*list);
        if (n && (*list)[n - 1] == '*') {
            if (name.len >= n - 1 && memcmp(name.base, *list, n - 1) == 0)
                return true;
        } else if (name.len == n && memcmp(name.base, *list, n) == 0) {
            return true;
        }
    }
    return false;
}

static int cmp_param(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = memcmp(x->name.base, y->name.base, n);
    if (c || x->name.len != y->name.len)
        return c ? c : (x->name.len > y->name.len) - (x->name.len < y->name.len);
    if (x->has_eq != y->has_eq)
        return (int)x->has_eq - (int)y->has_eq;
    n = x->value.len < y->value.len ? x->value.len : y->value.len;
    c = memcmp(x->value.base, y->value.base, n);
    return c ? c : (x->value.len > y->value.len) - (x->value.len < y->value.len);
}

static void add_query(struct vg__cache_buf *b, h2o_mem_pool_t *pool, const struct vg_cache_keyrules *rules,
                      const char *q, size_t len)
{
    H2O_VECTOR(struct qparam) ps = {NULL};
    const char *p = q, *end = q + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        if (stop > p) {
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            struct qparam qp = {.has_eq = eq != NULL};
            qp.name = uri_norm(pool, p, (size_t)((eq ? eq : stop) - p));
            qp.value = eq ? uri_norm(pool, eq + 1, (size_t)(stop - eq - 1)) : h2o_iovec_init("", 0);
            bool keep = rules->query_include ? name_listed(qp.name, rules->query_include) : true;
            if (keep && !name_listed(qp.name, rules->query_exclude)) {
                h2o_vector_reserve(pool, &ps, ps.size + 1);
                ps.entries[ps.size++] = qp;
            }
        }
        p = amp ? amp + 1 : end;
    }
    /* Equal (name, has_eq, value) triples are byte-identical, so an
     * unstable sort still gives one order. */
    if (ps.size > 1)
        qsort(ps.entries, ps.size, sizeof(*ps.entries), cmp_param);
    for (size_t i = 0; i < ps.size; i++) {
        vg__cache_buf_addc(b, i ? '&' : '?');
        vg__cache_buf_add(b, ps.entries[i].name.base, ps.entries[i].name.len);
        if (ps.entries[i].has_eq) {
            vg__cache_buf_addc(b, '=');
            vg__cache_buf_add(b, ps.entries[i].value.base, ps.entries[i].value.len);
        }
    }
}

/* --- headers and cookies --------------------------------------------------- */

/* "\nh:name=v1, v2" or "\nh:name" when absent: absent and empty differ. */
static void add_header(struct vg__cache_buf *b, const char *rule, const h2o_headers_t *hs)
{
    char lc[256];
    size_t n = strlen(rule);
    vg__cache_buf_add(b, "\nh:", 3);
    vg__cache_buf_add_escaped(b, rule, n, '=');
    if (n >= sizeof(lc))
        return;
    memcpy(lc, rule, n + 1);
    h2o_strtolower(lc, n);
    bool first = true;
    for (ssize_t i = -1; (i = vg__cache_find(hs, lc, i)) >= 0; first = false) {
        h2o_iovec_t v = vg__cache_trim(hs->entries[i].value.base, hs->entries[i].value.len);
        vg__cache_buf_add(b, first ? "=" : ", ", first ? 1 : 2);
        vg__cache_buf_add_escaped(b, v.base, v.len, 0);
    }
}

/* Every occurrence of cookie `name` (case-sensitive, RFC 6265 5.4) in the
 * Cookie headers, each as "\nc:name=value"; "\nc:name" when there is none. */
static void add_cookie(struct vg__cache_buf *b, const char *name, const h2o_headers_t *hs)
{
    size_t n = strlen(name);
    bool found = false;
    for (ssize_t i = -1; (i = vg__cache_find(hs, "cookie", i)) >= 0;) {
        const char *p = hs->entries[i].value.base, *end = p + hs->entries[i].value.len;
        while (p < end) {
            const char *semi = memchr(p, ';', (size_t)(end - p)), *stop = semi ? semi : end;
            h2o_iovec_t pair = vg__cache_trim(p, (size_t)(stop - p));
            const char *eq = memchr(pair.base, '=', pair.len);
            if (eq) {
                h2o_iovec_t k = vg__cache_trim(pair.base, (size_t)(eq - pair.base));
                if (k.len == n && memcmp(k.base, name, n) == 0) {
                    h2o_iovec_t v = vg__cache_trim(eq + 1, (size_t)(pair.base + pair.len - eq - 1));
                    vg__cache_buf_add(b, "\nc:", 3);
                    vg__cache_buf_add_escaped(b, name, n, '=');
                    vg__cache_buf_addc(b, '=');
                    vg__cache_buf_add_escaped(b, v.base, v.len, 0);
                    found = true;
                }
            }
            p = semi ? semi + 1 : end;
        }
    }
    if (!found) {
        vg__cache_buf_add(b, "\nc:", 3);
        vg__cache_buf_add_escaped(b, name, n, '=');
    }
}

/* --- the key ----------------------------------------------------------------- */

h2o_iovec_t vg_cache_key_build(h2o_mem_pool_t *pool, const struct vg_cache_keyrules *rules, h2o_iovec_t host,
                               h2o_iovec_t path_and_query, const h2o_headers_t *headers)
{
    struct vg__cache_buf b;
    vg__cache_buf_init(&b, pool, host.len + path_and_query.len + 32);
    if (!rules->ignore_host)
        add_host(&b, pool, host);
    vg__cache_buf_addc(&b, '\n');
    const char *pq = path_and_query.base, *qm = path_and_query.len ? memchr(pq, '?', path_and_query.len) : NULL;
    size_t path_len = qm ? (size_t)(qm - pq) : path_and_query.len;
    add_ctl_escaped(&b, pq, path_len);
    if (qm && !rules->ignore_query)
        add_query(&b, pool, rules, qm + 1, path_and_query.len - path_len - 1);
    for (char *const *h = rules->headers; h && *h; h++)
        add_header(&b, *h, headers);
    for (char *const *c = rules->cookies; c && *c; c++)
        add_cookie(&b, *c, headers);
    return vg__cache_buf_iov(&b);
}
