#pragma once
// A snapshot of a cluster's upstream health, as /clusters and /metrics show it. Plain data, made
// by the HealthChecker on the main thread.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace bulwark {

// Results of an active check: the `result` label of bulwark_health_checks_total.
// kSkipped: bulwark could not make the check (out of descriptors or memory); not a result.
enum class CheckResult : uint8_t { kSuccess, kFailure, kTimeout, kSkipped, kCount };
inline const char* to_string(CheckResult r) {
  switch (r) {
    case CheckResult::kSuccess:
      return "success";
    case CheckResult::kFailure:
      return "failure";
    case CheckResult::kTimeout:
      return "timeout";
    case CheckResult::kSkipped:
      return "skipped";
    default:
      return "none";
  }
}

struct EndpointHealthView {
  std::string name, address;
  uint32_t weight = 1;
  uint32_t priority = 0;
  bool routable = true;  // its checks pass (or are pending) and it is not ejected
  // Active checks (when the cluster has them).
  const char* state = "none";  // pending | healthy | unhealthy
  bool has_result = false;
  CheckResult last_result = CheckResult::kSuccess;
  std::string last_detail;  // "status 200", "connect failed: connection refused", ...
  int64_t last_check_unix_ms = 0;
  uint32_t consecutive_failures = 0, consecutive_successes = 0;
  std::array<uint64_t, static_cast<size_t>(CheckResult::kCount)> checks{};
  // Outlier detection (when the cluster has it).
  bool ejected = false;
  int64_t ejected_until_unix_ms = 0;
  uint32_t times_ejected = 0, consecutive_5xx = 0, consecutive_gateway_failures = 0,
           consecutive_local_origin_failures = 0;
  uint64_t ejections_total = 0;
  // slow_start (when the cluster has it): the share of its weight it gets now, 10..100.
  double slow_start_weight_percent = 100;
};

struct ClusterHealthView {
  bool checks = false;   // health_check configured
  bool outlier = false;  // outlier detection (configured, or the implicit one)
  bool slow_start = false;  // slow_start configured
  int64_t routable = 0;  // routable endpoints
  bool panic = false;
  std::vector<EndpointHealthView> endpoints;  // in endpoint set order
};

}  // namespace bulwark
