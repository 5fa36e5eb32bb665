/* picohttpparser, as libh2o exports it.
 *
 * libh2o 2.2.5 bundles picohttpparser and exports its functions, but
 * Debian ships no header for them; these declarations follow that
 * bundled version's ABI (docs/decisions.md, "HTTP/1 connections"). The
 * unit tests (tests/unit/http/test_phr.c, tests/unit/proxy/test_upstream.c)
 * exercise every declaration, so a library
 * whose ABI differs fails the suite instead of the node. */
#ifndef VG_HTTP_PHR_H
#define VG_HTTP_PHR_H

#include <stddef.h>
#include <sys/types.h>

struct phr_header {
    const char *name; /* NULL for an obs-fold continuation line */
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Returns the head's length, -1 on a malformed head, -2 when incomplete.
 * last_len: how much of buf an earlier call saw (0 the first time). */
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct phr_header *headers, size_t *num_headers,
                      size_t last_len);

int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers, size_t last_len);

struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer; /* set to 1: the trailer section is consumed too */
    char _hex_count;
    char _state;
};

/* Decodes chunked data in place: on return *bufsz is the number of decoded
 * bytes now at the start of buf. Returns -2 when more input is needed, -1
 * on malformed input, otherwise the number of bytes after the end of the
 * body (they follow the decoded data in buf). */
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

#endif
