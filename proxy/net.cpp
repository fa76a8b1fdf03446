#include "proxy/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>

namespace bulwark {

int to_sockaddr(const config::SocketAddress& address, sockaddr_storage* out) {
  std::memset(out, 0, sizeof *out);
  if (uv_ip4_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in*>(out)) == 0)
    return 0;
  if (uv_ip6_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in6*>(out)) == 0)
    return 0;
  return UV_EINVAL;
}

std::string format_sockaddr(const sockaddr_storage& addr) {
  char ip[64] = {0};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    uv_ip4_name(a, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    uv_ip6_name(a, ip, sizeof ip);
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "?";
}

bool is_loopback(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (addr.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;
  }
  return false;
}

bool same_address(const sockaddr* a, const sockaddr* b) {
  if (a->sa_family != b->sa_family) return false;
  if (a->sa_family == AF_INET) {
    const auto* x = reinterpret_cast<const sockaddr_in*>(a);
    const auto* y = reinterpret_cast<const sockaddr_in*>(b);
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->sa_family == AF_INET6) {
    const auto* x = reinterpret_cast<const sockaddr_in6*>(a);
    const auto* y = reinterpret_cast<const sockaddr_in6*>(b);
    return x->sin6_port == y->sin6_port &&
           std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
  }
  return false;
}

bool original_destination(int fd, IpAddress* out) {
  IpAddress local{};
  socklen_t size = sizeof local;
  if (::getsockname(fd, &local.sa, &size) != 0) return false;
  // From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>, whose headers clash
  // with the C library's.
  constexpr int kSoOriginalDst = 80;
  constexpr int kIp6tSoOriginalDst = 80;
  IpAddress original{};
  size = sizeof original;
  int rc = -1;
  if (local.sa.sa_family == AF_INET6) {
    rc = ::getsockopt(fd, SOL_IPV6, kIp6tSoOriginalDst, &original, &size);
  }
  if (rc != 0) {  // IPv4, or IPv4 on a dual-stack socket (an IPv4-mapped local address)
    size = sizeof original;
    rc = ::getsockopt(fd, SOL_IP, kSoOriginalDst, &original, &size);
  }
  if (rc != 0) return false;
  if (same_address(&original.sa, &local.sa)) return false;
  if (local.sa.sa_family == AF_INET6 && original.sa.sa_family == AF_INET &&
      IN6_IS_ADDR_V4MAPPED(&local.v6.sin6_addr) && original.v4.sin_port == local.v6.sin6_port &&
      std::memcmp(&original.v4.sin_addr, &local.v6.sin6_addr.s6_addr[12], 4) == 0) {
    return false;  // the same address, seen through the dual-stack socket
  }
  *out = original;
  return true;
}

int open_listener(const sockaddr_storage& addr, int backlog, bool reuseport, std::string* error) {
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "socket";
    return -errno;
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int e = errno;
    ::close(fd);
    *error = "SO_REUSEPORT";
    return -e;
  }
  if (addr.ss_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  socklen_t len = addr.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    int e = errno;
    ::close(fd);
    *error = "bind";
    return -e;
  }
  if (::listen(fd, backlog) != 0) {
    int e = errno;
    ::close(fd);
    *error = "listen";
    return -e;
  }
  return fd;
}

void set_nodelay(int fd) {
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

int set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return -errno;
  return 0;
}

int start_connect(const sockaddr* addr) {
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  set_nodelay(fd);
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  int rc = 0;
  while ((rc = ::connect(fd, addr, len)) != 0 && errno == EINTR) {
  }
  if (rc != 0 && errno != EINPROGRESS) {
    rc = -errno;
    ::close(fd);
    return rc;
  }
  return fd;
}

void socket_peer_ip(int fd, char* buf, size_t size) {
  if (size == 0) return;
  buf[0] = '\0';
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  if (fd < 0 || getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return;
  if (peer.ss_family == AF_INET) {
    uv_ip4_name(reinterpret_cast<sockaddr_in*>(&peer), buf, size);
  } else if (peer.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&peer), buf, size);
  }
}

}  // namespace bulwark
