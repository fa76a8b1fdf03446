#pragma once
// Event counts over a sliding time window, shared by all worker threads without a lock.
//
// The window is split into kBuckets buckets of window/kBuckets each (rounded down to whole
// microseconds, at least 1); sum() adds the buckets that are younger than the window, so the
// window slides in steps of one bucket (10% of the window): an event counts for at least 90% and
// at most 100% of the window after it happened.
// A bucket is recycled by the first writer that finds it stale: it claims it with a
// compare-and-swap of the bucket's tick to a "busy" mark, zeroes the counts and only then
// publishes the new tick, so sum() never reads an old bucket's counts as new ones. An increment
// racing with that recycle may be lost; the counts are statistics for thresholds, and one lost
// event in a window does not change a decision that matters. Time must not be negative.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "filters/clock.h"

namespace bulwark::filters {

template <size_t K>
class SlidingWindow {
 public:
  static constexpr size_t kBuckets = 10;
  using Counts = std::array<uint64_t, K>;

  explicit SlidingWindow(Micros window)
      : bucket_us_(window / static_cast<Micros>(kBuckets) > 0
                       ? window / static_cast<Micros>(kBuckets)
                       : 1) {}

  // Adds n to counter `k` (< K) at time `now`.
  void add(Micros now, size_t k, uint64_t n = 1) {
    Bucket& b = current(now);
    b.counts[k].fetch_add(n, std::memory_order_relaxed);
  }

  // The sums of each counter over the window that ends at `now`.
  Counts sum(Micros now) const {
    Counts out{};
    int64_t tick = now / bucket_us_;
    for (const Bucket& b : buckets_) {
      int64_t t = b.tick.load(std::memory_order_acquire);
      if (t > tick - static_cast<int64_t>(kBuckets) && t <= tick) {
        for (size_t k = 0; k < K; ++k) out[k] += b.counts[k].load(std::memory_order_relaxed);
      }
    }
    return out;
  }

  // Forgets everything.
  void reset() {
    for (Bucket& b : buckets_) {
      b.tick.store(kNever, std::memory_order_relaxed);
      for (auto& c : b.counts) c.store(0, std::memory_order_relaxed);
    }
  }

 private:
  // Both below every real tick, so sum() skips them.
  static constexpr int64_t kNever = INT64_MIN / 2;
  static constexpr int64_t kBusy = kNever - 1;  // being recycled
  struct Bucket {
    std::atomic<int64_t> tick{kNever};
    std::array<std::atomic<uint64_t>, K> counts{};
  };

  Bucket& current(Micros now) {
    int64_t tick = now / bucket_us_;
    Bucket& b = buckets_[static_cast<size_t>(tick % static_cast<int64_t>(kBuckets))];
    int64_t seen = b.tick.load(std::memory_order_acquire);
    // A bucket from an older tick is recycled by the one writer that wins the claim. A writer
    // whose `now` is older than the bucket's tick just adds to the newer bucket.
    if (seen < tick && seen != kBusy &&
        b.tick.compare_exchange_strong(seen, kBusy, std::memory_order_acq_rel)) {
      for (auto& c : b.counts) c.store(0, std::memory_order_relaxed);
      b.tick.store(tick, std::memory_order_release);
    }
    return b;
  }

  const Micros bucket_us_;
  std::array<Bucket, kBuckets> buckets_;
};

}  // namespace bulwark::filters
