/* HTTP/1 request-head guard: the smuggling rules, on the raw header list
 * picohttpparser returns, before any of it is interpreted (http1.c calls it
 * for every request head). Once headers are folded into a request, the
 * ambiguity smuggling relies on (two lengths, a length and chunked, two
 * Hosts) can no longer be seen. See docs/decisions.md ("Request smuggling
 * defences"). */
#include "http.h"

#include <string.h>
#include <strings.h>

static bool name_is(const struct vg_http_raw_header *h, const char *name)
{
    size_t n = strlen(name);
    return h->name && h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* 1..19 decimal digits: no sign, no list, no overflow of 64 bits. Values
 * are not NUL-terminated. */
static bool all_digits(const char *v, size_t len)
{
    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return false;
    return true;
}

int vg_http_guard_check(const struct vg_http_raw_header *h, size_t n, const char **reason)
{
    const struct vg_http_raw_header *cl = NULL;
    bool te = false;
    size_t hosts = 0;
    for (size_t i = 0; i < n; i++) {
        if (!h[i].name) { /* picohttpparser's mark for an obs-fold line */
            *reason = "obsolete line folding in header";
            return -1;
        }
        if (name_is(&h[i], "content-length")) {
            if (cl && (cl->value_len != h[i].value_len || memcmp(cl->value, h[i].value, h[i].value_len) != 0)) {
                *reason = "conflicting Content-Length headers";
                return -1;
            }
            if (!all_digits(h[i].value, h[i].value_len)) {
                *reason = "invalid Content-Length";
                return -1;
            }
            cl = &h[i];
        } else if (name_is(&h[i], "transfer-encoding")) {
            te = true;
        } else if (name_is(&h[i], "host")) {
            hosts++;
        }
    }
    if (cl && te) {
        *reason = "Content-Length with Transfer-Encoding";
        return -1;
    }
    if (hosts > 1) {
        *reason = "more than one Host header";
        return -1;
    }
    return 0;
}
