#pragma once
// An upstream endpoint as the proxy connects to it.

#include <netinet/in.h>
#include <sys/socket.h>

#include <string>
#include <vector>

namespace bulwark {

// One resolved endpoint: an address to connect to. Immutable once published.
struct Endpoint {
  std::string name;     // as configured: "app.internal:9001" or "127.0.0.1:9000"
  std::string address;  // resolved: "10.1.2.3:9001"
  sockaddr_storage sockaddr{};
  uint32_t weight = 1;
};

struct EndpointSet {
  std::vector<Endpoint> endpoints;
};

}  // namespace bulwark
