/* A blocking HTTP/1.1 client, one request per connection: enough for the
 * CLI talking to a node on a known address. */
#include "base/base.h"
#include "cli_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int vg__cli_dial(const char *host, uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool vg__cli_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

const char *vg__cli_read_response(int fd, struct vg__cli_response *r)
{
    size_t cap = 16384;
    r->buf = vg_xmalloc(cap);
    r->len = 0;
    for (;;) {
        if (r->len == cap) {
            if (cap >= VG__CLI_RESPONSE_MAX)
                return "response larger than 64 MiB";
            cap *= 2;
            r->buf = vg_xrealloc(r->buf, cap);
        }
        ssize_t n = recv(fd, r->buf + r->len, cap - r->len, 0);
        if (n < 0)
            return errno == EAGAIN ? "timed out waiting for the response" : strerror(errno);
        if (n == 0)
            break;
        r->len += (size_t)n;
    }
    int minor;
    const char *msg;
    size_t msg_len;
    r->n_headers = sizeof(r->headers) / sizeof(r->headers[0]);
    int hl = phr_parse_response(r->buf, r->len, &minor, &r->status, &msg, &msg_len, r->headers, &r->n_headers, 0);
    if (hl <= 0)
        return "malformed or incomplete response";
    r->head_len = (size_t)hl;
    r->body = r->buf + hl;
    r->body_len = r->len - (size_t)hl;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (r->headers[i].name_len == 17 && strncasecmp(r->headers[i].name, "transfer-encoding", 17) == 0) {
            struct phr_chunked_decoder d = {.consume_trailer = 1};
            size_t sz = r->body_len;
            if (phr_decode_chunked(&d, r->body, &sz) < 0)
                return "malformed chunked response";
            r->body_len = sz;
        }
    }
    return NULL;
}

bool vg__cli_url_addr(const char *url, char host[64], uint16_t *port)
{
    const char *p = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    size_t hl = strcspn(p, ":/");
    if (!hl || hl >= 64)
        return false;
    memcpy(host, p, hl);
    host[hl] = '\0';
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    long n = 80;
    if (p[hl] == ':') {
        char *end;
        n = strtol(p + hl + 1, &end, 10);
        if (*end && *end != '/')
            return false;
    }
    if (n < 1 || n > 65535)
        return false;
    *port = (uint16_t)n;
    return true;
}
