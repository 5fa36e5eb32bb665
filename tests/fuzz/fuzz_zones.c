/* Fuzzes the zone1970.tab reader (a file `verge sim --cities` is given):
 * whatever it accepts holds coordinates in range and a known region. */
#include "geo/geo.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vg_geo_set *known;
    if (!known && vg_geo_set_builtin(&known) != 0)
        __builtin_trap();
    struct vg_geo_seed *seeds = NULL;
    size_t n = 0;
    struct vg_geo_error err;
    if (vg_geo_zones_parse((const char *)data, size, known, &seeds, &n, &err) != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(seeds[i].lat >= -90 && seeds[i].lat <= 90 && seeds[i].lon >= -180 && seeds[i].lon <= 180) ||
            strlen(seeds[i].region) != 2 || strlen(seeds[i].country) != 2)
            __builtin_trap();
    free(seeds);
    return 0;
}
