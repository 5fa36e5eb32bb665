/* The Lua runtime's loading side: the sandbox as top-level code sees it,
 * load-time limits (endless loops that catch their own errors, memory
 * bombs), and error positions. Calls (scheduling, per-call limits,
 * fetches) are in test_calls.c, and through a real node in
 * tests/e2e/test_90_functions.py. */
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fn/fn.h"

static char g_dir[PATH_MAX];

static void write_file(const char *name, const char *text)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Loads an app whose edge.lua is `lua`; returns vg_fn_check's result and
 * the error. */
static int check_lua(const char *lua, const char *limits, struct vg_conf_error *err)
{
    write_file("edge.lua", lua);
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "name: t\nlimits: %s\nroutes:\n  - handler: edge.lua\n", limits);
    struct vg_conf_app *app;
    struct vg_conf_error cerr;
    assert_int_equal(vg_conf_app_load_buffer(g_dir, "verge.yaml", yaml, strlen(yaml), &app, &cerr), 0);
    memset(err, 0, sizeof(*err));
    int rc = vg_fn_check(app, err);
    vg_conf_app_destroy(app);
    return rc;
}

static void test_sandbox_as_top_level_code_sees_it(void **state)
{
    (void)state;
    struct vg_conf_error err;
    static const char lua[] = "assert(io == nil and debug == nil and require == nil and package == nil)\n"
                              "assert(dofile == nil and loadfile == nil and os.execute == nil and os.getenv == nil)\n"
                              "assert(string.dump == nil and (''):len() == 0 and ('').dump == nil)\n"
                              "assert(load(string.char(27) .. 'Lua') == nil)\n"
                              "assert(load('return io')() == nil)\n"
                              "assert(type(verge.log.info) == 'function' and type(verge.now()) == 'number')\n"
                              "assert(type(coroutine.wrap) == 'function' and type(utf8.char) == 'function')\n"
                              "assert(not pcall(setmetatable, {}, {__gc = function() end}))\n"
                              "assert(getmetatable(setmetatable({}, {__index = string})).__index == string)\n"
                              "x_global = 1\n"
                              "function handle() end\n";
    assert_int_equal(check_lua(lua, "{}", &err), 0);
}

static void test_syntax_error_position(void **state)
{
    (void)state;
    struct vg_conf_error err;
    assert_int_not_equal(check_lua("function handle()\n  return {\nend\n", "{}", &err), 0);
    assert_true(strstr(err.file, "/edge.lua") != NULL);
    assert_int_equal(err.line, 3);
    assert_true(strstr(err.msg, "expected") != NULL);
}

static void test_missing_function(void **state)
{
    (void)state;
    struct vg_conf_error err;
    assert_int_not_equal(check_lua("function other() end\n", "{}", &err), 0);
    assert_true(strstr(err.file, "verge.yaml") != NULL);
    assert_int_equal(err.line, 4);
    assert_true(strstr(err.msg, "no function 'handle'") != NULL);
}

static void test_module_table_is_used(void **state)
{
    (void)state;
    struct vg_conf_error err;
    assert_int_equal(check_lua("local M = {}\nfunction M.handle() end\nreturn M\n", "{}", &err), 0);
}

static void test_endless_load_with_pcall_is_stopped(void **state)
{
    (void)state;
    struct vg_conf_error err;
    assert_int_not_equal(check_lua("while true do pcall(function() while true do end end) end\n", "{}", &err), 0);
    assert_true(strstr(err.msg, "instruction limit while loading") != NULL);
}

static void test_memory_bomb_at_load(void **state)
{
    (void)state;
    struct vg_conf_error err;
    assert_int_not_equal(
        check_lua("local s = string.rep('x', 1 << 30)\nfunction handle() end\n", "{lua_memory: 4m}", &err), 0);
    assert_true(strstr(err.msg, "not enough memory") != NULL);
    /* a growing table that catches its own failures still cannot pass the cap */
    assert_int_not_equal(
        check_lua("local t = {}\nfor i = 1, 1e8 do t[i] = i end\nfunction handle() end\n", "{lua_memory: 4m}", &err),
        0);
}

/* The hook's yield stops loops that catch errors, run inside coroutines of
 * their own, or spin inside a C function's callback (table.sort's
 * comparator): the same machinery stops request handlers. */
static void test_escapes_from_the_instruction_budget(void **state)
{
    (void)state;
    static const char *const loops[] = {
        "local co = coroutine.wrap(function() while true do end end)\nwhile true do pcall(co) end\n",
        "local t = {}\nfor i = 1, 50 do t[i] = i end\n"
        "while true do pcall(table.sort, t, function(a, b) while true do end end) end\n",
        "while true do xpcall(function() while true do end end, function(e) return e end) end\n",
        "local s = ('x'):rep(100)\nwhile true do pcall(string.gsub, s, 'x', function() while true do end end) end\n",
    };
    for (size_t i = 0; i < sizeof(loops) / sizeof(loops[0]); i++) {
        struct vg_conf_error err;
        assert_int_not_equal(check_lua(loops[i], "{}", &err), 0);
        if (!strstr(err.msg, "instruction limit while loading"))
            fail_msg("loop %zu: %s", i, err.msg);
    }
}

static void test_memory_tricks(void **state)
{
    (void)state;
    struct vg_conf_error err;
    /* catching "not enough memory" and trying again does not get past the cap
     * (the file checks what it could keep, and loads) */
    assert_int_equal(check_lua("local keep = {}\n"
                               "for i = 1, 200 do local ok, s = pcall(string.rep, 'y', 1 << 20)\n"
                               "  if ok then keep[#keep + 1] = s end end\n"
                               "assert(#keep < 8, 'kept ' .. #keep .. ' MiB')\nfunction handle() end\n",
                               "{lua_memory: 4m}", &err),
                     0);
    /* deep recursion ends (stack overflow or the memory cap), not the process */
    assert_int_not_equal(check_lua("local function f(n) return f(n + 1) + 1 end\nf(1)\n", "{lua_memory: 4m}", &err), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/vg_fn_XXXXXX";
    if (!mkdtemp(tmpl) || !realpath(tmpl, g_dir))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    vg_log_set_level(VG_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sandbox_as_top_level_code_sees_it),
        cmocka_unit_test(test_syntax_error_position),
        cmocka_unit_test(test_missing_function),
        cmocka_unit_test(test_module_table_is_used),
        cmocka_unit_test(test_endless_load_with_pcall_is_stopped),
        cmocka_unit_test(test_memory_bomb_at_load),
        cmocka_unit_test(test_escapes_from_the_instruction_budget),
        cmocka_unit_test(test_memory_tricks),
    };
    return cmocka_run_group_tests_name("fn runtime", tests, setup, teardown);
}
