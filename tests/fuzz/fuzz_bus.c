/* Fuzzes subject checks and matching (subjects arrive from HTTP publish
 * calls and from other nodes): never a crash or an out-of-bounds read, and
 * a subject that is valid without wildcards always matches itself.
 * Input: pattern '\0' subject. */
#include "bus/bus.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[2 * VG_BUS_SUBJECT_MAX + 4];
    if (size >= sizeof(buf))
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *pattern = buf, *subject = buf + strlen(buf);
    if (subject < buf + size)
        subject++; /* past the NUL that ends the pattern */
    bool pw = vg_bus_subject_valid(pattern, true), sv = vg_bus_subject_valid(subject, false);
    if (pw && sv)
        (void)vg_bus_subject_match(pattern, subject);
    if (sv && !vg_bus_subject_match(subject, subject))
        __builtin_trap();
    return 0;
}
