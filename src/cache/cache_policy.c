/* The cache's policy layer (RFC 9111, RFC 9110 13, RFC 5861, RFC 9211):
 * pure functions of headers and times. No I/O and no clock: `now` is an
 * argument, so every rule can be tested with fixed numbers. */
#include "cache/cache_int.h"

#include <string.h>
#include <strings.h>
#include <time.h>

/* RFC 9111 1.2.2: delta-seconds beyond 2^31 are read as 2^31. */
#define DELTA_MAX 2147483648LL

static bool ieq(h2o_iovec_t a, const char *lc)
{
    return h2o_lcstris(a.base, a.len, lc, strlen(lc));
}

/* ==== Cache-Control ======================================================== */

void vg_cache_cc_init(struct vg_cache_cc *cc)
{
    cc->flags = 0;
    cc->max_age = cc->s_maxage = cc->max_stale = cc->min_fresh = -1;
    cc->stale_while_revalidate = cc->stale_if_error = -1;
}

/* delta-seconds (digits only, saturating), -1 when malformed. A quoted
 * value is accepted too (RFC 9111 5.2: recipients should). */
static int64_t parse_delta(h2o_iovec_t v)
{
    if (v.len >= 2 && v.base[0] == '"' && v.base[v.len - 1] == '"')
        v = h2o_iovec_init(v.base + 1, v.len - 2);
    if (v.len == 0)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9')
            return -1;
        if (n < DELTA_MAX)
            n = n * 10 + (v.base[i] - '0');
    }
    return n < DELTA_MAX ? n : DELTA_MAX;
}

/* Two different values of max-age or s-maxage: RFC 9111 4.2.1 lets a cache
 * use the first or consider the response stale; stale is the safe one. */
static void set_age_directive(int64_t *slot, h2o_iovec_t v, bool has_value)
{
    int64_t n = has_value ? parse_delta(v) : -1;
    if (n < 0)
        n = 0; /* malformed: the most conservative reading */
    *slot = (*slot < 0 || *slot == n) ? n : 0;
}

/* Directives that widen what may be served (stale-*, max-stale) keep the
 * smallest value when repeated; malformed ones are ignored. */
static void set_min(int64_t *slot, h2o_iovec_t v)
{
    int64_t n = parse_delta(v);
    if (n >= 0 && (*slot < 0 || n < *slot))
        *slot = n;
}

struct cc_flag {
    const char *name;
    uint32_t flag, qualified; /* qualified: the flag when the directive has a value */
};

static const struct cc_flag cc_flags[] = {
    {"no-store", VG_CACHE_CC_NO_STORE, VG_CACHE_CC_NO_STORE},
    {"no-cache", VG_CACHE_CC_NO_CACHE, VG_CACHE_CC_NO_CACHE_FIELDS},
    {"private", VG_CACHE_CC_PRIVATE, VG_CACHE_CC_PRIVATE_FIELDS},
    {"public", VG_CACHE_CC_PUBLIC, VG_CACHE_CC_PUBLIC},
    {"must-revalidate", VG_CACHE_CC_MUST_REVALIDATE, VG_CACHE_CC_MUST_REVALIDATE},
    {"proxy-revalidate", VG_CACHE_CC_PROXY_REVALIDATE, VG_CACHE_CC_PROXY_REVALIDATE},
    {"no-transform", VG_CACHE_CC_NO_TRANSFORM, VG_CACHE_CC_NO_TRANSFORM},
    {"only-if-cached", VG_CACHE_CC_ONLY_IF_CACHED, VG_CACHE_CC_ONLY_IF_CACHED},
    {"immutable", VG_CACHE_CC_IMMUTABLE, VG_CACHE_CC_IMMUTABLE},
    {"must-understand", VG_CACHE_CC_MUST_UNDERSTAND, VG_CACHE_CC_MUST_UNDERSTAND},
};

static void cc_directive(struct vg_cache_cc *cc, h2o_iovec_t name, h2o_iovec_t v, bool has_value)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(cc_flags); i++) {
        if (ieq(name, cc_flags[i].name)) {
            cc->flags |= has_value ? cc_flags[i].qualified : cc_flags[i].flag;
            return;
        }
    }
    if (ieq(name, "max-age"))
        set_age_directive(&cc->max_age, v, has_value);
    else if (ieq(name, "s-maxage"))
        set_age_directive(&cc->s_maxage, v, has_value);
    else if (ieq(name, "max-stale") && !has_value)
        cc->flags |= VG_CACHE_CC_MAX_STALE_ANY;
    else if (ieq(name, "max-stale"))
        set_min(&cc->max_stale, v);
    else if (ieq(name, "min-fresh")) {
        int64_t n = parse_delta(v); /* the largest asks for the most freshness */
        if (n > cc->min_fresh)
            cc->min_fresh = n;
    } else if (ieq(name, "stale-while-revalidate"))
        set_min(&cc->stale_while_revalidate, v);
    else if (ieq(name, "stale-if-error"))
        set_min(&cc->stale_if_error, v);
}

