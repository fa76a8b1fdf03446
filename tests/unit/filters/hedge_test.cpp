// The hedge delay: fixed, or `auto` from the route's recent p95 time to a response head.

#include "filters/hedge.h"

#include <doctest/doctest.h>

using namespace bulwark;
using namespace bulwark::filters;

TEST_CASE("latency buckets are four per power of two and round up") {
  for (Micros v : {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 100, 1000, 12'345, 1'000'000, 60'000'000}) {
    CAPTURE(v);
    const size_t b = RecentLatency::bucket_of(v);
    CHECK(RecentLatency::bucket_upper(b) >= v);
    // Within 25% (the bucket's width), so a quantile read back is close to what was recorded.
    CHECK(RecentLatency::bucket_upper(b) <= v + v / 4 + 1);
    if (b > 0) CHECK(RecentLatency::bucket_upper(b - 1) < v);
  }
  // Latencies beyond the last bucket land in it.
  CHECK(RecentLatency::bucket_of(INT64_MAX) == RecentLatency::bucket_of(INT64_MAX / 2));
  CHECK(RecentLatency::bucket_of(-5) == 0);
}

TEST_CASE("the p95 of recent latencies, over the current window and the one before") {
  FakeClock clock;
  RecentLatency recent;
  // No estimate until there are enough samples.
  for (int i = 0; i < 19; ++i) recent.record(1000, clock.now());
  CHECK_FALSE(recent.quantile(0.95, clock.now()));
  recent.record(1000, clock.now());
  REQUIRE(recent.quantile(0.95, clock.now()));
  CHECK(*recent.quantile(0.95, clock.now()) >= 1000);
  CHECK(*recent.quantile(0.95, clock.now()) <= 1250);

  // 100 answers: 94 fast, 6 slow. The p95 is slow; the p90 fast.
  RecentLatency mixed;
  for (int i = 0; i < 94; ++i) mixed.record(2'000, clock.now());
  for (int i = 0; i < 6; ++i) mixed.record(200'000, clock.now());
  CHECK(*mixed.quantile(0.95, clock.now()) >= 200'000);
  CHECK(*mixed.quantile(0.95, clock.now()) <= 250'000);
  CHECK(*mixed.quantile(0.90, clock.now()) <= 2'500);

  // The slow answers age out: one window later they are the previous window's and still count;
  // two windows later they are gone.
  clock.advance(RecentLatency::kWindow);
  for (int i = 0; i < 100; ++i) mixed.record(2'000, clock.now());
  CHECK(*mixed.quantile(0.95, clock.now()) <= 2'500);  // 6 of 200 is under 5%
  CHECK(*mixed.quantile(0.98, clock.now()) >= 200'000);
  clock.advance(RecentLatency::kWindow);
  mixed.record(2'000, clock.now());
  CHECK(*mixed.quantile(0.99, clock.now()) <= 2'500);
  // A long quiet spell forgets everything.
  clock.advance(3 * RecentLatency::kWindow);
  CHECK_FALSE(mixed.quantile(0.95, clock.now()));
}

TEST_CASE("the cached quantile follows new samples") {
  FakeClock clock;
  RecentLatency recent;
  for (int i = 0; i < 40; ++i) recent.record(1'000, clock.now());
  CHECK(*recent.quantile(0.95, clock.now()) <= 1'250);
  // The route slows down: within a few dozen answers the estimate moves.
  for (int i = 0; i < 200; ++i) recent.record(100'000, clock.now());
  CHECK(*recent.quantile(0.95, clock.now()) >= 100'000);
}

TEST_CASE("hedge_delay: fixed, or auto with a floor of 1 ms and none without samples") {
  FakeClock clock;
  config::HedgeConfig fixed;
  fixed.delay = std::chrono::milliseconds(40);
  CHECK(hedge_delay(fixed, nullptr, clock.now()) == 40'000);

  config::HedgeConfig automatic;
  automatic.auto_delay = true;
  CHECK_FALSE(hedge_delay(automatic, nullptr, clock.now()));
  RecentLatency recent;
  CHECK_FALSE(hedge_delay(automatic, &recent, clock.now()));
  for (int i = 0; i < 50; ++i) recent.record(100, clock.now());  // 0.1 ms answers
  CHECK(hedge_delay(automatic, &recent, clock.now()) == 1'000);
  RecentLatency slower;
  for (int i = 0; i < 50; ++i) slower.record(30'000, clock.now());
  const auto delay = hedge_delay(automatic, &slower, clock.now());
  REQUIRE(delay);
  CHECK(*delay >= 30'000);
  CHECK(*delay <= 37'500);
}
