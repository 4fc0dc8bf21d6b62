#ifndef RELAY_CHTTPPARSER_SHIM_H
#define RELAY_CHTTPPARSER_SHIM_H
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <http_parser.h>

/* http_parser's state is bit-fields: read through these. */
static inline unsigned int relay_hp_method(const http_parser *p) { return p->method; }
static inline unsigned int relay_hp_errno(const http_parser *p) { return p->http_errno; }
static inline unsigned short relay_hp_major(const http_parser *p) { return p->http_major; }
static inline unsigned short relay_hp_minor(const http_parser *p) { return p->http_minor; }
static inline uint64_t relay_hp_content_length(const http_parser *p) { return p->content_length; }
static inline int relay_hp_chunked(const http_parser *p) { return (p->flags & F_CHUNKED) != 0; }
static inline void *relay_hp_data(const http_parser *p) { return p->data; }
static inline void relay_hp_set_data(http_parser *p, void *data) { p->data = data; }
enum { RELAY_HPE_OK = HPE_OK, RELAY_HPE_PAUSED = HPE_PAUSED, RELAY_HPE_HEADER_OVERFLOW = HPE_HEADER_OVERFLOW };

/* epoll_event is packed on x86-64: set and read it here. */
static inline int relay_epoll_add(int ep, int fd, uint32_t events) {
    struct epoll_event e; memset(&e, 0, sizeof e); e.events = events; e.data.fd = fd;
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}
static inline int relay_epoll_mod(int ep, int fd, uint32_t events) {
    struct epoll_event e; memset(&e, 0, sizeof e); e.events = events; e.data.fd = fd;
    return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
}
static inline int relay_epoll_wait(int ep, int *fds, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event ev[256];
    if (max > 256) max = 256;
    int n = epoll_wait(ep, ev, max, timeout_ms);
    for (int i = 0; i < n; i++) { fds[i] = ev[i].data.fd; events[i] = ev[i].events; }
    return n;
}

/* A non-blocking listening socket on host:port (numeric), SO_REUSEPORT set so that every loop can have its own.
   Returns the fd or -errno. */
static inline int relay_listen(const char *host, uint16_t port, int backlog) {
    struct sockaddr_storage ss; memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    int family;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET; v4->sin_port = htons(port); len = sizeof *v4; family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6; v6->sin6_port = htons(port); len = sizeof *v6; family = AF_INET6;
    } else {
        return -EINVAL;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog) < 0) {
        int e = errno; close(fd); return -e;
    }
    return fd;
}

static inline int relay_bound_port(int fd) {
    struct sockaddr_storage ss; socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* accept4, non-blocking; the peer's address as text into out. Returns the fd or -errno. */
static inline int relay_accept(int lfd, char *out, size_t out_len) {
    struct sockaddr_storage ss; socklen_t len = sizeof ss;
    int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -errno;
    out[0] = 0;
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)out_len);
    else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)out_len);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static inline ssize_t relay_send(int fd, const void *buf, size_t n) { return send(fd, buf, n, MSG_NOSIGNAL); }
#endif
