/* Fuzzes what the proxy reads from untrusted peers by itself: an origin's
 * status line (health probes) and a client's Connection list. */
#include "proxy/proxy_int.h"

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
    return 0;
}
