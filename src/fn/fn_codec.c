/* verge.json, verge.base64, verge.hex and verge.crypto: the codecs a handler
 * needs to talk to APIs and check signatures.
 *
 * Rules every function here keeps, because the state runs under a memory
 * cap and any allocation in Lua may raise (a longjmp through our frames):
 * - C memory is never held across a call that can raise unless a Lua object
 *   owns it (the jansson "box" below): raising must not leak.
 * - Output is built in Lua memory (luaL_Buffer, userdata), so it counts
 *   against the app's cap instead of the node's malloc.
 * - Tables are read with raw access only: encoding calls no metamethod
 *   and cannot yield. (A finalizer may still run during any allocation;
 *   nothing here relies on a table staying unchanged.) */
#include "fn_int.h"

#include <jansson.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

#define JSON_MAX_DEPTH 128
/* C memory one decode may use for jansson's tree, outside the app's cap
 * (see tree_cost): about 2 MiB of JSON made of small objects, 5 MiB of
 * string-heavy JSON, 0.5 MiB of the worst shape. */
#define JSON_MAX_TREE (64 << 20)
#define RANDOM_MAX 1024

/* Registry keys (addresses) and the userdata type name. */
static const char json_null_tag;      /* verge.json.null is &json_null_tag */
static const char array_mt_key;       /* metatable of tables that encode as arrays */
static const char empty_array_mt_key; /* metatable of verge.json.empty_array */
#define BOX_MT "verge.fn.json_box"
#define NULL_SENTINEL ((void *)&json_null_tag)

/* ---- the box: a jansson value owned by Lua ------------------------------------ */

/* Holds a jansson value while we call into Lua. Its stack slot is marked
 * to-be-closed, so an error unwinding through the C function frees it at
 * once. __gc is the backstop: an error inside a coroutine does not unwind
 * the coroutine's stack, and the box is then freed when the coroutine is
 * collected. Both paths may run; the second finds nothing to free. */
struct box {
    json_t *json;
};

static void box_empty(struct box *b)
{
    json_decref(b->json);
    b->json = NULL;
}

static int box_release(lua_State *L)
{
    struct box *b = lua_touserdata(L, 1);
    if (b)
        box_empty(b);
    return 0;
}

/* Pushes an empty box marked to-be-closed; the C function must leave the
 * slot alone until it returns. On success, free the contents directly
 * (box_empty) rather than with lua_closeslot: calling __close may need a
 * fresh CallInfo, and if that allocation fails under the memory cap Lua
 * drops the slot from its list without closing it.
 *
 * The stack room reserved first is what the __close call will need when an
 * error is unwound, so that it never has to grow the stack itself. */
static struct box *box_push(lua_State *L)
{
    luaL_checkstack(L, LUA_MINSTACK + 8, "verge.json");
    struct box *b = lua_newuserdatauv(L, sizeof(*b), 0);
    b->json = NULL;
    luaL_setmetatable(L, BOX_MT);
    lua_toclose(L, -1);
    return b;
}

static bool is_array_marked(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return false;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &empty_array_mt_key);
    bool marked = lua_rawequal(L, -3, -2) || lua_rawequal(L, -3, -1);
    lua_pop(L, 3);
    return marked;
}

/* ---- json.encode ------------------------------------------------------------------ */

/* The output grows in a userdata kept at a fixed stack slot (luaL_Buffer
 * cannot be used: it needs the stack top to itself, and the encoder's
 * recursion pushes tables and keys between writes). */
struct enc {
    lua_State *L;
    struct box *leaf; /* the jansson string being written out */
    int out_slot;
    char *p;
    size_t len, cap;
    bool pretty;
};

#define ENC_ERROR(e, ...) luaL_error((e)->L, "verge.json.encode: " __VA_ARGS__)

