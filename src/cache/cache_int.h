/* cache internals shared by the cache_*.c files: header and list helpers,
 * a pool-backed byte builder, and the field stripping that qualified
 * private= / no-cache= directives require. Nothing here is visible outside
 * src/cache. */
#ifndef VG_CACHE_INT_H
#define VG_CACHE_INT_H

#include "cache/cache.h"

/* A growing byte string in pool memory. Growth reallocates inside the pool
 * (the old block stays until the pool is cleared), so the result is only
 * valid as long as the pool. */
struct vg__cache_buf {
    h2o_mem_pool_t *pool;
    char *p;
    size_t len, cap;
};

void vg__cache_buf_init(struct vg__cache_buf *b, h2o_mem_pool_t *pool, size_t cap);
void vg__cache_buf_add(struct vg__cache_buf *b, const void *p, size_t len);
void vg__cache_buf_addc(struct vg__cache_buf *b, char c);
/* Appends s with '%' and control bytes (and `extra`, when not NUL)
 * percent-encoded as %XX, so the result never contains '\n' and can be
 * decoded unambiguously. */
void vg__cache_buf_add_escaped(struct vg__cache_buf *b, const char *s, size_t len, char extra);
h2o_iovec_t vg__cache_buf_iov(const struct vg__cache_buf *b);

/* Header name comparison, case-insensitive (lc must be lower case). */
bool vg__cache_name_is(const h2o_header_t *h, const char *lc);
/* Index of the next header named lc after cursor (-1 to start), or -1. */
ssize_t vg__cache_find(const h2o_headers_t *hs, const char *lc, ssize_t cursor);

/* One element of a comma-separated list (RFC 9110 5.6.1), honouring
 * quoted strings (a comma inside quotes does not split). Skips empty
 * elements; trims OWS. Returns false at the end of the list. */
bool vg__cache_list_next(const char **p, const char *end, h2o_iovec_t *elem);
h2o_iovec_t vg__cache_trim(const char *s, size_t len);

/* RFC 9111 5.2.2.4 / 5.2.2.7: fields named by no-cache="..." and
 * private="..." in a response must not be served from a shared cache
 * without revalidation; verge never revalidates single fields, so the
 * caller removes them before storing. Returns res without those fields
 * (res itself, copied into pool memory, when nothing is named). */
h2o_headers_t vg__cache_strip_qualified(h2o_mem_pool_t *pool, const h2o_headers_t *res);
/* Whether the response's qualified no-cache/private directives name
 * field lc (lower case). */
bool vg__cache_qualified_names(const h2o_headers_t *res, const char *lc);

#endif
