/* The cache policy layer: one test per RFC rule (RFC 9111, 9110 13, 5861,
 * 9211). Times are small fixed numbers; dates are formatted from them. */
#include "cache_test.h"

#define T0 1000000000LL /* 2001-09-09T01:46:40Z */

static const struct vg_cache_rules origin_rules = {
    .honour_origin = true, .default_ttl = 0, .heuristic = false, .allow_set_cookie = false, .max_object_size = 1 << 20};

static const char *date(int64_t t)
{
    char *b = h2o_mem_alloc_pool(&pool, 30);
    vg_cache_date_format(t, b);
    return b;
}

static struct vg_cache_req get_req(const h2o_headers_t *h)
{
    static const h2o_headers_t none;
    return (struct vg_cache_req){.method = iov("GET"), .headers = h ? h : &none};
}

/* Stores res (status 200 unless given) for a plain GET at T0. */
static enum vg_cache_store_verdict store(int status, const h2o_headers_t *res, const struct vg_cache_rules *rules,
                                         struct vg_cache_meta *m)
{
    struct vg_cache_req r = get_req(NULL);
    return vg_cache_storable(&r, status, res, rules ? rules : &origin_rules, T0, T0, m);
}

static int64_t lifetime(const h2o_headers_t *res, const struct vg_cache_rules *rules)
{
    struct vg_cache_meta m;
    assert_int_equal(store(200, res, rules, &m), VG_CACHE_STORE_OK);
    return m.lifetime;
}

static struct vg_cache_cc cc_of(const char *s)
{
    struct vg_cache_cc cc;
    vg_cache_cc_init(&cc);
    vg_cache_cc_parse(&cc, s, strlen(s));
    return cc;
}

/* ==== Cache-Control =========================================================== */

static void test_cc_basic(void **state)
{
    struct vg_cache_cc cc = cc_of("max-age=60, s-maxage=30, public, must-revalidate, immutable");
    assert_int_equal(cc.max_age, 60);
    assert_int_equal(cc.s_maxage, 30);
    assert_true(cc.flags & VG_CACHE_CC_PUBLIC);
    assert_true(cc.flags & VG_CACHE_CC_MUST_REVALIDATE);
    assert_true(cc.flags & VG_CACHE_CC_IMMUTABLE);
    assert_int_equal(cc.max_stale, -1);
    assert_int_equal(cc.stale_while_revalidate, -1);

    cc = cc_of("stale-while-revalidate=5,stale-if-error=7,min-fresh=3,max-stale=9");
    assert_int_equal(cc.stale_while_revalidate, 5);
    assert_int_equal(cc.stale_if_error, 7);
    assert_int_equal(cc.min_fresh, 3);
    assert_int_equal(cc.max_stale, 9);
    assert_false(cc.flags & VG_CACHE_CC_MAX_STALE_ANY);
    assert_true(cc_of("max-stale").flags & VG_CACHE_CC_MAX_STALE_ANY);
}

static void test_cc_quotes_spaces_case(void **state)
{
    struct vg_cache_cc cc = cc_of("  MAX-AGE=\"60\" ,\tNo-Store  ");
    assert_int_equal(cc.max_age, 60);
    assert_true(cc.flags & VG_CACHE_CC_NO_STORE);
    /* a comma inside a quoted list does not end the directive */
    cc = cc_of("private=\"set-cookie, x-user\", no-cache=\"a,b\", max-age=5");
    assert_true(cc.flags & VG_CACHE_CC_PRIVATE_FIELDS);
    assert_true(cc.flags & VG_CACHE_CC_NO_CACHE_FIELDS);
    assert_false(cc.flags & (VG_CACHE_CC_PRIVATE | VG_CACHE_CC_NO_CACHE));
    assert_int_equal(cc.max_age, 5);
    /* unquoted qualified form too */
    assert_true(cc_of("no-cache=set-cookie").flags & VG_CACHE_CC_NO_CACHE_FIELDS);
}

static void test_cc_duplicates(void **state)
{
    assert_int_equal(cc_of("max-age=10, max-age=10").max_age, 10);
    assert_int_equal(cc_of("max-age=10, max-age=20").max_age, 0); /* conflicting: stale */
    assert_int_equal(cc_of("s-maxage=10, s-maxage=20").s_maxage, 0);
    assert_int_equal(cc_of("stale-if-error=10, stale-if-error=5").stale_if_error, 5);
    assert_int_equal(cc_of("min-fresh=10, min-fresh=50").min_fresh, 50);
    /* several header lines add up */
    h2o_headers_t *h = hdrs("cache-control", "max-age=5", "Cache-Control", "public", NULL);
    struct vg_cache_cc cc;
    vg_cache_cc_init(&cc);
    vg_cache_cc_from_headers(&cc, h);
    assert_int_equal(cc.max_age, 5);
    assert_true(cc.flags & VG_CACHE_CC_PUBLIC);
}