void vg_cache_cc_parse(struct vg_cache_cc *cc, const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    h2o_iovec_t el;
    while (vg__cache_list_next(&p, end, &el)) {
        const char *eq = memchr(el.base, '=', el.len);
        h2o_iovec_t name = vg__cache_trim(el.base, eq ? (size_t)(eq - el.base) : el.len);
        h2o_iovec_t v = eq ? vg__cache_trim(eq + 1, (size_t)(el.base + el.len - eq - 1)) : h2o_iovec_init("", 0);
        if (name.len)
            cc_directive(cc, name, v, eq != NULL);
    }
}

void vg_cache_cc_from_headers(struct vg_cache_cc *cc, const h2o_headers_t *headers)
{
    for (ssize_t i = -1; (i = vg__cache_find(headers, "cache-control", i)) >= 0;)
        vg_cache_cc_parse(cc, headers->entries[i].value.base, headers->entries[i].value.len);
}

/* ==== HTTP dates ============================================================ */

static const char *const wkdays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
static const char *const wkdays_long[] = {"sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"};
static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec"};

struct scan {
    const char *p, *end;
};

static bool lit(struct scan *s, const char *want) /* case-insensitive (RFC 9111 4.2) */
{
    size_t n = strlen(want);
    if ((size_t)(s->end - s->p) < n || !h2o_lcstris(s->p, n, want, n))
        return false;
    s->p += n;
    return true;
}

static bool digits(struct scan *s, int n, int *out)
{
    if (s->end - s->p < n)
        return false;
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s->p[i] < '0' || s->p[i] > '9')
            return false;
        v = v * 10 + (s->p[i] - '0');
    }
    s->p += n;
    *out = v;
    return true;
}

static bool one_of(struct scan *s, const char *const *names, size_t n, int *idx)
{
    for (size_t i = 0; i < n; i++) {
        if (lit(s, names[i])) {
            *idx = (int)i;
            return true;
        }
    }
    return false;
}

static bool hms(struct scan *s, struct tm *tm)
{
    return digits(s, 2, &tm->tm_hour) && lit(s, ":") && digits(s, 2, &tm->tm_min) && lit(s, ":") &&
           digits(s, 2, &tm->tm_sec);
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
static bool imf_fixdate(struct scan *s, struct tm *tm)
{
    int wd;
    return one_of(s, wkdays, 7, &wd) && lit(s, ", ") && digits(s, 2, &tm->tm_mday) && lit(s, " ") &&
           one_of(s, months, 12, &tm->tm_mon) && lit(s, " ") && digits(s, 4, &tm->tm_year) && lit(s, " ") &&
           hms(s, tm) && lit(s, " gmt");
}

/* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT". Two-digit years: RFC 9110
 * 5.6.7 wants "more than 50 years in the future" read as the past century,
 * which needs a clock; this layer has none, so a fixed pivot stands in for
 * it (70..99 -> 19xx, else 20xx), as most HTTP stacks do. */
static bool rfc850(struct scan *s, struct tm *tm)
{
    int wd;
    if (!(one_of(s, wkdays_long, 7, &wd) && lit(s, ", ") && digits(s, 2, &tm->tm_mday) && lit(s, "-") &&
          one_of(s, months, 12, &tm->tm_mon) && lit(s, "-") && digits(s, 2, &tm->tm_year) && lit(s, " ") &&
          hms(s, tm) && lit(s, " gmt")))
        return false;
    tm->tm_year += tm->tm_year >= 70 ? 1900 : 2000;
    return true;
}

/* asctime: "Sun Nov  6 08:49:37 1994" */
static bool asctime_date(struct scan *s, struct tm *tm)
{
    int wd;
    if (!(one_of(s, wkdays, 7, &wd) && lit(s, " ") && one_of(s, months, 12, &tm->tm_mon) && lit(s, " ")))
        return false;
    if (!(lit(s, " ") ? digits(s, 1, &tm->tm_mday) : digits(s, 2, &tm->tm_mday)))
        return false;
    return lit(s, " ") && hms(s, tm) && lit(s, " ") && digits(s, 4, &tm->tm_year);
}

static bool valid_tm(const struct tm *tm)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = tm->tm_year;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int dim = tm->tm_mon == 1 && !leap ? 28 : mdays[tm->tm_mon];
    /* sec 60: a leap second is a valid HTTP-date; timegm folds it into the
     * next minute. */
    return y >= 1900 && tm->tm_mday >= 1 && tm->tm_mday <= dim && tm->tm_hour <= 23 && tm->tm_min <= 59 &&
           tm->tm_sec <= 60;
}

int64_t vg_cache_date_parse(const char *str, size_t len)
{
    if (len == 0) /* str may be NULL then: no arithmetic on it */
        return -1;
    h2o_iovec_t v = vg__cache_trim(str, len);
    const char *comma = memchr(v.base, ',', v.len);
    struct scan s = {v.base, v.base + v.len};
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    bool ok;
    if (comma && comma - v.base == 3)
        ok = imf_fixdate(&s, &tm);
    else if (comma)
        ok = rfc850(&s, &tm);
    else
        ok = asctime_date(&s, &tm);
    if (!ok || s.p != s.end || !valid_tm(&tm))
        return -1;
    tm.tm_year -= 1900;
    return (int64_t)timegm(&tm);
}

