#pragma once
// The upstream health of one cluster, kept on the main thread (never on a worker loop):
//
// - Active checks: each endpoint is checked on a connection of its own (an HTTP GET, or only a
//   connect with `tcp: true`), every interval ± jitter (unhealthy_interval while unhealthy).
//   The first round runs at once at start-up. A result goes through filters::EndpointHealth;
//   when the endpoint's state changes, its EndpointStatus is updated, the cluster's
//   health_version bumped (so every worker rebuilds its routing at its next request), and the
//   change logged once.
// - Outlier ejections are made by the workers (WorkerCluster::record_outcome); this times their
//   end: a timer at the earliest deadline sweeps the ended ones back and tells the workers. A
//   passing check may end one sooner (OutlierDetector::on_health_check). Every cluster has a
//   detector: without an outlier_detection section, the implicit one.
// - A new endpoint set (DNS) goes through adopt() before it is published: endpoints that stayed
//   (same address) keep their status, checks and outlier state; new ones start pending.
// - Introspection for /ready, /clusters and /metrics.

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "filters/clock.h"
#include "proxy/buffer.h"
#include "proxy/cluster.h"
#include "proxy/endpoint.h"
#include "proxy/health_view.h"
#include "proxy/lb.h"
#include "proxy/transport.h"
#include "proxy/uv_handle.h"

namespace bulwark {

class HealthChecker {
 public:
  HealthChecker(uv_loop_t* loop, ClusterState& cluster, const filters::Clock& clock);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Takes over a new endpoint set of the cluster (before it is published to the workers) and
  // gives its endpoints the health state they had in the current set.
  std::shared_ptr<const EndpointSet> adopt(std::shared_ptr<EndpointSet> next);
  // Takes over the endpoint state of the checker of the same cluster before a reload changed its
  // settings: the next adopt() carries its endpoints' health and ejections (by address), and a
  // first round done stays done (so /ready does not flip).
  void inherit(const HealthChecker& old);
  // A worker ejected an endpoint: make sure the sweep timer runs by its return.
  void on_ejection();
  // Closes every handle (checks in flight included); the object may be destroyed once the loop
  // has run their close callbacks.
  void stop();

  // Whether every endpoint has had a check result since start-up (true without health_check).
  // Latches: endpoints added later do not take it back.
  bool first_round_done() const { return first_round_done_; }
  ClusterHealthView view() const;

 private:
  struct Target;
  struct Probe;
  struct Carried;

  const Carried* carried(const std::string& address) const;
  void start_check(Target& t);
  void finish_check(Target& t, CheckResult result, std::string detail);
  // Ends a check bulwark could not make (its own lack of descriptors or memory) without a result.
  void skip_check(Target& t, int error);
  void retire(Target* t);
  // Tells outlier detection of a check result; logs an ejection it ended.
  void uneject_on_check(const Target& t, bool passed);
  void arm_sweep();
  void sweep();
  // outlier_detection.success_rate: every interval, compare the endpoints and eject the worse.
  void judge_success_rate();
  void update_first_round();
  // slow_start: endpoint i of the current set became routable again; its weight ramps from now.
  void start_warming(const Endpoint& endpoint);

  uv_loop_t* loop_;
  ClusterState& cluster_;
  const filters::Clock& clock_;
  FastRandom random_;
  std::shared_ptr<const EndpointSet> current_;
  std::vector<Target*> targets_;  // index-aligned with current_->endpoints (with health_check)
  // inherit(): the check state of the old checker's endpoints, by address, for the first set.
  std::vector<Carried> carried_;
  BufferPool buffers_{16 * 1024, 4};  // the probes' read buffers
  DeferredDeleter later_{loop_};      // the probes' transports report some write ends through it
  TransportContext transport_context_{loop_, &buffers_, &later_};  // the probes'
  Timer sweep_timer_;
  filters::Micros sweep_at_ = 0;  // when the armed sweep runs; 0: not armed
  Timer success_rate_timer_;      // repeats every outlier_detection.interval when success_rate
  bool first_round_done_;
  bool stopped_ = false;
};

}  // namespace bulwark