static char *out_reserve(struct enc *e, size_t n)
{
    if (e->cap - e->len >= n)
        return e->p + e->len;
    if (n > SIZE_MAX / 2 - e->len)
        ENC_ERROR(e, "result too large");
    size_t cap = e->cap * 2 > e->len + n ? e->cap * 2 : e->len + n;
    luaL_checkstack(e->L, 1, "verge.json.encode");
    char *p = lua_newuserdatauv(e->L, cap, 0);
    memcpy(p, e->p, e->len);
    lua_replace(e->L, e->out_slot); /* the old buffer becomes garbage */
    e->p = p;
    e->cap = cap;
    return p + e->len;
}

static void out_add(struct enc *e, const char *s, size_t n)
{
    memcpy(out_reserve(e, n), s, n);
    e->len += n;
}

static void out_indent(struct enc *e, int depth)
{
    if (!e->pretty)
        return;
    size_t n = 1 + 2 * (size_t)depth;
    char *p = out_reserve(e, n);
    p[0] = '\n';
    memset(p + 1, ' ', n - 1);
    e->len += n;
}

/* Writes a jansson string (which the caller just created; NULL means
 * jansson refused it) the way jansson prints it, escaped and checked for
 * UTF-8. Takes ownership. */
static void out_string(struct enc *e, json_t *j, const char *what)
{
    if (!j)
        ENC_ERROR(e, "%s is not valid UTF-8", what);
    e->leaf->json = j;
    size_t n = json_dumpb(j, NULL, 0, JSON_ENCODE_ANY);
    VG_ASSERT(n > 0);
    char *p = out_reserve(e, n); /* may raise: the box owns j meanwhile */
    VG_ASSERT(json_dumpb(j, p, n, JSON_ENCODE_ANY) == n);
    e->len += n;
    e->leaf->json = NULL;
    json_decref(j);
}

static void enc_value(struct enc *e, int idx, int depth);

/* What a table's keys make it: exactly 1..n (array), only strings
 * (object), or nothing (empty). Anything else cannot be JSON. */
enum shape { SHAPE_EMPTY, SHAPE_ARRAY, SHAPE_OBJECT };

static enum shape table_shape(struct enc *e, int idx, size_t *count)
{
    lua_State *L = e->L;
    size_t n = 0, n_int = 0, n_str = 0;
    lua_Integer max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            n_str++;
        } else if (lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k < 1)
                ENC_ERROR(e, "table has integer key %I (an array's keys must be 1..n)", k);
            max = k > max ? k : max;
            n_int++;
        } else {
            ENC_ERROR(e, "table has a key of type %s (keys must be strings, or 1..n for an array)",
                      lua_isnumber(L, -1) ? "float" : luaL_typename(L, -1));
        }
    }
    *count = n;
    if (n_int && n_str)
        ENC_ERROR(e, "table mixes integer and string keys (it is neither an array nor an object)");
    if (n_int && (size_t)max != n_int)
        ENC_ERROR(e, "sparse array (%I is the highest of %d integer keys; an array's keys must be 1..n)", max,
                  (int)(n_int > INT_MAX ? INT_MAX : n_int));
    if (n_str && is_array_marked(L, idx))
        ENC_ERROR(e, "table marked as an array has string keys");
    return n_int ? SHAPE_ARRAY : n_str ? SHAPE_OBJECT : SHAPE_EMPTY;
}

static void enc_array(struct enc *e, int idx, size_t n, int depth)
{
    out_add(e, "[", 1);
    for (size_t i = 1; i <= n; i++) {
        if (i > 1)
            out_add(e, ",", 1);
        out_indent(e, depth + 1);
        lua_rawgeti(e->L, idx, (lua_Integer)i);
        enc_value(e, lua_gettop(e->L), depth + 1);
        lua_pop(e->L, 1);
    }
    out_indent(e, depth);
    out_add(e, "]", 1);
}

struct key {
    const char *s;
    size_t len;
    lua_Integer slot; /* index in the keys table, which keeps s alive */
};