void vg_cache_date_format(int64_t t, char buf[30])
{
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    /* IMF-fixdate has four year digits: clamp to what it can say. */
    if (t < 0)
        t = 0;
    if (t > VG__CACHE_TIME_MAX)
        t = VG__CACHE_TIME_MAX;
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    /* Built by hand: snprintf cannot prove the fields fit, and a fixed
     * layout is exactly what IMF-fixdate is. */
    int f[] = {tm.tm_mday, tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec};
    memcpy(buf, "Www, DD Mmm YYYY HH:MM:SS GMT", 30);
    memcpy(buf, wd[tm.tm_wday], 3);
    memcpy(buf + 8, mo[tm.tm_mon], 3);
    static const int at[] = {5, 12, 17, 20, 23}, width[] = {2, 4, 2, 2, 2};
    for (int i = 0; i < 5; i++)
        for (int d = width[i] - 1, v = f[i]; d >= 0; d--, v /= 10)
            buf[at[i] + d] = (char)('0' + v % 10);
}

/* ==== storing (RFC 9111 3) ================================================== */

const char *vg_cache_store_verdict_str(enum vg_cache_store_verdict v)
{
    switch (v) {
    case VG_CACHE_STORE_OK:
        return "stored";
    case VG_CACHE_NOSTORE_METHOD:
        return "method";
    case VG_CACHE_NOSTORE_STATUS:
        return "status";
    case VG_CACHE_NOSTORE_DIRECTIVE:
        return "directive";
    case VG_CACHE_NOSTORE_AUTH:
        return "authorization";
    case VG_CACHE_NOSTORE_SET_COOKIE:
        return "set-cookie";
    case VG_CACHE_NOSTORE_VARY_STAR:
        return "vary-star";
    case VG_CACHE_NOSTORE_NO_FRESHNESS:
        return "no-freshness";
    case VG_CACHE_NOSTORE_TOO_BIG:
        return "too-big";
    }
    return "unknown";
}

/* RFC 9110 15.1 "heuristically cacheable" statuses, less 206: verge does
 * not combine partial responses, so it never stores them. */
static bool cacheable_by_default(int status)
{
    switch (status) {
    case 200:
    case 203:
    case 204:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501:
        return true;
    }
    return false;
}

/* Final statuses this cache understands (RFC 9111 3: "the response status
 * code is final and understood"). 206 is not (see above); a 304 only ever
 * refreshes a stored response, it is never an object of its own. */
static bool understood(int status)
{
    return status >= 200 && status <= 599 && status != 206 && status != 304;
}

static h2o_iovec_t header_value(const h2o_headers_t *hs, const char *lc)
{
    ssize_t i = vg__cache_find(hs, lc, -1);
    return i >= 0 ? hs->entries[i].value : h2o_iovec_init(NULL, 0);
}

static bool has_header(const h2o_headers_t *hs, const char *lc)
{
    return vg__cache_find(hs, lc, -1) >= 0;
}

static int64_t date_header(const h2o_headers_t *hs, const char *lc)
{
    h2o_iovec_t v = header_value(hs, lc);
    return v.base ? vg_cache_date_parse(v.base, v.len) : -1;
}

/* Vary: "*" among any of its list elements (RFC 9111 4.1). */
static bool vary_star(const h2o_headers_t *res)
{
    for (ssize_t i = -1; (i = vg__cache_find(res, "vary", i)) >= 0;) {
        const char *p = res->entries[i].value.base, *end = p + res->entries[i].value.len;
        h2o_iovec_t el;
        while (vg__cache_list_next(&p, end, &el))
            if (el.len == 1 && el.base[0] == '*')
                return true;
    }
    return false;
}

/* The first Content-Length (the guard has already refused conflicting
 * ones); SIZE_MAX when absent or malformed, i.e. unknown. */
static size_t content_length(const h2o_headers_t *res)
{
    h2o_iovec_t v = header_value(res, "content-length");
    return v.base ? h2o_strtosize(v.base, v.len) : SIZE_MAX;
}

/* Explicit freshness from the origin, -1 when it gives none (RFC 9111
 * 4.2.1: s-maxage, then max-age, then Expires - Date). An Expires that
 * does not parse means "already expired" (5.3), which is explicit: 0. */
static int64_t explicit_lifetime(const struct vg_cache_cc *cc, const h2o_headers_t *res, int64_t date)
{
    if (cc->s_maxage >= 0)
        return cc->s_maxage;
    if (cc->max_age >= 0)
        return cc->max_age;
    h2o_iovec_t exp = header_value(res, "expires");
    if (!exp.base)
        return -1;
    int64_t e = vg_cache_date_parse(exp.base, exp.len);
    return e > date ? e - date : 0;
}

/* RFC 9111 4.2.2: a fraction of the time since the last change; 10% is the
 * figure the RFC suggests, capped so a years-old file is not kept for
 * months on a guess. */
static int64_t heuristic_lifetime(int64_t date, int64_t last_modified)
{
    if (last_modified < 0 || last_modified > date)
        return -1;
    int64_t h = (date - last_modified) / 10;
    return h < 86400 ? h : 86400;
}

struct store_ctx {
    const struct vg_cache_rules *rules;
    const h2o_headers_t *res;
    struct vg_cache_cc cc;
    int status;
    int64_t date, last_modified;
    bool has_validator;
};

