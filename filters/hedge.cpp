#include "filters/hedge.h"

#include <algorithm>
#include <bit>

namespace bulwark::filters {

size_t RecentLatency::bucket_of(Micros latency) {
  if (latency < 4) return latency < 0 ? 0 : static_cast<size_t>(latency);
  const auto v = static_cast<uint64_t>(latency);
  const int octave = std::bit_width(v) - 1;  // >= 2
  const size_t sub = (v >> (octave - 2)) & 3;
  return std::min(kBuckets - 1, 4 * static_cast<size_t>(octave - 1) + sub);
}

Micros RecentLatency::bucket_upper(size_t bucket) {
  if (bucket < 4) return static_cast<Micros>(bucket);
  const size_t octave = bucket / 4 + 1;
  const size_t sub = bucket % 4;
  return static_cast<Micros>(((5 + sub) << (octave - 2)) - 1);
}

void RecentLatency::rotate(Micros now) {
  if (window_start_ != INT64_MIN && now - window_start_ < kWindow) return;
  if (window_start_ != INT64_MIN && now - window_start_ < 2 * kWindow) {
    previous_ = current_;
    previous_count_ = current_count_;
  } else {
    previous_.fill(0);
    previous_count_ = 0;
  }
  current_.fill(0);
  current_count_ = 0;
  window_start_ = now;
  cached_.reset();
  cached_q_ = -1;
}

void RecentLatency::record(Micros latency, Micros now) {
  rotate(now);
  ++current_[bucket_of(latency)];
  ++current_count_;
  ++since_cached_;
}

std::optional<Micros> RecentLatency::quantile(double q, Micros now) {
  rotate(now);
  const uint64_t total = uint64_t{current_count_} + previous_count_;
  if (cached_q_ == q && since_cached_ < kRecomputeEvery && (cached_ || total < kMinSamples))
    return cached_;
  cached_q_ = q;
  since_cached_ = 0;
  cached_.reset();
  if (total < kMinSamples) return cached_;
  // The smallest bucket with at least q of the samples at or below it.
  const auto rank = static_cast<uint64_t>(q * static_cast<double>(total) + 0.999999);
  uint64_t seen = 0;
  for (size_t b = 0; b < kBuckets; ++b) {
    seen += uint64_t{current_[b]} + previous_[b];
    if (seen >= rank) {
      cached_ = bucket_upper(b);
      break;
    }
  }
  return cached_;
}

std::optional<Micros> hedge_delay(const config::HedgeConfig& config, RecentLatency* recent,
                                  Micros now) {
  if (!config.auto_delay) return to_micros(config.delay);
  if (recent == nullptr) return std::nullopt;
  std::optional<Micros> p95 = recent->quantile(0.95, now);
  if (!p95) return std::nullopt;
  return std::max<Micros>(*p95, 1000);
}

}  // namespace bulwark::filters
