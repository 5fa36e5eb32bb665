/* A closed-loop HTTP/1.1 client that records every request: for finding
 * where a latency tail comes from, which wrk's percentiles cannot show.
 *
 *   lat_trace PORT PATH CONNS SECONDS OUT.csv
 *
 * CONNS keep-alive connections to 127.0.0.1:PORT each send "GET PATH" and
 * the next one as soon as the response is complete (Content-Length bodies
 * only). With DEFER=1 in the environment the next requests go out after the
 * whole batch of responses one poll returned has been read, as wrk sends
 * them. OUT.csv gets one line per request: connection, send and receive
 * times in ns from the start. bench/lat_trace.py reads it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define MAX_RECORDS 20000000

struct conn {
    int fd;
    long long sent;
    char buf[8192];
    size_t len;
};

struct record {
    int conn;
    long long sent, received;
};

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int dial(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("lat_trace: connect");
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void send_request(struct conn *c, const char *req, size_t len, long long t0)
{
    c->sent = now_ns() - t0;
    if (write(c->fd, req, len) != (ssize_t)len) {
        perror("lat_trace: write");
        exit(1);
    }
}

/* Length of the first complete response in c->buf, or 0. */
static size_t complete_response(struct conn *c)
{
    c->buf[c->len < sizeof(c->buf) - 1 ? c->len : sizeof(c->buf) - 1] = '\0';
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    char *cl = strcasestr(c->buf, "content-length:");
    size_t total = (size_t)(end + 4 - c->buf) + (cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0);
    return c->len >= total ? total : 0;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: lat_trace PORT PATH CONNS SECONDS OUT.csv\n");
        return 2;
    }
    int port = atoi(argv[1]), n_conns = atoi(argv[3]), defer = getenv("DEFER") != NULL;
    if (n_conns < 1 || n_conns > MAX_CONNS) {
        fprintf(stderr, "lat_trace: CONNS must be 1..%d\n", MAX_CONNS);
        return 2;
    }
    char req[512];
    size_t req_len =
        (size_t)snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Test: 1\r\n\r\n", argv[2]);
    struct record *rec = malloc(MAX_RECORDS * sizeof(*rec));
    struct conn *conns = calloc((size_t)n_conns, sizeof(*conns));
    int *ready = malloc((size_t)n_conns * sizeof(*ready)), ep = epoll_create1(0);
    size_t n_rec = 0;
    for (int i = 0; i < n_conns; i++) {
        conns[i].fd = dial(port);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    long long t0 = now_ns(), end = t0 + (long long)(atof(argv[4]) * 1e9);
    for (int i = 0; i < n_conns; i++)
        send_request(&conns[i], req, req_len, t0);
    struct epoll_event evs[256];
    while (now_ns() < end) {
        int n = epoll_wait(ep, evs, 256, 1000), n_ready = 0;
        for (int j = 0; j < n; j++) {
            struct conn *c = &conns[evs[j].data.u32];
            ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
            if (r <= 0) {
                fprintf(stderr, "lat_trace: the server closed a connection\n");
                return 1;
            }
            c->len += (size_t)r;
            size_t total = complete_response(c);
            if (!total)
                continue;
            if (n_rec < MAX_RECORDS)
                rec[n_rec++] = (struct record){(int)evs[j].data.u32, c->sent, now_ns() - t0};
            memmove(c->buf, c->buf + total, c->len - total);
            c->len -= total;
            if (defer)
                ready[n_ready++] = (int)evs[j].data.u32;
            else
                send_request(c, req, req_len, t0);
        }
        for (int j = 0; j < n_ready; j++)
            send_request(&conns[ready[j]], req, req_len, t0);
    }
    FILE *f = fopen(argv[5], "w");
    if (!f) {
        perror(argv[5]);
        return 1;
    }
    for (size_t i = 0; i < n_rec; i++)
        fprintf(f, "%d,%lld,%lld\n", rec[i].conn, rec[i].sent, rec[i].received);
    fclose(f);
    fprintf(stderr, "lat_trace: %zu requests, %.0f/s\n", n_rec, (double)n_rec / atof(argv[4]));
    return 0;
}