/* Freshness lifetime, or -1 when the response may not be stored for want
 * of one (NO_FRESHNESS) or because its status needs explicit freshness
 * (-2: STATUS). */
static int64_t lifetime_of(const struct store_ctx *x)
{
    const struct vg_cache_rules *r = x->rules;
    /* !honour_origin: the operator's TTL replaces the origin's freshness
     * (max-age, s-maxage, Expires, no-cache) but not its safety rules: the
     * caller still refused no-store, private, Set-Cookie, Vary: * and
     * Authorization. The status rule below still uses the origin's
     * explicit freshness, so an error page is never kept because the
     * operator set a TTL. */
    int64_t expl = explicit_lifetime(&x->cc, x->res, x->date);
    if (!cacheable_by_default(x->status) && expl < 0 && !(x->cc.flags & VG_CACHE_CC_PUBLIC))
        return -2;
    if (!r->honour_origin)
        expl = -1;
    if (expl >= 0)
        return expl;
    int64_t h = r->heuristic && r->honour_origin ? heuristic_lifetime(x->date, x->last_modified) : -1;
    if (h >= 0)
        return h;
    if (r->default_ttl > 0)
        return r->default_ttl;
    /* No freshness at all but a validator: storing it with lifetime 0 makes
     * every use a cheap conditional request. Only when the operator asked
     * for no TTL and no heuristic, i.e. "only the origin decides". */
    if (r->default_ttl == 0 && !r->heuristic && x->has_validator)
        return 0;
    return -1;
}

static int64_t age_header(const h2o_headers_t *res)
{
    h2o_iovec_t v = header_value(res, "age");
    int64_t a = v.base ? parse_delta(vg__cache_trim(v.base, v.len)) : -1;
    return a >= 0 ? a : 0;
}

static uint32_t meta_flags(const struct vg_cache_cc *cc, const struct vg_cache_rules *r, bool auth,
                           const h2o_headers_t *res)
{
    uint32_t f = 0;
    if (cc->flags & (VG_CACHE_CC_MUST_REVALIDATE | VG_CACHE_CC_PROXY_REVALIDATE) || cc->s_maxage >= 0)
        f |= VG_CACHE_META_MUST_REVALIDATE;
    if ((cc->flags & VG_CACHE_CC_NO_CACHE) && r->honour_origin)
        f |= VG_CACHE_META_NO_CACHE;
    if (auth)
        f |= VG_CACHE_META_AUTH_OK;
    if (has_header(res, "etag"))
        f |= VG_CACHE_META_HAS_ETAG;
    if (cc->flags & VG_CACHE_CC_IMMUTABLE)
        f |= VG_CACHE_META_IMMUTABLE;
    return f;
}

static bool is_get_or_head(h2o_iovec_t m)
{
    return h2o_memis(m.base, m.len, H2O_STRLIT("GET")) || h2o_memis(m.base, m.len, H2O_STRLIT("HEAD"));
}

/* The checks that do not depend on freshness, in the order Cache-Status
 * details are most useful in. */
static enum vg_cache_store_verdict refusal(const struct vg_cache_req *req, const struct store_ctx *x)
{
    struct vg_cache_cc rq;
    vg_cache_cc_init(&rq);
    vg_cache_cc_from_headers(&rq, req->headers);
    if (!is_get_or_head(req->method))
        return VG_CACHE_NOSTORE_METHOD;
    if (!understood(x->status))
        return VG_CACHE_NOSTORE_STATUS;
    if ((rq.flags | x->cc.flags) & VG_CACHE_CC_NO_STORE || x->cc.flags & VG_CACHE_CC_PRIVATE)
        return VG_CACHE_NOSTORE_DIRECTIVE;
    if (vary_star(x->res))
        return VG_CACHE_NOSTORE_VARY_STAR;
    /* RFC 9111 3.5: a shared cache may store an answer to an authenticated
     * request only when the response says it may be shared. */
    if (has_header(req->headers, "authorization") &&
        !(x->cc.flags & (VG_CACHE_CC_PUBLIC | VG_CACHE_CC_MUST_REVALIDATE) || x->cc.s_maxage >= 0))
        return VG_CACHE_NOSTORE_AUTH;
    /* A Set-Cookie named by private="..."/no-cache="..." is stripped
     * before storing (vg__cache_strip_qualified), so it is no obstacle. */
    if (has_header(x->res, "set-cookie") && !x->rules->allow_set_cookie &&
        !vg__cache_qualified_names(x->res, "set-cookie"))
        return VG_CACHE_NOSTORE_SET_COOKIE;
    size_t cl = content_length(x->res);
    if (cl != SIZE_MAX && cl > x->rules->max_object_size)
        return VG_CACHE_NOSTORE_TOO_BIG;
    return VG_CACHE_STORE_OK;
}

