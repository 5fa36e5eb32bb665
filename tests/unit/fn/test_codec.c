/* verge.json, verge.base64, verge.hex, verge.crypto — driven from Lua
 * snippets, plus error unwinding under a memory cap (no C memory may stay
 * behind when an allocation in Lua fails half-way through a call). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "fn/fn_int.h"

/* jansson's allocations, counted: every value we create must be freed. */
static long json_live;

static void *counting_malloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        json_live++;
    return p;
}

static void counting_free(void *p)
{
    if (p)
        json_live--;
    free(p);
}

/* Lua helpers every snippet can use: eq(got, want[, what]) and
 * fails(pattern, f, ...) which expects f(...) to raise an error matching
 * pattern (plain text). */
static const char prelude[] = "J, B, H, C = verge.json, verge.base64, verge.hex, verge.crypto\n"
                              "function eq(got, want, what)\n"
                              "  if got ~= want or math.type(got) ~= math.type(want) then\n"
                              "    error(string.format('%s: got %q (%s), want %q (%s)', what or 'value',\n"
                              "      tostring(got), math.type(got) or type(got), tostring(want),\n"
                              "      math.type(want) or type(want)), 2)\n"
                              "  end\n"
                              "end\n"
                              "function fails(pattern, f, ...)\n"
                              "  local ok, err = pcall(f, ...)\n"
                              "  if ok then error('no error, expected: ' .. pattern, 2) end\n"
                              "  if not string.find(tostring(err), pattern, 1, true) then\n"
                              "    error(string.format('error %q does not contain %q', tostring(err), pattern), 2)\n"
                              "  end\n"
                              "end\n";

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    lua_newtable(L);
    vg__fn_open_codec(L);
    assert_int_equal(lua_gettop(L), 1); /* the stack as found */
    lua_setglobal(L, "verge");
    assert_int_equal(luaL_dostring(L, prelude), LUA_OK);
    return L;
}

static void run(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK)
        fail_msg("%s\n-- in:\n%s", lua_tostring(L, -1), code);
    lua_settop(L, 0);
}

static void run_all(const char *code)
{
    lua_State *L = new_state();
    run(L, code);
    lua_close(L);
    assert_int_equal(json_live, 0);
}

/* ---- json ---------------------------------------------------------------------------- */

static void test_json_scalars(void **state)
{
    run_all("eq(J.encode(1), '1')\n"
            "eq(J.encode(-42), '-42')\n"
            "eq(J.encode(1.5), '1.5')\n"
            "eq(J.encode(3.0), '3.0')\n" /* a float stays a float */
            "eq(J.encode(0.1), '0.1')\n"
            "eq(J.encode(-0.0), '-0.0')\n"
            "eq(J.encode(true), 'true')\n"
            "eq(J.encode(false), 'false')\n"
            "eq(J.encode(nil), 'null')\n"
            "eq(J.encode(J.null), 'null')\n"
            "eq(J.encode('a\"b\\\\c\\n\\t\\1/'), [[\"a\\\"b\\\\c\\n\\t\\u0001/\"]])\n"
            "eq(J.encode('\\0'), [[\"\\u0000\"]])\n"
            "eq(J.encode('h\\u{e9}llo \\u{1F600}'), '\"h\\u{e9}llo \\u{1F600}\"')\n"
            "eq(J.encode(math.maxinteger), '9223372036854775807')\n"
            "eq(J.encode(math.mininteger), '-9223372036854775808')\n"
            "eq(J.encode(2^53), '9007199254740992.0')\n"
            "eq(J.encode(1e308), '1e308')\n"
            "eq(J.encode(1/3), '0.3333333333333333')\n"
            "for _, x in ipairs({0.1, 1/3, 2/3, 1e-300, 5e-324, 1.7976931348623157e308, 123456.789, -1.5e-7}) do\n"
            "  eq(J.decode(J.encode(x)), x)\n"
            "end\n");
}

