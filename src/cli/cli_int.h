/* Internals shared by the cli's files: a small blocking HTTP/1.1 client
 * for talking to a node (`verge test`, `verge purge`). */
#ifndef VG_CLI_INT_H
#define VG_CLI_INT_H

#include "http/phr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VG__CLI_RESPONSE_MAX (64u << 20)

struct vg__cli_response {
    int status;
    char *buf; /* the whole response (malloc'd: free it) */
    size_t len, head_len;
    struct phr_header headers[100];
    size_t n_headers;
    char *body;
    size_t body_len;
};

/* A connected socket to host (an IPv4 address) and port with 30 s send
 * and receive timeouts, or -1. */
int vg__cli_dial(const char *host, uint16_t port);
bool vg__cli_send_all(int fd, const char *p, size_t n);
/* Reads until the peer closes (send "Connection: close"); NULL or why not. */
const char *vg__cli_read_response(int fd, struct vg__cli_response *r);

#endif