static int key_cmp(const void *a, const void *b)
{
    const struct key *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Objects are written with their keys sorted, so the same table always
 * gives the same bytes (cache keys, signatures, tests) whatever Lua's
 * iteration order. The keys are first copied into a table of our own: it
 * keeps the strings alive even if a finalizer running during an
 * allocation here edits the table being encoded. */
static void enc_object(struct enc *e, int idx, size_t n, int depth)
{
    lua_State *L = e->L;
    lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
    int keys = lua_gettop(L);
    lua_Integer nk = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) { /* a finalizer may have added others */
            lua_pushvalue(L, -1);
            lua_rawseti(L, keys, ++nk);
        }
    }
    struct key *k = lua_newuserdatauv(L, (size_t)nk * sizeof(*k) + 1, 0);
    for (lua_Integer i = 0; i < nk; i++) {
        lua_rawgeti(L, keys, i + 1);
        k[i].s = lua_tolstring(L, -1, &k[i].len);
        k[i].slot = i + 1;
        lua_pop(L, 1);
    }
    qsort(k, (size_t)nk, sizeof(*k), key_cmp);
    out_add(e, "{", 1);
    for (lua_Integer i = 0; i < nk; i++) {
        if (i > 0)
            out_add(e, ",", 1);
        out_indent(e, depth + 1);
        out_string(e, json_stringn(k[i].s, k[i].len), "object key");
        out_add(e, ": ", e->pretty ? 2 : 1);
        lua_rawgeti(L, keys, k[i].slot);
        lua_rawget(L, idx);
        enc_value(e, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    out_indent(e, depth);
    out_add(e, "}", 1);
    lua_pop(L, 2); /* keys, k */
}

static void enc_table(struct enc *e, int idx, int depth)
{
    if (depth >= JSON_MAX_DEPTH)
        ENC_ERROR(e, "nesting deeper than %d levels (or a table that contains itself)", JSON_MAX_DEPTH);
    luaL_checkstack(e->L, 6, "verge.json.encode");
    size_t n;
    switch (table_shape(e, idx, &n)) {
    case SHAPE_EMPTY:
        out_add(e, is_array_marked(e->L, idx) ? "[]" : "{}", 2);
        break;
    case SHAPE_ARRAY:
        enc_array(e, idx, n, depth);
        break;
    case SHAPE_OBJECT:
        enc_object(e, idx, n, depth);
        break;
    }
}

/* The shortest of jansson's renderings that reads back as the same double
 * (0.1, not 0.10000000000000001); 17 digits always do. (Should a process
 * locale make strtod stop at the '.', the check fails and 17 digits are
 * used: longer, still exact.) Returns the length, 0 if jansson could not
 * allocate. */
static size_t real_to_text(double d, char *buf, size_t cap)
{
    json_t *j = json_real(d);
    if (!j)
        return 0;
    size_t n = 0;
    for (int digits = 15; digits <= 17; digits++) {
        n = json_dumpb(j, buf, cap - 1, JSON_ENCODE_ANY | JSON_REAL_PRECISION(digits));
        VG_ASSERT(n > 0 && n < cap);
        buf[n] = '\0';
        if (strtod(buf, NULL) == d)
            break;
    }
    json_decref(j);
    return n;
}

static void enc_number(struct enc *e, int idx)
{
    if (lua_isinteger(e->L, idx)) {
        char *p = out_reserve(e, 24);
        e->len += (size_t)snprintf(p, 24, "%lld", (long long)lua_tointeger(e->L, idx));
        return;
    }
    double d = lua_tonumber(e->L, idx);
    if (!isfinite(d))
        ENC_ERROR(e, "%s cannot be encoded (JSON has no NaN or infinity)", isnan(d) ? "NaN" : "infinity");
    char buf[40];
    size_t n = real_to_text(d, buf, sizeof(buf));
    if (!n)
        ENC_ERROR(e, "out of memory");
    out_add(e, buf, n);
}

/* depth counts the containers around the value at idx. */
static void enc_value(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        out_add(e, "null", 4);
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            out_add(e, "true", 4);
        else
            out_add(e, "false", 5);
        break;
    case LUA_TNUMBER:
        enc_number(e, idx);
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        out_string(e, json_stringn(s, n), "string");
        break;
    }
    case LUA_TTABLE:
        enc_table(e, idx, depth);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL_SENTINEL) {
            out_add(e, "null", 4);
            break;
        }
        /* fall through */
    default:
        ENC_ERROR(e, "a %s cannot be encoded", luaL_typename(L, idx));
    }
}

