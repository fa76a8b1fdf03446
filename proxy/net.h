#pragma once
// Socket address helpers shared by listeners, the admin server and clusters.

#include <sys/socket.h>

#include <string>

#include "config/config.h"

namespace bulwark {

// An IP-literal SocketAddress to a sockaddr. Returns 0 or UV_EINVAL.
int to_sockaddr(const config::SocketAddress& address, sockaddr_storage* out);
// "127.0.0.1:8080" or "[::1]:8080".
std::string format_sockaddr(const sockaddr_storage& addr);
// A bound, listening, non-blocking socket with SO_REUSEPORT (so each worker can have its own on
// the same port). Returns the fd, or a negative errno; *error names the failed step.
int open_reuseport_listener(const sockaddr_storage& addr, int backlog, std::string* error);

}  // namespace bulwark
