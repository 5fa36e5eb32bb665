/* Fuzzes the HTTP/1 request-head guard with arbitrary header lists: one
 * "name:value" per line; a line without ':' is an obs-fold continuation. */
#include "http/http.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vg_http_raw_header h[64];
    size_t n = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p < end && n < 64) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon)
            h[n++] = (struct vg_http_raw_header){p, (size_t)(colon - p), colon + 1, (size_t)(eol - colon - 1)};
        else
            h[n++] = (struct vg_http_raw_header){NULL, 0, p, (size_t)(eol - p)};
        p = nl ? nl + 1 : end;
    }
    const char *why;
    (void)vg_http_guard_check(h, n, &why);
    return 0;
}
