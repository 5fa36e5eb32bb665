/* picohttpparser as libh2o 2.2.5 exports it.
 *
 * libh2o carries picohttpparser inside and exports its functions, but
 * Debian ships no header for them; these declarations must match that
 * build's ABI exactly (tests/unit/proxy/test_upstream.c checks that the
 * functions behave as declared). http_guard.c interposes phr_parse_request
 * with its own copy of the header layout (struct vg_http_raw_header). */
#ifndef VG_PROXY_PHR_H
#define VG_PROXY_PHR_H

#include <stddef.h>
#include <sys/types.h>

/* name is NULL for an obs-fold continuation line. Nothing is
 * NUL-terminated; everything points into the parsed buffer. */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Parses a response head. Returns the head's length (up to and including
 * the empty line), -2 when it is incomplete, -1 when it is malformed (or
 * has more than *num_headers headers). last_len: how many bytes of buf the
 * previous call for the same head saw (0 the first time). */
int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers, size_t last_len);

/* Zero it, then set consume_trailer to also eat the trailer section. */
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
};

/* Decodes chunked encoding in place: every byte given is consumed, and
 * *bufsz becomes the number of body bytes now at the start of buf. Returns
 * -2 while the body goes on, -1 on malformed input, or (the body ended)
 * the number of bytes left after it, which start at buf + *bufsz. */
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

#endif
