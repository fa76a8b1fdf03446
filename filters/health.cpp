#include "filters/health.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace bulwark::filters {

namespace {

constexpr Micros kMinDelay = 1000;  // 1 ms

// The high 64 bits of random × span: uniform in [0, span) for a uniform `random`, never
// overflowing (as RetryPolicy::backoff).
uint64_t scale(uint64_t random, uint64_t span) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(random) * span) >> 64);
}

}  // namespace

const char* to_string(HealthState s) {
  switch (s) {
    case HealthState::kPending:
      return "pending";
    case HealthState::kHealthy:
      return "healthy";
    case HealthState::kUnhealthy:
      return "unhealthy";
  }
  return "unknown";
}

bool status_expected(const config::HealthCheckConfig& config, int status) {
  return std::any_of(
      config.expected_statuses.begin(), config.expected_statuses.end(),
      [status](const config::StatusRange& r) { return r.min <= status && status <= r.max; });
}

bool EndpointHealth::on_result(bool success) {
  // The counts saturate instead of wrapping, so a very long run never looks like a short one.
  constexpr uint32_t kMax = std::numeric_limits<uint32_t>::max();
  const HealthState before = state_;
  if (success) {
    failures_ = 0;
    if (successes_ < kMax) ++successes_;
    // A threshold of 0 (the loader refuses it) acts as 1.
    if (state_ == HealthState::kPending ||
        (state_ == HealthState::kUnhealthy &&
         successes_ >= std::max<uint32_t>(1, config_.healthy_threshold))) {
      state_ = HealthState::kHealthy;
    }
  } else {
    successes_ = 0;
    if (failures_ < kMax) ++failures_;
    if (state_ == HealthState::kPending ||
        (state_ == HealthState::kHealthy &&
         failures_ >= std::max<uint32_t>(1, config_.unhealthy_threshold))) {
      state_ = HealthState::kUnhealthy;
    }
  }
  return state_ != before;
}

Micros EndpointHealth::next_delay(uint64_t random) const {
  const bool faster = state_ == HealthState::kUnhealthy && config_.unhealthy_interval.count() > 0;
  const Micros base =
      std::max<Micros>(0, to_micros(faster ? config_.unhealthy_interval : config_.interval));
  // j in [0, 1]; NaN and out-of-range percents (the loader refuses them) are clamped.
  const double percent = config_.interval_jitter_percent;
  const double j = !(percent > 0) ? 0.0 : (percent >= 100 ? 1.0 : percent / 100);
  // The spread each side, rounded to the nearest µs; at most base, so base - spread >= 0.
  const Micros spread =
      std::min<Micros>(base, static_cast<Micros>(std::llround(static_cast<double>(base) * j)));
  // Uniform in [base - spread, base + spread]: 2 × spread + 1 values (fits in uint64).
  const uint64_t span = 2 * static_cast<uint64_t>(spread) + 1;
  const uint64_t offset = scale(random, span);
  const uint64_t low = static_cast<uint64_t>(base - spread);
  const uint64_t delay = low + offset;  // < 2^64: both terms are below 2^63 + 2^63
  constexpr auto kMaxMicros = static_cast<uint64_t>(std::numeric_limits<Micros>::max());
  return std::max(kMinDelay, static_cast<Micros>(std::min(delay, kMaxMicros)));
}

}  // namespace bulwark::filters