static void test_json_containers(void **state)
{
    run_all("eq(J.encode({}), '{}')\n"
            "eq(J.encode(J.empty_array), '[]')\n"
            "eq(J.encode(J.array({})), '[]')\n"
            "eq(J.encode({1, 2, 'x'}), '[1,2,\"x\"]')\n"
            "eq(J.encode({b = 1, a = {1, 2, 3}, c = {}, d = J.null}), "
            "'{\"a\":[1,2,3],\"b\":1,\"c\":{},\"d\":null}')\n"
            /* keys sorted bytewise, whatever the iteration order */
            "local t = {}\n"
            "for i = 1, 200 do t['k' .. i] = i end\n"
            "local s = J.encode(t)\n"
            "eq(s:sub(1, 23), '{\"k1\":1,\"k10\":10,\"k100\"')\n"
            "eq(J.encode({zz = 1, z = 2, [''] = 3}), '{\"\":3,\"z\":2,\"zz\":1}')\n"
            /* the same subtable twice is fine (not a cycle) */
            "local x = {1}\n"
            "eq(J.encode({x, x}), '[[1],[1]]')\n"
            "eq(J.encode({a = {1, 2}, b = {}, c = J.empty_array}, {pretty = true}),\n"
            "   '{\\n  \"a\": [\\n    1,\\n    2\\n  ],\\n  \"b\": {},\\n  \"c\": []\\n}')\n"
            "eq(J.encode({1}, {pretty = false}), '[1]')\n"
            "eq(J.encode('x', {pretty = true}), '\"x\"')\n");
}

static void test_json_decode(void **state)
{
    run_all("local t = J.decode('{\"a\":[1,2.5,\"x\",true,false,null],\"b\":{},\"c\":[]}')\n"
            "eq(t.a[1], 1) eq(t.a[2], 2.5) eq(t.a[3], 'x') eq(t.a[4], true) eq(t.a[5], false)\n"
            "eq(t.a[6], J.null) eq(#t.a, 6)\n"
            "eq(next(t.b), nil) eq(next(t.c), nil)\n"
            "eq(J.encode(t.b), '{}') eq(J.encode(t.c), '[]')\n" /* empty array vs object survive */
            "local a = J.decode('[1]') a[1] = nil eq(J.encode(a), '[]')\n"
            "eq(J.decode('1'), 1) eq(J.decode('1.0'), 1.0) eq(J.decode('\"s\"'), 's')\n"
            "eq(J.decode('null'), J.null) eq(J.decode(' true '), true)\n"
            "eq(J.decode('\"\\\\u00e9\\\\u0000\"'), '\\u{e9}\\0')\n"
            "eq(J.decode('9223372036854775807'), math.maxinteger)\n"
            "eq(J.decode('-9223372036854775808'), math.mininteger)\n"
            "eq(J.decode('1e308'), 1e308)\n"
            "eq(J.decode('-0.0'), -0.0)\n"
            "eq(J.decode('{\"1\":2}')['1'], 2)\n"
            /* round trips */
            "for _, s in ipairs({'[]', '{}', '[[],{}]', '{\"a\":{\"b\":[1,2.5,null,\"\\\\u0000\"]}}',\n"
            "                    '[0.1,1e-300,-5,true]'}) do\n"
            "  eq(J.encode(J.decode(s)), s)\n"
            "end\n");
}

static void test_json_decode_errors(void **state)
{
    run_all("fails('at 1:0', J.decode, '')\n"
            "fails('verge.json.decode: ', J.decode, '{')\n"
            "local ok, err = pcall(J.decode, '{\"a\":1,\\n \"b\":}')\n"
            "assert(not ok and err:match('at 2:%d+$'), err)\n"
            "fails('at ', J.decode, '[1,]')\n"
            "fails('at ', J.decode, '\"\\255\"')\n" /* invalid UTF-8 */
            "fails('at ', J.decode, '[1] x')\n"     /* trailing garbage */
            "fails('at ', J.decode, 'NaN')\n"
            "fails('too big', J.decode, '99999999999999999999')\n"
            "fails('overflow', J.decode, '1e400')\n"
            /* cheap to send, dear to parse: refused before jansson allocates */
            "fails('document too large to parse', J.decode, '[' .. string.rep('{},', 300000) .. '{}]')\n"
            "eq(#J.decode('[' .. string.rep('\"0123456789012345678901234567890123456789\",', 20000) .. '1]'), 20001)\n"
            "fails(\"bad argument #1 to 'verge.json.decode'\", J.decode)\n"
            "fails(\"bad argument #1 to 'verge.json.decode'\", J.decode, {})\n"
            /* called by name, Lua names it as called */
            "fails(\"bad argument #1 to 'decode' (string expected, got no value)\", function() J.decode() end)\n");
}

