/* Fuzzes log filters (they come over HTTP and the bus): the first line is
 * the expression, the rest a log line it is matched against. */
#include "obs/obs.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *nl = memchr(p, '\n', size);
    size_t el = nl ? (size_t)(nl - p) : size;
    char *expr = strndup(p, el);
    const char *why;
    struct vg_log_filter *f = vg_log_filter_parse(expr, &why);
    if (f) {
        const char *line = nl ? nl + 1 : p + size;
        (void)vg_log_filter_match(f, line, size - (size_t)(line - p));
        vg_log_filter_free(f);
    }
    free(expr);
    return 0;
}
