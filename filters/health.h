#pragma once
// Active health checking: the state of one endpoint as its checks report (EndpointHealth), and
// what a check result means (status_expected). The checks themselves (connections, requests,
// timers) are the proxy's; this decides and does no I/O.
//
// States: an endpoint starts kPending (no check finished yet) and is routable while pending, so
// traffic flows from the first moment; the first result decides at once (one success: healthy,
// one failure: unhealthy). After that it takes healthy_threshold consecutive successes to go from
// unhealthy to healthy, and unhealthy_threshold consecutive failures to go from healthy to
// unhealthy.

#include <cstdint>

#include "config/config.h"
#include "filters/clock.h"

namespace bulwark::filters {

enum class HealthState : uint8_t { kPending, kHealthy, kUnhealthy };
const char* to_string(HealthState s);  // "pending", "healthy", "unhealthy"

// Whether an HTTP check's response status counts as a success.
bool status_expected(const config::HealthCheckConfig& config, int status);

// One endpoint's active-check state. Used by one thread (the health checker's).
class EndpointHealth {
 public:
  explicit EndpointHealth(const config::HealthCheckConfig& config) : config_(config) {}

  // Records a finished check. Returns true when the state changed.
  bool on_result(bool success);
  // Takes the state and counts of another checker's view of the same endpoint (a reload that
  // changed the cluster's settings), so thresholds go on where they were.
  void restore(const EndpointHealth& other) {
    state_ = other.state_;
    successes_ = other.successes_;
    failures_ = other.failures_;
  }

  HealthState state() const { return state_; }
  bool routable() const { return state_ != HealthState::kUnhealthy; }
  uint32_t consecutive_successes() const { return successes_; }
  uint32_t consecutive_failures() const { return failures_; }

  // How long to wait before the next check, after one finished: `interval`, or
  // `unhealthy_interval` while unhealthy (when set), spread uniformly by ±interval_jitter_percent.
  // `random` is uniform over all uint64 values. Always at least 1 ms.
  Micros next_delay(uint64_t random) const;

 private:
  const config::HealthCheckConfig& config_;
  HealthState state_ = HealthState::kPending;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
};

}  // namespace bulwark::filters