/* Options tables are checked strictly: a misspelt option is an error, not
 * a silently ignored wish. */
static bool opt_pretty(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return false;
    luaL_checktype(L, idx, LUA_TTABLE);
    bool pretty = false;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "pretty") != 0)
            luaL_error(L, "verge.json.encode: unknown option '%s'", luaL_tolstring(L, -2, NULL));
        if (!lua_isboolean(L, -1))
            luaL_error(L, "verge.json.encode: option 'pretty' must be a boolean");
        pretty = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    return pretty;
}

static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 2);
    struct enc e = {.L = L, .pretty = opt_pretty(L, 2), .cap = 64};
    e.leaf = box_push(L);
    e.p = lua_newuserdatauv(L, e.cap, 0);
    e.out_slot = lua_gettop(L);
    enc_value(&e, 1, 0);
    lua_pushlstring(L, e.p, e.len);
    return 1;
}

/* ---- json.decode ------------------------------------------------------------------ */

static void dec_value(lua_State *L, json_t *j, int depth)
{
    luaL_checkstack(L, 3, "verge.json.decode");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (depth >= JSON_MAX_DEPTH)
            luaL_error(L, "verge.json.decode: nesting deeper than %d levels", JSON_MAX_DEPTH);
        size_t n = json_object_size(j);
        lua_createtable(L, 0, n > INT_MAX ? INT_MAX : (int)n);
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach(j, k, klen, v)
        {
            lua_pushlstring(L, k, klen);
            dec_value(L, v, depth + 1);
            lua_rawset(L, -3);
        }
        break;
    }
    case JSON_ARRAY: {
        if (depth >= JSON_MAX_DEPTH)
            luaL_error(L, "verge.json.decode: nesting deeper than %d levels", JSON_MAX_DEPTH);
        size_t n = json_array_size(j);
        lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
        /* Marked, so that an array emptied by the handler still encodes as [] */
        lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
        lua_setmetatable(L, -2);
        for (size_t i = 0; i < n; i++) {
            dec_value(L, json_array_get(j, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(j));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(j));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        lua_pushboolean(L, json_is_true(j));
        break;
    case JSON_NULL:
        lua_pushlightuserdata(L, NULL_SENTINEL);
        break;
    }
}

/* An upper bound of the C memory jansson's tree for the text s will take,
 * from one pass over it. That memory is outside the app's Lua memory cap,
 * and a document cheap to send can be dear to parse: "[{},{},...]" costs
 * jansson about 72 bytes per input byte. Per-node costs measured against
 * jansson 2.14 (glibc malloc), rounded up: an object 232 bytes, an array
 * 112, each element a slot and a value node (64), each member's key pair
 * and hash bucket (128), each string's own allocation (48), plus the
 * text's bytes twice (string copies and the lexer's buffer). Checked
 * against the real peak for many shapes and sizes: 1 to 2 times it. */
static size_t tree_cost(const char *s, size_t n)
{
    size_t objects = 0, arrays = 0, commas = 0, colons = 0, strings = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        if (in_string) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_string = false;
            continue;
        }
        switch (s[i]) {
        case '"':
            in_string = true;
            strings++;
            break;
        case '{':
            objects++;
            break;
        case '[':
            arrays++;
            break;
        case ',':
            commas++;
            break;
        case ':':
            colons++;
            break;
        }
    }
    size_t elements = commas + objects + arrays + 1;
    return 2 * n + 232 * objects + 112 * arrays + 64 * elements + 128 * colons + 48 * strings;
}