enum vg_cache_store_verdict vg_cache_storable(const struct vg_cache_req *req, int status, const h2o_headers_t *res,
                                              const struct vg_cache_rules *rules, int64_t request_time,
                                              int64_t response_time, struct vg_cache_meta *meta)
{
    struct store_ctx x = {.rules = rules, .res = res, .status = status};
    vg_cache_cc_init(&x.cc);
    vg_cache_cc_from_headers(&x.cc, res);
    x.date = date_header(res, "date");
    if (x.date < 0)
        x.date = response_time;
    x.last_modified = date_header(res, "last-modified");
    x.has_validator = has_header(res, "etag") || x.last_modified >= 0;

    enum vg_cache_store_verdict v = refusal(req, &x);
    if (v != VG_CACHE_STORE_OK)
        return v;
    int64_t lifetime = lifetime_of(&x);
    if (lifetime == -2)
        return VG_CACHE_NOSTORE_STATUS;
    if (lifetime < 0)
        return VG_CACHE_NOSTORE_NO_FRESHNESS;
    *meta = (struct vg_cache_meta){
        .request_time = request_time,
        .response_time = response_time,
        .date = x.date,
        .age = age_header(res),
        .lifetime = lifetime,
        .swr = x.cc.stale_while_revalidate,
        .sie = x.cc.stale_if_error,
        .last_modified = x.last_modified,
        .flags = meta_flags(&x.cc, rules, has_header(req->headers, "authorization"), res),
    };
    return VG_CACHE_STORE_OK;
}

/* --- qualified private= / no-cache= --------------------------------------- */

/* Calls fn for each field name listed by a qualified no-cache or private
 * directive; stops when fn returns true. */
static bool each_qualified_name(const h2o_headers_t *res, bool (*fn)(h2o_iovec_t name, void *arg), void *arg)
{
    for (ssize_t i = -1; (i = vg__cache_find(res, "cache-control", i)) >= 0;) {
        const char *p = res->entries[i].value.base, *end = p + res->entries[i].value.len;
        h2o_iovec_t el;
        while (vg__cache_list_next(&p, end, &el)) {
            const char *eq = memchr(el.base, '=', el.len);
            if (!eq)
                continue;
            h2o_iovec_t d = vg__cache_trim(el.base, (size_t)(eq - el.base));
            if (!ieq(d, "no-cache") && !ieq(d, "private"))
                continue;
            h2o_iovec_t v = vg__cache_trim(eq + 1, (size_t)(el.base + el.len - eq - 1));
            if (v.len >= 2 && v.base[0] == '"' && v.base[v.len - 1] == '"')
                v = h2o_iovec_init(v.base + 1, v.len - 2);
            const char *q = v.base, *qend = v.base + v.len;
            h2o_iovec_t name;
            while (vg__cache_list_next(&q, qend, &name))
                if (fn(name, arg))
                    return true;
        }
    }
    return false;
}

static bool name_matches(h2o_iovec_t name, void *arg)
{
    return ieq(name, arg);
}

bool vg__cache_qualified_names(const h2o_headers_t *res, const char *lc)
{
    return each_qualified_name(res, name_matches, (void *)lc);
}

static bool header_named(h2o_iovec_t name, void *arg)
{
    const h2o_header_t *h = arg;
    if (name.len != h->name->len)
        return false;
    for (size_t i = 0; i < name.len; i++)
        if (h2o_tolower(name.base[i]) != h2o_tolower(h->name->base[i]))
            return false;
    return true;
}

h2o_headers_t vg__cache_strip_qualified(h2o_mem_pool_t *pool, const h2o_headers_t *res)
{
    h2o_headers_t out = {NULL};
    h2o_vector_reserve(pool, &out, res->size);
    for (size_t i = 0; i < res->size; i++)
        if (!each_qualified_name(res, header_named, (void *)&res->entries[i]))
            out.entries[out.size++] = res->entries[i];
    return out;
}

h2o_headers_t vg_cache_headers_to_store(h2o_mem_pool_t *pool, const h2o_headers_t *res)
{
    h2o_headers_t q = vg__cache_strip_qualified(pool, res), out = {NULL};
    h2o_vector_reserve(pool, &out, q.size);
    for (size_t i = 0; i < q.size; i++) {
        const h2o_header_t *h = &q.entries[i];
        if (h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("age")) ||
            h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("content-length")) ||
            h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("x-request-id")))
            continue;
        out.entries[out.size++] = *h;
    }
    return out;
}

/* ==== using a stored response (RFC 9111 4) ================================== */

int64_t vg_cache_age(const struct vg_cache_meta *m, int64_t now)
{
    int64_t apparent_age = m->response_time - m->date;
    if (apparent_age < 0)
        apparent_age = 0;
    int64_t response_delay = m->response_time - m->request_time;
    int64_t corrected_age_value = m->age + response_delay;
    int64_t corrected_initial_age = apparent_age > corrected_age_value ? apparent_age : corrected_age_value;
    /* A clock stepped back would make resident time negative: a response
     * never gets younger by sitting in the cache. */
    int64_t resident_time = now > m->response_time ? now - m->response_time : 0;
    return corrected_initial_age + resident_time;
}

struct req_view {
    struct vg_cache_cc cc;
    bool no_cache; /* Cache-Control: no-cache, or Pragma: no-cache without Cache-Control (RFC 9111 5.4) */
    bool auth;
};

