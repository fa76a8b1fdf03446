#include "filters/priority.h"

#include <algorithm>

namespace bulwark::filters {

namespace {

// Envoy's overprovisioning factor, in percent: a group with 1/1.4 of its endpoints routable
// (about 72%) still takes all of its traffic.
constexpr uint64_t kOverprovisioningPercent = 140;

}  // namespace

PriorityLoad compute_priority_load(const std::vector<GroupHealth>& groups,
                                   uint32_t panic_threshold_percent) {
  PriorityLoad load;
  load.percent.assign(groups.size(), 0);

  std::vector<uint64_t> health(groups.size(), 0);
  uint64_t health_sum = 0;
  uint64_t routable_all = 0;
  uint64_t total_all = 0;
  for (size_t p = 0; p < groups.size(); ++p) {
    const uint64_t total = groups[p].total;
    const uint64_t routable = std::min<uint64_t>(groups[p].routable, total);
    if (total != 0)
      health[p] = std::min<uint64_t>(100, kOverprovisioningPercent * routable / total);
    health_sum += health[p];
    routable_all += routable;
    total_all += total;
  }

  // No routable endpoint at all (or no endpoint): every load 0, and no panic.
  const uint64_t normalized = std::min<uint64_t>(100, health_sum);
  if (normalized == 0) return load;

  // Lowest priority first, each its health (scaled up when the healths sum to less than 100),
  // but no more than what the groups before it left over.
  uint64_t left = 100;
  for (size_t p = 0; p < groups.size(); ++p) {
    const uint64_t share = std::min(left, health[p] * 100 / normalized);
    load.percent[p] = static_cast<uint32_t>(share);
    left -= share;
  }
  // What scaling down lost to rounding (less than one percent per group) goes to the first
  // group that takes traffic, so the loads sum to exactly 100.
  if (left != 0) {
    for (size_t p = 0; p < groups.size(); ++p) {
      if (health[p] != 0) {
        load.percent[p] += static_cast<uint32_t>(left);
        break;
      }
    }
  }

  load.panic = routable_all * 100 < uint64_t{panic_threshold_percent} * total_all;
  return load;
}

int choose_group(const PriorityLoad& load, uint64_t random) {
  uint64_t sum = 0;
  for (uint32_t percent : load.percent) sum += percent;
  if (sum == 0) return -1;
  // Uniform in [0, sum) (sum is 100 for a computed load): the high 64 bits of random × sum.
  const auto pick = static_cast<uint64_t>((static_cast<unsigned __int128>(random) * sum) >> 64);
  uint64_t cumulative = 0;
  for (size_t p = 0; p < load.percent.size(); ++p) {
    cumulative += load.percent[p];
    if (pick < cumulative) return static_cast<int>(p);
  }
  return -1;  // not reached: pick < sum
}

}  // namespace bulwark::filters