static int l_json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_settop(L, 1);
    size_t cost = tree_cost(s, n);
    if (cost > JSON_MAX_TREE)
        return luaL_error(L,
                          "verge.json.decode: document too large to parse (about %d MiB of parse tree, limit %d MiB)",
                          (int)(cost >> 20 > INT_MAX ? INT_MAX : cost >> 20), JSON_MAX_TREE >> 20);
    struct box *b = box_push(L);
    json_error_t err;
    /* JSON_ALLOW_NUL: Lua strings carry "\u0000" fine. */
    b->json = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!b->json)
        return luaL_error(L, "verge.json.decode: %s at %d:%d", err.text, err.line, err.column);
    dec_value(L, b->json, 0);
    box_empty(b);
    return 1;
}

/* ---- json.array and the markers ---------------------------------------------------- */

static int l_json_array(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1)) {
        if (!is_array_marked(L, 1))
            return luaL_error(L, "verge.json.array: the table already has a metatable");
        lua_pop(L, 1);
        return 1;
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    lua_setmetatable(L, 1);
    return 1;
}

static int empty_array_newindex(lua_State *L)
{
    return luaL_error(L, "verge.json.empty_array is read-only (use verge.json.array({}) for a new one)");
}

/* Registry: the box type and the two array metatables. The array one is
 * left unprotected (a handler may replace a decoded array's metatable);
 * the shared empty_array constant is read-only. */
static void json_registry_init(lua_State *L)
{
    if (luaL_newmetatable(L, BOX_MT)) {
        lua_pushcfunction(L, box_release);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, box_release);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushliteral(L, "verge.json.array");
    lua_setfield(L, -2, "__name");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);

    lua_newtable(L);
    lua_pushliteral(L, "verge.json.empty_array");
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "verge.json.empty_array");
    lua_setfield(L, -2, "__metatable");
    lua_pushcfunction(L, empty_array_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &empty_array_mt_key);
}

static void open_json(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"encode", l_json_encode},
        {"decode", l_json_decode},
        {"array", l_json_array},
        {NULL, NULL},
    };
    json_registry_init(L);
    luaL_newlib(L, fns);
    lua_pushlightuserdata(L, NULL_SENTINEL);
    lua_setfield(L, -2, "null");
    lua_newtable(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &empty_array_mt_key);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "empty_array");
}

/* ---- base64 ------------------------------------------------------------------------ */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Hand-written rather than EVP_EncodeBlock/EVP_DecodeBlock: those take int
 * lengths, know only the standard alphabet, and DecodeBlock skips
 * whitespace and reports padding as data, so it would need patching on
 * both sides anyway. Returns the output length. */
