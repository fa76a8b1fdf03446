#pragma once
// DNS for upstream clusters: turns a cluster's configured endpoints into the endpoint set the
// workers route over, and keeps that set current while names resolve to other addresses.

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/endpoint.h"
#include "proxy/uv_handle.h"

namespace bulwark {

// Keeps one cluster's endpoint set current: IP literals are used as they are; DNS names are
// resolved with uv_getaddrinfo (on libuv's thread pool, never blocking a loop) at start and
// every dns_refresh, and a changed answer is published. Main thread only.
class ClusterResolver {
 public:
  // Called on the loop thread with each new endpoint set: once at start(), then whenever a
  // refresh changes an address, weight or priority; never after stop().
  using Publish = std::function<void(std::shared_ptr<EndpointSet>)>;

  // `cluster` and `loop` must outlive the resolver. The resolver may be destroyed before the loop
  // has run again (its timer's memory goes in the close callback), but not while a lookup is in
  // flight: after start(), only once the loop has no more requests to run.
  ClusterResolver(uv_loop_t* loop, const config::ClusterConfig& cluster, Publish publish);
  ClusterResolver(const ClusterResolver&) = delete;
  ClusterResolver& operator=(const ClusterResolver&) = delete;

  // Publishes the IP literals now and starts resolving names.
  void start();
  bool started() const { return started_; }
  // Stops the refresh: nothing is published after this. A lookup still in flight finishes, so
  // the object must stay alive until it has.
  void stop();

 private:
  struct Lookup {
    uv_getaddrinfo_t req;
    ClusterResolver* self;
    size_t index;
  };

  void resolve_all();
  static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res);
  void schedule();
  void publish();

  uv_loop_t* loop_;
  const config::ClusterConfig& cluster_;
  Publish publish_;
  Timer timer_;                                 // the next refresh; closed by stop()
  std::vector<std::vector<Endpoint>> answers_;  // per configured endpoint
  std::vector<std::string> last_;
  int outstanding_ = 0;
  bool has_names_ = false;
  bool published_ = false;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace bulwark
