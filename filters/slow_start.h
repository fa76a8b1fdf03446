#pragma once
// Slow start: the share of its weight an endpoint gets while it warms up after becoming routable
// again (config::SlowStartConfig has the rule). Pure arithmetic; the proxy keeps when each
// endpoint started warming (EndpointStatus::warm_since) and scales its load-balancing weight.

#include <cstdint>

#include "config/config.h"
#include "filters/clock.h"

namespace bulwark::filters {

// The weight of an endpoint `elapsed` after it became routable again, in thousandths of its
// configured weight: from min_weight_percent × 10 up to 1000 at the end of the window.
uint32_t slow_start_permille(const config::SlowStartConfig& config, Micros elapsed);

}  // namespace bulwark::filters
