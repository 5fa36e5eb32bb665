/* Fuzzes the purge messages nodes receive over the bus (any NATS client
 * can publish them): never a crash, and every accepted purge stays inside
 * the app of its subject. Input: app '\0' message. */
#include "node/node_int.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul || nul == data || nul - data > 64)
        return 0;
    const char *app = (const char *)data;
    size_t al = strlen(app);
    struct vg_cache_purge p[17];
    size_t n = 0;
    json_t *doc = NULL;
    const char *from, *why;
    if (vg__node_purge_msg_parse(nul + 1, size - (size_t)(nul - data) - 1, app, &doc, p, 17, &n, &from, &why) == 0) {
        for (size_t i = 0; i < n; i++)
            if (p[i].value.len <= al || memcmp(p[i].value.base, app, al) != 0)
                __builtin_trap();
    }
    json_decref(doc);
    return 0;
}
