#include "filters/rate_limit.h"

#include <algorithm>
#include <cmath>

namespace bulwark::filters {

namespace {

// Bounds that keep every sum below in int64 range, for any configuration (one request in 35
// years is as good as never).
constexpr Micros kMaxInterval = Micros{1} << 50;
constexpr Micros kMaxTolerance = Micros{1} << 60;

Micros interval_for(double requests_per_second) {
  if (!(requests_per_second > 0)) return kMaxInterval;
  const double us = std::round(1e6 / requests_per_second);
  if (!(us < static_cast<double>(kMaxInterval))) return kMaxInterval;
  return std::max<Micros>(1, static_cast<Micros>(us));
}

Micros tolerance_for(uint32_t burst, Micros interval) {
  const Micros extra = burst > 1 ? static_cast<Micros>(burst - 1) : 0;
  if (extra > 0 && interval > kMaxTolerance / extra) return kMaxTolerance;
  return extra * interval;
}

}  // namespace

RateLimiter::RateLimiter(const config::RateLimitConfig& config, const Clock& clock)
    : clock_(clock),
      interval_(interval_for(config.requests_per_second)),
      tolerance_(tolerance_for(config.burst, interval_)),
      tat_(clock.now()) {}  // no debt: the bucket starts full

RateLimiter::Decision RateLimiter::try_acquire() {
  const Micros now = clock_.now();
  Micros tat = tat_.load(std::memory_order_relaxed);
  for (;;) {
    const Micros start = std::max(tat, now);
    if (start - now > tolerance_) return Decision{false, start - tolerance_ - now};
    if (tat_.compare_exchange_weak(tat, start + interval_, std::memory_order_relaxed)) {
      return Decision{true, 0};
    }
  }
}

}  // namespace bulwark::filters