static void test_cc_garbage(void **state)
{
    assert_int_equal(cc_of("max-age=abc").max_age, 0); /* malformed: most conservative */
    assert_int_equal(cc_of("max-age").max_age, 0);
    assert_int_equal(cc_of("s-maxage=-5").s_maxage, 0);
    assert_int_equal(cc_of("stale-while-revalidate=x").stale_while_revalidate, -1); /* absent */
    assert_int_equal(cc_of("stale-if-error=").stale_if_error, -1);
    assert_int_equal(cc_of("max-age=99999999999999999999").max_age, 2147483648LL);
    struct vg_cache_cc cc = cc_of(",,, ;;; =5, foo=bar, \"unterminated, max-age=3");
    assert_int_equal(cc.flags, 0);
    assert_int_equal(cc.max_age, -1); /* swallowed by the open quote */
    cc = cc_of("foo, max-age=3");
    assert_int_equal(cc.max_age, 3); /* unknown directives are ignored */
    cc = cc_of("");
    assert_int_equal(cc.flags, 0);
}

/* ==== dates ==================================================================== */

static int64_t pd(const char *s)
{
    return vg_cache_date_parse(s, strlen(s));
}

static void test_date_forms(void **state)
{
    assert_int_equal(pd("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
    assert_int_equal(pd("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
    assert_int_equal(pd("Sun Nov  6 08:49:37 1994"), 784111777);
    assert_int_equal(pd("Wed Nov 16 08:49:37 1994"), 784111777 + 10 * 86400);
    assert_int_equal(pd("  sun, 06 nov 1994 08:49:37 gmt "), 784111777); /* case-insensitive (RFC 9111 4.2) */
    assert_int_equal(pd("Monday, 01-Jan-24 00:00:00 GMT"), 1704067200);  /* two-digit year below 70: 20xx */
    assert_int_equal(pd("Thu, 29 Feb 2024 00:00:00 GMT"), 1709164800);
}

static void test_date_garbage(void **state)
{
    static const char *const bad[] = {
        "",
        "0",
        "-1",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 29 Feb 2023 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nox 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 0094 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pd(bad[i]) != -1) {
            print_error("accepted '%s'\n", bad[i]);
            fail();
        }
    }
    assert_int_equal(vg_cache_date_parse("Sun, 06 Nov 1994 08:49:37 GMT", 10), -1); /* truncated */
    assert_int_equal(vg_cache_date_parse(NULL, 0), -1); /* an absent value: no arithmetic on NULL (UBSan) */
}

static void test_date_format(void **state)
{
    char b[30];
    vg_cache_date_format(784111777, b);
    assert_string_equal(b, "Sun, 06 Nov 1994 08:49:37 GMT");
    vg_cache_date_format(0, b);
    assert_string_equal(b, "Thu, 01 Jan 1970 00:00:00 GMT");
    vg_cache_date_format(-5, b);
    assert_string_equal(b, "Thu, 01 Jan 1970 00:00:00 GMT");
    vg_cache_date_format(INT64_MAX, b);
    assert_string_equal(b, "Fri, 31 Dec 9999 23:59:59 GMT");
    vg_cache_date_format(T0, b);
    assert_int_equal(pd(b), T0);
}

/* ==== storing ==================================================================== */

static void test_store_method(void **state)
{
    struct vg_cache_meta m;
    h2o_headers_t *res = hdrs("cache-control", "max-age=60", NULL);
    struct vg_cache_req r = get_req(NULL);
    r.method = iov("POST");
    assert_int_equal(vg_cache_storable(&r, 200, res, &origin_rules, T0, T0, &m), VG_CACHE_NOSTORE_METHOD);
    r.method = iov("HEAD");
    assert_int_equal(vg_cache_storable(&r, 200, res, &origin_rules, T0, T0, &m), VG_CACHE_STORE_OK);
    r.method = iov("get"); /* methods are case-sensitive */
    assert_int_equal(vg_cache_storable(&r, 200, res, &origin_rules, T0, T0, &m), VG_CACHE_NOSTORE_METHOD);
}

static void test_store_status(void **state)
{
    struct vg_cache_meta m;
    struct vg_cache_rules ttl = origin_rules;
    ttl.default_ttl = 30;
    /* cacheable by default: a default TTL is enough */
    static const int dflt[] = {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501};
    for (size_t i = 0; i < sizeof(dflt) / sizeof(dflt[0]); i++)
        assert_int_equal(store(dflt[i], hdrs("x", "y", NULL), &ttl, &m), VG_CACHE_STORE_OK);
    /* others need explicit freshness or public */
    assert_int_equal(store(302, hdrs("x", "y", NULL), &ttl, &m), VG_CACHE_NOSTORE_STATUS);
    assert_int_equal(store(500, hdrs("x", "y", NULL), &ttl, &m), VG_CACHE_NOSTORE_STATUS);
    assert_int_equal(store(500, hdrs("cache-control", "max-age=5", NULL), &ttl, &m), VG_CACHE_STORE_OK);
    assert_int_equal(m.lifetime, 5);
    assert_int_equal(store(302, hdrs("cache-control", "public", NULL), &ttl, &m), VG_CACHE_STORE_OK);
    assert_int_equal(m.lifetime, 30);
    assert_int_equal(store(307, hdrs("expires", date(T0 + 9), NULL), &ttl, &m), VG_CACHE_STORE_OK);
    /* never: partial content, 304, 1xx */
    assert_int_equal(store(206, hdrs("cache-control", "max-age=5", NULL), &ttl, &m), VG_CACHE_NOSTORE_STATUS);
    assert_int_equal(store(304, hdrs("cache-control", "max-age=5", NULL), &ttl, &m), VG_CACHE_NOSTORE_STATUS);
    assert_int_equal(store(101, hdrs("cache-control", "max-age=5", NULL), &ttl, &m), VG_CACHE_NOSTORE_STATUS);
}

static void test_store_directives(void **state)
{
    struct vg_cache_meta m;
    assert_int_equal(store(200, hdrs("cache-control", "max-age=60, no-store", NULL), NULL, &m),
                     VG_CACHE_NOSTORE_DIRECTIVE);
    assert_int_equal(store(200, hdrs("cache-control", "max-age=60, private", NULL), NULL, &m),
                     VG_CACHE_NOSTORE_DIRECTIVE);
    /* qualified private: stored, the named fields are stripped */
    h2o_headers_t *res = hdrs("cache-control", "max-age=60, private=\"X-User\"", "x-user", "bob", "x-other", "1", NULL);
    assert_int_equal(store(200, res, NULL, &m), VG_CACHE_STORE_OK);
    h2o_headers_t s = vg__cache_strip_qualified(&pool, res);
    assert_int_equal(s.size, 2);
    assert_int_equal(vg__cache_find(&s, "x-user", -1), -1);
    assert_true(vg__cache_find(&s, "x-other", -1) >= 0);
    /* no-store in the request */
    struct vg_cache_req r = get_req(hdrs("cache-control", "no-store", NULL));
    assert_int_equal(vg_cache_storable(&r, 200, hdrs("cache-control", "max-age=60", NULL), &origin_rules, T0, T0, &m),
                     VG_CACHE_NOSTORE_DIRECTIVE);
    /* unqualified no-cache: stored, revalidated on every use */
    assert_int_equal(store(200, hdrs("cache-control", "no-cache, max-age=60", NULL), NULL, &m), VG_CACHE_STORE_OK);
    assert_true(m.flags & VG_CACHE_META_NO_CACHE);
}

static void test_freshness_order(void **state)
{
    /* s-maxage beats max-age beats Expires */
    assert_int_equal(lifetime(hdrs("cache-control", "max-age=60, s-maxage=30", "expires", date(T0 + 900), NULL), NULL),
                     30);
    assert_int_equal(lifetime(hdrs("cache-control", "max-age=60", "expires", date(T0 + 900), NULL), NULL), 60);
    /* Expires - Date, whatever the local clock says */
    assert_int_equal(lifetime(hdrs("date", date(T0 - 100), "expires", date(T0 + 200), NULL), NULL), 300);
    assert_int_equal(lifetime(hdrs("expires", date(T0 + 200), NULL), NULL), 200); /* Date absent: response time */
}

static void test_freshness_expires_invalid_or_past(void **state)
{
    assert_int_equal(lifetime(hdrs("expires", "0", NULL), NULL), 0);
    assert_int_equal(lifetime(hdrs("expires", "garbage", NULL), NULL), 0);
    assert_int_equal(lifetime(hdrs("date", date(T0), "expires", date(T0 - 50), NULL), NULL), 0);
    /* explicit 0 is not "no freshness": stored even with no TTL or validator */
    assert_int_equal(lifetime(hdrs("cache-control", "max-age=0", NULL), NULL), 0);
}

static void test_freshness_heuristic_and_default(void **state)
{
    struct vg_cache_rules heur = origin_rules, ttl = origin_rules;
    heur.heuristic = true;
    ttl.default_ttl = 45;
    assert_int_equal(lifetime(hdrs("date", date(T0), "last-modified", date(T0 - 1000), NULL), &heur), 100);
    assert_int_equal(lifetime(hdrs("date", date(T0), "last-modified", date(T0 - 10000000), NULL), &heur), 86400);
    /* explicit beats heuristic; heuristic beats default */
    assert_int_equal(lifetime(hdrs("cache-control", "max-age=7", "last-modified", date(T0 - 1000), NULL), &heur), 7);
    heur.default_ttl = 45;
    assert_int_equal(lifetime(hdrs("last-modified", date(T0 - 1000), NULL), &heur), 100);
    assert_int_equal(lifetime(hdrs("x", "y", NULL), &heur), 45);
    assert_int_equal(lifetime(hdrs("x", "y", NULL), &ttl), 45);
    assert_int_equal(lifetime(hdrs("etag", "\"a\"", NULL), &ttl), 45);
}

static void test_freshness_none_and_validator_only(void **state)
{
    struct vg_cache_meta m;
    assert_int_equal(store(200, hdrs("x", "y", NULL), NULL, &m), VG_CACHE_NOSTORE_NO_FRESHNESS);
    /* a validator alone: lifetime 0, revalidated every use */
    assert_int_equal(lifetime(hdrs("etag", "\"a\"", NULL), NULL), 0);
    assert_int_equal(lifetime(hdrs("last-modified", date(T0 - 5), NULL), NULL), 0);
    /* ... but not once the operator asked for the heuristic */
    struct vg_cache_rules heur = origin_rules;
    heur.heuristic = true;
    assert_int_equal(store(200, hdrs("etag", "\"a\"", NULL), &heur, &m), VG_CACHE_NOSTORE_NO_FRESHNESS);
}

static void test_not_honouring_origin(void **state)
{
    struct vg_cache_meta m;
    struct vg_cache_rules r = origin_rules;
    r.honour_origin = false;
    r.default_ttl = 120;
    assert_int_equal(lifetime(hdrs("cache-control", "max-age=5", NULL), &r), 120);
    assert_int_equal(lifetime(hdrs("expires", date(T0 + 9999), NULL), &r), 120);
    assert_int_equal(store(200, hdrs("cache-control", "no-cache", NULL), &r, &m), VG_CACHE_STORE_OK);
    assert_false(m.flags & VG_CACHE_META_NO_CACHE);
    /* safety rules still hold */
    assert_int_equal(store(200, hdrs("cache-control", "no-store", NULL), &r, &m), VG_CACHE_NOSTORE_DIRECTIVE);
    assert_int_equal(store(200, hdrs("cache-control", "private", NULL), &r, &m), VG_CACHE_NOSTORE_DIRECTIVE);
    assert_int_equal(store(200, hdrs("set-cookie", "a=1", NULL), &r, &m), VG_CACHE_NOSTORE_SET_COOKIE);
    assert_int_equal(store(200, hdrs("vary", "*", NULL), &r, &m), VG_CACHE_NOSTORE_VARY_STAR);
    assert_int_equal(store(500, hdrs("x", "y", NULL), &r, &m), VG_CACHE_NOSTORE_STATUS);
}

static void test_store_authorization(void **state)
{
    struct vg_cache_meta m;
    struct vg_cache_req r = get_req(hdrs("authorization", "Bearer x", NULL));
    assert_int_equal(vg_cache_storable(&r, 200, hdrs("cache-control", "max-age=60", NULL), &origin_rules, T0, T0, &m),
                     VG_CACHE_NOSTORE_AUTH);
    static const char *const ok[] = {"max-age=60, public", "s-maxage=60", "max-age=60, must-revalidate"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(vg_cache_storable(&r, 200, hdrs("cache-control", ok[i], NULL), &origin_rules, T0, T0, &m),
                         VG_CACHE_STORE_OK);
        assert_true(m.flags & VG_CACHE_META_AUTH_OK);
    }
    assert_int_equal(store(200, hdrs("cache-control", "max-age=60", NULL), NULL, &m), VG_CACHE_STORE_OK);
    assert_false(m.flags & VG_CACHE_META_AUTH_OK);
}

static void test_store_set_cookie(void **state)
{
    struct vg_cache_meta m;
    struct vg_cache_rules allow = origin_rules;
    allow.allow_set_cookie = true;
    h2o_headers_t *res = hdrs("cache-control", "max-age=60", "set-cookie", "s=1", NULL);
    assert_int_equal(store(200, res, NULL, &m), VG_CACHE_NOSTORE_SET_COOKIE);
    assert_int_equal(store(200, res, &allow, &m), VG_CACHE_STORE_OK);
    /* named by no-cache="set-cookie": it is stripped, so storing is fine */
    res = hdrs("cache-control", "max-age=60, no-cache=\"Set-Cookie\"", "set-cookie", "s=1", NULL);
    assert_int_equal(store(200, res, NULL, &m), VG_CACHE_STORE_OK);
    assert_false(m.flags & VG_CACHE_META_NO_CACHE);
    h2o_headers_t s = vg__cache_strip_qualified(&pool, res);
    assert_int_equal(vg__cache_find(&s, "set-cookie", -1), -1);
}

static void test_store_vary_star_and_size(void **state)
{
    struct vg_cache_meta m;
    struct vg_cache_rules small = origin_rules;
    small.max_object_size = 100;
    assert_int_equal(store(200, hdrs("cache-control", "max-age=6", "vary", "Accept, *", NULL), NULL, &m),
                     VG_CACHE_NOSTORE_VARY_STAR);
    assert_int_equal(store(200, hdrs("cache-control", "max-age=6", "vary", "accept", NULL), NULL, &m),
                     VG_CACHE_STORE_OK);
    assert_int_equal(store(200, hdrs("cache-control", "max-age=6", "content-length", "101", NULL), &small, &m),
                     VG_CACHE_NOSTORE_TOO_BIG);
    assert_int_equal(store(200, hdrs("cache-control", "max-age=6", "content-length", "100", NULL), &small, &m),
                     VG_CACHE_STORE_OK);
    /* unknown length: the store enforces the limit while reading */
    assert_int_equal(store(200, hdrs("cache-control", "max-age=6", NULL), &small, &m), VG_CACHE_STORE_OK);
}

static void test_store_meta(void **state)
{
    struct vg_cache_meta m;
    struct vg_cache_req r = get_req(NULL);
    h2o_headers_t *res =
        hdrs("date", date(T0 - 3), "age", "12", "etag", "W/\"x\"", "last-modified", date(T0 - 500), "cache-control",
             "s-maxage=10, stale-while-revalidate=20, stale-if-error=30, immutable", NULL);
    assert_int_equal(vg_cache_storable(&r, 200, res, &origin_rules, T0 - 2, T0, &m), VG_CACHE_STORE_OK);
    assert_int_equal(m.request_time, T0 - 2);
    assert_int_equal(m.response_time, T0);
    assert_int_equal(m.date, T0 - 3);
    assert_int_equal(m.age, 12);
    assert_int_equal(m.lifetime, 10);
    assert_int_equal(m.swr, 20);
    assert_int_equal(m.sie, 30);
    assert_int_equal(m.last_modified, T0 - 500);
    assert_int_equal(m.flags, VG_CACHE_META_MUST_REVALIDATE | VG_CACHE_META_HAS_ETAG | VG_CACHE_META_IMMUTABLE);
    /* absent/invalid Date and Age */
    assert_int_equal(store(200, hdrs("cache-control", "max-age=1", "date", "nope", "age", "-1", NULL), NULL, &m),
                     VG_CACHE_STORE_OK);
    assert_int_equal(m.date, T0);
    assert_int_equal(m.age, 0);
    assert_int_equal(m.last_modified, -1);
    assert_int_equal(m.swr, -1);
    assert_true(store(200, hdrs("cache-control", "max-age=1, proxy-revalidate", NULL), NULL, &m) == VG_CACHE_STORE_OK &&
                (m.flags & VG_CACHE_META_MUST_REVALIDATE));
}

static void test_verdict_str(void **state)
{
    assert_string_equal(vg_cache_store_verdict_str(VG_CACHE_STORE_OK), "stored");
    assert_string_equal(vg_cache_store_verdict_str(VG_CACHE_NOSTORE_TOO_BIG), "too-big");
    assert_string_equal(vg_cache_store_verdict_str(VG_CACHE_NOSTORE_SET_COOKIE), "set-cookie");
    assert_string_equal(vg_cache_store_verdict_str((enum vg_cache_store_verdict)99), "unknown");
}

/* ==== age and use ============================================================== */

static struct vg_cache_meta meta(int64_t lifetime, int64_t swr, int64_t sie, uint32_t flags)
{
    return (struct vg_cache_meta){.request_time = T0,
                                  .response_time = T0,
                                  .date = T0,
                                  .age = 0,
                                  .lifetime = lifetime,
                                  .swr = swr,
                                  .sie = sie,
                                  .last_modified = -1,
                                  .flags = flags};
}

static void test_age_arithmetic(void **state)
{
    /* RFC 9111 4.2.3 with a request delay of 10 s and an Age of 3 */
    struct vg_cache_meta m = {.request_time = 100, .response_time = 110, .date = 105, .age = 3};
    assert_int_equal(vg_cache_age(&m, 110), 13); /* corrected_age_value = 3 + 10 > apparent 5 */
    assert_int_equal(vg_cache_age(&m, 120), 23); /* + resident time */
    m.date = 50;                                 /* apparent age 60 wins */
    assert_int_equal(vg_cache_age(&m, 120), 70);
    m.date = 200; /* Date in the future: apparent age clamps at 0 */
    assert_int_equal(vg_cache_age(&m, 110), 13);
    assert_int_equal(vg_cache_age(&m, 100), 13); /* clock stepped back: no negative residence */
}

static enum vg_cache_use use(const struct vg_cache_meta *m, const h2o_headers_t *req, int64_t now)
{
    struct vg_cache_req r = get_req(req);
    return vg_cache_usable(m, &r, now);
}

static void test_use_fresh_and_stale(void **state)
{
    struct vg_cache_meta m = meta(60, -1, -1, 0);
    assert_int_equal(use(&m, NULL, T0), VG_CACHE_USE_FRESH);
    assert_int_equal(use(&m, NULL, T0 + 59), VG_CACHE_USE_FRESH);
    assert_int_equal(use(&m, NULL, T0 + 60), VG_CACHE_USE_REVALIDATE);
    m.age = 30; /* an upstream cache already held it 30 s */
    assert_int_equal(use(&m, NULL, T0 + 30), VG_CACHE_USE_REVALIDATE);
    m = meta(0, -1, -1, 0); /* lifetime 0: every use revalidates */
    assert_int_equal(use(&m, NULL, T0), VG_CACHE_USE_REVALIDATE);
}

static void test_use_request_max_age_min_fresh(void **state)
{
    struct vg_cache_meta m = meta(60, -1, -1, 0);
    assert_int_equal(use(&m, hdrs("cache-control", "max-age=10", NULL), T0 + 10), VG_CACHE_USE_FRESH);
    assert_int_equal(use(&m, hdrs("cache-control", "max-age=10", NULL), T0 + 11), VG_CACHE_USE_REVALIDATE);
    assert_int_equal(use(&m, hdrs("cache-control", "max-age=0", NULL), T0 + 1), VG_CACHE_USE_REVALIDATE);
    assert_int_equal(use(&m, hdrs("cache-control", "min-fresh=20", NULL), T0 + 40), VG_CACHE_USE_FRESH);
    assert_int_equal(use(&m, hdrs("cache-control", "min-fresh=20", NULL), T0 + 41), VG_CACHE_USE_REVALIDATE);
}

static void test_use_max_stale(void **state)
{
    struct vg_cache_meta m = meta(60, -1, -1, 0);
    assert_int_equal(use(&m, hdrs("cache-control", "max-stale=10", NULL), T0 + 70), VG_CACHE_USE_FRESH);
    assert_int_equal(use(&m, hdrs("cache-control", "max-stale=10", NULL), T0 + 71), VG_CACHE_USE_REVALIDATE);
    assert_int_equal(use(&m, hdrs("cache-control", "max-stale", NULL), T0 + 99999), VG_CACHE_USE_FRESH);
}

static void test_use_must_revalidate_blocks_stale(void **state)
{
    struct vg_cache_meta m = meta(60, 100, -1, VG_CACHE_META_MUST_REVALIDATE);
    assert_int_equal(use(&m, NULL, T0 + 59), VG_CACHE_USE_FRESH);
    assert_int_equal(use(&m, hdrs("cache-control", "max-stale", NULL), T0 + 61), VG_CACHE_USE_REVALIDATE);
    assert_int_equal(use(&m, NULL, T0 + 61), VG_CACHE_USE_REVALIDATE); /* swr too */
}

static void test_use_swr_window(void **state)
{
    struct vg_cache_meta m = meta(60, 30, -1, 0);
    assert_int_equal(use(&m, NULL, T0 + 59), VG_CACHE_USE_FRESH);
    assert_int_equal(use(&m, NULL, T0 + 60), VG_CACHE_USE_STALE_SWR);
    assert_int_equal(use(&m, NULL, T0 + 89), VG_CACHE_USE_STALE_SWR);
    assert_int_equal(use(&m, NULL, T0 + 90), VG_CACHE_USE_REVALIDATE);
    /* a client that bounds the age is not served stale */
    assert_int_equal(use(&m, hdrs("cache-control", "max-age=30", NULL), T0 + 70), VG_CACHE_USE_REVALIDATE);
}

static void test_use_no_cache_and_pragma(void **state)
{
    struct vg_cache_meta m = meta(60, -1, -1, 0);
    assert_int_equal(use(&m, hdrs("cache-control", "no-cache", NULL), T0), VG_CACHE_USE_REVALIDATE);
    assert_int_equal(use(&m, hdrs("pragma", "no-cache", NULL), T0), VG_CACHE_USE_REVALIDATE);
    /* Pragma is ignored when Cache-Control is present (RFC 9111 5.4) */
    assert_int_equal(use(&m, hdrs("pragma", "no-cache", "cache-control", "max-stale", NULL), T0), VG_CACHE_USE_FRESH);
    m.flags = VG_CACHE_META_NO_CACHE;
    assert_int_equal(use(&m, NULL, T0), VG_CACHE_USE_REVALIDATE);
}

static void test_use_authorization(void **state)
{
    struct vg_cache_meta m = meta(60, -1, -1, 0);
    h2o_headers_t *auth = hdrs("authorization", "Basic eA==", NULL);
    assert_int_equal(use(&m, auth, T0), VG_CACHE_USE_NONE);
    m.flags = VG_CACHE_META_AUTH_OK;
    assert_int_equal(use(&m, auth, T0), VG_CACHE_USE_FRESH);
}

static bool sie(const struct vg_cache_meta *m, const h2o_headers_t *req, int64_t now)
{
    struct vg_cache_req r = get_req(req);
    return vg_cache_stale_if_error_ok(m, &r, now);
}

static void test_stale_if_error_window(void **state)
{
    struct vg_cache_meta m = meta(60, -1, 100, 0);
    assert_true(sie(&m, NULL, T0 + 10)); /* fresh */
    assert_true(sie(&m, NULL, T0 + 159));
    assert_false(sie(&m, NULL, T0 + 160));
    m = meta(60, -1, -1, 0); /* from the request only */
    assert_false(sie(&m, NULL, T0 + 61));
    assert_true(sie(&m, hdrs("cache-control", "stale-if-error=5", NULL), T0 + 64));
    assert_false(sie(&m, hdrs("cache-control", "stale-if-error=5", NULL), T0 + 65));
    m = meta(60, -1, 100, VG_CACHE_META_MUST_REVALIDATE);
    assert_false(sie(&m, NULL, T0 + 61));
    m = meta(60, -1, 100, 0);
    assert_false(sie(&m, hdrs("authorization", "x", NULL), T0 + 61));
}

/* ==== conditional requests ====================================================== */

static bool nm(const h2o_headers_t *req, const char *etag, int64_t lm)
{
    struct vg_cache_req r = get_req(req);
    return vg_cache_not_modified(&r, iov(etag), lm);
}

static void test_inm(void **state)
{
    assert_true(nm(hdrs("if-none-match", "\"a\"", NULL), "\"a\"", -1));
    assert_true(nm(hdrs("if-none-match", "W/\"a\"", NULL), "\"a\"", -1)); /* weak comparison */
    assert_true(nm(hdrs("if-none-match", "\"a\"", NULL), "W/\"a\"", -1));
    assert_false(nm(hdrs("if-none-match", "\"b\"", NULL), "\"a\"", -1));
    assert_false(nm(hdrs("if-none-match", "\"A\"", NULL), "\"a\"", -1)); /* case-sensitive */
    assert_true(nm(hdrs("if-none-match", "\"x\", \"y,z\" ,W/\"a\"", NULL), "\"a\"", -1));
    assert_true(nm(hdrs("if-none-match", "\"x\"", "if-none-match", "\"a\"", NULL), "\"a\"", -1));
    assert_false(nm(hdrs("if-none-match", "\"y,z\"", NULL), "\"z\"", -1)); /* commas in quotes do not split */
    assert_true(nm(hdrs("if-none-match", "*", NULL), "", -1));
    assert_false(nm(hdrs("if-none-match", "\"\"", NULL), "", -1)); /* no stored ETag */
    struct vg_cache_req r = get_req(hdrs("if-none-match", "\"a\"", NULL));
    r.method = iov("POST");
    assert_false(vg_cache_not_modified(&r, iov("\"a\""), -1));
}

static void test_ims_only_without_inm(void **state)
{
    const char *d = date(T0);
    assert_true(nm(hdrs("if-modified-since", d, NULL), "", T0));
    assert_true(nm(hdrs("if-modified-since", d, NULL), "", T0 - 1));
    assert_false(nm(hdrs("if-modified-since", d, NULL), "", T0 + 1));
    assert_false(nm(hdrs("if-modified-since", d, NULL), "", -1));           /* no valid Last-Modified */
    assert_false(nm(hdrs("if-modified-since", "yesterday", NULL), "", T0)); /* invalid date: ignored */
    /* If-None-Match present and not matching: IMS is not consulted */
    assert_false(nm(hdrs("if-none-match", "\"b\"", "if-modified-since", d, NULL), "\"a\"", T0));
}

/* ==== Vary ============================================================================ */

static void test_vary_names(void **state)
{
    assert_iov_equal(vg_cache_vary_names(&pool, hdrs("x", "y", NULL)), "");
    assert_iov_equal(vg_cache_vary_names(&pool, hdrs("vary", " Accept-Language ,accept-encoding, ,", "Vary",
                                                     "ACCEPT-ENCODING, Cookie", NULL)),
                     "accept-encoding,accept-language,cookie");
    assert_iov_equal(vg_cache_vary_names(&pool, hdrs("vary", "accept", "vary", "*", NULL)), "*");
}

static void test_vary_key(void **state)
{
    h2o_iovec_t names = iov("accept-encoding,accept-language");
    h2o_iovec_t k1 = vg_cache_vary_key(&pool, names, hdrs("Accept-Encoding", " gzip ", "accept-encoding", "br", NULL));
    assert_iov_equal(k1, "accept-encoding=gzip, br\naccept-language\n");
    h2o_iovec_t k2 = vg_cache_vary_key(&pool, names, hdrs("accept-encoding", "gzip, br", NULL));
    assert_iov_equal(k2, "accept-encoding=gzip, br\naccept-language\n"); /* same variant */
    /* absent and empty differ */
    assert_iov_equal(vg_cache_vary_key(&pool, iov("a"), hdrs("a", "", NULL)), "a=\n");
    assert_iov_equal(vg_cache_vary_key(&pool, iov("a"), hdrs("b", "", NULL)), "a\n");
    /* values cannot forge another field */
    assert_iov_equal(vg_cache_vary_key(&pool, iov("a,b"), hdrs("a", "x\nb=1", NULL)), "a=x%0Ab=1\nb\n");
    assert_iov_equal(vg_cache_vary_key(&pool, iov(""), hdrs("a", "1", NULL)), "");
    assert_iov_equal(vg_cache_vary_key(&pool, h2o_iovec_init(NULL, 0), hdrs("a", "1", NULL)), ""); /* UBSan */
}

/* ==== 304 ============================================================================== */

static void test_merge_304(void **state)
{
    h2o_headers_t *stored = hdrs("content-length", "5", "cache-control", "max-age=10", "Cache-Control", "public",
                                 "etag", "\"a\"", "content-type", "text/plain", NULL);
    h2o_headers_t *fresh = hdrs("Cache-Control", "max-age=60", "content-length", "0", "connection", "x-hop", "x-hop",
                                "1", "keep-alive", "5", "etag", "\"a\"", "x-new", "y", NULL);
    h2o_headers_t out = vg_cache_merge_304(&pool, stored, fresh);
    assert_int_equal(out.size, 5);
    ssize_t i = vg__cache_find(&out, "content-length", -1);
    assert_true(i >= 0);
    assert_iov_equal(out.entries[i].value, "5"); /* the body's length stays */
    i = vg__cache_find(&out, "cache-control", -1);
    assert_iov_equal(out.entries[i].value, "max-age=60");
    assert_int_equal(vg__cache_find(&out, "cache-control", i), -1); /* replaced, not added */
    assert_int_equal(vg__cache_find(&out, "x-hop", -1), -1);
    assert_int_equal(vg__cache_find(&out, "connection", -1), -1);
    assert_int_equal(vg__cache_find(&out, "keep-alive", -1), -1);
    assert_true(vg__cache_find(&out, "x-new", -1) >= 0);
    assert_true(vg__cache_find(&out, "content-type", -1) >= 0);
}

/* ==== invalidation ========================================================================= */

static void test_invalidates(void **state)
{
    assert_true(vg_cache_invalidates(iov("POST"), 200));
    assert_true(vg_cache_invalidates(iov("DELETE"), 302));
    assert_true(vg_cache_invalidates(iov("PATCH"), 399));
    assert_false(vg_cache_invalidates(iov("POST"), 500));
    assert_false(vg_cache_invalidates(iov("PUT"), 404));
    assert_false(vg_cache_invalidates(iov("POST"), 100));
    assert_false(vg_cache_invalidates(iov("GET"), 200));
    assert_false(vg_cache_invalidates(iov("HEAD"), 200));
    assert_false(vg_cache_invalidates(iov("OPTIONS"), 200));
    assert_false(vg_cache_invalidates(iov("TRACE"), 200));
}

static void test_invalidation_target(void **state)
{
    h2o_iovec_t a = iov("example.com");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("/a?b#frag"), a), "/a?b");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov(" http://example.com/x "), a), "/x");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("HTTP://EXAMPLE.COM:80/x"), a), "/x");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("https://example.com:443/y"), a), "/y");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("//example.com/z"), a), "/z");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("http://example.com"), a), "/");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("http://example.com?q"), a), "/?q");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("http://example.com/x"), iov("example.com:80")), "/x");
    /* another host, port, user info, scheme, or a relative path: nothing */
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("http://other.com/x"), a), "");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("http://example.com:8080/x"), a), "");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("http://example.com.evil/x"), a), "");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("http://u@example.com/x"), a), "");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("ftp://example.com/x"), a), "");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov("x/y"), a), "");
    assert_iov_equal(vg_cache_invalidation_target(&pool, iov(""), a), "");
}

