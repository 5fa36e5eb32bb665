/* net: listening sockets. The event loops themselves are libuv's; this
 * module only turns "host:port" into bound, listening descriptors. */
#ifndef VG_NET_H
#define VG_NET_H

#include "base/base.h"

#include <sys/socket.h>

/* Parses "host:port", "[v6]:port" or ":port" (all interfaces) into *ss.
 * Host must be numeric or "localhost". 0 on success, VG_EINVAL otherwise. */
int vg_net_addr_parse(const char *addr, struct sockaddr_storage *ss, socklen_t *len) VG_MUST_CHECK;

/* Formats a socket address as "host:port" ("[v6]:port"). */
void vg_net_addr_format(const struct sockaddr *sa, char *buf, size_t cap);

/* Creates a non-blocking TCP listener on addr with SO_REUSEADDR and, when
 * reuseport, SO_REUSEPORT (each worker binds its own socket and the kernel
 * spreads connections). TCP_DEFER_ACCEPT and TCP_NODELAY are set. On success
 * *fd is the caller's. On failure returns VG_ENET and writes the reason. */
int vg_net_listen(const char *addr, bool reuseport, int backlog, int *fd, char *err, size_t errcap) VG_MUST_CHECK;

/* The port a bound socket actually got (for ":0"). */
int vg_net_local_port(int fd);

#endif
