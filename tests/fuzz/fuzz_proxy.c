/* Fuzzes what the proxy reads from untrusted peers by itself: an origin's
 * status line (health probes), its response head and body framing
 * (forwarding), and a client's Connection list. */
#include "proxy/proxy_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int st = vg__proxy_status_line_parse(s, size);
    if (st != -1 && (st < 100 || st > 999))
        __builtin_trap();
    const char *nl = memchr(s, '\n', size);
    size_t nlen = nl ? (size_t)(nl - s) : size;
    h2o_iovec_t list = h2o_iovec_init(nl ? nl + 1 : s, nl ? size - nlen - 1 : size);
    (void)vg__proxy_list_has(list, s, nlen);
    (void)vg__proxy_hop_header(s, nlen);

    static struct vg__proxy_resp r;
    const char *why;
    int n = vg__proxy_resp_parse(s, size, 0, size & 1, &r, &why);
    if (n > 0) { /* the rest as body: decoded in place, never grown */
        size_t len = size - (size_t)n, extra;
        char *body = malloc(len + 1);
        memcpy(body, s + n, len);
        struct vg__proxy_body b;
        vg__proxy_body_init(&b, &r);
        (void)vg__proxy_body_decode(&b, len ? body : NULL, &len, &extra);
        if (len + extra > size - (size_t)n)
            __builtin_trap();
        free(body);
    }
    return 0;
}