static void test_json_encode_errors(void **state)
{
    run_all("fails('NaN', J.encode, 0/0)\n"
            "fails('infinity', J.encode, math.huge)\n"
            "fails('infinity', J.encode, {x = -math.huge})\n"
            "fails('string is not valid UTF-8', J.encode, 'a\\255')\n"
            "fails('string is not valid UTF-8', J.encode, {'\\xed\\xa0\\x80'})\n" /* a surrogate */
            "fails('object key is not valid UTF-8', J.encode, {['\\255'] = 1})\n"
            "fails('mixes integer and string keys', J.encode, {1, a = 2})\n"
            "fails('sparse array', J.encode, {1, nil, 3})\n"
            "fails('integer key 0', J.encode, {[0] = 1})\n"
            "fails('integer key -1', J.encode, {[-1] = 1})\n"
            "fails('key of type boolean', J.encode, {[true] = 1})\n"
            "fails('key of type float', J.encode, {[1.5] = 1})\n"
            "fails('key of type table', J.encode, {[{}] = 1})\n"
            "fails('a function cannot be encoded', J.encode, print)\n"
            "fails('a userdata cannot be encoded', J.encode, io.stdout)\n"
            "fails('a thread cannot be encoded', J.encode, {coroutine.create(print)})\n"
            "fails('marked as an array has string keys', J.encode, J.array({a = 1}))\n"
            "fails(\"bad argument #1 to 'verge.json.encode'\", J.encode)\n"
            "fails(\"bad argument #2 to 'verge.json.encode'\", J.encode, 1, 5)\n"
            "fails(\"unknown option 'pritty'\", J.encode, 1, {pritty = true})\n"
            "fails(\"option 'pretty' must be a boolean\", J.encode, 1, {pretty = 1})\n");
}

static void test_json_depth(void **state)
{
    run_all("local function nest(n) local t = {} for _ = 2, n do t = {t} end return t end\n"
            "eq(#J.encode(nest(128)), 256)\n"
            "fails('nesting deeper than 128', J.encode, nest(129))\n"
            "fails('nesting deeper than 128', J.encode, nest(100000))\n"
            "local t = {} t.self = t\n"
            "fails('contains itself', J.encode, t)\n"
            "local a = {} a[1] = a\n"
            "fails('nesting deeper than 128', J.encode, a)\n"
            "eq(#J.encode(J.decode(string.rep('[', 128) .. string.rep(']', 128))), 256)\n"
            "fails('nesting deeper than 128', J.decode, string.rep('[', 129) .. string.rep(']', 129))\n"
            "fails('nesting deeper than 128', J.decode, string.rep('{\"a\":', 129) .. '1' .. string.rep('}', 129))\n"
            /* far past jansson's own limit: an error from the parser, not a crash */
            "fails('at ', J.decode, string.rep('[', 100000))\n");
}

