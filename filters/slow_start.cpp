#include "filters/slow_start.h"

#include <algorithm>
#include <cmath>

namespace bulwark::filters {

uint32_t slow_start_permille(const config::SlowStartConfig& config, Micros elapsed) {
  const Micros window = to_micros(config.window);
  if (elapsed >= window || window <= 0) return 1000;
  const double progress = elapsed <= 0 ? 0.0 : static_cast<double>(elapsed) / window;
  const double factor = std::pow(progress, 1.0 / config.aggression);
  const double floor = config.min_weight_percent / 100.0;
  return static_cast<uint32_t>(std::lround(std::clamp(std::max(factor, floor), 0.0, 1.0) * 1000));
}

}  // namespace bulwark::filters
