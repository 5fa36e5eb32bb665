/* The location list reader, the bundled list, distances. */
#include "geo.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vg_geo_set {
    struct vg_geo_location *locs;
    size_t n, cap;
};

/* data/locations.csv as a string literal, written by the Makefile (sed). */
static const char builtin_csv[] =
#include "geo_locations_csv.inc"
    ;

const char *vg_geo_builtin_csv(size_t *len)
{
    *len = sizeof(builtin_csv) - 1;
    return builtin_csv;
}

/* the columns: id, city, country, region, lat, lon */
#define NCOLS 6

static int fail(struct vg_geo_error *err, int line, int col, const char *fmt, const char *arg)
{
    err->line = line;
    err->col = col;
    snprintf(err->msg, sizeof(err->msg), fmt, arg);
    return VG_EINVAL;
}

static bool is_name(const char *s, size_t len, size_t max)
{
    if (len == 0 || len >= max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
            return false;
    return true;
}

/* A decimal number in [lo, hi] filling the whole field. */
static bool parse_degrees(const char *s, size_t len, double lo, double hi, double *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (!(isdigit((unsigned char)buf[i]) || buf[i] == '.' || buf[i] == '-' || buf[i] == '+'))
            return false; /* no "nan", "inf", hex or exponents */
    char *end;
    double v = strtod(buf, &end);
    if (*end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

/* One data line split into its fields; checks each into *loc. */
static int parse_row(const char *p, size_t len, int line, struct vg_geo_location *loc, struct vg_geo_error *err)
{
    const char *f[NCOLS];
    size_t fl[NCOLS], n = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != ',')
            continue;
        if (n == NCOLS)
            return fail(err, line, (int)start + 1, "more than %s fields", "6");
        f[n] = p + start;
        fl[n++] = i - start;
        start = i + 1;
    }
    if (n != NCOLS)
        return fail(err, line, (int)len + 1, "%s fields expected: id,city,country,region,lat,lon", "6");
    int col[NCOLS];
    for (size_t i = 0; i < NCOLS; i++)
        col[i] = (int)(f[i] - p) + 1;
    memset(loc, 0, sizeof(*loc));
    if (!is_name(f[0], fl[0], VG_GEO_ID_MAX))
        return fail(err, line, col[0], "the id must be 1 to 15 of a-z, 0-9 and '-'%s", "");
    memcpy(loc->id, f[0], fl[0]);
    if (fl[1] == 0 || fl[1] >= VG_GEO_CITY_MAX)
        return fail(err, line, col[1], "the city must be 1 to 47 bytes%s", "");
    for (size_t i = 0; i < fl[1]; i++)
        if ((unsigned char)f[1][i] < 0x20 || f[1][i] == 0x7f)
            return fail(err, line, col[1] + (int)i, "control character in the city%s", "");
    memcpy(loc->city, f[1], fl[1]);
    if (fl[2] != 2 || !isupper((unsigned char)f[2][0]) || !isupper((unsigned char)f[2][1]))
        return fail(err, line, col[2], "the country must be two upper-case letters (ISO 3166-1)%s", "");
    memcpy(loc->country, f[2], 2);
    if (!is_name(f[3], fl[3], VG_GEO_REGION_MAX))
        return fail(err, line, col[3], "the region must be 1 to 15 of a-z, 0-9 and '-'%s", "");
    memcpy(loc->region, f[3], fl[3]);
    if (!parse_degrees(f[4], fl[4], -90, 90, &loc->lat))
        return fail(err, line, col[4], "the latitude must be a number of degrees from -90 to 90%s", "");
    if (!parse_degrees(f[5], fl[5], -180, 180, &loc->lon))
        return fail(err, line, col[5], "the longitude must be a number of degrees from -180 to 180%s", "");
    return 0;
}

static bool is_header(const char *p, size_t len)
{
    static const char want[] = "id,city,country,region,lat,lon";
    return len == sizeof(want) - 1 && memcmp(p, want, len) == 0;
}

int vg_geo_set_parse(const char *text, size_t len, struct vg_geo_set **out, struct vg_geo_error *err)
{
    struct vg_geo_set *set = vg_xcalloc(1, sizeof(*set));
    bool header = false;
    int line = 0, rc = 0;
    size_t pos = 0;
    while (pos < len && rc == 0) {
        const char *p = text + pos;
        const char *nl = memchr(p, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - p) : len - pos;
        pos += l + (nl ? 1 : 0);
        line++;
        if (l && p[l - 1] == '\r')
            l--;
        if (memchr(p, '\0', l)) {
            rc = fail(err, line, (int)((const char *)memchr(p, '\0', l) - p) + 1, "NUL byte%s", "");
            break;
        }
        if (l == 0 || p[0] == '#')
            continue;
        if (!header) {
            if (!is_header(p, l))
                rc = fail(err, line, 1, "the first line must be the header %s", "id,city,country,region,lat,lon");
            header = true;
            continue;
        }
        if (set->n == VG_GEO_MAX) {
            rc = fail(err, line, 1, "more than %s locations", "100000");
            break;
        }
        struct vg_geo_location loc;
        if ((rc = parse_row(p, l, line, &loc, err)) != 0)
            break;
        if (vg_geo_set_find(set, loc.id)) {
            rc = fail(err, line, 1, "duplicate id '%s'", loc.id);
            break;
        }
        if (set->n == set->cap) {
            set->cap = set->cap ? set->cap * 2 : 64;
            set->locs = vg_xrealloc(set->locs, set->cap * sizeof(*set->locs));
        }
        set->locs[set->n++] = loc;
    }
    if (rc == 0 && !header)
        rc = fail(err, line ? line : 1, 1, "no header line (%s)", "id,city,country,region,lat,lon");
    if (rc != 0) {
        vg_geo_set_destroy(set);
        return rc;
    }
    *out = set;
    return 0;
}

int vg_geo_set_builtin(struct vg_geo_set **out)
{
    struct vg_geo_error err;
    int rc = vg_geo_set_parse(builtin_csv, sizeof(builtin_csv) - 1, out, &err);
    VG_ASSERT(rc == 0); /* the bundled list is checked by tests/unit/geo */
    return rc;
}

void vg_geo_set_destroy(struct vg_geo_set *set)
{
    if (!set)
        return;
    free(set->locs);
    free(set);
}

size_t vg_geo_set_count(const struct vg_geo_set *set)
{
    return set->n;
}

const struct vg_geo_location *vg_geo_set_at(const struct vg_geo_set *set, size_t i)
{
    VG_ASSERT(i < set->n);
    return &set->locs[i];
}

/* Linear: sets are read once and looked up a few times (dev: N <= 64);
 * a scheduler with thousands of locations indexes them itself. */
size_t vg_geo_set_index(const struct vg_geo_set *set, const char *id)
{
    size_t i = 0;
    while (id && i < set->n && strcmp(set->locs[i].id, id) != 0)
        i++;
    return id ? i : set->n;
}

const struct vg_geo_location *vg_geo_set_find(const struct vg_geo_set *set, const char *id)
{
    size_t i = vg_geo_set_index(set, id);
    return i < set->n ? &set->locs[i] : NULL;
}

double vg_geo_distance_km_ll(double lat1, double lon1, double lat2, double lon2)
{
    const double r = 6371.0, rad = M_PI / 180.0;
    double dlat = (lat2 - lat1) * rad, dlon = (lon2 - lon1) * rad;
    double h = sin(dlat / 2) * sin(dlat / 2) + cos(lat1 * rad) * cos(lat2 * rad) * sin(dlon / 2) * sin(dlon / 2);
    if (h > 1)
        h = 1;
    return 2 * r * asin(sqrt(h));
}

void vg_geo_to_xyz(double lat, double lon, struct vg_geo_xyz *out)
{
    const double rad = M_PI / 180.0;
    out->x = cos(lat * rad) * cos(lon * rad);
    out->y = cos(lat * rad) * sin(lon * rad);
    out->z = sin(lat * rad);
}

double vg_geo_distance_km_xyz(const struct vg_geo_xyz *a, const struct vg_geo_xyz *b)
{
    double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
    return vg_geo_distance_km_chord2(dx * dx + dy * dy + dz * dz);
}

double vg_geo_distance_km_chord2(double chord2)
{
    double half = sqrt(chord2) / 2;
    return 2 * 6371.0 * asin(half > 1 ? 1 : half);
}

size_t vg_geo_nearest_xyz(const struct vg_geo_xyz *pts, size_t n, const struct vg_geo_xyz *p)
{
    /* the chord, and so the arc, shrinks as the dot product grows */
    size_t best = 0;
    double best_dot = -2;
    for (size_t i = 0; i < n; i++) {
        double d = pts[i].x * p->x + pts[i].y * p->y + pts[i].z * p->z;
        if (d > best_dot) {
            best_dot = d;
            best = i;
        }
    }
    return best;
}

double vg_geo_distance_km(const struct vg_geo_location *a, const struct vg_geo_location *b)
{
    return vg_geo_distance_km_ll(a->lat, a->lon, b->lat, b->lon);
}

uint64_t vg_geo_rtt_us(double km)
{
    if (!(km >= 0))
        km = 0;
    return (uint64_t)(2 * (km * VG_GEO_FIBRE_US_PER_KM + VG_GEO_HOP_US) + 0.5);
}
