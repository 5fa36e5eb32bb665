/* geo: locations (id, city, country, region, latitude/longitude) and the
 * distances and network latencies between them.
 *
 * The bundled list (data/locations.csv, embedded in the binary at build
 * time) is what `verge dev` simulates and what the scheduler places apps
 * on; the same reader takes a list of one's own (thousands of locations in
 * a simulation). Pure: no I/O. */
#ifndef VG_GEO_H
#define VG_GEO_H

#include "base/base.h"

#include <stddef.h>
#include <stdint.h>

#define VG_GEO_ID_MAX 16     /* [a-z0-9-], 1 to 15 bytes */
#define VG_GEO_CITY_MAX 48   /* printable, no comma, 1 to 47 bytes */
#define VG_GEO_REGION_MAX 16 /* [a-z0-9-], 1 to 15 bytes */
#define VG_GEO_MAX 100000    /* locations in one set */

struct vg_geo_location {
    char id[VG_GEO_ID_MAX];
    char city[VG_GEO_CITY_MAX];
    char country[3]; /* ISO 3166-1 alpha-2, upper case */
    char region[VG_GEO_REGION_MAX];
    double lat, lon; /* degrees: -90..90, -180..180 */
};

/* A list of locations in file order, ids unique. */
struct vg_geo_set;

/* Where a list was refused: line and column are 1-based. */
struct vg_geo_error {
    int line, col;
    char msg[160];
};

/* Reads a CSV list: a header line `id,city,country,region,lat,lon` (the
 * columns in that order), then one location per line; lines starting with
 * '#' and blank lines are skipped. No quoting: fields hold no commas.
 * Returns 0 and the set in *out (the caller's: vg_geo_set_destroy), else
 * VG_EINVAL with *err filled. */
int vg_geo_set_parse(const char *text, size_t len, struct vg_geo_set **out, struct vg_geo_error *err) VG_MUST_CHECK;

/* The bundled list (data/locations.csv); the caller owns *out. */
int vg_geo_set_builtin(struct vg_geo_set **out) VG_MUST_CHECK;

/* The bundled list's CSV text (static storage). */
const char *vg_geo_builtin_csv(size_t *len);

void vg_geo_set_destroy(struct vg_geo_set *set);

size_t vg_geo_set_count(const struct vg_geo_set *set);
/* The i-th location (i < count); valid while the set lives. */
const struct vg_geo_location *vg_geo_set_at(const struct vg_geo_set *set, size_t i);
/* The index of the location with this id, or the set's count when there
 * is none (id NULL included): the slot of "elsewhere" in per-location
 * arrays of count + 1. */
size_t vg_geo_set_index(const struct vg_geo_set *set, const char *id);
/* The location with this id, or NULL. */
const struct vg_geo_location *vg_geo_set_find(const struct vg_geo_set *set, const char *id);

/* A place that seeds a simulated world (towers and client areas around it). */
struct vg_geo_seed {
    double lat, lon;
    char country[3];
    char region[VG_GEO_REGION_MAX];
};
/* Reads tzdata's zone1970.tab (/usr/share/zoneinfo/zone1970.tab): every
 * zone's place with its country; regions from `known` (the bundled list)
 * where it has the country, else from the zone's continent; polar zones
 * skipped. 0 with *out (the caller frees it) and *n, else VG_EINVAL with
 * *err (line and column). */
int vg_geo_zones_parse(const char *text, size_t len, const struct vg_geo_set *known, struct vg_geo_seed **out,
                       size_t *n, struct vg_geo_error *err) VG_MUST_CHECK;

/* Great-circle distance in km (haversine on a sphere of radius 6371 km). */
double vg_geo_distance_km(const struct vg_geo_location *a, const struct vg_geo_location *b);
/* The same between two points given in degrees (client areas, synthetic
 * towers: points that are not locations of a set). */
double vg_geo_distance_km_ll(double lat1, double lon1, double lat2, double lon2);

/* A point as a unit vector: when one point is measured against many,
 * the trigonometry is done once per point and a distance is a chord
 * (a square root and an arcsine). Agrees with vg_geo_distance_km_ll to
 * well under a metre. */
struct vg_geo_xyz {
    double x, y, z;
};
void vg_geo_to_xyz(double lat, double lon, struct vg_geo_xyz *out);
double vg_geo_distance_km_xyz(const struct vg_geo_xyz *a, const struct vg_geo_xyz *b);
/* The same for a squared chord (dx^2 + dy^2 + dz^2 of two unit vectors),
 * for callers that compared chords first. */
double vg_geo_distance_km_chord2(double chord2);
/* The index of the point of pts[0..n) nearest to p on the sphere (n >= 1;
 * ties go to the first): the largest dot product of the unit vectors, so
 * no trigonometry at all, a few ns per point (a node maps a client's
 * GeoIP position to a bundled location this way). */
size_t vg_geo_nearest_xyz(const struct vg_geo_xyz *pts, size_t n, const struct vg_geo_xyz *p);

/* A round trip's network latency over km of great-circle distance, in µs:
 * light in fibre covers a km in about 4.9 µs (refractive index ~1.47),
 * each way, plus VG_GEO_HOP_US each way for the access network and the
 * routers on the way. Real paths are longer than great circles: this is a
 * floor. */
#define VG_GEO_FIBRE_US_PER_KM 4.9
#define VG_GEO_HOP_US 1000
uint64_t vg_geo_rtt_us(double km);

#endif