static size_t b64_encode(const unsigned char *s, size_t n, char *out, const char *abc, bool pad)
{
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = abc[(v >> 6) & 63];
        *o++ = abc[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        if (pad) {
            *o++ = '=';
            *o++ = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = abc[(v >> 6) & 63];
        if (pad)
            *o++ = '=';
    }
    return (size_t)(o - out);
}

/* Strict decoding: only the alphabet's characters, padding exactly where it
 * belongs (required when pad_required, else optional), and unused low bits
 * zero, so that every byte string has exactly one accepted encoding (no
 * malleable tokens). Returns NULL and the output length, or the reason and
 * the 1-based position it concerns (0: the input as a whole). */
static const char *b64_decode(const char *s, size_t n, unsigned char *out, size_t *outlen, const char *abc,
                              bool pad_required, size_t *pos)
{
    int8_t map[256];
    memset(map, -1, sizeof(map));
    for (int i = 0; i < 64; i++)
        map[(unsigned char)abc[i]] = (int8_t)i;
    *pos = 0;
    size_t pads = 0;
    while (pads < 2 && pads < n && s[n - 1 - pads] == '=')
        pads++;
    if ((pads || pad_required) && n % 4 != 0)
        return pads ? "invalid padding" : "invalid length (padding missing?)";
    size_t m = n - pads, rem = m % 4;
    if (rem == 1 || (pads && rem + pads != 4))
        return pads ? "invalid padding" : "invalid length";
    uint32_t v = 0;
    size_t o = 0;
    for (size_t i = 0; i < m; i++) {
        int8_t c = map[(unsigned char)s[i]];
        if (c < 0) {
            *pos = i + 1;
            return "invalid character";
        }
        v = v << 6 | (uint32_t)c;
        if (i % 4 == 3) {
            out[o++] = (unsigned char)(v >> 16);
            out[o++] = (unsigned char)(v >> 8);
            out[o++] = (unsigned char)v;
            v = 0;
        }
    }
    if (rem == 2) {
        if (v & 0xf)
            return "non-zero trailing bits (not a canonical encoding)";
        out[o++] = (unsigned char)(v >> 4);
    } else if (rem == 3) {
        if (v & 0x3)
            return "non-zero trailing bits (not a canonical encoding)";
        out[o++] = (unsigned char)(v >> 10);
        out[o++] = (unsigned char)(v >> 2);
    }
    *outlen = o;
    return NULL;
}

static int push_failure(lua_State *L, const char *why, size_t pos)
{
    lua_pushnil(L);
    if (pos)
        lua_pushfstring(L, "%s at position %I", why, (lua_Integer)pos);
    else
        lua_pushstring(L, why);
    return 2;
}

static int b64_encode_with(lua_State *L, const char *abc, bool pad)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, n <= SIZE_MAX / 4 * 3 - 3, 1, "string too long");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (n + 2) / 3 * 4);
    luaL_pushresultsize(&b, b64_encode((const unsigned char *)s, n, p, abc, pad));
    return 1;
}

static int b64_decode_with(lua_State *L, const char *abc, bool pad_required)
{
    size_t n, outlen, pos;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, n / 4 * 3 + 2);
    const char *why = b64_decode(s, n, p, &outlen, abc, pad_required, &pos);
    luaL_pushresultsize(&b, why ? 0 : outlen);
    return why ? push_failure(L, why, pos) : 1;
}

static int base64_encode(lua_State *L)
{
    return b64_encode_with(L, b64_std, true);
}

static int base64_decode(lua_State *L)
{
    return b64_decode_with(L, b64_std, true);
}

static int base64_encode_url(lua_State *L)
{
    return b64_encode_with(L, b64_url, false);
}

static int base64_decode_url(lua_State *L)
{
    return b64_decode_with(L, b64_url, false);
}

/* ---- hex --------------------------------------------------------------------------- */

static void hex_encode_to(const unsigned char *s, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[s[i] >> 4];
        out[2 * i + 1] = digits[s[i] & 15];
    }
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex_encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, n <= SIZE_MAX / 2, 1, "string too long");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, 2 * n);
    hex_encode_to((const unsigned char *)s, n, p);
    luaL_pushresultsize(&b, 2 * n);
    return 1;
}

static int hex_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (n % 2)
        return push_failure(L, "odd length", 0);
    for (size_t i = 0; i < n; i++)
        if (hex_digit(s[i]) < 0)
            return push_failure(L, "invalid character", i + 1);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, n / 2);
    for (size_t i = 0; i < n / 2; i++)
        p[i] = (char)(hex_digit(s[2 * i]) << 4 | hex_digit(s[2 * i + 1]));
    luaL_pushresultsize(&b, n / 2);
    return 1;
}

/* ---- crypto ------------------------------------------------------------------------ */

enum { SHA256_LEN = 32 };

