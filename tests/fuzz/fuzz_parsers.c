/* Fuzzes the small parsers that read manifest and command-line values:
 * listen addresses, durations and sizes. */
#include "base/base.h"
#include "net/net.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char s[512];
    if (size >= sizeof(s))
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    struct sockaddr_storage ss;
    socklen_t len;
    uint64_t v;
    if (vg_net_addr_parse(s, &ss, &len) == 0) {
        char back[128];
        vg_net_addr_format((struct sockaddr *)&ss, back, sizeof(back));
    }
    (void)!vg_parse_duration_ms(s, &v);
    (void)!vg_parse_size(s, &v);
    return 0;
}
