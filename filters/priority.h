#pragma once
// Priority groups and panic mode: how a cluster's traffic is split over its endpoint groups
// (EndpointConfig::priority) given how many endpoints of each are routable, as Envoy's priority
// load.
//
// Each group's health is min(100, 140 × routable / total) percent (the 1.4 overprovisioning
// factor: a group with 72% of its endpoints routable still takes all its traffic). Groups are
// served lowest priority first: group 0 takes its health in percent of the traffic, group 1 its
// own health too but at most what group 0 left, and so on (P0 health 70, P1 health 100: 70/30).
// When the healths add up to less than 100, the loads are scaled up so they sum to 100 (the
// traffic has to go somewhere); what rounding loses goes to the first group with traffic.
//
// Panic: when some endpoints are routable but fewer than panic_threshold percent of all
// endpoints (all groups together), requests go to any endpoint of the chosen group, routable or
// not: otherwise the few routable endpoints would take all the traffic and fall over too. The
// group loads are still computed from health, so a group with no routable endpoint gets no
// traffic even in panic (a dead primary group is not chosen over a live backup). A panic
// threshold of 0 never panics.
//
// No routable endpoint at all is not panic: every load is 0, and the proxy answers 503
// no_healthy_endpoints at once, without a connect attempt.

#include <cstdint>
#include <vector>

namespace bulwark::filters {

struct GroupHealth {
  uint32_t total = 0;     // endpoints in the group
  uint32_t routable = 0;  // of which healthy (or pending) and not ejected
};

struct PriorityLoad {
  std::vector<uint32_t> percent;  // per group, summing to 100 (or all 0 when there is no endpoint)
  bool panic = false;
};

// `groups[p]` describes priority p (groups may be empty: total 0).
PriorityLoad compute_priority_load(const std::vector<GroupHealth>& groups,
                                   uint32_t panic_threshold_percent);

// The group for one request: `random` uniform over all uint64 values. Returns -1 when every
// load is 0.
int choose_group(const PriorityLoad& load, uint64_t random);

}  // namespace bulwark::filters