/* ==== Cache-Status =========================================================================== */

static void test_cache_status(void **state)
{
    struct vg_cache_status hit = {.hit = true, .ttl = 42};
    assert_iov_equal(vg_cache_status_format(&pool, &hit), "verge; hit; ttl=42");
    struct vg_cache_status miss = {.fwd = "miss", .stored = true, .ttl = 60};
    assert_iov_equal(vg_cache_status_format(&pool, &miss), "verge; fwd=miss; stored; ttl=60");
    struct vg_cache_status stale = {.fwd = "stale", .fwd_status = 304, .collapsed = true, .ttl = INT64_MIN};
    assert_iov_equal(vg_cache_status_format(&pool, &stale), "verge; fwd=stale; fwd-status=304; collapsed");
    struct vg_cache_status big = {.fwd = "uri-miss", .ttl = INT64_MIN, .detail = "too-big"};
    assert_iov_equal(vg_cache_status_format(&pool, &big), "verge; fwd=uri-miss; detail=too-big");
    struct vg_cache_status neg = {.hit = true, .ttl = -5, .detail = "a \"b\"\n"};
    assert_iov_equal(vg_cache_status_format(&pool, &neg), "verge; hit; ttl=-5; detail=\"a \\\"b\\\"\"");
    struct vg_cache_status bare = {.ttl = INT64_MIN};
    assert_iov_equal(vg_cache_status_format(&pool, &bare), "verge");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_cc_basic),
        T(test_cc_quotes_spaces_case),
        T(test_cc_duplicates),
        T(test_cc_garbage),
        T(test_date_forms),
        T(test_date_garbage),
        T(test_date_format),
        T(test_store_method),
        T(test_store_status),
        T(test_store_directives),
        T(test_freshness_order),
        T(test_freshness_expires_invalid_or_past),
        T(test_freshness_heuristic_and_default),
        T(test_freshness_none_and_validator_only),
        T(test_not_honouring_origin),
        T(test_store_authorization),
        T(test_store_set_cookie),
        T(test_store_vary_star_and_size),
        T(test_store_meta),
        T(test_verdict_str),
        T(test_age_arithmetic),
        T(test_use_fresh_and_stale),
        T(test_use_request_max_age_min_fresh),
        T(test_use_max_stale),
        T(test_use_must_revalidate_blocks_stale),
        T(test_use_swr_window),
        T(test_use_no_cache_and_pragma),
        T(test_use_authorization),
        T(test_stale_if_error_window),
        T(test_inm),
        T(test_ims_only_without_inm),
        T(test_vary_names),
        T(test_vary_key),
        T(test_merge_304),
        T(test_invalidates),
        T(test_invalidation_target),
        T(test_cache_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