static void push_digest(lua_State *L, const unsigned char *md, bool hex)
{
    if (!hex) {
        lua_pushlstring(L, (const char *)md, SHA256_LEN);
        return;
    }
    char out[2 * SHA256_LEN];
    hex_encode_to(md, SHA256_LEN, out);
    lua_pushlstring(L, out, sizeof(out));
}

static int sha256_with(lua_State *L, bool hex)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(s, n, md, &len, EVP_sha256(), NULL) != 1 || len != SHA256_LEN)
        return luaL_error(L, "verge.crypto.sha256: digest failed");
    push_digest(L, md, hex);
    return 1;
}

static int hmac_sha256_with(lua_State *L, bool hex)
{
    size_t klen, n;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *msg = luaL_checklstring(L, 2, &n);
    luaL_argcheck(L, klen <= INT_MAX, 1, "key too long");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, n, md, &len) || len != SHA256_LEN)
        return luaL_error(L, "verge.crypto.hmac_sha256: HMAC failed");
    push_digest(L, md, hex);
    return 1;
}

static int crypto_sha256(lua_State *L)
{
    return sha256_with(L, false);
}

static int crypto_sha256_hex(lua_State *L)
{
    return sha256_with(L, true);
}

static int crypto_hmac_sha256(lua_State *L)
{
    return hmac_sha256_with(L, false);
}

static int crypto_hmac_sha256_hex(lua_State *L)
{
    return hmac_sha256_with(L, true);
}

/* Constant time in the contents; the lengths are not secret (a MAC's
 * length is public), so differing lengths answer false at once. */
static int crypto_equals(lua_State *L)
{
    size_t na, nb;
    const char *a = luaL_checklstring(L, 1, &na);
    const char *b = luaL_checklstring(L, 2, &nb);
    lua_pushboolean(L, na == nb && CRYPTO_memcmp(a, b, na) == 0);
    return 1;
}

static int crypto_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "must be 0..1024");
    unsigned char buf[RANDOM_MAX];
    if (n > 0 && RAND_bytes(buf, (int)n) != 1)
        return luaL_error(L, "verge.crypto.random: no randomness available");
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    return 1;
}

/* ---- registration ------------------------------------------------------------------ */

/* Sets verge.<name> to the table on top (popped) and records it as the
 * loaded module "verge.<name>": Lua then names our functions in argument
 * errors and tracebacks even when they are called without a name, as in
 * pcall(verge.json.decode, s) ("bad argument #1 to 'verge.json.decode'"). */
static void set_lib(lua_State *L, int verge, const char *name)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushfstring(L, "verge.%s", name);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_setfield(L, verge, name);
}

void vg__fn_open_codec(lua_State *L)
{
    static const luaL_Reg base64_fns[] = {
        {"encode", base64_encode},
        {"decode", base64_decode},
        {"encode_url", base64_encode_url},
        {"decode_url", base64_decode_url},
        {NULL, NULL},
    };
    static const luaL_Reg hex_fns[] = {
        {"encode", hex_encode},
        {"decode", hex_decode},
        {NULL, NULL},
    };
    static const luaL_Reg crypto_fns[] = {
        {"sha256", crypto_sha256},
        {"sha256_hex", crypto_sha256_hex},
        {"hmac_sha256", crypto_hmac_sha256},
        {"hmac_sha256_hex", crypto_hmac_sha256_hex},
        {"equals", crypto_equals},
        {"random", crypto_random},
        {NULL, NULL},
    };
    int verge = lua_absindex(L, -1);
    luaL_checkstack(L, 8, "verge codecs");
    open_json(L);
    set_lib(L, verge, "json");
    luaL_newlib(L, base64_fns);
    set_lib(L, verge, "base64");
    luaL_newlib(L, hex_fns);
    set_lib(L, verge, "hex");
    luaL_newlib(L, crypto_fns);
    set_lib(L, verge, "crypto");
}
