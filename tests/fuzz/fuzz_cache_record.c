/* Fuzzes the cache's disk-record parser: what it reads back from LMDB may
 * be damaged. Most random inputs would stop at the CRC, so the target
 * writes a correct CRC over the input first, and the fields behind it get
 * exercised; a parsed object is read whole, written back and parsed again
 * (the round trip must give the same bytes). */
#include "cache/cache_int.h"

#include <string.h>
#include <zlib.h>

static void touch(const struct vg_cache_obj *o)
{
    struct vg_cache_meta m;
    vg_cache_obj_meta(o, &m);
    size_t sum = (size_t)vg_cache_obj_status(o) + vg_cache_obj_body(o).len + vg_cache_obj_etag(o).len;
    for (size_t i = 0, n = vg_cache_obj_n_headers(o); i < n; i++) {
        h2o_iovec_t name, value;
        vg_cache_obj_header(o, i, &name, &value);
        sum += name.len + value.len;
    }
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4 || size > (1u << 20))
        return 0;
    uint8_t *rec = malloc(size);
    memcpy(rec, data, size);
    uint32_t crc = (uint32_t)crc32(0L, rec, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        rec[size - 4 + i] = (uint8_t)(crc >> (8 * i));
    struct vg_cache_obj *o = NULL;
    uint64_t seq;
    if (vg__cache_rec_parse(rec, size, &o, &seq) == 0) {
        touch(o);
        size_t n = vg__cache_rec_size(o);
        uint8_t *again = malloc(n);
        vg__cache_rec_write(o, seq, again);
        struct vg_cache_obj *o2 = NULL;
        uint64_t seq2;
        if (vg__cache_rec_parse(again, n, &o2, &seq2) != 0 || seq2 != seq)
            __builtin_trap(); /* what we write, we must read */
        touch(o2);
        vg_cache_obj_release(o2);
        free(again);
        vg_cache_obj_release(o);
    }
    free(rec);
    return 0;
}