static void req_view(const struct vg_cache_req *req, struct req_view *v)
{
    vg_cache_cc_init(&v->cc);
    vg_cache_cc_from_headers(&v->cc, req->headers);
    v->no_cache = (v->cc.flags & VG_CACHE_CC_NO_CACHE) != 0;
    if (!has_header(req->headers, "cache-control")) {
        for (ssize_t i = -1; (i = vg__cache_find(req->headers, "pragma", i)) >= 0;) {
            const char *p = req->headers->entries[i].value.base, *end = p + req->headers->entries[i].value.len;
            h2o_iovec_t el;
            while (vg__cache_list_next(&p, end, &el))
                if (ieq(el, "no-cache"))
                    v->no_cache = true;
        }
    }
    v->auth = has_header(req->headers, "authorization");
}

enum vg_cache_use vg_cache_usable(const struct vg_cache_meta *meta, const struct vg_cache_req *req, int64_t now)
{
    struct req_view rv;
    req_view(req, &rv);
    if (rv.auth && !(meta->flags & VG_CACHE_META_AUTH_OK))
        return VG_CACHE_USE_NONE;
    if (rv.no_cache || meta->flags & VG_CACHE_META_NO_CACHE)
        return VG_CACHE_USE_REVALIDATE;
    int64_t age = vg_cache_age(meta, now), left = meta->lifetime - age;
    /* Request max-age bounds the age whether or not the response is fresh
     * (RFC 9111 5.2.1.1); max-stale below only widens staleness. Ages are
     * whole seconds, so an object 0.9 s old has age 0: max-age=0 (what a
     * browser's reload sends) would let it through, though the client
     * asks for nothing older than now; it always revalidates. */
    if (rv.cc.max_age >= 0 && (age > rv.cc.max_age || rv.cc.max_age == 0))
        return VG_CACHE_USE_REVALIDATE;
    if (left > 0)
        return rv.cc.min_fresh >= 0 && left < rv.cc.min_fresh ? VG_CACHE_USE_REVALIDATE : VG_CACHE_USE_FRESH;
    int64_t staleness = -left;
    /* must-revalidate (and proxy-revalidate, s-maxage) forbid any stale use
     * without a successful validation: max-stale and swr included. */
    if (meta->flags & VG_CACHE_META_MUST_REVALIDATE)
        return VG_CACHE_USE_REVALIDATE;
    if (rv.cc.flags & VG_CACHE_CC_MAX_STALE_ANY || (rv.cc.max_stale >= 0 && staleness <= rv.cc.max_stale))
        return VG_CACHE_USE_FRESH; /* the client accepts it this stale */
    /* RFC 5861 "up to N seconds" after it became stale: [lifetime, lifetime + N). */
    if (meta->swr >= 0 && staleness < meta->swr)
        return VG_CACHE_USE_STALE_SWR;
    return VG_CACHE_USE_REVALIDATE;
}

bool vg_cache_stale_if_error_ok(const struct vg_cache_meta *meta, const struct vg_cache_req *req, int64_t now)
{
    struct req_view rv;
    req_view(req, &rv);
    if (rv.auth && !(meta->flags & VG_CACHE_META_AUTH_OK))
        return false;
    /* must-revalidate overrides stale-if-error (RFC 5861 4); so does a
     * response's no-cache, which asks for validation on every use. */
    if (meta->flags & (VG_CACHE_META_MUST_REVALIDATE | VG_CACHE_META_NO_CACHE))
        return false;
    int64_t staleness = vg_cache_age(meta, now) - meta->lifetime;
    if (staleness < 0)
        return true; /* still fresh: revalidation was only asked for */
    return (meta->sie >= 0 && staleness < meta->sie) || (rv.cc.stale_if_error >= 0 && staleness < rv.cc.stale_if_error);
}

/* ==== conditional requests (RFC 9110 13) ==================================== */

/* Weak comparison (RFC 9110 8.8.3.2): the opaque tags match, W/ aside. */
static h2o_iovec_t opaque_tag(h2o_iovec_t t)
{
    if (t.len >= 2 && t.base[0] == 'W' && t.base[1] == '/')
        t = h2o_iovec_init(t.base + 2, t.len - 2);
    return t;
}

static bool inm_matches(const h2o_headers_t *hs, h2o_iovec_t etag)
{
    h2o_iovec_t mine = opaque_tag(vg__cache_trim(etag.base, etag.len));
    for (ssize_t i = -1; (i = vg__cache_find(hs, "if-none-match", i)) >= 0;) {
        const char *p = hs->entries[i].value.base, *end = p + hs->entries[i].value.len;
        h2o_iovec_t el;
        while (vg__cache_list_next(&p, end, &el)) {
            /* "*": any current representation, and a stored one is. */
            if (el.len == 1 && el.base[0] == '*')
                return true;
            h2o_iovec_t t = opaque_tag(el);
            if (mine.len && h2o_memis(t.base, t.len, mine.base, mine.len))
                return true;
        }
    }
    return false;
}

bool vg_cache_not_modified(const struct vg_cache_req *req, h2o_iovec_t etag, int64_t last_modified)
{
    if (!is_get_or_head(req->method))
        return false;
    /* RFC 9110 13.2.2 step 3/4: If-Modified-Since is evaluated only when
     * there is no If-None-Match at all. */
    if (has_header(req->headers, "if-none-match"))
        return inm_matches(req->headers, etag);
    int64_t ims = date_header(req->headers, "if-modified-since");
    return ims >= 0 && last_modified >= 0 && last_modified <= ims;
}

