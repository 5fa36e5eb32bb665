/* The world: locations and client areas, indexed once — the nearest
 * locations of every area (a 1-degree grid searched ring by ring), ids,
 * regions, a few hub locations per country, measured RTTs. */
#include "geo/geo.h"
#include "sched/sched_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRID_LAT 180
#define GRID_LON 360
#define BRUTE_MAX 512 /* locations: below this, every area measures every location */

uint16_t vg__sched_country(const char *cc)
{
    if (cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' || cc[1] > 'Z' || cc[2])
        return 0xffff;
    return (uint16_t)(26 * (cc[0] - 'A') + (cc[1] - 'A'));
}

int vg__sched_region(const struct vg_sched_world *w, const char *name)
{
    for (size_t i = 0; i < w->n_regions; i++)
        if (strcmp(w->regions[i], name) == 0)
            return (int)i;
    return -1;
}

static int intern_region(struct vg_sched_world *w, const char *name, uint8_t *out)
{
    int r = vg__sched_region(w, name);
    if (r < 0) {
        if (w->n_regions == VG__SCHED_REGIONS_MAX || !name[0] || strlen(name) >= VG_SCHED_REGION_MAX)
            return VG_EINVAL;
        strcpy(w->regions[w->n_regions], name);
        r = (int)w->n_regions++;
    }
    *out = (uint8_t)r;
    return 0;
}

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

uint32_t vg_sched_world_find(const struct vg_sched_world *w, const char *id)
{
    for (size_t i = hash_id(id) & (w->id_cap - 1);; i = (i + 1) & (w->id_cap - 1)) {
        uint32_t v = w->id_slots[i];
        if (v == 0)
            return VG_SCHED_NONE;
        if (strcmp(w->locs[v - 1].id, id) == 0)
            return v - 1;
    }
}

static int index_ids(struct vg_sched_world *w)
{
    w->id_cap = 16;
    while (w->id_cap < 2 * w->n_locs)
        w->id_cap *= 2;
    w->id_slots = vg_xcalloc(w->id_cap, sizeof(*w->id_slots));
    for (size_t l = 0; l < w->n_locs; l++) {
        const char *id = w->locs[l].id;
        if (!id[0] || memchr(id, '\0', VG_SCHED_ID_MAX) == NULL || vg_sched_world_find(w, id) != VG_SCHED_NONE)
            return VG_EINVAL;
        size_t i = hash_id(id) & (w->id_cap - 1);
        while (w->id_slots[i])
            i = (i + 1) & (w->id_cap - 1);
        w->id_slots[i] = (uint32_t)l + 1;
    }
    return 0;
}

static uint32_t model_rtt(const struct vg_sched_world *w, uint32_t a, uint32_t l)
{
    return vg__sched_rtt_chord2(vg__sched_chord2(w, a, l));
}

/* --- the grid and each area's nearest locations ---------------------------- */

struct grid {
    uint32_t *start; /* GRID_LAT * GRID_LON + 1 */
    uint32_t *items;
};

static size_t cell_of(double lat, double lon)
{
    int i = (int)floor(lat + 90), j = (int)floor(lon + 180);
    i = i < 0 ? 0 : i >= GRID_LAT ? GRID_LAT - 1 : i;
    j = j < 0 ? 0 : j >= GRID_LON ? GRID_LON - 1 : j;
    return (size_t)i * GRID_LON + (size_t)j;
}

static void grid_build(const struct vg_sched_world *w, struct grid *g)
{
    size_t nc = (size_t)GRID_LAT * GRID_LON;
    g->start = vg_xcalloc(nc + 1, sizeof(*g->start));
    g->items = vg_xmalloc((w->n_locs ? w->n_locs : 1) * sizeof(*g->items));
    for (size_t l = 0; l < w->n_locs; l++)
        g->start[cell_of(w->locs[l].lat, w->locs[l].lon) + 1]++;
    for (size_t c = 0; c < nc; c++)
        g->start[c + 1] += g->start[c];
    uint32_t *fill = vg_xmalloc(nc * sizeof(*fill));
    memcpy(fill, g->start, nc * sizeof(*fill));
    for (size_t l = 0; l < w->n_locs; l++)
        g->items[fill[cell_of(w->locs[l].lat, w->locs[l].lon)]++] = (uint32_t)l;
    free(fill);
}

static bool near_less(struct vg__sched_near a, struct vg__sched_near b)
{
    return a.rtt_us < b.rtt_us || (a.rtt_us == b.rtt_us && a.loc < b.loc);
}

/* Inserts into a sorted list of at most cap. */
static void near_insert(struct vg__sched_near *list, uint8_t *n, uint8_t cap, struct vg__sched_near x)
{
    size_t i = *n;
    if (i == cap) {
        if (!near_less(x, list[i - 1]))
            return;
        i--;
    } else {
        (*n)++;
    }
    while (i > 0 && near_less(x, list[i - 1])) {
        list[i] = list[i - 1];
        i--;
    }
    list[i] = x;
}

/* Into a sorted list of the nearest sites: a site is listed once, at its
 * nearest location's latency. */
static void site_insert(struct vg__sched_near *list, uint8_t *n, uint8_t cap, uint32_t site, uint32_t rtt)
{
    for (uint8_t i = 0; i < *n; i++)
        if (list[i].loc == site) {
            if (rtt >= list[i].rtt_us)
                return;
            memmove(&list[i], &list[i + 1], (size_t)(*n - i - 1) * sizeof(*list));
            (*n)--;
            break;
        }
    near_insert(list, n, cap, (struct vg__sched_near){site, rtt});
}

/* Offers a location to an area's nearest locations, or (sites) to its
 * nearest sites. */
static void offer(struct vg_sched_world *w, uint32_t a, uint32_t l, bool sites)
{
    uint32_t rtt = model_rtt(w, a, l);
    if (sites)
        site_insert(&w->snear[(size_t)a * w->snear_k], &w->n_snear[a], w->snear_k, w->loc_site[l], rtt);
    else
        near_insert(&w->near[(size_t)a * VG_SCHED_NEAR], &w->n_near[a], VG_SCHED_NEAR, (struct vg__sched_near){l, rtt});
}

static void scan_cell(struct vg_sched_world *w, const struct grid *g, uint32_t a, int i, int j, bool sites)
{
    if (i < 0 || i >= GRID_LAT)
        return;
    j = ((j % GRID_LON) + GRID_LON) % GRID_LON;
    size_t c = (size_t)i * GRID_LON + (size_t)j;
    for (uint32_t k = g->start[c]; k < g->start[c + 1]; k++)
        offer(w, a, g->items[k], sites);
}

/* Rings of cells around the area until the nearest VG_SCHED_NEAR (sites:
 * snear_k) are
 * found and the next ring cannot hold a nearer one (the bound is on the
 * ring's latitude gap and its narrowest longitude gap: approximate near
 * the poles, where nothing is). A site's entry only gets nearer as its
 * locations are met, and none beyond the bound is nearer than the last. */
static void find_near(struct vg_sched_world *w, const struct grid *g, uint32_t a, bool sites)
{
    const struct vg_sched_area *ar = &w->areas[a];
    uint8_t k = sites ? w->snear_k : VG_SCHED_NEAR;
    const struct vg__sched_near *list = sites ? &w->snear[(size_t)a * k] : &w->near[(size_t)a * k];
    const uint8_t *n = sites ? &w->n_snear[a] : &w->n_near[a];
    size_t c = cell_of(ar->lat, ar->lon);
    int ci = (int)(c / GRID_LON), cj = (int)(c % GRID_LON);
    for (int r = 0; r <= GRID_LON / 2; r++) {
        if (*n == k && r >= 2) {
            double shrink = cos(fmin(89.0, fabs(ar->lat) + r) * M_PI / 180.0);
            double gap_km = (r - 1) * 111.19 * (shrink < 0.05 ? 0.05 : shrink);
            if (vg_geo_rtt_us(gap_km) > list[k - 1].rtt_us)
                break;
        }
        if (r == 0) {
            scan_cell(w, g, a, ci, cj, sites);
            continue;
        }
        for (int dj = -r; dj <= r; dj++) {
            scan_cell(w, g, a, ci - r, cj + dj, sites);
            scan_cell(w, g, a, ci + r, cj + dj, sites);
        }
        for (int di = -r + 1; di <= r - 1; di++) {
            scan_cell(w, g, a, ci + di, cj - r, sites);
            if (2 * r != GRID_LON)
                scan_cell(w, g, a, ci + di, cj + r, sites);
        }
    }
}

/* Every area's nearest locations, or (sites) nearest sites. */
static void find_all_near(struct vg_sched_world *w, bool sites)
{
    if (w->n_locs <= BRUTE_MAX) { /* a grid of empty cells costs more than it saves */
        for (size_t a = 0; a < w->n_areas; a++)
            for (size_t l = 0; l < w->n_locs; l++)
                offer(w, (uint32_t)a, (uint32_t)l, sites);
        return;
    }
    struct grid g;
    grid_build(w, &g);
    for (size_t a = 0; a < w->n_areas; a++)
        find_near(w, &g, (uint32_t)a, sites);
    free(g.start);
    free(g.items);
}

/* --- sites ----------------------------------------------------------------------- */

static uint64_t site_key(const struct vg_sched_world *w, uint32_t l, double deg)
{
    const struct vg_sched_location *lo = &w->locs[l];
    uint64_t i = (uint64_t)floor((lo->lat + 90) / deg), j = (uint64_t)floor((lo->lon + 180) / deg);
    return i << 40 | j << 24 | (uint64_t)w->loc_country[l] << 8 | w->loc_region[l];
}

/* loc_site: sites numbered in the order of their first location (each
 * location its own when deg is 0). */
static void number_sites(struct vg_sched_world *w, double deg)
{
    w->loc_site = vg_xmalloc((w->n_locs + 1) * sizeof(*w->loc_site));
    w->n_sites = 0;
    if (deg == 0) {
        for (size_t l = 0; l < w->n_locs; l++)
            w->loc_site[l] = (uint32_t)l;
        w->n_sites = w->n_locs;
        return;
    }
    size_t cap = 16;
    while (cap < 2 * w->n_locs)
        cap *= 2;
    uint64_t *keys = vg_xmalloc(cap * sizeof(*keys));
    uint32_t *ids = vg_xmalloc(cap * sizeof(*ids));
    memset(ids, 0xff, cap * sizeof(*ids));
    for (size_t l = 0; l < w->n_locs; l++) {
        uint64_t k = site_key(w, (uint32_t)l, deg);
        size_t h = (size_t)((k * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
        while (ids[h] != VG_SCHED_NONE && keys[h] != k)
            h = (h + 1) & (cap - 1);
        if (ids[h] == VG_SCHED_NONE)
            keys[h] = k, ids[h] = (uint32_t)w->n_sites++;
        w->loc_site[l] = ids[h];
    }
    free(keys);
    free(ids);
}

static void sites_free(struct vg_sched_world *w)
{
    free(w->loc_site);
    free(w->site_start);
    free(w->site_locs);
    free(w->site_cost);
    free(w->site_country);
    free(w->site_region);
    free(w->site_xyz);
    free(w->site_tags);
    free(w->site_tags_any);
    free(w->site_areas_at);
    free(w->site_areas);
    free(w->site0);
    if (w->snear != w->near) {
        free(w->snear);
        free(w->n_snear);
    }
    w->loc_site = w->site_start = w->site_locs = w->site_cost = NULL;
    w->site_country = NULL;
    w->site_region = NULL;
    w->site_xyz = NULL;
    w->site_tags = NULL;
    w->site_tags_any = NULL;
    w->site_areas_at = w->site_areas = NULL;
    w->site0 = NULL;
    w->snear = NULL;
    w->n_snear = NULL;
}

void *vg__sched_alloc_lines(size_t n, size_t size)
{
    void *p = aligned_alloc(64, ((n ? n : 1) * size + 63) / 64 * 64);
    VG_AN(p);
    return p;
}

void *vg__sched_calloc_lines(size_t n, size_t size)
{
    void *p = vg__sched_alloc_lines(n, size);
    memset(p, 0, (n ? n : 1) * size);
    return p;
}

static void first_site_records(struct vg_sched_world *w);

static void index_sites(struct vg_sched_world *w, double deg)
{
    sites_free(w);
    w->site_deg = deg;
    w->sites_gen++;
    number_sites(w, deg);
    size_t ns = w->n_sites;
    w->site_start = vg_xcalloc(ns + 2, sizeof(*w->site_start));
    w->site_locs = vg_xmalloc((w->n_locs + 1) * sizeof(*w->site_locs));
    w->site_cost = vg_xmalloc((ns + 1) * sizeof(*w->site_cost));
    memset(w->site_cost, 0xff, (ns + 1) * sizeof(*w->site_cost));
    for (size_t l = 0; l < w->n_locs; l++)
        w->site_start[w->loc_site[l] + 2]++;
    for (size_t s = 0; s < ns; s++)
        w->site_start[s + 2] += w->site_start[s + 1];
    for (size_t l = 0; l < w->n_locs; l++) { /* site_start[s + 1]: where s's next goes, then its end */
        uint32_t s = w->loc_site[l];
        w->site_locs[w->site_start[s + 1]++] = (uint32_t)l;
        if (w->locs[l].cost < w->site_cost[s])
            w->site_cost[s] = w->locs[l].cost;
    }
    w->site_country = vg_xmalloc((ns + 1) * sizeof(*w->site_country));
    w->site_region = vg_xmalloc(ns + 1);
    w->site_xyz = vg_xmalloc((w->n_locs + 1) * sizeof(*w->site_xyz));
    for (size_t s = 0; s < ns; s++) {
        uint32_t first = w->site_locs[w->site_start[s]];
        w->site_country[s] = w->loc_country[first];
        w->site_region[s] = w->loc_region[first];
    }
    w->site_tags = vg_xmalloc((w->n_locs + 1) * sizeof(*w->site_tags));
    w->site_tags_any = vg_xcalloc(ns + 1, sizeof(*w->site_tags_any));
    for (size_t i = 0; i < w->n_locs; i++) {
        w->site_xyz[i] = w->loc_xyz[w->site_locs[i]];
        w->site_tags[i] = w->locs[w->site_locs[i]].tags;
        w->site_tags_any[w->loc_site[w->site_locs[i]]] |= w->site_tags[i];
    }
    first_site_records(w);
    if (deg == 0) {
        w->snear = w->near;
        w->n_snear = w->n_near;
        w->snear_k = VG_SCHED_NEAR;
        vg__sched_site_areas(w, &w->site_areas_at, &w->site_areas);
        return;
    }
    /* the pruning is for scale: a small world lists as many as it did towers */
    w->snear_k = w->n_locs <= BRUTE_MAX ? VG_SCHED_NEAR : VG__SCHED_SITE_NEAR;
    w->snear = vg__sched_calloc_lines(w->n_areas * w->snear_k + 1, sizeof(*w->snear)); /* an area's list: one line */
    w->n_snear = vg_xcalloc(w->n_areas + 1, 1);
    find_all_near(w, true);
    vg__sched_site_areas(w, &w->site_areas_at, &w->site_areas);
}

void vg__sched_site_areas(const struct vg_sched_world *w, uint32_t **at_out, uint32_t **areas_out)
{
    uint32_t *at = vg_xcalloc(w->n_sites + 2, sizeof(*at));
    for (size_t a = 0; a < w->n_areas; a++)
        for (uint8_t k = 0; k < w->n_snear[a]; k++)
            at[w->snear[a * w->snear_k + k].loc + 2]++;
    for (size_t s = 0; s < w->n_sites; s++)
        at[s + 2] += at[s + 1];
    uint32_t *areas = vg_xmalloc((at[w->n_sites + 1] + 1) * sizeof(*areas));
    for (size_t a = 0; a < w->n_areas; a++) /* at[s + 1]: where s's next goes, then its end */
        for (uint8_t k = 0; k < w->n_snear[a]; k++)
            areas[at[w->snear[a * w->snear_k + k].loc + 1]++] = (uint32_t)a;
    *at_out = at;
    *areas_out = areas;
}

/* The sites' records of a plan that holds nothing (struct vg__sched_site:
 * the witness by the same rule as the plan's upkeep, on full capacity). */
static void first_site_records(struct vg_sched_world *w)
{
    w->site0 = vg__sched_calloc_lines(w->n_sites + 1, sizeof(*w->site0));
    for (uint32_t s = 0; s < w->n_sites; s++) {
        struct vg__sched_site *ss = &w->site0[s];
        *ss = (struct vg__sched_site){.loc = VG_SCHED_NONE,
                                      .first = w->site_locs[w->site_start[s]],
                                      .tags_any = w->site_tags_any[s],
                                      .cost = w->site_cost[s],
                                      .country = w->site_country[s],
                                      .region = w->site_region[s]};
        for (uint32_t i = w->site_start[s]; i < w->site_start[s + 1]; i++) {
            const struct vg__sched_loc *u = &w->loc0[w->site_locs[i]];
            if (vg__sched_witness_better(u, ss->loc != VG_SCHED_NONE, ss->cpu_free, ss->mem_free))
                ss->loc = w->site_locs[i], ss->cpu_free = u->cpu_free, ss->mem_free = u->mem_free;
        }
    }
}

static void site_remeasured(struct vg_sched_world *w, uint32_t area, uint32_t site);

static bool site_deg_ok(double d)
{
    return d == 0 || (d >= 0.01 && d <= 10);
}

int vg_sched_parse_site_deg(const char *s, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !site_deg_ok(d))
        return VG_EINVAL;
    *out = d;
    return 0;
}

int vg_sched_world_set_sites(struct vg_sched_world *w, double cell_deg)
{
    if (!site_deg_ok(cell_deg))
        return VG_EINVAL;
    if (cell_deg == w->site_deg)
        return 0; /* as grouped: plans made on it stay usable */
    index_sites(w, cell_deg);
    for (size_t i = 0; i < w->ovr_cap; i++) /* measured RTTs move their sites' entries */
        if (w->ovr[i].key)
            site_remeasured(w, (uint32_t)((w->ovr[i].key - 1) >> 32), w->loc_site[(uint32_t)(w->ovr[i].key - 1)]);
    return 0;
}

size_t vg_sched_world_n_sites(const struct vg_sched_world *w)
{
    return w->n_sites;
}

uint32_t vg_sched_world_site(const struct vg_sched_world *w, uint32_t loc)
{
    VG_ASSERT(loc < w->n_locs);
    return w->loc_site[loc];
}

const uint32_t *vg_sched_world_site_locations(const struct vg_sched_world *w, uint32_t site, size_t *n)
{
    VG_ASSERT(site < w->n_sites);
    uint32_t k;
    const uint32_t *v = vg__sched_site_locs(w, site, &k);
    *n = k;
    return v;
}

/* Up to VG__SCHED_HUBS_PER_COUNTRY locations per country, spread over its
 * list: where an area none of whose nearest locations an app may use
 * looks for one. */
static void pick_hubs(struct vg_sched_world *w)
{
    uint32_t *count = vg_xcalloc(VG__SCHED_COUNTRIES, sizeof(*count));
    uint32_t *seen = vg_xcalloc(VG__SCHED_COUNTRIES, sizeof(*seen));
    for (size_t l = 0; l < w->n_locs; l++)
        count[w->loc_country[l]]++;
    w->hubs = vg_xmalloc((w->n_locs ? w->n_locs : 1) * sizeof(*w->hubs));
    for (size_t l = 0; l < w->n_locs; l++) {
        uint16_t cc = w->loc_country[l];
        uint32_t stride = count[cc] / VG__SCHED_HUBS_PER_COUNTRY + 1, k = seen[cc]++;
        if (k % stride == 0)
            w->hubs[w->n_hubs++] = (uint32_t)l;
    }
    free(count);
    free(seen);
}

static int check_inputs(struct vg_sched_world *w)
{
    for (size_t l = 0; l < w->n_locs; l++) {
        struct vg_sched_location *lo = &w->locs[l];
        if ((w->loc_country[l] = vg__sched_country(lo->country)) == 0xffff)
            return VG_EINVAL;
        if (memchr(lo->region, '\0', VG_SCHED_REGION_MAX) == NULL || intern_region(w, lo->region, &w->loc_region[l]))
            return VG_EINVAL;
        if (!(lo->lat >= -90 && lo->lat <= 90 && lo->lon >= -180 && lo->lon <= 180))
            return VG_EINVAL;
    }
    for (size_t a = 0; a < w->n_areas; a++) {
        struct vg_sched_area *ar = &w->areas[a];
        if (vg__sched_country(ar->country) == 0xffff || !(ar->lat >= -90 && ar->lat <= 90) ||
            !(ar->lon >= -180 && ar->lon <= 180))
            return VG_EINVAL;
        if (memchr(ar->region, '\0', VG_SCHED_REGION_MAX) == NULL || intern_region(w, ar->region, &w->area_region[a]))
            return VG_EINVAL;
    }
    return 0;
}

int vg_sched_world_create(const struct vg_sched_location *locs, size_t n_locs, const struct vg_sched_area *areas,
                          size_t n_areas, const char *const *tag_names, size_t n_tags, struct vg_sched_world **out)
{
    if (n_tags > VG_SCHED_TAGS_MAX || n_locs >= UINT32_MAX || n_areas >= UINT32_MAX)
        return VG_EINVAL;
    struct vg_sched_world *w = vg_xcalloc(1, sizeof(*w));
    w->magic = VG__SCHED_WORLD_MAGIC;
    w->n_locs = n_locs;
    w->n_areas = n_areas;
    w->locs = vg_xmalloc((n_locs ? n_locs : 1) * sizeof(*locs));
    memcpy(w->locs, locs, n_locs * sizeof(*locs));
    w->areas = vg_xmalloc((n_areas ? n_areas : 1) * sizeof(*areas));
    memcpy(w->areas, areas, n_areas * sizeof(*areas));
    w->loc_country = vg_xcalloc(n_locs + 1, sizeof(*w->loc_country));
    w->loc_region = vg_xcalloc(n_locs + 1, 1);
    w->area_region = vg_xcalloc(n_areas + 1, 1);
    w->near = vg__sched_calloc_lines(n_areas * VG_SCHED_NEAR + 1, sizeof(*w->near));
    w->loc_xyz = vg_xcalloc(n_locs + 1, sizeof(*w->loc_xyz));
    w->area_xyz = vg_xcalloc(n_areas + 1, sizeof(*w->area_xyz));
    w->n_near = vg_xcalloc(n_areas + 1, 1);
    int rc = VG_EINVAL;
    for (size_t t = 0; t < n_tags; t++) {
        if (!tag_names[t] || strlen(tag_names[t]) >= sizeof(w->tags[0]))
            goto out;
        strcpy(w->tags[t], tag_names[t]);
    }
    w->n_tags = n_tags;
    if ((rc = check_inputs(w)) != 0 || (rc = index_ids(w)) != 0)
        goto out;
    w->hot = vg_xcalloc(n_locs + 1, sizeof(*w->hot));
    w->loc0 = vg__sched_calloc_lines(n_locs + 1, sizeof(*w->loc0));
    for (size_t l = 0; l < n_locs; l++) {
        const struct vg_sched_location *lo = &w->locs[l];
        w->hot[l] = (struct vg__sched_lhot){lo->tags,  lo->cost,          lo->cpu_m,       lo->mem_mib,
                                            lo->slots, w->loc_country[l], w->loc_region[l]};
        w->loc0[l] = (struct vg__sched_loc){.cpu_free = lo->cpu_m,
                                            .mem_free = lo->mem_mib,
                                            .slots_free = lo->slots,
                                            .top = VG_SCHED_NONE,
                                            .cost = lo->cost,
                                            .tags = lo->tags,
                                            .country = w->loc_country[l],
                                            .region = w->loc_region[l]};
        vg_geo_to_xyz(lo->lat, lo->lon, &w->loc_xyz[l]);
    }
    for (size_t a = 0; a < n_areas; a++)
        vg_geo_to_xyz(w->areas[a].lat, w->areas[a].lon, &w->area_xyz[a]);
    find_all_near(w, false);
    index_sites(w, VG_SCHED_SITE_DEG);
    pick_hubs(w);
    rc = 0;
out:
    if (rc) {
        vg_sched_world_destroy(w);
        return rc;
    }
    *out = w;
    return 0;
}

void vg_sched_world_destroy(struct vg_sched_world *w)
{
    if (!w)
        return;
    VG_ASSERT(w->magic == VG__SCHED_WORLD_MAGIC);
    free(w->locs);
    free(w->areas);
    free(w->hot);
    free(w->loc0);
    free(w->loc_country);
    free(w->loc_region);
    free(w->area_region);
    free(w->near);
    free(w->n_near);
    free(w->loc_xyz);
    free(w->area_xyz);
    free(w->id_slots);
    free(w->hubs);
    free(w->ovr);
    sites_free(w);
    w->magic = 0;
    free(w);
}

size_t vg_sched_world_n_locations(const struct vg_sched_world *w)
{
    return w->n_locs;
}

size_t vg_sched_world_n_areas(const struct vg_sched_world *w)
{
    return w->n_areas;
}

const struct vg_sched_location *vg_sched_world_location(const struct vg_sched_world *w, size_t i)
{
    VG_ASSERT(i < w->n_locs);
    return &w->locs[i];
}

const struct vg_sched_area *vg_sched_world_area(const struct vg_sched_world *w, size_t i)
{
    VG_ASSERT(i < w->n_areas);
    return &w->areas[i];
}

uint32_t vg_sched_world_tag(const struct vg_sched_world *w, const char *name)
{
    for (size_t t = 0; t < w->n_tags; t++)
        if (strcmp(w->tags[t], name) == 0)
            return 1u << t;
    return 0;
}

const char *vg_sched_world_tag_name(const struct vg_sched_world *w, unsigned bit)
{
    return bit < w->n_tags ? w->tags[bit] : "?";
}

/* --- measured RTTs ---------------------------------------------------------- */

static struct vg__sched_rtt_ovr *ovr_slot(const struct vg_sched_world *w, uint64_t key)
{
    if (!w->ovr_cap)
        return NULL;
    for (size_t i = (key * 0x9e3779b97f4a7c15ull) >> 40 & (w->ovr_cap - 1);; i = (i + 1) & (w->ovr_cap - 1))
        if (w->ovr[i].key == key || w->ovr[i].key == 0)
            return &w->ovr[i];
}

static void ovr_grow(struct vg_sched_world *w)
{
    struct vg__sched_rtt_ovr *old = w->ovr;
    size_t old_cap = w->ovr_cap;
    w->ovr_cap = old_cap ? old_cap * 2 : 64;
    w->ovr = vg_xcalloc(w->ovr_cap, sizeof(*w->ovr));
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key)
            *ovr_slot(w, old[i].key) = old[i];
    free(old);
}

/* An entry of a nearest list whose latency changed: it moves within the
 * list, enters it or leaves it (an entry that leaves is not replaced by
 * the next one out: the list may end short). */
static void relist(struct vg__sched_near *list, uint8_t *n_list, uint8_t cap, uint32_t id, uint32_t rtt_us)
{
    uint8_t n = *n_list, m = 0;
    struct vg__sched_near keep[VG_SCHED_NEAR];
    for (uint8_t i = 0; i < n; i++)
        if (list[i].loc != id)
            keep[m++] = list[i];
    bool was_in = m != n;
    *n_list = 0;
    for (uint8_t i = 0; i < m; i++)
        near_insert(list, n_list, cap, keep[i]);
    if (was_in || *n_list < cap || near_less((struct vg__sched_near){id, rtt_us}, list[m - 1]))
        near_insert(list, n_list, cap, (struct vg__sched_near){id, rtt_us});
}

/* A site's entry is its nearest location's latency, measured or not. */
static void site_remeasured(struct vg_sched_world *w, uint32_t area, uint32_t site)
{
    uint32_t n, best = UINT32_MAX;
    const uint32_t *t = vg__sched_site_locs(w, site, &n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t r = vg_sched_rtt_us(w, area, t[i]);
        best = r < best ? r : best;
    }
    relist(&w->snear[(size_t)area * w->snear_k], &w->n_snear[area], w->snear_k, site, best);
}

int vg_sched_world_set_rtt(struct vg_sched_world *w, uint32_t area, uint32_t loc, uint32_t rtt_us)
{
    if (area >= w->n_areas || loc >= w->n_locs)
        return VG_EINVAL;
    if (2 * (w->n_ovr + 1) > w->ovr_cap)
        ovr_grow(w);
    uint64_t key = ((uint64_t)area << 32 | loc) + 1;
    struct vg__sched_rtt_ovr *s = ovr_slot(w, key);
    if (s->key == 0)
        w->n_ovr++;
    *s = (struct vg__sched_rtt_ovr){key, rtt_us};
    relist(&w->near[(size_t)area * VG_SCHED_NEAR], &w->n_near[area], VG_SCHED_NEAR, loc, rtt_us);
    free(w->site_areas_at); /* the lists moved: a parallel placement indexes them itself */
    free(w->site_areas);
    w->site_areas_at = w->site_areas = NULL;
    if (w->snear != w->near)
        site_remeasured(w, area, w->loc_site[loc]);
    return 0;
}

uint32_t vg_sched_rtt_us(const struct vg_sched_world *w, uint32_t area, uint32_t loc)
{
    VG_ASSERT(area < w->n_areas && loc < w->n_locs);
    if (w->n_ovr == 0) /* the nearest lists hold the model's figures: no need to look */
        return model_rtt(w, area, loc);
    const struct vg__sched_rtt_ovr *s = ovr_slot(w, ((uint64_t)area << 32 | loc) + 1);
    if (s && s->key)
        return s->rtt_us;
    const struct vg__sched_near *list = &w->near[(size_t)area * VG_SCHED_NEAR];
    for (uint8_t i = 0; i < w->n_near[area]; i++)
        if (list[i].loc == loc)
            return list[i].rtt_us;
    return model_rtt(w, area, loc);
}

/* --- compiled enforcements ---------------------------------------------------- */

static void bit_set(uint8_t *b, unsigned i)
{
    b[i / 8] |= (uint8_t)(1u << (i % 8));
}

static void compile_countries(const char *const *cc, size_t n, uint8_t *bits)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t c = vg__sched_country(cc[i]);
        if (c != 0xffff)
            bit_set(bits, c);
    }
}

