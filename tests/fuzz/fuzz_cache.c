/* Fuzzes the cache's parsers of untrusted bytes. The whole input goes to
 * the Cache-Control and date parsers; read as lines, it is also a request
 * ("host", "path?query", then "name:value" headers) for the key builder,
 * Vary and conditional requests. */
#include "cache/cache.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *inc[] = {"id", "p*", NULL}, *exc[] = {"utm_*", NULL}, *hn[] = {"accept", "x-a", NULL},
                *cn[] = {"ab", "s", NULL};
    const char *s = (const char *)data, *end = s + size;
    struct vg_cache_cc cc;
    vg_cache_cc_init(&cc);
    vg_cache_cc_parse(&cc, s, size);
    (void)vg_cache_date_parse(s, size);

    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_iovec_t line[2] = {{NULL, 0}, {NULL, 0}};
    h2o_headers_t hs = {NULL};
    for (size_t n = 0; s < end && n < 66; n++) {
        const char *nl = memchr(s, '\n', (size_t)(end - s)), *eol = nl ? nl : end;
        const char *colon = memchr(s, ':', (size_t)(eol - s));
        if (n < 2)
            line[n] = h2o_iovec_init(s, (size_t)(eol - s));
        else if (colon && colon > s)
            h2o_add_header_by_str(&pool, &hs, s, (size_t)(colon - s), 0, NULL, colon + 1, (size_t)(eol - colon - 1));
        s = nl ? nl + 1 : end;
    }
    struct vg_cache_keyrules r1 = {.query_include = inc, .headers = hn, .cookies = cn}, r2 = {.query_exclude = exc};
    (void)vg_cache_key_build(&pool, &r1, line[0], line[1], &hs);
    (void)vg_cache_key_build(&pool, &r2, line[0], line[1], &hs);
    h2o_iovec_t names = vg_cache_vary_names(&pool, &hs);
    (void)vg_cache_vary_key(&pool, names, &hs);
    (void)vg_cache_vary_key(&pool, line[0], &hs); /* names as the fuzzer spells them */
    struct vg_cache_req req = {h2o_iovec_init("GET", 3), &hs};
    (void)vg_cache_not_modified(&req, line[1], vg_cache_date_parse(line[0].base, line[0].len));
    h2o_mem_clear_pool(&pool);
    return 0;
}
