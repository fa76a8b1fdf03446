#include "loadtest/histogram.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace bulwark::loadtest {
namespace {

// The histogram is 31 KiB: keep it off the test's stack.
std::unique_ptr<Histogram> make() { return std::make_unique<Histogram>(); }

TEST_CASE("histogram: an empty histogram reports zeros") {
  auto h = make();
  CHECK(h->count() == 0);
  CHECK(h->max() == 0);
  CHECK(h->mean() == 0.0);
  CHECK(h->percentile(50) == 0);
  CHECK(h->percentile(100) == 0);
}

TEST_CASE("histogram: values up to the exact limit are reported exactly") {
  for (uint64_t v = 0; v <= Histogram::kExactLimit; ++v) {
    CAPTURE(v);
    auto h = make();
    h->record(v);
    REQUIRE(h->percentile(50) == v);
    REQUIRE(h->max() == v);
    REQUIRE(Histogram::upper_bound_of(Histogram::index_of(v)) == v);
  }
  // Two exact values side by side stay apart.
  auto h = make();
  h->record(200);
  h->record(201);
  CHECK(h->percentile(50) == 200);
  CHECK(h->percentile(100) == 201);
}

TEST_CASE("histogram: above the exact limit a bucket bound is within 1 percent of its values") {
  // Walk the whole trackable range in geometric steps, plus both edges of every power of two.
  std::vector<uint64_t> values;
  for (double v = Histogram::kExactLimit + 1; v < Histogram::kHighestTrackable; v *= 1.0137) {
    values.push_back(static_cast<uint64_t>(v));
  }
  for (int bit = 8; bit < Histogram::kMaxValueBits; ++bit) {
    values.push_back(uint64_t{1} << bit);
    values.push_back((uint64_t{1} << bit) - 1);
    values.push_back((uint64_t{1} << bit) + 1);
  }
  values.push_back(Histogram::kHighestTrackable);
  for (uint64_t v : values) {
    CAPTURE(v);
    size_t index = Histogram::index_of(v);
    REQUIRE(index < Histogram::kBucketCount);
    uint64_t upper = Histogram::upper_bound_of(index);
    REQUIRE(upper >= v);
    REQUIRE(static_cast<double>(upper - v) < 0.01 * static_cast<double>(v));
    // The bucket below ends below v: buckets do not overlap.
    REQUIRE(Histogram::upper_bound_of(index - 1) < v);
  }
  // 100 s is well inside the range.
  CHECK(Histogram::kHighestTrackable > 100'000'000);
}

TEST_CASE("histogram: percentiles of 1..10000 uniformly") {
  auto h = make();
  for (uint64_t v = 1; v <= 10000; ++v) h->record(v);
  CHECK(h->count() == 10000);
  auto near = [](uint64_t got, double want) {
    CAPTURE(got);
    CAPTURE(want);
    CHECK(static_cast<double>(got) >= want);
    CHECK(static_cast<double>(got) <= want * 1.01);
  };
  near(h->percentile(50), 5000);
  near(h->percentile(90), 9000);
  near(h->percentile(99), 9900);
  near(h->percentile(99.9), 9990);
  CHECK(h->percentile(100) == 10000);  // clamped to the max seen, not the bucket's upper bound
  CHECK(h->percentile(0) == 1);
  CHECK(h->max() == 10000);
  CHECK(h->mean() == doctest::Approx(5000.5));
}

TEST_CASE("histogram: a bimodal distribution shows its tail only in the high percentiles") {
  auto h = make();
  for (int i = 0; i < 990; ++i) h->record(100);     // 0.1 ms
  for (int i = 0; i < 10; ++i) h->record(600'000);  // 600 ms
  CHECK(h->percentile(50) == 100);
  CHECK(h->percentile(99) == 100);
  CHECK(h->percentile(99.1) >= 600'000);
  CHECK(h->percentile(99.1) <= 606'000);
  CHECK(h->max() == 600'000);
  CHECK(h->mean() == doctest::Approx((990 * 100 + 10 * 600'000) / 1000.0));
}

TEST_CASE("histogram: out-of-range percentiles and values are clamped") {
  auto h = make();
  h->record(10);
  h->record(20);
  CHECK(h->percentile(-5) == 10);
  CHECK(h->percentile(250) == 20);
  CHECK(h->percentile(std::numeric_limits<double>::quiet_NaN()) == 10);

  uint64_t huge = Histogram::kHighestTrackable * 4;
  h->record(huge);
  CHECK(h->count() == 3);
  CHECK(h->max() == huge);
  CHECK(h->percentile(100) == huge);
  CHECK(Histogram::index_of(Histogram::kHighestTrackable) == Histogram::kBucketCount - 1);
}

TEST_CASE("histogram: merge adds counts, sums and maxima") {
  auto a = make();
  auto b = make();
  for (uint64_t v = 1; v <= 5000; ++v) a->record(v);
  for (uint64_t v = 5001; v <= 10000; ++v) b->record(v);
  a->merge(*b);
  CHECK(a->count() == 10000);
  CHECK(a->max() == 10000);
  CHECK(a->mean() == doctest::Approx(5000.5));
  CHECK(a->percentile(50) >= 5000);
  CHECK(a->percentile(50) <= 5050);
  CHECK(b->count() == 5000);  // the source is unchanged

  auto empty = make();
  a->merge(*empty);
  CHECK(a->count() == 10000);
}

TEST_CASE("histogram: reset empties it") {
  auto h = make();
  h->record(1234);
  h->reset();
  CHECK(h->count() == 0);
  CHECK(h->max() == 0);
  CHECK(h->percentile(50) == 0);
  h->record(7);
  CHECK(h->percentile(50) == 7);
  CHECK(h->mean() == 7.0);
}

}  // namespace
}  // namespace bulwark::loadtest
