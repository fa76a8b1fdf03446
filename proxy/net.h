#pragma once
// Socket address helpers shared by listeners, the admin server and clusters.

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <string>

#include "config/config.h"

namespace bulwark {

// An IP-literal SocketAddress to a sockaddr. Returns 0 or UV_EINVAL.
int to_sockaddr(const config::SocketAddress& address, sockaddr_storage* out);
// "127.0.0.1:8080" or "[::1]:8080".
std::string format_sockaddr(const sockaddr_storage& addr);
// 127.0.0.0/8, ::1, or an IPv4-mapped 127.x (::ffff:127.0.0.1 on a dual-stack socket).
bool is_loopback(const sockaddr_storage& addr);

// An IPv4 or IPv6 socket address, small enough to keep per connection (sockaddr_storage is 128
// bytes).
union IpAddress {
  sockaddr sa;
  sockaddr_in v4;
  sockaddr_in6 v6;
};
// Where the client of accepted socket `fd` meant to connect before an iptables REDIRECT sent it
// here (SO_ORIGINAL_DST, or IP6T_SO_ORIGINAL_DST for IPv6). False when the connection was not
// redirected (the destination is the socket's own address, or the kernel knows none).
bool original_destination(int fd, IpAddress* out);
// Same family, address and port.
bool same_address(const sockaddr* a, const sockaddr* b);
// A bound, listening, non-blocking socket with SO_REUSEADDR, and with `reuseport` SO_REUSEPORT
// (so each worker can have its own on the same port). Returns the fd, or a negative errno;
// *error names the failed step.
// Whether a failed connect (a libuv error) is bulwark's own lack of descriptors, memory or local
// ports: no evidence against the endpoint it was meant for.
inline bool is_local_resource_error(int err) {
  return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS || err == UV_ENOMEM ||
         err == UV_EADDRNOTAVAIL;  // out of local ports
}

int open_listener(const sockaddr_storage& addr, int backlog, bool reuseport, std::string* error);

// The socket steps every transport takes.
void set_nodelay(int fd);     // fails harmlessly on a socketpair
int set_nonblocking(int fd);  // 0 or a negative errno
// A non-blocking stream socket with a connect to `addr` started: the fd, or a negative errno.
int start_connect(const sockaddr* addr);
// The peer's IP address as text, into buf (empty when unknown).
void socket_peer_ip(int fd, char* buf, size_t size);

}  // namespace bulwark
