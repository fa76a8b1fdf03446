#pragma once
// Hedged requests (retry.hedge): when a re-sendable request has had no response head for the
// hedge delay, another try starts on another endpoint and the first head wins ("The Tail at
// Scale"). The proxy runs the tries (proxy/exchange_tries.cpp); this file holds the arithmetic:
// the delay, fixed or `auto`, which is the route's recent p95 time to a response head, kept by
// RecentLatency.

#include <array>
#include <cstdint>
#include <optional>

#include "config/config.h"
#include "filters/clock.h"

namespace bulwark::filters {

// Recent latencies of one route on one worker, in log-spaced buckets (four per power of two, so
// a quantile is known within 25%, rounded up), over the current window and the one before it.
// No locks and no allocation: a record is a bucket increment.
class RecentLatency {
 public:
  static constexpr Micros kWindow = 10'000'000;  // 10 s: a quantile covers 10 to 20 s of answers
  static constexpr uint32_t kMinSamples = 20;    // fewer: no estimate yet

  void record(Micros latency, Micros now);
  // The q-quantile (0 < q < 1) of the latencies recorded in the last one to two windows, as the
  // upper edge of its bucket; nothing while fewer than kMinSamples are recorded there.
  std::optional<Micros> quantile(double q, Micros now);

  // The bucket of a latency, and the largest latency of a bucket (for tests).
  static size_t bucket_of(Micros latency);
  static Micros bucket_upper(size_t bucket);

 private:
  static constexpr size_t kBuckets = 4 + 4 * 38;  // up to about 2^40 µs, then the last bucket
  void rotate(Micros now);

  std::array<uint32_t, kBuckets> current_{};
  std::array<uint32_t, kBuckets> previous_{};
  uint32_t current_count_ = 0;
  uint32_t previous_count_ = 0;
  Micros window_start_ = INT64_MIN;
  // The last answer, kept until the window turns or kRecomputeEvery more samples came.
  std::optional<Micros> cached_;
  double cached_q_ = -1;
  uint32_t since_cached_ = 0;
  static constexpr uint32_t kRecomputeEvery = 16;
};

// The delay after which a try gets a hedge: the configured one, or with `delay: auto` the
// route's recent p95 (at least 1 ms); nothing while `auto` has too few samples yet.
std::optional<Micros> hedge_delay(const config::HedgeConfig& config, RecentLatency* recent,
                                  Micros now);

}  // namespace bulwark::filters
