/* Fuzzes the decoder of verge.kv value records (they arrive from other
 * nodes and from any NATS client through a global bucket) and the key
 * check: never a crash or an out-of-bounds read, and whatever decodes
 * encodes back to the same bytes; the same for the visibility ack nodes
 * publish to a writer (any NATS client can publish one too). Input: a
 * record or an ack, as raw bytes. */
#include "state/state_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)vg_state_key_valid((const char *)data, size, NULL);
    struct vg__state_ack a;
    if (vg__state_ack_decode(data, size, &a)) {
        uint8_t buf[VG__STATE_ACK_LEN];
        vg__state_ack_encode(buf, &a);
        if (memcmp(buf, data, size) != 0)
            __builtin_trap();
    }
    struct vg__state_rec r;
    if (!vg__state_rec_decode(data, size, false, &r))
        return 0;
    size_t n = vg__state_rec_size(&r.v, r.tail_klen, r.ack);
    if (n != size)
        __builtin_trap();
    uint8_t *out = malloc(n);
    vg__state_rec_encode(out, &r.v, r.expires_ms, r.written_us, r.tail_key, r.tail_klen, r.ack ? &r.ackreq : NULL);
    if (memcmp(out, data, n) != 0)
        __builtin_trap();
    free(out);
    return 0;
}
