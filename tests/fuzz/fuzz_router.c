/* Fuzzes route matching with client-controlled paths and hosts: must never
 * crash, read out of bounds or run long. Input: pattern '\0' path. */
#include "http/http.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul || nul - data > 256)
        return 0;
    char pattern[257];
    memcpy(pattern, data, (size_t)(nul - data) + 1);
    const char *path = (const char *)nul + 1;
    size_t len = size - (size_t)(nul - data) - 1;
    vg_http_path_match(VG_CONF_MATCH_PREFIX, pattern, path, len);
    vg_http_path_match(VG_CONF_MATCH_EXACT, pattern, path, len);
    vg_http_path_match(VG_CONF_MATCH_GLOB, pattern, path, len);
    vg_http_host_match(pattern, path, len);
    return 0;
}
