#include "base.h"

#include <string.h>

/* SipHash-2-4 (Aumasson & Bernstein), written from the paper. */

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

/* One load where the machine is little-endian (the hash runs on every
 * shared-table access: the byte loop cost a third of it). */
static uint64_t load_le64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
#endif
}

static void sip_rounds(uint64_t v[4], int n)
{
    while (n--) {
        v[0] += v[1];
        v[1] = ROTL(v[1], 13);
        v[1] ^= v[0];
        v[0] = ROTL(v[0], 32);
        v[2] += v[3];
        v[3] = ROTL(v[3], 16);
        v[3] ^= v[2];
        v[0] += v[3];
        v[3] = ROTL(v[3], 21);
        v[3] ^= v[0];
        v[2] += v[1];
        v[1] = ROTL(v[1], 17);
        v[1] ^= v[2];
        v[2] = ROTL(v[2], 32);
    }
}

uint64_t vg_siphash24(const uint8_t key[16], const void *p, size_t n)
{
    const uint8_t *in = p;
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v[4] = {
        0x736f6d6570736575ull ^ k0,
        0x646f72616e646f6dull ^ k1,
        0x6c7967656e657261ull ^ k0,
        0x7465646279746573ull ^ k1,
    };
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t m = load_le64(in + i);
        v[3] ^= m;
        sip_rounds(v, 2);
        v[0] ^= m;
    }
    uint64_t last = (uint64_t)n << 56;
    for (size_t j = 0; i + j < n; j++)
        last |= (uint64_t)in[i + j] << (8 * j);
    v[3] ^= last;
    sip_rounds(v, 2);
    v[0] ^= last;
    v[2] ^= 0xff;
    sip_rounds(v, 4);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}
