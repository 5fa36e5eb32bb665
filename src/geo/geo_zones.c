/* tzdata's zone1970.tab as seeds of a simulated world (`verge sim`): about
 * 310 real places with their countries, far more than the bundled list.
 * Each line is `codes<TAB>coordinates<TAB>TZ[<TAB>comments]`: ISO 3166
 * codes (the first is the place's), ISO 6709 coordinates (±DDMM±DDDMM,
 * seconds optional), a zone name. The region comes from the bundled list
 * when it has the country, else from the zone's continent (with the
 * Middle East and South America told apart by country). Polar zones are
 * skipped. */
#include "geo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* ±DDMM[SS] (deg_digits 2) or ±DDDMM[SS] (3) at s; its length, 0 if not. */
static size_t iso6709(const char *s, size_t len, size_t deg_digits, double max, double *out)
{
    size_t n = 0;
    while (n + 1 < len && s[n + 1] >= '0' && s[n + 1] <= '9')
        n++;
    if (len < 1 || (s[0] != '+' && s[0] != '-') || (n != deg_digits + 2 && n != deg_digits + 4) || !digits(s + 1, n))
        return 0;
    double v = 0;
    for (size_t i = 1; i <= deg_digits; i++)
        v = v * 10 + (s[i] - '0');
    double min = (s[deg_digits + 1] - '0') * 10 + (s[deg_digits + 2] - '0');
    double sec = n == deg_digits + 4 ? (s[deg_digits + 3] - '0') * 10 + (s[deg_digits + 4] - '0') : 0;
    if (min >= 60 || sec >= 60)
        return 0;
    v += min / 60 + sec / 3600;
    if (v > max)
        return 0;
    *out = s[0] == '-' ? -v : v;
    return n + 1;
}

static bool in(const char *cc, const char *list)
{
    for (const char *p = list; *p; p += 3)
        if (p[0] == cc[0] && p[1] == cc[1])
            return true;
    return false;
}

/* The region of a place outside the bundled list's countries; NULL: skip. */
static const char *region_of(const char *cc, const char *tz, size_t tz_len)
{
    static const char me[] = "AE SA QA KW BH OM YE IR IQ SY JO LB IL PS ";
    static const char sa[] = "AR BO BR CL CO EC GY PE PY SR UY VE GF FK GS ";
    static const char af_islands[] = "MU RE SC KM YT MG CV ST SH ";
    static const struct {
        const char *prefix, *region;
    } by_zone[] = {{"Europe/", "eu"}, {"Africa/", "af"},  {"Australia/", "oc"}, {"Pacific/", "oc"},
                   {"Asia/", "as"},   {"America/", "na"}, {"Atlantic/", "eu"},  {"Indian/", "as"}};
    if (in(cc, me))
        return "me";
    if (in(cc, sa))
        return "sa";
    if (in(cc, af_islands))
        return "af";
    for (size_t i = 0; i < sizeof(by_zone) / sizeof(by_zone[0]); i++) {
        size_t n = strlen(by_zone[i].prefix);
        if (tz_len > n && memcmp(tz, by_zone[i].prefix, n) == 0)
            return by_zone[i].region;
    }
    return NULL; /* Antarctica/, Arctic/, Etc/ */
}

static int bad(struct vg_geo_error *err, int line, int col, const char *msg)
{
    err->line = line;
    err->col = col;
    snprintf(err->msg, sizeof(err->msg), "%s", msg);
    return VG_EINVAL;
}

/* One line (without its newline) into *seed; 1 when it is a place, 0 when
 * it is skipped, VG_EINVAL with *err when malformed. */
static int zone_line(const char *s, size_t len, int line, const struct vg_geo_set *known, struct vg_geo_seed *seed,
                     struct vg_geo_error *err)
{
    if (len == 0 || s[0] == '#')
        return 0;
    const char *t1 = memchr(s, '\t', len);
    const char *t2 = t1 ? memchr(t1 + 1, '\t', len - (size_t)(t1 + 1 - s)) : NULL;
    if (!t1 || !t2)
        return bad(err, line, 1, "expected codes<TAB>coordinates<TAB>zone");
    if (t1 - s < 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' || (t1 - s > 2 && s[2] != ','))
        return bad(err, line, 1, "expected a country code like DE");
    const char *c = t1 + 1;
    size_t clen = (size_t)(t2 - c), k = iso6709(c, clen, 2, 90, &seed->lat), k2;
    if (!k || !(k2 = iso6709(c + k, clen - k, 3, 180, &seed->lon)) || k + k2 != clen)
        return bad(err, line, (int)(c - s) + 1, "expected ISO 6709 coordinates like +5230+01322");
    const char *tz = t2 + 1, *end = memchr(tz, '\t', len - (size_t)(tz - s));
    size_t tz_len = end ? (size_t)(end - tz) : len - (size_t)(tz - s);
    if (tz_len == 0)
        return bad(err, line, (int)(tz - s) + 1, "expected a zone name like Europe/Berlin");
    seed->country[0] = s[0];
    seed->country[1] = s[1];
    seed->country[2] = '\0';
    const char *region = NULL;
    for (size_t i = 0; known && i < vg_geo_set_count(known) && !region; i++)
        if (memcmp(vg_geo_set_at(known, i)->country, seed->country, 3) == 0)
            region = vg_geo_set_at(known, i)->region;
    if (!region)
        region = region_of(seed->country, tz, tz_len);
    if (!region)
        return 0;
    snprintf(seed->region, sizeof(seed->region), "%s", region);
    return 1;
}

int vg_geo_zones_parse(const char *text, size_t len, const struct vg_geo_set *known, struct vg_geo_seed **out,
                       size_t *n, struct vg_geo_error *err)
{
    struct vg_geo_seed *seeds = NULL;
    size_t cap = 0, count = 0;
    int line = 0;
    for (size_t at = 0; at < len;) {
        const char *s = text + at, *nl = memchr(s, '\n', len - at);
        size_t l = nl ? (size_t)(nl - s) : len - at;
        at += l + 1;
        line++;
        if (count == cap) {
            cap = cap ? 2 * cap : 64;
            seeds = vg_xrealloc(seeds, cap * sizeof(*seeds));
        }
        int rc = zone_line(s, l, line, known, &seeds[count], err);
        if (rc < 0) {
            free(seeds);
            return rc;
        }
        count += (size_t)rc;
        if (count > VG_GEO_MAX) {
            free(seeds);
            return bad(err, line, 1, "too many places");
        }
    }
    if (count == 0) {
        free(seeds);
        return bad(err, line ? line : 1, 1, "no places in the file");
    }
    *out = seeds;
    *n = count;
    return 0;
}
