/* The sched unit tests' world: the bundled cities (the first n) as
 * locations, one client area at each city, pci on every third. Included
 * by each test file (cmocka's assertions, one binary per file). */
#ifndef VG_TEST_SCHED_SMALL_WORLD_H
#define VG_TEST_SCHED_SMALL_WORLD_H

#include "geo/geo.h"
#include "sched/sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A world of the bundled cities (the first n), one area at each city. */
static struct vg_sched_world *small_world(size_t n, uint32_t slots)
{
    struct vg_geo_set *set = NULL;
    assert_int_equal(vg_geo_set_builtin(&set), 0);
    struct vg_sched_location *locs = calloc(n, sizeof(*locs));
    struct vg_sched_area *areas = calloc(n, sizeof(*areas));
    for (size_t i = 0; i < n; i++) {
        const struct vg_geo_location *g = vg_geo_set_at(set, i);
        snprintf(locs[i].id, sizeof(locs[i].id), "%s", g->id);
        memcpy(locs[i].country, g->country, 3);
        snprintf(locs[i].region, sizeof(locs[i].region), "%s", g->region);
        locs[i].lat = areas[i].lat = g->lat;
        locs[i].lon = areas[i].lon = g->lon;
        memcpy(areas[i].country, g->country, 3);
        snprintf(areas[i].region, sizeof(areas[i].region), "%s", g->region);
        locs[i].cpu_m = 4000;
        locs[i].mem_mib = 8192;
        locs[i].slots = slots;
        locs[i].cost = 1;
        locs[i].tags = i % 3 == 0 ? 1 : 0; /* pci on every third */
    }
    static const char *const tags[] = {"pci"};
    struct vg_sched_world *w = NULL;
    assert_int_equal(vg_sched_world_create(locs, n, areas, n, tags, 1, &w), 0);
    free(locs);
    free(areas);
    vg_geo_set_destroy(set);
    return w;
}

#endif
