// The gradient controller on a FakeClock: the minimum latency measured at min_limit, the limit
// growing while latency stays near it, halving when latency steps up (requests queue at the
// upstream), and growing back when it steps down; measurements repeated every min_rtt_interval.

#include "filters/adaptive_concurrency.h"

#include <doctest/doctest.h>

#include <chrono>
#include <vector>

namespace bulwark::filters {
namespace {

using namespace std::chrono_literals;

config::AdaptiveConcurrencyConfig test_config() {
  config::AdaptiveConcurrencyConfig c;
  c.min_limit = 4;
  c.max_limit = 1000;
  c.sample_window = 250ms;
  c.min_rtt_interval = 30s;
  c.jitter_percent = 0;
  c.min_rtt_samples = 20;
  c.buffer_percent = 25;
  return c;
}

// One sample window of traffic that keeps the cluster at its limit: as many requests as the
// limit admits, each answered after `latency`; then the window's time passes. Returns how many
// were admitted.
uint32_t window(AdaptiveConcurrency& ac, FakeClock& clock, std::chrono::milliseconds latency) {
  std::vector<AdaptiveConcurrency::Permit> permits;
  for (int i = 0; i < 5000; ++i) {
    AdaptiveConcurrency::Permit p = ac.try_acquire();
    if (!p) break;
    permits.push_back(std::move(p));
  }
  for (auto& p : permits) p.record(to_micros(latency));
  clock.advance(250ms);
  return static_cast<uint32_t>(permits.size());
}

// Windows of `latency` until the minimum is measured.
void measure(AdaptiveConcurrency& ac, FakeClock& clock, std::chrono::milliseconds latency) {
  for (int i = 0; i < 20 && ac.measuring(); ++i) window(ac, clock, latency);
  REQUIRE_FALSE(ac.measuring());
}

}  // namespace

TEST_CASE("adaptive concurrency: starts at min_limit and measures the minimum latency there") {
  FakeClock clock;
  const auto c = test_config();
  AdaptiveConcurrency ac(c, clock, 1);
  CHECK(ac.measuring());
  CHECK(ac.limit() == 4);
  std::vector<AdaptiveConcurrency::Permit> held;
  for (int i = 0; i < 4; ++i) held.push_back(ac.try_acquire());
  for (auto& p : held) CHECK(static_cast<bool>(p));
  CHECK(ac.in_flight() == 4);
  CHECK_FALSE(ac.try_acquire());  // the fifth: over the limit
  CHECK(ac.rejected() == 1);
  held.clear();  // dropped without a sample: no longer in flight, nothing measured
  CHECK(ac.in_flight() == 0);
  CHECK(ac.min_rtt() == 0);

  // 20 samples (five windows of four) make the measurement: their median.
  for (int w = 0; w < 5; ++w) CHECK(window(ac, clock, 10ms) == 4);
  CHECK_FALSE(ac.measuring());
  CHECK(ac.min_rtt() == to_micros(10ms));
}

TEST_CASE("adaptive concurrency: the limit follows a latency step up and down") {
  FakeClock clock;
  const auto c = test_config();
  AdaptiveConcurrency ac(c, clock, 1);
  measure(ac, clock, 10ms);

  // Latency at the minimum: the limit grows every window (x1.25 and headroom) up to max_limit.
  // A window moves the limit when it closes, at the first answer after its end.
  window(ac, clock, 10ms);
  uint32_t last = ac.limit();
  for (int i = 0; i < 8; ++i) {
    window(ac, clock, 10ms);
    CHECK(ac.limit() > last);
    last = ac.limit();
  }
  for (int i = 0; i < 40; ++i) window(ac, clock, 10ms);
  CHECK(ac.limit() == 1000);

  // Five times the minimum: requests queue upstream. The limit halves each window (the gradient
  // is held at 0.5) down to where the headroom balances it.
  window(ac, clock, 50ms);
  window(ac, clock, 50ms);  // the first window of 50 ms closes here
  CHECK(ac.limit() < 1000);
  CHECK(ac.limit() > 400);
  for (int i = 0; i < 20; ++i) window(ac, clock, 50ms);
  CHECK(ac.limit() <= 4);
  // Only that many are admitted now; the rest are refused at once.
  const uint64_t rejected = ac.rejected();
  CHECK(window(ac, clock, 50ms) == ac.limit());
  CHECK(ac.rejected() == rejected + 1);

  // Back at the minimum: it grows again.
  for (int i = 0; i < 40; ++i) window(ac, clock, 10ms);
  CHECK(ac.limit() == 1000);
}

TEST_CASE("adaptive concurrency: a limit the traffic does not use is not raised") {
  FakeClock clock;
  const auto c = test_config();
  AdaptiveConcurrency ac(c, clock, 1);
  measure(ac, clock, 10ms);
  // Three requests at a time, at the minimum latency: the limit grows only while three is at
  // least half of it (4 -> 7, one growth step past 6, then no more).
  for (int i = 0; i < 40; ++i) {
    std::vector<AdaptiveConcurrency::Permit> permits;
    for (int k = 0; k < 3; ++k) permits.push_back(ac.try_acquire());
    for (auto& p : permits) p.record(to_micros(10ms));
    clock.advance(250ms);
  }
  CHECK(ac.limit() == 7);
  // Traffic that fills it lets it grow again.
  for (int i = 0; i < 40; ++i) window(ac, clock, 10ms);
  CHECK(ac.limit() == 1000);
}

TEST_CASE("adaptive concurrency: latency within the buffer still lets the limit grow") {
  FakeClock clock;
  const auto c = test_config();
  AdaptiveConcurrency ac(c, clock, 1);
  measure(ac, clock, 10ms);
  // 12 ms is within 25% of 10 ms: gradient 12.5/12 > 1.
  for (int i = 0; i < 60; ++i) window(ac, clock, 12ms);
  CHECK(ac.limit() == 1000);
  // 20 ms is twice the minimum: gradient 0.625; the limit settles where the headroom balances
  // the cut (0.375 L = sqrt(0.625 L): about 4.4), far below max.
  for (int i = 0; i < 60; ++i) window(ac, clock, 20ms);
  CHECK(ac.limit() <= 10);
}

TEST_CASE("adaptive concurrency: the minimum is measured again every min_rtt_interval, jittered") {
  FakeClock clock;
  auto c = test_config();
  AdaptiveConcurrency ac(c, clock, 1);
  measure(ac, clock, 10ms);
  for (int i = 0; i < 40; ++i) window(ac, clock, 10ms);  // 10 s
  const uint32_t grown = ac.limit();
  CHECK(grown == 1000);
  // 30 s after the first measurement ended: measuring again, the limit held at min_limit.
  for (int i = 0; i < 200 && !ac.measuring(); ++i) window(ac, clock, 10ms);
  CHECK(ac.measuring());
  CHECK(ac.limit() == 4);
  // The upstream got faster (a bigger node): the new minimum, and the old limit is back.
  measure(ac, clock, 5ms);
  CHECK(ac.min_rtt() == to_micros(5ms));
  CHECK(ac.limit() == grown);

  // With jitter, the next measurement comes within ±10% of the interval.
  c.jitter_percent = 10;
  for (uint64_t seed : {1, 2, 3, 4, 5}) {
    FakeClock t;
    AdaptiveConcurrency jittered(c, t, seed);
    measure(jittered, t, 10ms);
    const Micros measured_at = t.now();
    int windows = 0;
    while (!jittered.measuring() && windows < 200) {
      window(jittered, t, 10ms);
      ++windows;
    }
    const Micros after = t.now() - measured_at;
    CAPTURE(seed);
    CHECK(after >= to_micros(27s));
    CHECK(after <= to_micros(33s) + to_micros(250ms));
  }
}
}  // namespace bulwark::filters
