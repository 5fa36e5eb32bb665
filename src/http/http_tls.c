#include "http.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

static void last_ssl_error(const char *what, const char *path, char *err, size_t errcap)
{
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    snprintf(err, errcap, "%s %s: %s", what, path, buf);
}

/* h2o's own list offers only h2; a client asking for http/1.1 alone must
 * still get it selected. */
static const h2o_iovec_t alpn_protocols[] = {
    {H2O_STRLIT("h2")}, {H2O_STRLIT("h2-16")}, {H2O_STRLIT("h2-14")}, {H2O_STRLIT("http/1.1")}, {NULL, 0},
};

SSL_CTX *vg_http_tls_ctx_create(const char *cert, const char *key, char *err, size_t errcap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errcap, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        last_ssl_error("cannot load certificate", cert, err, errcap);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        last_ssl_error("cannot load private key", key, err, errcap);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errcap, "private key %s does not match certificate %s", key, cert);
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, alpn_protocols);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