static void test_json_markers(void **state)
{
    run_all("eq(type(J.null), 'userdata')\n"
            "assert(J.null ~= nil)\n"
            "eq(getmetatable(J.empty_array), 'verge.json.empty_array')\n"
            "fails('read-only', function() J.empty_array[1] = 1 end)\n"
            "fails('protected metatable', setmetatable, J.empty_array, {})\n"
            "local t = {}\n"
            "assert(J.array(t) == t)\n"
            "assert(J.array(t) == t)\n" /* marking twice is fine */
            "t[1] = 'x' eq(J.encode(t), '[\"x\"]')\n"
            "fails('already has a metatable', J.array, setmetatable({}, {}))\n"
            "fails(\"bad argument #1 to 'verge.json.array'\", J.array, 1)\n"
            /* a handler may re-class a decoded array */
            "local d = J.decode('[1]') setmetatable(d, nil) eq(J.encode(d), '[1]')\n");
}

/* ---- base64, hex ----------------------------------------------------------------------- */

static void test_base64(void **state)
{
    run_all(/* RFC 4648, section 10 */
            "local v = {[''] = '', f = 'Zg==', fo = 'Zm8=', foo = 'Zm9v', foob = 'Zm9vYg==',\n"
            "           fooba = 'Zm9vYmE=', foobar = 'Zm9vYmFy'}\n"
            "for plain, enc in pairs(v) do\n"
            "  eq(B.encode(plain), enc) eq(B.decode(enc), plain)\n"
            "  local url = enc:gsub('=', '')\n"
            "  eq(B.encode_url(plain), url) eq(B.decode_url(url), plain) eq(B.decode_url(enc), plain)\n"
            "end\n"
            "eq(B.encode('\\xfb\\xff\\xbf'), '+/+/') eq(B.encode_url('\\xfb\\xff\\xbf'), '-_-_')\n"
            "eq(B.decode('+/+/'), '\\xfb\\xff\\xbf') eq(B.decode_url('-_-_'), '\\xfb\\xff\\xbf')\n"
            "for n = 0, 40 do\n"
            "  local s = C.random(n)\n"
            "  eq(B.decode(B.encode(s)), s) eq(B.decode_url(B.encode_url(s)), s)\n"
            "end\n"
            "local all = {} for i = 0, 255 do all[#all + 1] = string.char(i) end\n"
            "all = table.concat(all) eq(B.decode(B.encode(all)), all)\n"
            "local function bad(f, s, why)\n"
            "  local r, err = f(s)\n"
            "  if r ~= nil or err ~= why then\n"
            "    error(string.format('%q: got %s, %s; want nil, %s', s, tostring(r), tostring(err), why), 2)\n"
            "  end\n"
            "end\n"
            "bad(B.decode, 'Zg', 'invalid length (padding missing?)')\n"
            "bad(B.decode, 'Zg=', 'invalid padding')\n"
            "bad(B.decode, 'Zg===', 'invalid padding')\n"
            "bad(B.decode, 'Z===', 'invalid character at position 2')\n"
            "bad(B.decode, '=Zg=', 'invalid character at position 1')\n"
            "bad(B.decode, 'Zm9v!A==', 'invalid character at position 5')\n"
            "bad(B.decode, 'Zm 9', 'invalid character at position 3')\n"
            "bad(B.decode, 'Zm9v\\n', 'invalid length (padding missing?)')\n"
            "bad(B.decode, '-_-_', 'invalid character at position 1')\n"
            "bad(B.decode, 'Zh==', 'non-zero trailing bits (not a canonical encoding)')\n"
            "bad(B.decode, 'Zm9=', 'non-zero trailing bits (not a canonical encoding)')\n"
            "bad(B.decode_url, '+/+/', 'invalid character at position 1')\n"
            "bad(B.decode_url, 'Z', 'invalid length')\n"
            "bad(B.decode_url, 'Zg=', 'invalid padding')\n"
            "bad(B.decode_url, 'Zh', 'non-zero trailing bits (not a canonical encoding)')\n"
            "fails(\"bad argument #1 to 'verge.base64.encode'\", B.encode, {})\n"
            "fails(\"bad argument #1 to 'verge.base64.decode_url'\", B.decode_url)\n");
}

