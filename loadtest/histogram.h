#pragma once
// A log-linear latency histogram in the style of HdrHistogram, for values in microseconds.
//
// Values below 2^(kSubBucketBits + 1) = 256 are counted exactly. Above that, every power of two
// [2^n, 2^(n+1)) is split into 2^kSubBucketBits = 128 equal sub-buckets, so a bucket is never
// wider than 1/128 of the values in it: any value reported (a bucket's upper bound) is within
// 0.8 % of the value recorded. Values up to 2^kMaxValueBits - 1 µs (about 38 hours) are
// bucketed; larger values are counted in the last bucket (max() and mean() still see them).
//
// The counts live in a fixed array inside the object (31 KiB): record() never allocates, so it
// can sit on a hot path. Not thread-safe; merge() per-thread histograms instead.

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace bulwark::loadtest {

class Histogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr int kMaxValueBits = 37;
  static constexpr uint64_t kSubBuckets = uint64_t{1} << kSubBucketBits;
  // Values up to this are exact (each has a bucket of its own).
  static constexpr uint64_t kExactLimit = 2 * kSubBuckets - 1;
  // The largest value with a bucket of its own range; larger values go to the last bucket.
  static constexpr uint64_t kHighestTrackable = (uint64_t{1} << kMaxValueBits) - 1;
  static constexpr size_t kBucketCount = (kMaxValueBits - kSubBucketBits + 1) * kSubBuckets;

  void record(uint64_t value) {
    ++counts_[index_of(std::min(value, kHighestTrackable))];
    ++count_;
    sum_ += value;
    max_ = std::max(max_, value);
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  // The exact mean of the recorded values; 0 when empty.
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }

  // The value at percentile `p` (0..100; out-of-range values are clamped): the upper bound of
  // the bucket holding the ceil(p% × count)-th smallest value, but never more than max().
  // 0 when the histogram is empty.
  uint64_t percentile(double p) const {
    if (count_ == 0) return 0;
    if (!(p > 0)) p = 0;  // also catches NaN
    p = std::min(p, 100.0);
    auto rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBucketCount; ++i) {
      seen += counts_[i];
      // The last bucket also holds the values beyond its range: max() bounds those.
      if (seen >= rank) return i + 1 == kBucketCount ? max_ : std::min(upper_bound_of(i), max_);
    }
    return max_;  // not reached: the counts add up to count_
  }

  void merge(const Histogram& other) {
    for (size_t i = 0; i < kBucketCount; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
  }

  void reset() {
    counts_.fill(0);
    count_ = sum_ = max_ = 0;
  }

  // The bucket a value falls in, and the largest value of a bucket. Public for tests.
  static size_t index_of(uint64_t value) {
    if (value < kSubBuckets) return static_cast<size_t>(value);
    // For 2^n <= value < 2^(n+1), the sub-bucket width is 2^shift with shift = n - kSubBucketBits,
    // and (value >> shift) lies in [kSubBuckets, 2 * kSubBuckets). Power n = kSubBucketBits gets
    // indices [kSubBuckets, 2 * kSubBuckets), each further power the next kSubBuckets indices.
    int shift = std::bit_width(value) - 1 - kSubBucketBits;
    return static_cast<size_t>(shift) * kSubBuckets + static_cast<size_t>(value >> shift);
  }
  static uint64_t upper_bound_of(size_t index) {
    if (index < 2 * kSubBuckets) return index;
    uint64_t shift = index / kSubBuckets - 1;
    uint64_t sub = index % kSubBuckets + kSubBuckets;
    return ((sub + 1) << shift) - 1;
  }

 private:
  std::array<uint64_t, kBucketCount> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
};

}  // namespace bulwark::loadtest
