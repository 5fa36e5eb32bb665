/* The bound on Lua pattern matching (fn_pattern.c): the worst case from a
 * pattern's shape, and the sandbox refusing what is over it while the
 * usual patterns on large strings still run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fn/fn_int.h"

static double cost(const char *p, size_t n)
{
    return vg__fn_pattern_cost(p, strlen(p), n, true);
}

static void test_the_worst_case_from_the_shape(void **state)
{
    (void)state;
    assert_true(cost("abc", 99) == 100); /* unanchored: every start */
    assert_true(cost("^abc", 99) == 1);  /* anchored: one */
    assert_true(cost("%s+", 99) == 100); /* a quantifier at the end never backtracks */
    assert_true(cost("^(.*)", 99) == 1); /* nor one before capture closes */
    assert_true(cost("(%w+)=(%w+)", 99) == 101.0 * 100 / 2);
    assert_true(cost("x*$", 99) == 101.0 * 100 / 2);                /* $ is tried at every length of a run */
    assert_true(cost("^(.*)$", 99) == 100);                         /* one that has more after it: C(n + 2, 2) */
    assert_true(cost("^%s*(.-)%s*$", 99) == 102.0 * 101 * 100 / 6); /* the trim idiom, bounded as cubic */
    assert_true(cost(".-.-.-b", 399) == 403.0 * 402 * 401 * 400 / 24);
    assert_true(cost("^a?b", 99) == 2);                            /* ? doubles */
    assert_true(cost("^%b()x", 99) == 100);                        /* a balanced scan */
    assert_true(cost("^(a)%1x", 99) == 100);                       /* a back-reference */
    assert_true(cost("^%f[%w]%w+", 99) == 1);                      /* a frontier is one test */
    assert_true(cost("^[%]]+x", 99) == 100);                       /* an escaped ] inside a set */
    assert_true(cost("^[]]+x", 99) == 100);                        /* ] first in a set is literal */
    assert_true(cost("^a$b", 99) == 1);                            /* $ before the end is a character */
    assert_true(vg__fn_pattern_cost("^abc", 4, 99, false) == 100); /* gmatch: ^ does not anchor */
    assert_true(cost("[a", 99) == 0);                              /* malformed: Lua says so */
    assert_true(cost("%", 99) == 0);
    assert_true(cost("%b(", 99) == 0);
}

static lua_State *sandboxed_strings(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "string");
    vg__fn_pattern_guard(L, -1);
    lua_pop(L, 1);
    return L;
}

static void run(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK)
        fail_msg("%s", lua_tostring(L, -1));
}

/* The pattern that held a worker for 14 s is refused at once; the usual
 * ones run on megabytes, including through s:method() calls. */
static void test_refused_over_the_bound_and_not_under(void **state)
{
    (void)state;
    lua_State *L = sandboxed_strings();
    run(L, "local ok, err = pcall(string.find, ('a'):rep(400), '.-.-.-b')\n"
           "assert(not ok and err:find('pattern too costly for a 400%-byte subject', 1, false), err)\n"
           "ok = pcall(function() return ('a'):rep(400):match('.-.-.-b') end)\n"
           "assert(not ok)\n"
           "assert(not pcall(string.gmatch, ('a'):rep(50000), '(%w+)=(%w+)'))\n"
           "local big = ('ab cd\\t'):rep(200000)\n"
           "assert(select(2, big:gsub('%s+', ' ')) == 400000)\n"
           "assert(big:find('zz', 1, true) == nil)\n"
           "assert(big:find('cd\\tab') == 4)\n"
           "assert(('  x  '):match('^%s*(.-)%s*$') == 'x')\n"
           "local n = 0 for k, v in ('a=1&b=2'):gmatch('(%w+)=(%w+)') do n = n + 1 end\n"
           "assert(n == 2)\n"
           "assert(('id=7; x=9'):match('%f[%w_]x=([%w_]+)') == '9')\n");
    lua_close(L);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_worst_case_from_the_shape),
        cmocka_unit_test(test_refused_over_the_bound_and_not_under),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
