/* A bound on Lua pattern matching, which scripts reach through
 * string.find/match/gmatch/gsub (and s:find(...)).
 *
 * Lua's matcher backtracks in C without a step limit, so no count hook
 * or wall-clock check runs while it works: ("a"):rep(400):find(".-.-.-b")
 * held a worker for 14 s, and a few hundred more bytes for hours. The
 * sandbox's versions first bound the pattern's worst case on the subject
 * from its shape and refuse, with an error a script can catch, what could
 * take more than PATTERN_STEPS: every quantifier (* + -) that has more
 * of the pattern after it picks a length, as does an unanchored search
 * (its start), %b and a back-reference (a scan); k of them over an n-byte
 * subject make at most C(n + k, k) attempts; each ? doubles that.
 * Quantifiers at the pattern's end ("%s+", "(%w+)") never backtrack and
 * cost nothing extra. The bound is the worst case,
 * not the usual one, and the shape says less than the matcher knows: the
 * trim idiom "^%s*(.-)%s*$" (quadratic at worst) is bounded as cubic and
 * refused from ~1.8 KB on; "^%s*(.*%S)" trims up to ~44 KB. */
#include "fn_int.h"

#include <stdio.h>
#include <string.h>

#define PATTERN_STEPS 1e9 /* ~1 s of matching on this machine, at worst */

/* The end of the single-character class at p (lstrlib's grammar), or NULL
 * when malformed: the real matcher then reports it. */
static const char *class_end(const char *p, const char *end)
{
    if (p >= end)
        return NULL;
    char c = *p++;
    if (c == '%')
        return p < end ? p + 1 : NULL;
    if (c != '[')
        return p;
    if (p < end && *p == '^')
        p++;
    do { /* the set's first character may be ']' itself */
        if (p >= end)
            return NULL;
        if (*p++ == '%' && p < end)
            p++;
    } while (p >= end || *p != ']');
    return p + 1;
}

/* Nothing but capture closes from p on: a quantifier there succeeds at
 * its first length. (A final $ is not free: "x*$" on "xx...xy" tries $
 * at every length of every run.) */
static bool only_closes(const char *p, const char *end)
{
    for (; p < end; p++)
        if (*p != ')')
            return false;
    return true;
}

/* The ways to place k split points in order over n + 1 positions,
 * C(n + k, k): each backtracking item picks a length, and their lengths
 * together cannot pass the subject's (n^k would count them apart). */
static double splits(size_t n, unsigned k)
{
    double c = 1;
    for (unsigned i = 1; i <= k; i++)
        c = c * ((double)n + i) / i;
    return c;
}

double vg__fn_pattern_cost(const char *p, size_t pl, size_t n, bool may_anchor)
{
    const char *end = p + pl;
    unsigned k = 0;  /* items that try every length (or start) */
    double twos = 1; /* ? items: two tries each */
    if (may_anchor && p < end && *p == '^')
        p++;
    else
        k++; /* every start */
    while (p < end) {
        if (*p == '(' || *p == ')' || (*p == '$' && p + 1 == end)) {
            p++;
            continue;
        }
        if (*p == '%' && p + 1 < end && (p[1] == 'b' || (p[1] >= '0' && p[1] <= '9'))) {
            size_t item = p[1] == 'b' ? 4 : 2;
            if ((size_t)(end - p) < item)
                return 0;
            k++; /* a scan to the balancing character, a capture's length */
            p += item;
            continue;
        }
        if (*p == '%' && p + 1 < end && p[1] == 'f') {
            p += 2; /* a frontier: zero width, one test */
            continue;
        }
        const char *q = class_end(p, end);
        if (!q)
            return 0;
        p = q;
        if (p < end && (*p == '*' || *p == '+' || *p == '-' || *p == '?')) {
            char quant = *p++;
            if (quant == '?' && !only_closes(p, end))
                twos *= 2;
            else if (!only_closes(p, end))
                k++;
        }
    }
    return splits(n, k) * twos;
}

/* string.find/match/gmatch/gsub: the subject and pattern are arguments 1
 * and 2, find's plain search (argument 4) is linear. Upvalue 1: the real
 * function; upvalue 2: whether ^ anchors (not in gmatch). */
static int guarded(lua_State *L)
{
    size_t n, pl;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    const char *p = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &pl) : NULL;
    if (s && p && !lua_toboolean(L, 4)) {
        double cost = vg__fn_pattern_cost(p, pl, n, lua_toboolean(L, lua_upvalueindex(2)));
        if (cost > PATTERN_STEPS) {
            char steps[32];
            snprintf(steps, sizeof(steps), "%.3g", cost);
            return luaL_error(L,
                              "pattern too costly for a %I-byte subject: up to %s steps at worst, over the limit "
                              "of 1e9 (anchor it with ^, or match a shorter string)",
                              (lua_Integer)n, steps);
        }
    }
    return vg__fn_call_wrapped(L);
}

void vg__fn_pattern_guard(lua_State *L, int strlib)
{
    static const struct {
        const char *name;
        bool anchors;
    } fns[] = {{"find", true}, {"match", true}, {"gmatch", false}, {"gsub", true}};
    strlib = lua_absindex(L, strlib);
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        lua_getfield(L, strlib, fns[i].name);
        lua_pushboolean(L, fns[i].anchors);
        lua_pushcclosure(L, guarded, 2);
        lua_setfield(L, strlib, fns[i].name);
    }
}
