#pragma once
// Sockets for unit tests.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

namespace bulwark::testing {

// A TCP socket bound to 127.0.0.1 on an ephemeral port; its address in `addr`.
inline int bound_loopback_socket(sockaddr_in& addr) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  return fd;
}

// A port nothing listens on (bound, then closed): connects to it are refused.
inline uint16_t refused_port() {
  sockaddr_in addr;
  ::close(bound_loopback_socket(addr));
  return ntohs(addr.sin_port);
}

}  // namespace bulwark::testing