/* ==== Vary (RFC 9111 4.1) ==================================================== */

static int cmp_iov(const void *a, const void *b)
{
    const h2o_iovec_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->base, y->base, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

h2o_iovec_t vg_cache_vary_names(h2o_mem_pool_t *pool, const h2o_headers_t *res)
{
    H2O_VECTOR(h2o_iovec_t) names = {NULL};
    for (ssize_t i = -1; (i = vg__cache_find(res, "vary", i)) >= 0;) {
        const char *p = res->entries[i].value.base, *end = p + res->entries[i].value.len;
        h2o_iovec_t el;
        while (vg__cache_list_next(&p, end, &el)) {
            if (el.len == 1 && el.base[0] == '*')
                return h2o_iovec_init(H2O_STRLIT("*"));
            h2o_iovec_t lc = h2o_strdup(pool, el.base, el.len);
            h2o_strtolower(lc.base, lc.len);
            h2o_vector_reserve(pool, &names, names.size + 1);
            names.entries[names.size++] = lc;
        }
    }
    if (names.size == 0)
        return h2o_iovec_init("", 0);
    qsort(names.entries, names.size, sizeof(h2o_iovec_t), cmp_iov);
    struct vg__cache_buf b;
    vg__cache_buf_init(&b, pool, 64);
    for (size_t i = 0; i < names.size; i++) {
        if (i && cmp_iov(&names.entries[i], &names.entries[i - 1]) == 0)
            continue;
        if (b.len)
            vg__cache_buf_addc(&b, ',');
        /* A name is a token; anything else is escaped so ',' still splits. */
        vg__cache_buf_add_escaped(&b, names.entries[i].base, names.entries[i].len, ',');
    }
    return vg__cache_buf_iov(&b);
}

/* Appends "name=v1, v2\n" (each field line trimmed), or "name\n" when the
 * request lacks the field: absent and empty select different variants.
 * Escaping keeps '\n' and '=' as pure separators. */
static void vary_field(struct vg__cache_buf *b, h2o_iovec_t name, const h2o_headers_t *req)
{
    char lc[256];
    vg__cache_buf_add_escaped(b, name.base, name.len, '=');
    if (name.len >= sizeof(lc)) {
        vg__cache_buf_addc(b, '\n');
        return; /* longer than any field name we would accept: absent */
    }
    memcpy(lc, name.base, name.len);
    lc[name.len] = '\0';
    bool first = true;
    for (ssize_t i = -1; (i = vg__cache_find(req, lc, i)) >= 0; first = false) {
        h2o_iovec_t v = vg__cache_trim(req->entries[i].value.base, req->entries[i].value.len);
        vg__cache_buf_add(b, first ? "=" : ", ", first ? 1 : 2);
        vg__cache_buf_add_escaped(b, v.base, v.len, 0);
    }
    vg__cache_buf_addc(b, '\n');
}

h2o_iovec_t vg_cache_vary_key(h2o_mem_pool_t *pool, h2o_iovec_t names, const h2o_headers_t *req)
{
    struct vg__cache_buf b;
    vg__cache_buf_init(&b, pool, 128);
    if (names.len == 0) /* base may be NULL then */
        return vg__cache_buf_iov(&b);
    const char *p = names.base, *end = names.base + names.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        if (stop > p)
            vary_field(&b, h2o_iovec_init(p, (size_t)(stop - p)), req);
        p = comma ? comma + 1 : end;
    }
    return vg__cache_buf_iov(&b);
}

/* ==== 304 merge (RFC 9111 3.2, 4.3.4) ======================================== */

static bool kept_from_304(const h2o_header_t *h, const h2o_headers_t *fresh)
{
    static const char *const never[] = {
        "content-length", "content-encoding", "transfer-encoding", "content-range", /* describe the body */
        "connection",     "keep-alive",       "proxy-connection",  "te",
        "trailer",        "upgrade", /* hop-by-hop */
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(never); i++)
        if (vg__cache_name_is(h, never[i]))
            return false;
    /* Fields the 304's own Connection header names are hop-by-hop too. */
    for (ssize_t i = -1; (i = vg__cache_find(fresh, "connection", i)) >= 0;) {
        const char *p = fresh->entries[i].value.base, *end = p + fresh->entries[i].value.len;
        h2o_iovec_t el;
        while (vg__cache_list_next(&p, end, &el))
            if (header_named(el, (void *)h))
                return false;
    }
    return true;
}

static bool named_in(const h2o_header_t *h, const h2o_headers_t *hs)
{
    for (size_t i = 0; i < hs->size; i++)
        if (header_named(*hs->entries[i].name, (void *)h))
            return true;
    return false;
}

h2o_headers_t vg_cache_merge_304(h2o_mem_pool_t *pool, const h2o_headers_t *stored, const h2o_headers_t *fresh)
{
    h2o_headers_t upd = {NULL}, out = {NULL};
    h2o_vector_reserve(pool, &upd, fresh->size);
    for (size_t i = 0; i < fresh->size; i++)
        if (kept_from_304(&fresh->entries[i], fresh))
            upd.entries[upd.size++] = fresh->entries[i];
    h2o_vector_reserve(pool, &out, stored->size + upd.size);
    /* A field the 304 carries replaces every stored line of that name (a
     * list field is sent whole), so Cache-Control etc. never end up twice. */
    for (size_t i = 0; i < stored->size; i++)
        if (!named_in(&stored->entries[i], &upd))
            out.entries[out.size++] = stored->entries[i];
    for (size_t i = 0; i < upd.size; i++)
        out.entries[out.size++] = upd.entries[i];
    return out;
}

