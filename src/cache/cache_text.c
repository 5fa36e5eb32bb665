/* Text helpers shared by the policy and key layers: a pool-backed byte
 * builder, header lookup and HTTP list splitting. */
#include "cache/cache_int.h"

#include <string.h>

void vg__cache_buf_init(struct vg__cache_buf *b, h2o_mem_pool_t *pool, size_t cap)
{
    b->pool = pool;
    b->cap = cap ? cap : 64;
    b->p = h2o_mem_alloc_pool(pool, b->cap);
    b->len = 0;
}

static void reserve(struct vg__cache_buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return;
    size_t cap = b->cap;
    while (cap - b->len < more)
        cap *= 2;
    char *p = h2o_mem_alloc_pool(b->pool, cap);
    memcpy(p, b->p, b->len);
    b->p = p;
    b->cap = cap;
}

void vg__cache_buf_add(struct vg__cache_buf *b, const void *p, size_t len)
{
    if (!len)
        return;
    reserve(b, len);
    memcpy(b->p + b->len, p, len);
    b->len += len;
}

void vg__cache_buf_addc(struct vg__cache_buf *b, char c)
{
    vg__cache_buf_add(b, &c, 1);
}

void vg__cache_buf_add_escaped(struct vg__cache_buf *b, const char *s, size_t len, char extra)
{
    static const char hex[] = "0123456789ABCDEF";
    reserve(b, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' || c < 0x20 || c == 0x7f || (extra && c == (unsigned char)extra)) {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            vg__cache_buf_add(b, e, 3);
        } else {
            vg__cache_buf_addc(b, (char)c);
        }
    }
}

h2o_iovec_t vg__cache_buf_iov(const struct vg__cache_buf *b)
{
    return h2o_iovec_init(b->len ? b->p : "", b->len);
}

bool vg__cache_name_is(const h2o_header_t *h, const char *lc)
{
    size_t n = strlen(lc);
    if (h->name->len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (h2o_tolower(h->name->base[i]) != lc[i])
            return false;
    return true;
}

ssize_t vg__cache_find(const h2o_headers_t *hs, const char *lc, ssize_t cursor)
{
    if (!hs)
        return -1;
    for (size_t i = (size_t)(cursor + 1); i < hs->size; i++)
        if (vg__cache_name_is(&hs->entries[i], lc))
            return (ssize_t)i;
    return -1;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

h2o_iovec_t vg__cache_trim(const char *s, size_t len)
{
    while (len && is_ows(*s))
        s++, len--;
    while (len && is_ows(s[len - 1]))
        len--;
    return h2o_iovec_init(s, len);
}

bool vg__cache_list_next(const char **p, const char *end, h2o_iovec_t *elem)
{
    const char *s = *p;
    for (;;) {
        while (s < end && (is_ows(*s) || *s == ','))
            s++;
        if (s == end) {
            *p = s;
            return false;
        }
        const char *start = s;
        bool quoted = false;
        for (; s < end && (quoted || *s != ','); s++) {
            if (*s == '"')
                quoted = !quoted;
            else if (quoted && *s == '\\' && s + 1 < end)
                s++; /* quoted-pair: the next byte is literal */
        }
        *elem = vg__cache_trim(start, (size_t)(s - start));
        *p = s;
        if (elem->len)
            return true;
    }
}