/* A region the world does not know cannot match any location: an allow
 * list naming only such regions allows nothing (any_allow stays true). */
static void compile_regions(const struct vg_sched_world *w, const char *const *rr, size_t n, uint8_t *bits)
{
    for (size_t i = 0; i < n; i++) {
        int r = vg__sched_region(w, rr[i]);
        if (r >= 0)
            bit_set(bits, (unsigned)r);
    }
}

void vg__sched_rules_compile(const struct vg_sched_world *w, const struct vg_sched_app *app, struct vg__sched_rules *r)
{
    const struct vg_sched_enforce *e = &app->enforce;
    memset(r, 0, sizeof(*r));
    compile_countries(e->allow_countries, e->n_allow_countries, r->allow_c);
    compile_countries(e->deny_countries, e->n_deny_countries, r->deny_c);
    compile_regions(w, e->allow_regions, e->n_allow_regions, r->allow_r);
    compile_regions(w, e->deny_regions, e->n_deny_regions, r->deny_r);
    r->any_allow_c = e->n_allow_countries > 0;
    r->any_allow_r = e->n_allow_regions > 0;
    r->tags = e->require_tags;
    r->residency = e->residency;
    r->any = e->n_allow_countries || e->n_deny_countries || e->n_allow_regions || e->n_deny_regions || r->tags;
}