/* ==== invalidation (RFC 9111 4.4) ============================================ */

bool vg_cache_invalidates(h2o_iovec_t method, int status)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < VG_ARRAY_LEN(safe); i++)
        if (h2o_memis(method.base, method.len, safe[i], strlen(safe[i])))
            return false;
    return status >= 200 && status <= 399;
}

/* host[:port] without a default port, for comparing authorities. */
static h2o_iovec_t authority_norm(h2o_iovec_t a, bool https)
{
    const char *dflt = https ? ":443" : ":80";
    size_t n = strlen(dflt);
    if (a.len > n && memcmp(a.base + a.len - n, dflt, n) == 0)
        a.len -= n;
    return a;
}

static bool same_authority(h2o_iovec_t a, h2o_iovec_t b, bool https)
{
    a = authority_norm(a, https);
    b = authority_norm(b, https);
    return a.len > 0 && a.len == b.len && strncasecmp(a.base, b.base, a.len) == 0;
}

h2o_iovec_t vg_cache_invalidation_target(h2o_mem_pool_t *pool, h2o_iovec_t value, h2o_iovec_t authority)
{
    h2o_iovec_t v = vg__cache_trim(value.base, value.len), none = h2o_iovec_init("", 0);
    const char *end = v.base + v.len, *p = v.base;
    bool https = false;
    if (v.len >= 7 && strncasecmp(p, "http://", 7) == 0)
        p += 5;
    else if (v.len >= 8 && strncasecmp(p, "https://", 8) == 0)
        p += 6, https = true;
    if (end - p >= 2 && p[0] == '/' && p[1] == '/') { /* an authority follows */
        p += 2;
        const char *a = p;
        while (p < end && *p != '/' && *p != '?' && *p != '#')
            p++;
        h2o_iovec_t auth = h2o_iovec_init(a, (size_t)(p - a));
        if (memchr(auth.base, '@', auth.len) || !same_authority(auth, authority, https))
            return none;
    } else if (p != v.base || p == end || *p != '/') {
        /* another scheme, or a path relative to the request's own: that
         * base is not known here, and guessing could purge the wrong URL. */
        return none;
    }
    const char *frag = memchr(p, '#', (size_t)(end - p));
    size_t len = (size_t)((frag ? frag : end) - p);
    if (len == 0 || *p == '?')
        return h2o_concat(pool, h2o_iovec_init(H2O_STRLIT("/")), h2o_iovec_init(p, len));
    return h2o_strdup(pool, p, len);
}

/* ==== Cache-Status (RFC 9211) ================================================ */

/* sf-token (RFC 8941 3.3.4): ALPHA or '*' first. */
static bool is_token(const char *s)
{
    if (!(((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z') || *s == '*'))
        return false;
    for (; *s; s++)
        if (!(((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~:/", *s)))
            return false;
    return true;
}

h2o_iovec_t vg_cache_status_format(h2o_mem_pool_t *pool, const struct vg_cache_status *st)
{
    char num[32];
    struct vg__cache_buf b;
    vg__cache_buf_init(&b, pool, 96);
    vg__cache_buf_add(&b, H2O_STRLIT("verge"));
    if (st->hit)
        vg__cache_buf_add(&b, H2O_STRLIT("; hit"));
    if (st->fwd) {
        vg__cache_buf_add(&b, H2O_STRLIT("; fwd="));
        vg__cache_buf_add(&b, st->fwd, strlen(st->fwd));
    }
    if (st->fwd_status > 0)
        vg__cache_buf_add(&b, num, (size_t)snprintf(num, sizeof(num), "; fwd-status=%d", st->fwd_status));
    if (st->stored)
        vg__cache_buf_add(&b, H2O_STRLIT("; stored"));
    if (st->collapsed)
        vg__cache_buf_add(&b, H2O_STRLIT("; collapsed"));
    if (st->ttl != INT64_MIN)
        vg__cache_buf_add(&b, num, (size_t)snprintf(num, sizeof(num), "; ttl=%lld", (long long)st->ttl));
    if (st->detail) {
        vg__cache_buf_add(&b, H2O_STRLIT("; detail="));
        if (is_token(st->detail)) {
            vg__cache_buf_add(&b, st->detail, strlen(st->detail));
        } else { /* an sf-string: printable ASCII, '"' and '\' escaped */
            vg__cache_buf_addc(&b, '"');
            for (const char *c = st->detail; *c; c++) {
                if (*c < 0x20 || *c >= 0x7f)
                    continue;
                if (*c == '"' || *c == '\\')
                    vg__cache_buf_addc(&b, '\\');
                vg__cache_buf_addc(&b, *c);
            }
            vg__cache_buf_addc(&b, '"');
        }
    }
    return vg__cache_buf_iov(&b);
}
