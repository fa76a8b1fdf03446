#pragma once
// An upstream endpoint as the proxy connects to it, and a cluster's published set of them.

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "filters/outlier.h"
#include "filters/priority.h"

namespace bulwark {

// What the active health checks say of one endpoint, read by every worker. One object per
// endpoint address, shared by successive endpoint sets: an endpoint that stays across a DNS
// change keeps its state.
struct EndpointStatus {
  // Written by the health checker (main thread): false once the endpoint's checks made it
  // unhealthy. True while pending (no check finished yet) and when the cluster has no checks.
  std::atomic<bool> check_passing{true};
  // slow_start: when the endpoint last became routable again (the cluster clock's Micros), from
  // which its weight ramps up; 0 when it is not warming. Written by the main thread.
  std::atomic<int64_t> warm_since{0};
};

// One resolved endpoint: an address to connect to. Immutable once published.
struct Endpoint {
  std::string name;     // as configured: "app.internal:9001" or "127.0.0.1:9000"
  std::string address;  // resolved: "10.1.2.3:9001"
  sockaddr_storage sockaddr{};
  uint32_t weight = 1;
  uint8_t priority = 0;  // 0 first; higher groups take traffic a lower one cannot carry
  std::shared_ptr<EndpointStatus> status = std::make_shared<EndpointStatus>();
};

struct EndpointSet {
  std::vector<Endpoint> endpoints;
  // Passive outlier state, index-aligned with `endpoints`; null without outlier_detection.
  std::shared_ptr<filters::OutlierDetector> outlier;

  // Whether endpoint i may take traffic now: its checks pass and it is not ejected.
  bool routable(size_t i) const {
    return endpoints[i].status->check_passing.load(std::memory_order_acquire) &&
           (outlier == nullptr || !outlier->ejected(i));
  }

  // The endpoints by priority group as of now: a group per priority in use, lowest first.
  struct Groups {
    std::vector<size_t> group_of;              // per endpoint
    std::vector<bool> routable;                // per endpoint
    std::vector<filters::GroupHealth> health;  // per group
  };
  Groups groups() const;
};

}  // namespace bulwark