static void test_hex(void **state)
{
    run_all("eq(H.encode(''), '') eq(H.encode('\\0\\255Ab'), '00ff4162')\n"
            "eq(H.decode('00FF4162'), '\\0\\255Ab') eq(H.decode('00ff4162'), '\\0\\255Ab') eq(H.decode(''), '')\n"
            "local r, err = H.decode('abc') eq(r, nil) eq(err, 'odd length')\n"
            "r, err = H.decode('0g') eq(r, nil) eq(err, 'invalid character at position 2')\n"
            "r, err = H.decode(' 0') eq(err, 'invalid character at position 1')\n"
            "local s = C.random(64) eq(H.decode(H.encode(s)), s)\n"
            "fails(\"bad argument #1 to 'verge.hex.decode'\", H.decode, nil)\n");
}

/* ---- crypto -------------------------------------------------------------------------- */

static void test_sha256(void **state)
{
    run_all("eq(C.sha256_hex(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')\n"
            "eq(C.sha256_hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')\n"
            "eq(C.sha256_hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'),\n"
            "   '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1')\n"
            "eq(#C.sha256('abc'), 32) eq(H.encode(C.sha256('abc')), C.sha256_hex('abc'))\n"
            "fails(\"bad argument #1 to 'verge.crypto.sha256'\", C.sha256, {})\n");
}

static void test_hmac_sha256(void **state)
{
    run_all(/* RFC 4231 test cases 1, 2, 3, 4, 6, 7 */
            "local x = function(h) return H.decode(h) end\n"
            "eq(C.hmac_sha256_hex(string.rep('\\x0b', 20), 'Hi There'),\n"
            "   'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7')\n"
            "eq(C.hmac_sha256_hex('Jefe', 'what do ya want for nothing?'),\n"
            "   '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843')\n"
            "eq(C.hmac_sha256_hex(string.rep('\\xaa', 20), string.rep('\\xdd', 50)),\n"
            "   '773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe')\n"
            "eq(C.hmac_sha256_hex(x('0102030405060708090a0b0c0d0e0f10111213141516171819'),\n"
            "                     string.rep('\\xcd', 50)),\n"
            "   '82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b')\n"
            "eq(C.hmac_sha256_hex(string.rep('\\xaa', 131), 'Test Using Larger Than Block-Size Key - Hash Key "
            "First'),\n"
            "   '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54')\n"
            "eq(C.hmac_sha256_hex(string.rep('\\xaa', 131), 'This is a test using a larger than block-size key '\n"
            "   .. 'and a larger than block-size data. The key needs to be hashed before being used by the '\n"
            "   .. 'HMAC algorithm.'),\n"
            "   '9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2')\n"
            "eq(H.encode(C.hmac_sha256('Jefe', 'what do ya want for nothing?')),\n"
            "   C.hmac_sha256_hex('Jefe', 'what do ya want for nothing?'))\n"
            "eq(#C.hmac_sha256('', ''), 32)\n"
            "fails(\"bad argument #2 to 'verge.crypto.hmac_sha256'\", C.hmac_sha256, 'k')\n"
            "fails(\"bad argument #1 to 'verge.crypto.hmac_sha256_hex'\", C.hmac_sha256_hex, {}, 'm')\n");
}

static void test_equals_random(void **state)
{
    run_all("eq(C.equals('abc', 'abc'), true) eq(C.equals('abc', 'abd'), false)\n"
            "eq(C.equals('abc', 'ab'), false) eq(C.equals('', ''), true)\n"
            "eq(C.equals('a\\0b', 'a\\0c'), false)\n"
            "fails(\"bad argument #2 to 'verge.crypto.equals'\", C.equals, 'a')\n"
            "eq(C.random(0), '') eq(#C.random(1), 1) eq(#C.random(1024), 1024)\n"
            "assert(C.random(32) ~= C.random(32))\n"
            "fails(\"bad argument #1 to 'verge.crypto.random'\", C.random, 1025)\n"
            "fails(\"bad argument #1 to 'verge.crypto.random'\", C.random, -1)\n"
            "fails(\"bad argument #1 to 'verge.crypto.random'\", C.random, 1.5)\n"
            "fails(\"bad argument #1 to 'verge.crypto.random'\", C.random)\n");
}

