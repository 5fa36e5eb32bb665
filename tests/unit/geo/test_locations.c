/* geo: the location list reader (the bundled list and bad lists, refused
 * with line:col), great-circle distances and the latency model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "geo/geo.h"

static void builtin_list_is_valid_and_large_enough(void **state)
{
    struct vg_geo_set *set = NULL;
    assert_int_equal(vg_geo_set_builtin(&set), 0);
    /* verge dev --pops 64 gives every pop a location of its own */
    assert_true(vg_geo_set_count(set) >= 64);
    const struct vg_geo_location *fra = vg_geo_set_find(set, "fra");
    assert_non_null(fra);
    assert_string_equal(fra->city, "Frankfurt");
    assert_string_equal(fra->country, "DE");
    assert_string_equal(fra->region, "eu");
    assert_true(fra->lat > 50 && fra->lat < 50.2 && fra->lon > 8.6 && fra->lon < 8.8);
    assert_ptr_equal(vg_geo_set_at(set, 0), fra); /* the first row: dev's default --from */
    assert_int_equal(vg_geo_set_index(set, "fra"), 0);
    assert_string_equal(vg_geo_set_at(set, vg_geo_set_index(set, "syd"))->id, "syd");
    assert_int_equal(vg_geo_set_index(set, "nowhere"), vg_geo_set_count(set)); /* the "elsewhere" slot */
    assert_int_equal(vg_geo_set_index(set, NULL), vg_geo_set_count(set));
    assert_non_null(vg_geo_set_find(set, "iad"));
    assert_non_null(vg_geo_set_find(set, "sin"));
    assert_null(vg_geo_set_find(set, "xyz"));
    assert_null(vg_geo_set_find(set, ""));
    /* every region of the world is there */
    const char *regions[] = {"eu", "na", "sa", "as", "oc", "af", "me"};
    for (size_t r = 0; r < sizeof(regions) / sizeof(regions[0]); r++) {
        size_t n = 0;
        for (size_t i = 0; i < vg_geo_set_count(set); i++)
            n += strcmp(vg_geo_set_at(set, i)->region, regions[r]) == 0;
        assert_true(n >= 2);
    }
    vg_geo_set_destroy(set);
}

static void parses_comments_blank_lines_and_crlf(void **state)
{
    static const char csv[] = "# a comment\r\n\r\nid,city,country,region,lat,lon\r\n"
                              "a-1,Somewhere Nice,XX,r1,-12.5,170\r\n"
                              "# between\n"
                              "b,B,YY,r2,0,-180"; /* no final newline */
    struct vg_geo_set *set = NULL;
    struct vg_geo_error err;
    assert_int_equal(vg_geo_set_parse(csv, sizeof(csv) - 1, &set, &err), 0);
    assert_int_equal(vg_geo_set_count(set), 2);
    const struct vg_geo_location *a = vg_geo_set_at(set, 0);
    assert_string_equal(a->id, "a-1");
    assert_string_equal(a->city, "Somewhere Nice");
    assert_string_equal(a->country, "XX");
    assert_string_equal(a->region, "r1");
    assert_true(a->lat == -12.5 && a->lon == 170);
    assert_ptr_equal(vg_geo_set_find(set, "b"), vg_geo_set_at(set, 1));
    assert_true(vg_geo_set_at(set, 1)->lon == -180);
    vg_geo_set_destroy(set);
}

