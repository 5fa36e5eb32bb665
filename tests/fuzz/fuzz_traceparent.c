/* Fuzzes the W3C traceparent parser (a request header: untrusted) and
 * checks that what it accepts formats back to the same header. */
#include "obs/obs.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vg_trace_parent p;
    if (!vg_trace_parse_traceparent((const char *)data, size, &p))
        return 0;
    char out[VG_TRACEPARENT_LEN + 1];
    vg_trace_format_traceparent(p.trace_id, p.span_id, p.sampled, out);
    if (size == VG_TRACEPARENT_LEN && data[0] == '0' && data[1] == '0' && data[53] == '0' &&
        (data[54] == '0' || data[54] == '1') && memcmp(out, data, VG_TRACEPARENT_LEN) != 0)
        __builtin_trap(); /* a version-00 header with flags 00/01 round-trips exactly */
    return 0;
}
