/* STUB — DELETE AT MERGE. vg_cache_vary_key belongs to the policy layer
 * (cache_policy.c, written on the cache-policy branch). This minimal
 * version exists only so the store builds and its tests run alone; it
 * follows cache.h: for each name of `names` (lower-case, comma-separated),
 * the request's values of that field joined with ", ", each trimmed;
 * fields are separated by '\n', a present field starts with '=' so that
 * an absent field ("") differs from an empty one ("="). */
#include "cache/cache.h"

#include <string.h>

static h2o_iovec_t trim(h2o_iovec_t v)
{
    while (v.len && (v.base[0] == ' ' || v.base[0] == '\t')) {
        v.base++;
        v.len--;
    }
    while (v.len && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
        v.len--;
    return v;
}

static size_t put(char *out, size_t off, const char *p, size_t n)
{
    if (out)
        memcpy(out + off, p, n);
    return off + n;
}

static bool name_is(h2o_iovec_t lower, const h2o_iovec_t *name)
{
    if (lower.len != name->len)
        return false;
    for (size_t i = 0; i < lower.len; i++)
        if (h2o_tolower(name->base[i]) != lower.base[i])
            return false;
    return true;
}

/* One field's part of the key; writes when out is not NULL. */
static size_t field(char *out, size_t off, h2o_iovec_t name, const h2o_headers_t *req)
{
    bool present = false;
    for (size_t i = 0; i < req->size; i++) {
        const h2o_header_t *h = &req->entries[i];
        if (!name_is(name, h->name))
            continue;
        off = put(out, off, present ? ", " : "=", present ? 2 : 1);
        h2o_iovec_t v = trim(h->value);
        off = put(out, off, v.base, v.len);
        present = true;
    }
    return off;
}

static size_t build(char *out, h2o_iovec_t names, const h2o_headers_t *req)
{
    size_t off = 0, start = 0;
    for (size_t i = 0; i <= names.len; i++) {
        if (i < names.len && names.base[i] != ',')
            continue;
        if (start > 0)
            off = put(out, off, "\n", 1);
        off = field(out, off, h2o_iovec_init(names.base + start, i - start), req);
        start = i + 1;
    }
    return off;
}

h2o_iovec_t vg_cache_vary_key(h2o_mem_pool_t *pool, h2o_iovec_t names, const h2o_headers_t *req)
{
    if (names.len == 0)
        return h2o_iovec_init("", 0);
    size_t len = build(NULL, names, req);
    char *buf = h2o_mem_alloc_pool(pool, len + 1);
    build(buf, names, req);
    buf[len] = '\0';
    return h2o_iovec_init(buf, len);
}