/* Each bad list is refused with the position of what is wrong. */
static void refuses_bad_lists_with_line_and_column(void **state)
{
    static const struct {
        const char *csv;
        int line, col;
        const char *msg;
    } bad[] = {
        {"", 1, 1, "no header"},
        {"# only a comment\n", 1, 1, "no header"},
        {"id,city,country,region,lon,lat\n", 1, 1, "header"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DE,eu,50.1\n", 2, 25, "6 fields"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DE,eu,50.1,8.6,x\n", 2, 30, "more than 6"},
        {"id,city,country,region,lat,lon\nFRA,Frankfurt,DE,eu,50.1,8.6\n", 2, 1, "id"},
        {"id,city,country,region,lat,lon\n,Frankfurt,DE,eu,50.1,8.6\n", 2, 1, "id"},
        {"id,city,country,region,lat,lon\nfra,,DE,eu,50.1,8.6\n", 2, 5, "city"},
        {"id,city,country,region,lat,lon\nfra,Fr\tankfurt,DE,eu,50.1,8.6\n", 2, 7, "control"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,De,eu,50.1,8.6\n", 2, 15, "country"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DEU,eu,50.1,8.6\n", 2, 15, "country"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DE,EU,50.1,8.6\n", 2, 18, "region"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DE,eu,91,8.6\n", 2, 21, "latitude"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DE,eu,nan,8.6\n", 2, 21, "latitude"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DE,eu,1e1,8.6\n", 2, 21, "latitude"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DE,eu,50.1,\n", 2, 26, "longitude"},
        {"id,city,country,region,lat,lon\nfra,Frankfurt,DE,eu,50.1,-180.5\n", 2, 26, "longitude"},
        {"id,city,country,region,lat,lon\n\n# c\nfra,F,DE,eu,1,2\nfra,G,DE,eu,1,2\n", 5, 1, "duplicate id 'fra'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct vg_geo_set *set = NULL;
        struct vg_geo_error err = {0};
        int rc = vg_geo_set_parse(bad[i].csv, strlen(bad[i].csv), &set, &err);
        if (rc != VG_EINVAL || err.line != bad[i].line || err.col != bad[i].col || !strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: rc %d at %d:%d: %s", i, rc, err.line, err.col, err.msg);
        assert_null(set);
    }
    /* a NUL byte inside a line */
    static const char nul[] = "id,city,country,region,lat,lon\nfr\0a,F,DE,eu,1,2\n";
    struct vg_geo_set *set = NULL;
    struct vg_geo_error err = {0};
    assert_int_equal(vg_geo_set_parse(nul, sizeof(nul) - 1, &set, &err), VG_EINVAL);
    assert_int_equal(err.line, 2);
    assert_int_equal(err.col, 3);
}

static void distances_and_latency(void **state)
{
    struct vg_geo_set *set = NULL;
    assert_int_equal(vg_geo_set_builtin(&set), 0);
    const struct vg_geo_location *fra = vg_geo_set_find(set, "fra"), *lhr = vg_geo_set_find(set, "lhr"),
                                 *sin = vg_geo_set_find(set, "sin"), *syd = vg_geo_set_find(set, "syd");
    assert_true(vg_geo_distance_km(fra, fra) < 1e-9);
    double fl = vg_geo_distance_km(fra, lhr), fs = vg_geo_distance_km(fra, sin);
    assert_true(fl > 620 && fl < 660);     /* Frankfurt-London: ~640 km */
    assert_true(fs > 10200 && fs < 10350); /* Frankfurt-Singapore: ~10,260 km */
    assert_true(fabs(vg_geo_distance_km(sin, fra) - fs) < 1e-6);
    assert_true(vg_geo_distance_km(fra, syd) > 16000); /* nearly antipodal */
    /* antipodes: half the circumference, no NaN from rounding */
    struct vg_geo_location a = {.lat = 0, .lon = 0}, b = {.lat = 0, .lon = 180};
    assert_true(fabs(vg_geo_distance_km(&a, &b) - 20015.1) < 1);
    /* the model: 2 x (4.9 us/km + 1 ms) */
    assert_int_equal(vg_geo_rtt_us(0), 2000);
    assert_int_equal(vg_geo_rtt_us(1000), 11800);
    assert_true(vg_geo_rtt_us(fs) > 100000 && vg_geo_rtt_us(fs) < 104000);
    assert_int_equal(vg_geo_rtt_us(-1), 2000);
    vg_geo_set_destroy(set);
}

/* The unit-vector form agrees with the haversine (the scheduler uses it
 * for its many distances): within a metre at every pair of the bundled
 * cities, antipodes included. */
static void unit_vectors_agree_with_haversine(void **state)
{
    struct vg_geo_set *set = NULL;
    assert_int_equal(vg_geo_set_builtin(&set), 0);
    for (size_t i = 0; i < vg_geo_set_count(set); i++)
        for (size_t j = 0; j < vg_geo_set_count(set); j++) {
            const struct vg_geo_location *a = vg_geo_set_at(set, i), *b = vg_geo_set_at(set, j);
            struct vg_geo_xyz xa, xb;
            vg_geo_to_xyz(a->lat, a->lon, &xa);
            vg_geo_to_xyz(b->lat, b->lon, &xb);
            double h = vg_geo_distance_km(a, b);
            assert_true(fabs(h - vg_geo_distance_km_ll(a->lat, a->lon, b->lat, b->lon)) < 1e-9);
            assert_true(fabs(h - vg_geo_distance_km_xyz(&xa, &xb)) < 1e-3);
        }
    struct vg_geo_xyz n, s;
    vg_geo_to_xyz(90, 0, &n);
    vg_geo_to_xyz(-90, 0, &s);
    assert_true(fabs(vg_geo_distance_km_xyz(&n, &s) - M_PI * 6371.0) < 1e-3);
    vg_geo_set_destroy(set);
}

/* A client's position maps to the nearest location by dot product: the
 * same answer as the smallest haversine distance everywhere (checked on a
 * grid over the whole sphere, poles and the antimeridian included). */
static size_t nearest_by_haversine(const struct vg_geo_set *set, double lat, double lon)
{
    size_t best = 0;
    double best_km = 1e9;
    for (size_t i = 0; i < vg_geo_set_count(set); i++) {
        const struct vg_geo_location *g = vg_geo_set_at(set, i);
        double km = vg_geo_distance_km_ll(lat, lon, g->lat, g->lon);
        if (km < best_km) {
            best_km = km;
            best = i;
        }
    }
    return best;
}

static size_t nearest(const struct vg_geo_xyz *pts, size_t n, double lat, double lon)
{
    struct vg_geo_xyz p;
    vg_geo_to_xyz(lat, lon, &p);
    return vg_geo_nearest_xyz(pts, n, &p);
}

static void nearest_location_of_a_point(void **state)
{
    struct vg_geo_set *set = NULL;
    assert_int_equal(vg_geo_set_builtin(&set), 0);
    size_t n = vg_geo_set_count(set);
    struct vg_geo_xyz *pts = calloc(n, sizeof(*pts));
    assert_non_null(pts);
    for (size_t i = 0; i < n; i++)
        vg_geo_to_xyz(vg_geo_set_at(set, i)->lat, vg_geo_set_at(set, i)->lon, &pts[i]);
    /* every location is its own nearest */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(nearest(pts, n, vg_geo_set_at(set, i)->lat, vg_geo_set_at(set, i)->lon), i);
#define AT(lat, lon) vg_geo_set_at(set, nearest(pts, n, lat, lon))->id
    assert_string_equal(AT(-33.8688, 151.2093), "syd"); /* what the e2e test's database says of 127.0.0.1 */
    assert_string_equal(AT(-33.81, 151.00), "syd");     /* Parramatta */
    assert_string_equal(AT(49.99, 8.27), "fra");        /* Mainz */
    assert_string_equal(AT(48.14, 11.58), "zrh");       /* Munich: Zurich is nearer than Frankfurt */
    assert_string_equal(AT(-41.29, 174.78), "akl");     /* Wellington */
    assert_string_equal(AT(21.31, -157.86), "sfo");     /* Honolulu: San Francisco, not Los Angeles */
    assert_string_equal(AT(-17.71, 178.07), "akl");     /* Fiji, east of the antimeridian from syd */
    assert_string_equal(AT(-18.14, -178.44), "akl");    /* and west of it */
#undef AT
    /* agrees with the haversine on a 1-degree grid */
    for (int lat = -90; lat <= 90; lat++)
        for (int lon = -180; lon < 180; lon++)
            assert_int_equal(nearest(pts, n, lat, lon), nearest_by_haversine(set, lat, lon));
    /* one point: always it */
    assert_int_equal(vg_geo_nearest_xyz(pts, 1, &pts[3]), 0);
    free(pts);
    vg_geo_set_destroy(set);
}

static void zone_tab_seeds_places_with_regions(void **state)
{
    (void)state;
    struct vg_geo_set *known = NULL;
    assert_int_equal(vg_geo_set_builtin(&known), 0);
    static const char tab[] = "# comment\n"
                              "\n"
                              "DE,DK\t+5230+01322\tEurope/Berlin\tmost of Germany\n"
                              "MN\t+4755+10653\tAsia/Ulaanbaatar\n"
                              "QA\t+2517+05132\tAsia/Qatar\n"
                              "FJ\t-1808+17825\tPacific/Fiji\n"
                              "UY\t-345433-0561245\tAmerica/Montevideo\n"
                              "AQ\t-7750+16636\tAntarctica/McMurdo\n";
    struct vg_geo_seed *s = NULL;
    size_t n = 0;
    struct vg_geo_error err;
    assert_int_equal(vg_geo_zones_parse(tab, sizeof(tab) - 1, known, &s, &n, &err), 0);
    assert_int_equal(n, 5); /* Antarctica skipped */
    assert_string_equal(s[0].country, "DE");
    assert_string_equal(s[0].region, "eu"); /* from the bundled list */
    assert_true(fabs(s[0].lat - 52.5) < 1e-9 && fabs(s[0].lon - (13 + 22 / 60.0)) < 1e-9);
    assert_string_equal(s[1].region, "as");
    assert_string_equal(s[2].region, "me");
    assert_string_equal(s[3].region, "oc");
    assert_true(s[3].lat < 0);
    assert_string_equal(s[4].region, "sa");
    assert_true(fabs(s[4].lat - -(34 + 54 / 60.0 + 33 / 3600.0)) < 1e-9);
    free(s);
    static const struct {
        const char *text;
        int line, col;
    } bad[] = {
        {"DE +5230+01322 Europe/Berlin\n", 1, 1},      /* spaces, not tabs */
        {"de\t+5230+01322\tEurope/Berlin\n", 1, 1},    /* lower case */
        {"#\nDE\t+9130+01322\tEurope/Berlin\n", 2, 4}, /* latitude over 90 */
        {"DE\t+5230+1322\tEurope/Berlin\n", 1, 4},     /* longitude needs 3 digits of degrees */
        {"DE\t+5260+01322\tEurope/Berlin\n", 1, 4},    /* 60 minutes */
        {"DE\t+5230+01322\t\n", 1, 16},                /* no zone */
        {"# nothing\n", 1, 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(vg_geo_zones_parse(bad[i].text, strlen(bad[i].text), known, &s, &n, &err), VG_EINVAL);
        assert_int_equal(err.line, bad[i].line);
        assert_int_equal(err.col, bad[i].col);
    }
    /* the system's file, when tzdata is installed: hundreds of places */
    FILE *f = fopen("/usr/share/zoneinfo/zone1970.tab", "r");
    if (f) {
        static char buf[1 << 16];
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        assert_int_equal(vg_geo_zones_parse(buf, len, known, &s, &n, &err), 0);
        assert_true(n > 250);
        free(s);
    }
    vg_geo_set_destroy(known);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(builtin_list_is_valid_and_large_enough),
        cmocka_unit_test(parses_comments_blank_lines_and_crlf),
        cmocka_unit_test(refuses_bad_lists_with_line_and_column),
        cmocka_unit_test(distances_and_latency),
        cmocka_unit_test(unit_vectors_agree_with_haversine),
        cmocka_unit_test(zone_tab_seeds_places_with_regions),
        cmocka_unit_test(nearest_location_of_a_point),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