/* ---- errors under a memory cap ------------------------------------------------------------ */

struct cap {
    size_t used, limit;
};

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct cap *c = ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        c->used -= osize;
        free(ptr);
        return NULL;
    }
    if (nsize > osize && c->used + (nsize - osize) > c->limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        c->used = c->used - osize + nsize;
    return p;
}

/* The document is built before the cap is set; the cap then leaves
 * `extra` bytes for the call being tested. */
static const char doc_setup[] = "doc = {list = {}, obj = {}, s = string.rep('\\u{e9}x', 40)}\n"
                                "for i = 1, 60 do doc.list[i] = {i, i + 0.5, 'item' .. i, i % 2 == 0, J.null} end\n"
                                "for i = 1, 60 do doc.obj['key' .. i] = {n = i, t = {}} end\n"
                                "text = J.encode(doc)\n";

static int run_capped(const char *call, size_t extra, bool in_coroutine)
{
    struct cap c = {0, SIZE_MAX};
    lua_State *L = lua_newstate(capped_alloc, &c);
    luaL_openlibs(L);
    lua_newtable(L);
    vg__fn_open_codec(L);
    lua_setglobal(L, "verge");
    assert_int_equal(luaL_dostring(L, prelude), LUA_OK);
    assert_int_equal(luaL_dostring(L, doc_setup), LUA_OK);
    char code[256];
    if (in_coroutine)
        snprintf(code, sizeof(code), "return coroutine.resume(coroutine.create(function() return %s end))", call);
    else
        snprintf(code, sizeof(code), "return pcall(function() return %s end)", call);
    assert_int_equal(luaL_loadstring(L, code), LUA_OK);
    lua_gc(L, LUA_GCCOLLECT);
    lua_gc(L, LUA_GCSTOP); /* so that the cap is what stops each step */
    c.limit = c.used + extra;
    int rc = lua_pcall(L, 0, 2, 0);
    int ok = rc == LUA_OK && lua_toboolean(L, -2);
    if (!in_coroutine)
        assert_int_equal(json_live, 0); /* to-be-closed: freed while unwinding */
    c.limit = SIZE_MAX;
    lua_gc(L, LUA_GCRESTART);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    assert_int_equal(json_live, 0); /* a dead coroutine is not unwound: its box goes by __gc */
    lua_close(L);
    assert_int_equal(json_live, 0);
    return ok;
}

static void sweep(const char *call, bool in_coroutine)
{
    int failures = 0, successes = 0;
    for (size_t extra = 0; extra < 96 * 1024 && successes < 3; extra += 97) {
        if (run_capped(call, extra, in_coroutine))
            successes++;
        else
            failures++;
    }
    assert_true(failures > 10);
    assert_int_equal(successes, 3); /* and it does succeed once there is room */
}

static void test_memory_cap_encode(void **state)
{
    sweep("J.encode(doc, {pretty = true})", false);
}

static void test_memory_cap_decode(void **state)
{
    sweep("J.decode(text)", false);
}

static void test_memory_cap_in_coroutine(void **state)
{
    sweep("J.decode(text)", true);
    sweep("J.encode(doc)", true);
}

static void test_memory_cap_codecs(void **state)
{
    sweep("B.decode(B.encode(text)) .. H.decode(H.encode(text)) .. C.hmac_sha256_hex(text, text)", false);
}

int main(void)
{
    json_set_alloc_funcs(counting_malloc, counting_free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_scalars),
        cmocka_unit_test(test_json_containers),
        cmocka_unit_test(test_json_decode),
        cmocka_unit_test(test_json_decode_errors),
        cmocka_unit_test(test_json_encode_errors),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_json_markers),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_hmac_sha256),
        cmocka_unit_test(test_equals_random),
        cmocka_unit_test(test_memory_cap_encode),
        cmocka_unit_test(test_memory_cap_decode),
        cmocka_unit_test(test_memory_cap_in_coroutine),
        cmocka_unit_test(test_memory_cap_codecs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
