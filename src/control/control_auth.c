/* API tokens: a secret is "vgt_" + 64 hex digits (32 random bytes); only
 * its sha256 is stored. The live tokens' hashes are kept in memory and a
 * presented secret is compared against every one of them in constant time,
 * so neither the database nor the timing tells which prefix matched. */
#include "control_int.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

struct auth_token {
    char *name;
    unsigned scope;
    uint8_t hash[32];
    int64_t expires_at_ms; /* 0: never */
};

struct vg__control_auth {
    struct auth_token *v;
    size_t n;
};

struct vg__control_auth *vg__control_auth_create(void)
{
    return vg_xcalloc(1, sizeof(struct vg__control_auth));
}

static void auth_clear(struct vg__control_auth *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i].name);
    free(a->v);
    a->v = NULL;
    a->n = 0;
}

void vg__control_auth_destroy(struct vg__control_auth *a)
{
    if (!a)
        return;
    auth_clear(a);
    free(a);
}

static void add_token(void *data, const char *name, unsigned scope, const uint8_t hash[32], int64_t expires_at_ms)
{
    struct vg__control_auth *a = data;
    a->v = vg_xrealloc(a->v, (a->n + 1) * sizeof(*a->v));
    struct auth_token *t = &a->v[a->n++];
    t->name = vg_xstrdup(name);
    t->scope = scope;
    memcpy(t->hash, hash, 32);
    t->expires_at_ms = expires_at_ms;
}

int vg__control_auth_load(struct vg__control_auth *a, struct vg__control_store *s)
{
    auth_clear(a);
    return vg__control_tokens_each(s, add_token, a);
}

void vg__control_secret_hash(const char *secret, size_t len, uint8_t out[32])
{
    unsigned int n = 0;
    VG_AN(EVP_Digest(secret, len, out, &n, EVP_sha256(), NULL));
    VG_ASSERT(n == 32);
}

int vg__control_auth_check(const struct vg__control_auth *a, const char *secret, size_t len,
                           struct vg__control_actor *out)
{
    uint8_t h[32];
    vg__control_secret_hash(secret, len, h);
    const struct auth_token *found = NULL;
    for (size_t i = 0; i < a->n; i++) /* no early exit: the same work whichever matches */
        if (CRYPTO_memcmp(h, a->v[i].hash, 32) == 0)
            found = &a->v[i];
    if (!found)
        return VG_ENOENT;
    if (found->expires_at_ms && (int64_t)(vg_wall_us() / 1000) >= found->expires_at_ms)
        return VG_ELIMIT;
    out->name = found->name;
    out->scope = found->scope;
    return 0;
}

int vg__control_secret_new(char out[69])
{
    uint8_t r[32];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return VG_EIO;
    static const char hex[] = "0123456789abcdef";
    memcpy(out, VG__CONTROL_TOKEN_PREFIX, 4);
    for (size_t i = 0; i < 32; i++) {
        out[4 + 2 * i] = hex[r[i] >> 4];
        out[4 + 2 * i + 1] = hex[r[i] & 15];
    }
    out[68] = '\0';
    return 0;
}

bool vg__control_name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return n >= 1 && n <= 64;
}
