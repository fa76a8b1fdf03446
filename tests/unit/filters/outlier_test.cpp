#include "filters/outlier.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace bulwark::filters {
namespace {

using namespace std::chrono_literals;
using config::OutlierDetectionConfig;
using O = OutlierDetector::Outcome;

constexpr Micros kSecond = 1'000'000;

OutlierDetectionConfig test_config() {
  OutlierDetectionConfig c;
  c.consecutive_5xx = 5;
  c.consecutive_gateway_failure = 3;
  c.base_ejection_time = 30s;
  c.max_ejection_time = 300s;
  c.max_ejection_percent = 50;
  return c;
}

// Records `n` outcomes; returns how many of them ejected the endpoint.
int record(OutlierDetector& d, size_t endpoint, O outcome, int n) {
  int ejections = 0;
  for (int i = 0; i < n; ++i) ejections += d.record(endpoint, outcome) ? 1 : 0;
  return ejections;
}

// Ejects `endpoint` with a run of gateway failures (the config's threshold must be on).
void eject(OutlierDetector& d, const OutlierDetectionConfig& c, size_t endpoint) {
  REQUIRE_FALSE(d.ejected(endpoint));
  REQUIRE(record(d, endpoint, O::kGatewayFailure,
                 static_cast<int>(c.consecutive_gateway_failure)) == 1);
  REQUIRE(d.ejected(endpoint));
}

// Moves the clock to the end of `endpoint`'s ejection and sweeps it back.
void return_at_deadline(OutlierDetector& d, FakeClock& clock, size_t endpoint) {
  const Micros until = d.ejected_until(endpoint);
  REQUIRE(until > clock.now());
  clock.advance(until - clock.now());
  CHECK(d.sweep() == std::vector<size_t>{endpoint});
  REQUIRE_FALSE(d.ejected(endpoint));
}

// ---- counts ----

TEST_CASE("outlier: starts with nothing ejected and nothing counted") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 3);
  CHECK(d.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK_FALSE(d.ejected(i));
    CHECK(d.ejected_until(i) == 0);
    CHECK(d.times_ejected(i) == 0);
    CHECK(d.consecutive_5xx(i) == 0);
    CHECK(d.consecutive_gateway_failures(i) == 0);
    CHECK(d.ejections_total(i) == 0);
  }
  CHECK(d.sweep().empty());
}

TEST_CASE("outlier: consecutive 5xx eject exactly at the threshold") {
  FakeClock clock;
  auto c = test_config();
  c.consecutive_gateway_failure = 0;
  OutlierDetector d(c, clock, 2);
  CHECK(record(d, 0, O::kServerError, 4) == 0);
  CHECK_FALSE(d.ejected(0));
  CHECK(d.consecutive_5xx(0) == 4);
  CHECK(d.consecutive_gateway_failures(0) == 0);
  CHECK(d.record(0, O::kServerError));
  CHECK(d.ejected(0));
  CHECK_FALSE(d.ejected(1));
  CHECK(d.ejected_until(0) == clock.now() + 30 * kSecond);
  CHECK(d.times_ejected(0) == 1);
  CHECK(d.ejections_total(0) == 1);
  // The ejection resets both counts.
  CHECK(d.consecutive_5xx(0) == 0);
  CHECK(d.consecutive_gateway_failures(0) == 0);
}

TEST_CASE("outlier: consecutive gateway failures eject at their own threshold") {
  FakeClock clock;
  auto c = test_config();  // 5xx: 5, gateway: 3
  OutlierDetector d(c, clock, 2);
  CHECK(record(d, 0, O::kGatewayFailure, 2) == 0);
  CHECK(d.consecutive_5xx(0) == 2);  // a gateway failure is a 5xx too
  CHECK(d.consecutive_gateway_failures(0) == 2);
  CHECK_FALSE(d.ejected(0));
  OutlierDetector::Cause cause = OutlierDetector::Cause::kConsecutive5xx;
  CHECK(d.record(0, O::kGatewayFailure, &cause));
  CHECK(cause == OutlierDetector::Cause::kConsecutiveGatewayFailure);
  CHECK(d.ejected(0));
  CHECK(d.consecutive_5xx(0) == 0);
  CHECK(d.consecutive_gateway_failures(0) == 0);
}

TEST_CASE("outlier: gateway failures count toward consecutive_5xx") {
  FakeClock clock;
  auto c = test_config();
  c.consecutive_gateway_failure = 0;  // off: only the 5xx run can eject
  OutlierDetector d(c, clock, 2);
  CHECK(record(d, 0, O::kGatewayFailure, 2) == 0);
  CHECK(record(d, 0, O::kServerError, 2) == 0);
  OutlierDetector::Cause cause = OutlierDetector::Cause::kConsecutiveGatewayFailure;
  CHECK(d.record(0, O::kGatewayFailure, &cause));
  CHECK(cause == OutlierDetector::Cause::kConsecutive5xx);
}

TEST_CASE("outlier: a success resets both counts") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 2);
  record(d, 0, O::kGatewayFailure, 2);
  record(d, 0, O::kServerError, 1);
  record(d, 0, O::kGatewayFailure, 1);
  REQUIRE(d.consecutive_5xx(0) == 4);
  REQUIRE(d.consecutive_gateway_failures(0) == 1);
  CHECK_FALSE(d.record(0, O::kSuccess));
  CHECK(d.consecutive_5xx(0) == 0);
  CHECK(d.consecutive_gateway_failures(0) == 0);
  // A new run starts from zero.
  CHECK(record(d, 0, O::kGatewayFailure, 2) == 0);
  CHECK(record(d, 0, O::kSuccess, 1) == 0);
  CHECK(record(d, 0, O::kGatewayFailure, 2) == 0);
  CHECK_FALSE(d.ejected(0));
}

TEST_CASE("outlier: a 5xx that is not a gateway failure resets only the gateway count") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 2);
  record(d, 0, O::kGatewayFailure, 2);
  CHECK_FALSE(d.record(0, O::kServerError));
  CHECK(d.consecutive_gateway_failures(0) == 0);
  CHECK(d.consecutive_5xx(0) == 3);
  CHECK(record(d, 0, O::kGatewayFailure, 1) == 0);  // gateway run of 1, 5xx run of 4
  CHECK(d.record(0, O::kServerError));              // the 5xx run of 5 ejects
}

TEST_CASE("outlier: a threshold of 0 is off") {
  FakeClock clock;
  auto c = test_config();
  c.consecutive_5xx = 0;
  c.consecutive_gateway_failure = 0;
  OutlierDetector d(c, clock, 2);
  CHECK(record(d, 0, O::kGatewayFailure, 1000) == 0);
  CHECK(record(d, 1, O::kServerError, 1000) == 0);
  CHECK_FALSE(d.ejected(0));
  CHECK_FALSE(d.ejected(1));
  CHECK(d.consecutive_gateway_failures(0) == 1000);

  c.consecutive_5xx = 5;  // 5xx on, gateway still off
  OutlierDetector only_5xx(c, clock, 2);
  CHECK(record(only_5xx, 0, O::kGatewayFailure, 4) == 0);
  CHECK(only_5xx.record(0, O::kGatewayFailure));
}

TEST_CASE("outlier: endpoints are counted apart") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 2);
  record(d, 0, O::kGatewayFailure, 2);
  record(d, 1, O::kGatewayFailure, 2);
  record(d, 1, O::kSuccess, 1);
  CHECK(d.consecutive_gateway_failures(0) == 2);
  CHECK(d.consecutive_gateway_failures(1) == 0);
  CHECK(d.record(0, O::kGatewayFailure));
  CHECK_FALSE(d.ejected(1));
}

TEST_CASE("outlier: failures while ejected do not count and successes still reset") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 4);
  eject(d, c, 0);
  CHECK(record(d, 0, O::kGatewayFailure, 10) == 0);
  CHECK(d.consecutive_5xx(0) == 0);
  CHECK(d.consecutive_gateway_failures(0) == 0);
  CHECK(d.ejections_total(0) == 1);
  return_at_deadline(d, clock, 0);
  // Back: it takes a whole new run.
  CHECK(record(d, 0, O::kGatewayFailure, 2) == 0);
  CHECK(d.record(0, O::kGatewayFailure));
  CHECK(d.ejections_total(0) == 2);
}

// ---- ejection time ----

TEST_CASE("outlier: each ejection lasts base times n, capped at max_ejection_time") {
  FakeClock clock;
  auto c = test_config();
  c.base_ejection_time = 30s;
  c.max_ejection_time = 100s;  // not a multiple of base
  OutlierDetector d(c, clock, 4);
  const Micros expected[] = {30 * kSecond, 60 * kSecond, 90 * kSecond, 100 * kSecond,
                             100 * kSecond};
  uint32_t n = 0;
  for (Micros duration : expected) {
    ++n;
    CAPTURE(n);
    eject(d, c, 0);  // at once after the last return: n keeps growing
    CHECK(d.times_ejected(0) == n);
    CHECK(d.ejections_total(0) == n);
    CHECK(d.ejected_until(0) == clock.now() + duration);
    return_at_deadline(d, clock, 0);
  }
}

TEST_CASE("outlier: a large n does not overflow the ejection time") {
  FakeClock clock;
  auto c = test_config();
  c.base_ejection_time = std::chrono::milliseconds(int64_t{1} << 40);
  c.max_ejection_time = std::chrono::milliseconds(int64_t{1} << 42);
  OutlierDetector d(c, clock, 4);
  const Micros base = to_micros(c.base_ejection_time);
  const Micros max = to_micros(c.max_ejection_time);
  for (uint32_t n = 1; n <= 6; ++n) {
    CAPTURE(n);
    eject(d, c, 0);
    CHECK(d.ejected_until(0) - clock.now() == std::min<Micros>(base * n, max));
    return_at_deadline(d, clock, 0);
  }
}

TEST_CASE("outlier: n goes back to 0 after staying un-ejected for max_ejection_time") {
  FakeClock clock;
  auto c = test_config();  // 30 s, max 300 s
  OutlierDetector d(c, clock, 4);
  eject(d, c, 0);
  return_at_deadline(d, clock, 0);
  clock.advance(300 * kSecond - 1);  // one µs short
  CHECK(d.times_ejected(0) == 1);
  eject(d, c, 0);
  CHECK(d.times_ejected(0) == 2);
  CHECK(d.ejected_until(0) == clock.now() + 60 * kSecond);
  return_at_deadline(d, clock, 0);
  clock.advance(300 * kSecond);    // exactly max_ejection_time
  CHECK(d.times_ejected(0) == 0);  // what the next ejection starts from
  eject(d, c, 0);
  CHECK(d.times_ejected(0) == 1);
  CHECK(d.ejected_until(0) == clock.now() + 30 * kSecond);
  CHECK(d.ejections_total(0) == 3);  // the total never resets
}

TEST_CASE("outlier: the time back is counted from the deadline, even when sweep runs late") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 4);
  eject(d, c, 0);
  clock.advance(30 * kSecond + 50 * kSecond);  // sweep runs 50 s after the deadline
  CHECK(d.sweep() == std::vector<size_t>{0});
  clock.advance(250 * kSecond);  // 300 s after the deadline
  eject(d, c, 0);
  CHECK(d.times_ejected(0) == 1);
}

TEST_CASE("outlier: an ejection that ran out is over even before sweep") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 4);
  eject(d, c, 0);
  clock.advance(30 * kSecond);
  CHECK_FALSE(d.ejected(0));
  CHECK(d.ejected_until(0) == 0);
  CHECK(d.times_ejected(0) == 1);
  // Ejected again before any sweep: n grows.
  eject(d, c, 0);
  CHECK(d.times_ejected(0) == 2);
  CHECK(d.ejected_until(0) == clock.now() + 60 * kSecond);
  // Ran out, not swept, and back for max_ejection_time: n starts over.
  clock.advance(60 * kSecond + 300 * kSecond);
  CHECK(d.times_ejected(0) == 0);
  eject(d, c, 0);
  CHECK(d.times_ejected(0) == 1);
  // One sweep reports it once, when its current ejection is over.
  CHECK(d.sweep().empty());
  clock.advance(30 * kSecond);
  CHECK(d.sweep() == std::vector<size_t>{0});
  CHECK(d.sweep().empty());
}

// ---- sweep ----

TEST_CASE("outlier: sweep ends ejections exactly at their deadline") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 4);
  eject(d, c, 1);
  const Micros until = d.ejected_until(1);
  clock.advance(until - clock.now() - 1);
  CHECK(d.ejected(1));
  CHECK(d.sweep().empty());
  CHECK(d.ejected(1));
  CHECK(d.ejected_until(1) == until);
  clock.advance(1);
  CHECK_FALSE(d.ejected(1));
  CHECK(d.sweep() == std::vector<size_t>{1});
  CHECK(d.ejected_until(1) == 0);
  CHECK(d.sweep().empty());  // reported once
}

TEST_CASE("outlier: sweep returns every endpoint whose time passed, in index order") {
  FakeClock clock;
  auto c = test_config();
  c.max_ejection_percent = 100;
  OutlierDetector d(c, clock, 4);
  eject(d, c, 3);
  eject(d, c, 0);
  clock.advance(10 * kSecond);
  eject(d, c, 2);
  clock.advance(20 * kSecond);  // 3 and 0 are due, 2 is not
  CHECK(d.sweep() == std::vector<size_t>{0, 3});
  CHECK(d.ejected(2));
  clock.advance(10 * kSecond);
  CHECK(d.sweep() == std::vector<size_t>{2});
}

// ---- max_ejection_percent ----

TEST_CASE("outlier: one endpoint can always be ejected, even over the percent") {
  FakeClock clock;
  auto c = test_config();
  c.max_ejection_percent = 10;
  OutlierDetector d(c, clock, 2);
  eject(d, c, 0);  // 1 of 2 is 50% > 10%, but the first is always allowed
  CHECK(record(d, 1, O::kGatewayFailure, 3) == 0);
  CHECK_FALSE(d.ejected(1));
  CHECK(d.ejections_total(1) == 0);
  CHECK(d.times_ejected(1) == 0);
  // The refusal resets the counts: the next try takes another whole run.
  CHECK(d.consecutive_5xx(1) == 0);
  CHECK(d.consecutive_gateway_failures(1) == 0);
  return_at_deadline(d, clock, 0);
  CHECK(record(d, 1, O::kGatewayFailure, 2) == 0);
  CHECK(d.record(1, O::kGatewayFailure));
  CHECK(d.ejected(1));
}

TEST_CASE("outlier: max_ejection_percent 0 still allows one") {
  FakeClock clock;
  auto c = test_config();
  c.max_ejection_percent = 0;
  OutlierDetector d(c, clock, 10);
  eject(d, c, 4);
  CHECK(record(d, 5, O::kGatewayFailure, 3) == 0);
  CHECK_FALSE(d.ejected(5));
}

TEST_CASE("outlier: max_ejection_percent caps at exactly the percent") {
  FakeClock clock;
  auto c = test_config();  // 50%
  OutlierDetector d(c, clock, 10);
  for (size_t i = 0; i < 5; ++i) eject(d, c, i);  // 5 of 10 = 50%
  CHECK(record(d, 5, O::kGatewayFailure, 3) == 0);
  CHECK_FALSE(d.ejected(5));

  c.max_ejection_percent = 49;  // 4 of 10, the 5th would be 50%
  OutlierDetector e(c, clock, 10);
  for (size_t i = 0; i < 4; ++i) eject(e, c, i);
  CHECK(record(e, 4, O::kGatewayFailure, 3) == 0);
  CHECK_FALSE(e.ejected(4));
}

TEST_CASE("outlier: max_ejection_percent 100 ejects every endpoint") {
  FakeClock clock;
  auto c = test_config();
  c.max_ejection_percent = 100;
  OutlierDetector d(c, clock, 3);
  for (size_t i = 0; i < 3; ++i) eject(d, c, i);
}

TEST_CASE("outlier: ejections that ran out do not count toward the cap, swept or not") {
  FakeClock clock;
  auto c = test_config();
  c.max_ejection_percent = 10;
  OutlierDetector d(c, clock, 2);
  eject(d, c, 0);
  clock.advance(30 * kSecond);  // over, not swept
  eject(d, c, 1);
}

// ---- remap ----

TEST_CASE("outlier: remap carries the state of endpoints that stayed") {
  FakeClock clock;
  auto c = test_config();
  c.max_ejection_percent = 100;
  OutlierDetector d(c, clock, 3);
  eject(d, c, 1);
  const Micros until = d.ejected_until(1);
  record(d, 2, O::kServerError, 2);
  record(d, 0, O::kGatewayFailure, 1);

  // New set: old 2, a new endpoint, old 1 (old 0 is gone).
  auto next = d.remapped({2, -1, 1});
  CHECK(d.size() == 3);
  CHECK(d.ejected(1));  // the old detector goes on as it was
  OutlierDetector& n = *next;
  CHECK(n.size() == 3);
  CHECK(n.consecutive_5xx(0) == 2);
  CHECK(n.consecutive_gateway_failures(0) == 0);
  CHECK_FALSE(n.ejected(0));
  CHECK(n.consecutive_5xx(1) == 0);
  CHECK(n.consecutive_gateway_failures(1) == 0);
  CHECK(n.ejections_total(1) == 0);
  CHECK(n.ejected(2));
  CHECK(n.ejected_until(2) == until);
  CHECK(n.times_ejected(2) == 1);
  CHECK(n.ejections_total(2) == 1);

  // The counts go on where they were, and the ejection ends as before.
  clock.advance(1);
  CHECK(record(n, 0, O::kServerError, 3) == 1);
  clock.advance(until - clock.now());
  CHECK(n.sweep() == std::vector<size_t>{2});
  clock.advance(1);
  CHECK(n.sweep() == std::vector<size_t>{0});
}

TEST_CASE("outlier: remap grows and shrinks the set, and the cap follows its size") {
  FakeClock clock;
  auto c = test_config();
  c.max_ejection_percent = 50;
  OutlierDetector d(c, clock, 2);
  eject(d, c, 0);
  CHECK(record(d, 1, O::kGatewayFailure, 3) == 0);  // 2 of 2 would be 100%
  auto grown = d.remapped({0, 1, -1, -1});
  CHECK(grown->size() == 4);
  CHECK(grown->ejected(0));
  eject(*grown, c, 1);  // 2 of 4 = 50%
  CHECK(record(*grown, 2, O::kGatewayFailure, 3) == 0);
  CHECK(d.ejected(1));  // shared state: the old detector sees the ejection too
  auto shrunk = grown->remapped({1});
  CHECK(shrunk->size() == 1);
  CHECK(shrunk->ejected(0));
  CHECK_FALSE(shrunk->ejected(1));  // out of range
  auto empty = shrunk->remapped({});
  CHECK(empty->size() == 0);
  CHECK(empty->sweep().empty());
}

TEST_CASE("outlier: remap gives a repeated or unknown old index a fresh state") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 2);
  eject(d, c, 0);
  auto next = d.remapped({0, 0, 7});
  CHECK(next->ejected(0));
  CHECK_FALSE(next->ejected(1));
  CHECK(next->ejections_total(1) == 0);
  CHECK_FALSE(next->ejected(2));
}

TEST_CASE("outlier: an index out of range is never ejected and records nothing") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 2);
  CHECK(record(d, 2, O::kGatewayFailure, 10) == 0);
  CHECK_FALSE(d.ejected(2));
  CHECK(d.ejected_until(2) == 0);
  CHECK(d.times_ejected(2) == 0);
  CHECK(d.consecutive_5xx(2) == 0);
  CHECK(d.consecutive_gateway_failures(2) == 0);
  CHECK(d.ejections_total(2) == 0);
}

// ---- threads ----

TEST_CASE("outlier: concurrent failures from 8 threads eject exactly once") {
  FakeClock clock;  // not advanced while the threads run
  auto c = test_config();
  OutlierDetector d(c, clock, 4);
  constexpr int kThreads = 8;
  std::atomic<bool> go{false};
  std::atomic<int> ejections{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) {
      }
      for (int i = 0; i < 2000; ++i) {
        const O outcome = (i + t) % 3 == 0 ? O::kServerError : O::kGatewayFailure;
        if (d.record(0, outcome)) ejections.fetch_add(1);
        (void)d.ejected(0);
        (void)d.record(1, O::kSuccess);  // the lock-free path beside it
      }
    });
  }
  go.store(true);
  for (auto& th : threads) th.join();
  CHECK(ejections.load() == 1);
  CHECK(d.ejections_total(0) == 1);
  CHECK(d.times_ejected(0) == 1);
  CHECK(d.ejected(0));
  CHECK_FALSE(d.ejected(1));
}

TEST_CASE("outlier: concurrent failures on every endpoint stop at the cap") {
  FakeClock clock;
  auto c = test_config();  // 50% of 8: 4 endpoints
  OutlierDetector d(c, clock, 8);
  constexpr int kThreads = 8;
  std::atomic<bool> go{false};
  std::atomic<int> ejections{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) {
      }
      for (int i = 0; i < 2000; ++i) {
        const size_t endpoint = static_cast<size_t>(i + t) % 8;
        if (d.record(endpoint, O::kGatewayFailure)) ejections.fetch_add(1);
        (void)d.consecutive_5xx(endpoint);
        (void)d.ejected_until(endpoint);
      }
    });
  }
  go.store(true);
  for (auto& th : threads) th.join();
  CHECK(ejections.load() == 4);
  size_t ejected = 0;
  uint64_t total = 0;
  for (size_t i = 0; i < 8; ++i) {
    ejected += d.ejected(i) ? 1 : 0;
    total += d.ejections_total(i);
  }
  CHECK(ejected == 4);
  CHECK(total == 4);
}

TEST_CASE("outlier: sweep runs safely beside recording workers") {
  FakeClock clock;
  auto c = test_config();
  c.max_ejection_percent = 100;
  OutlierDetector d(c, clock, 4);
  for (size_t i = 0; i < 4; ++i) eject(d, c, i);
  clock.advance(30 * kSecond);  // all due; the clock does not move while threads run
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) {
      }
      for (int i = 0; i < 1000; ++i) {
        (void)d.record(static_cast<size_t>(t), i % 2 ? O::kSuccess : O::kServerError);
        (void)d.times_ejected(static_cast<size_t>(t));
      }
    });
  }
  go.store(true);
  std::vector<size_t> back = d.sweep();
  for (auto& th : threads) th.join();
  CHECK(back == std::vector<size_t>{0, 1, 2, 3});
  CHECK(d.sweep().empty());
}

// ---- failure_percent ----

OutlierDetectionConfig rate_config() {
  OutlierDetectionConfig c = test_config();
  c.consecutive_5xx = 0;
  c.consecutive_gateway_failure = 0;
  c.failure_percent = 10;
  c.failure_percent_minimum_requests = 20;
  c.interval = 2s;
  c.max_ejection_percent = 100;
  return c;
}

// Records `tries` outcomes over one interval, every `every`-th one a failure (0: none), then
// moves past the interval's end; returns how many ejections they caused.
int run_interval(OutlierDetector& d, FakeClock& clock, size_t endpoint, int tries, int every) {
  int ejections = 0;
  for (int i = 1; i <= tries; ++i) {
    ejections +=
        d.record(endpoint, every != 0 && i % every == 0 ? O::kGatewayFailure : O::kSuccess);
  }
  clock.advance(2 * kSecond);
  return ejections;
}

TEST_CASE("outlier: failure_percent ejects an endpoint failing a share of tries, none in a row") {
  FakeClock clock;
  auto c = rate_config();
  OutlierDetector d(c, clock, 3);
  // 1 in 8 fails (12.5% >= 10%), never two in a row: the consecutive counts would never fire.
  CHECK(run_interval(d, clock, 0, 80, 8) == 0);  // judged only once the interval is over
  CHECK_FALSE(d.ejected(0));
  OutlierDetector::Cause cause = OutlierDetector::Cause::kConsecutive5xx;
  CHECK(d.record(0, O::kSuccess, &cause));  // the first try after the interval judges it
  CHECK(cause == OutlierDetector::Cause::kFailurePercent);
  CHECK(d.ejected(0));
  CHECK(d.ejected_until(0) == clock.now() + 30 * kSecond);
  CHECK(d.ejections_total(0) == 1);
  // Another endpoint failing 1 in 20 (5%) stays.
  CHECK(run_interval(d, clock, 1, 80, 20) == 0);
  CHECK_FALSE(d.record(1, O::kSuccess));
  CHECK_FALSE(d.ejected(1));
}

TEST_CASE("outlier: failure_percent needs the minimum number of tries in the interval") {
  FakeClock clock;
  auto c = rate_config();
  OutlierDetector d(c, clock, 2);
  // 18 tries + the judging one = 19 < 20, though half of them failed.
  CHECK(run_interval(d, clock, 0, 18, 2) == 0);
  CHECK_FALSE(d.record(0, O::kSuccess));
  CHECK_FALSE(d.ejected(0));
  // The next interval starts afresh: its counts do not include the last one's.
  CHECK(run_interval(d, clock, 0, 10, 1) == 0);
  CHECK_FALSE(d.record(0, O::kGatewayFailure));  // 11 tries: still too few
  CHECK_FALSE(d.ejected(0));
  CHECK(run_interval(d, clock, 0, 19, 1) == 0);
  CHECK(d.record(0, O::kGatewayFailure));  // 20 tries, all failed
}

TEST_CASE("outlier: failure_percent counts nothing while ejected and starts afresh after") {
  FakeClock clock;
  auto c = rate_config();
  c.base_ejection_time = 5s;
  OutlierDetector d(c, clock, 2);
  CHECK(run_interval(d, clock, 0, 40, 2) == 0);
  CHECK(d.record(0, O::kSuccess));
  // Failures while ejected (requests in flight) are not counted.
  CHECK(record(d, 0, O::kGatewayFailure, 50) == 0);
  return_at_deadline(d, clock, 0);
  // Back: a clean interval does not eject it, whatever happened before.
  CHECK(run_interval(d, clock, 0, 40, 0) == 0);
  CHECK_FALSE(d.record(0, O::kSuccess));
  CHECK_FALSE(d.ejected(0));
}

TEST_CASE("outlier: failure_percent respects max_ejection_percent") {
  FakeClock clock;
  auto c = rate_config();
  c.max_ejection_percent = 50;
  OutlierDetector d(c, clock, 3);
  CHECK(run_interval(d, clock, 0, 40, 2) == 0);
  CHECK(run_interval(d, clock, 1, 40, 2) == 0);
  CHECK(d.record(0, O::kSuccess));
  CHECK_FALSE(d.record(1, O::kSuccess));  // 2 of 3 would be more than 50%
  CHECK(d.ejected(0));
  CHECK_FALSE(d.ejected(1));
}

TEST_CASE("outlier: failure_percent off costs nothing and ejects nothing") {
  FakeClock clock;
  auto c = rate_config();
  c.failure_percent = 0;
  OutlierDetector d(c, clock, 1);
  CHECK(run_interval(d, clock, 0, 100, 1) == 0);
  CHECK_FALSE(d.record(0, O::kGatewayFailure));
  CHECK_FALSE(d.ejected(0));
}

// ---- local-origin failures ----

using Cause = OutlierDetector::Cause;

OutlierDetectionConfig local_config() {
  OutlierDetectionConfig c = test_config();
  c.consecutive_local_origin_failure = 3;
  return c;
}

// Ejects `endpoint` with a run of local-origin failures (the config's threshold must be on).
void eject_local(OutlierDetector& d, const OutlierDetectionConfig& c, size_t endpoint) {
  REQUIRE_FALSE(d.ejected(endpoint));
  Cause cause = Cause::kConsecutive5xx;
  for (uint32_t i = 1; i < c.consecutive_local_origin_failure; ++i)
    REQUIRE_FALSE(d.record(endpoint, O::kLocalOriginFailure, &cause));
  REQUIRE(d.record(endpoint, O::kLocalOriginFailure, &cause));
  REQUIRE(cause == Cause::kConsecutiveLocalOriginFailure);
  REQUIRE(d.ejected(endpoint));
}

TEST_CASE("outlier: local-origin failures eject at their own threshold, apart from 5xx") {
  FakeClock clock;
  auto c = local_config();
  OutlierDetector d(c, clock, 2);
  CHECK(record(d, 0, O::kLocalOriginFailure, 2) == 0);
  CHECK(d.consecutive_local_origin_failures(0) == 2);
  // Counted apart: the 5xx and gateway runs do not move.
  CHECK(d.consecutive_5xx(0) == 0);
  CHECK(d.consecutive_gateway_failures(0) == 0);
  Cause cause = Cause::kConsecutive5xx;
  CHECK(d.record(0, O::kLocalOriginFailure, &cause));
  CHECK(cause == Cause::kConsecutiveLocalOriginFailure);
  CHECK(d.ejected(0));
  CHECK(d.ejected_until(0) == clock.now() + 30 * kSecond);
  CHECK(d.consecutive_local_origin_failures(0) == 0);  // an ejection starts the counts afresh
  CHECK(d.times_ejected(0) == 1);
  CHECK_FALSE(d.ejected(1));
}

TEST_CASE("outlier: any answer resets the local-origin run, local failures leave the others") {
  FakeClock clock;
  auto c = local_config();
  c.max_ejection_percent = 100;
  OutlierDetector d(c, clock, 4);
  // Each kind of outcome that shows the endpoint was reached ends a run of local failures.
  const O reached[] = {O::kSuccess, O::kServerError, O::kGatewayFailure};
  for (size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(record(d, i, O::kLocalOriginFailure, 2) == 0);
    CHECK_FALSE(d.record(i, reached[i]));
    CHECK(d.consecutive_local_origin_failures(i) == 0);
    CHECK(record(d, i, O::kLocalOriginFailure, 2) == 0);
    CHECK_FALSE(d.ejected(i));
  }
  // Local failures between gateway failures neither reset nor extend that run: 2 gateway, 2
  // local, 1 gateway is 3 gateway failures in a row.
  CHECK(record(d, 3, O::kGatewayFailure, 2) == 0);
  CHECK(record(d, 3, O::kLocalOriginFailure, 2) == 0);
  CHECK(d.consecutive_gateway_failures(3) == 2);
  CHECK(d.consecutive_5xx(3) == 2);
  Cause cause = Cause::kConsecutive5xx;
  CHECK(d.record(3, O::kGatewayFailure, &cause));
  CHECK(cause == Cause::kConsecutiveGatewayFailure);
}

TEST_CASE("outlier: with consecutive_local_origin_failure 0, local failures are gateway failures") {
  FakeClock clock;
  auto c = local_config();
  c.consecutive_local_origin_failure = 0;
  c.consecutive_gateway_failure = 4;
  OutlierDetector d(c, clock, 2);
  CHECK(record(d, 0, O::kLocalOriginFailure, 3) == 0);
  CHECK(d.consecutive_local_origin_failures(0) == 0);
  CHECK(d.consecutive_gateway_failures(0) == 3);
  CHECK(d.consecutive_5xx(0) == 3);
  Cause cause = Cause::kConsecutive5xx;
  CHECK(d.record(0, O::kLocalOriginFailure, &cause));
  CHECK(cause == Cause::kConsecutiveGatewayFailure);
  // And with every threshold off, nothing ejects.
  c.consecutive_gateway_failure = 0;
  c.consecutive_5xx = 0;
  OutlierDetector off(c, clock, 2);
  CHECK(record(off, 0, O::kLocalOriginFailure, 100) == 0);
}

TEST_CASE("outlier: local-origin failures while ejected do not count") {
  FakeClock clock;
  auto c = local_config();
  c.base_ejection_time = 5s;
  OutlierDetector d(c, clock, 2);
  eject_local(d, c, 0);
  CHECK(record(d, 0, O::kLocalOriginFailure, 10) == 0);
  CHECK(d.consecutive_local_origin_failures(0) == 0);
  return_at_deadline(d, clock, 0);
  CHECK(record(d, 0, O::kLocalOriginFailure, 2) == 0);  // a whole new run is needed
  CHECK(d.record(0, O::kLocalOriginFailure));
  CHECK(d.ejected_until(0) == clock.now() + 10 * kSecond);  // the second time: twice as long
}

TEST_CASE("outlier: failure_percent counts local-origin failures as failures") {
  FakeClock clock;
  auto c = rate_config();
  c.consecutive_local_origin_failure = 0;  // only the rate may eject
  OutlierDetector d(c, clock, 2);
  for (int i = 1; i <= 40; ++i) d.record(0, i % 5 == 0 ? O::kLocalOriginFailure : O::kSuccess);
  clock.advance(2 * kSecond);
  Cause cause = Cause::kConsecutive5xx;
  CHECK(d.record(0, O::kSuccess, &cause));  // 8 of 40 = 20% >= 10%
  CHECK(cause == Cause::kFailurePercent);
}

TEST_CASE("outlier: the implicit detection ejects on local-origin failures only") {
  FakeClock clock;
  const OutlierDetectionConfig& c = config::implicit_outlier_detection();
  OutlierDetector d(c, clock, 2);
  CHECK(record(d, 0, O::kServerError, 100) == 0);
  CHECK(record(d, 0, O::kGatewayFailure, 100) == 0);
  CHECK(record(d, 0, O::kLocalOriginFailure, 2) == 0);
  CHECK(d.record(0, O::kLocalOriginFailure));
  CHECK(d.ejected_until(0) == clock.now() + 30 * kSecond);
}

TEST_CASE("outlier: the implicit detection never ejects a cluster's only endpoint") {
  FakeClock clock;
  const OutlierDetectionConfig& c = config::implicit_outlier_detection();
  OutlierDetector one(c, clock, 1);
  CHECK(record(one, 0, O::kLocalOriginFailure, 30) == 0);
  CHECK_FALSE(one.ejected(0));
  CHECK(one.ejections_total(0) == 0);
  // Two endpoints: one may go, not both (50%, strict).
  OutlierDetector two(c, clock, 2);
  CHECK(record(two, 0, O::kLocalOriginFailure, 3) == 1);
  CHECK(record(two, 1, O::kLocalOriginFailure, 30) == 0);
  CHECK(two.ejected(0));
  CHECK_FALSE(two.ejected(1));
  // Four: two of them.
  OutlierDetector four(c, clock, 4);
  for (size_t i = 0; i < 4; ++i) record(four, i, O::kLocalOriginFailure, 3);
  CHECK(four.ejected(0));
  CHECK(four.ejected(1));
  CHECK_FALSE(four.ejected(2));
  CHECK_FALSE(four.ejected(3));
}

// ---- active health checks end ejections ----

TEST_CASE("outlier: a passing check ends a local-origin ejection at once") {
  FakeClock clock;
  auto c = local_config();
  OutlierDetector d(c, clock, 2);
  eject_local(d, c, 0);
  clock.advance(kSecond);
  CHECK_FALSE(d.on_health_check(1, true));  // not ejected: nothing to end
  CHECK(d.on_health_check(0, true));
  CHECK_FALSE(d.ejected(0));
  CHECK(d.ejected_until(0) == 0);
  CHECK_FALSE(d.on_health_check(0, true));  // once
  CHECK(d.sweep().empty());                 // sweep finds nothing left to end
  // It was ejected once, and came back just now: the next ejection is the second, as long as
  // two, and n goes back to 0 only max_ejection_time after this return.
  CHECK(d.times_ejected(0) == 1);
  clock.advance(299 * kSecond);
  CHECK(d.times_ejected(0) == 1);
  eject_local(d, c, 0);
  CHECK(d.ejected_until(0) == clock.now() + 60 * kSecond);
}

TEST_CASE("outlier: a failed check while ejected does not end it, a passing one after does") {
  FakeClock clock;
  auto c = local_config();
  OutlierDetector d(c, clock, 2);
  eject_local(d, c, 0);
  CHECK_FALSE(d.on_health_check(0, false));
  CHECK(d.ejected(0));
  CHECK(d.on_health_check(0, true));
  CHECK_FALSE(d.ejected(0));
}

TEST_CASE("outlier: an ejection for 5xx ends at a passing check only after a failed one") {
  FakeClock clock;
  auto c = test_config();
  OutlierDetector d(c, clock, 3);
  eject(d, c, 0);  // gateway failures
  // Its checks kept passing while its traffic failed: a passing check is no news.
  for (int i = 0; i < 5; ++i) CHECK_FALSE(d.on_health_check(0, true));
  CHECK(d.ejected(0));
  // It failed a check (crashed, say) and passed again (restarted): back at once.
  CHECK_FALSE(d.on_health_check(0, false));
  CHECK(d.ejected(0));
  CHECK(d.on_health_check(0, true));
  CHECK_FALSE(d.ejected(0));
  // A failed check before an ejection is not one during it.
  CHECK_FALSE(d.on_health_check(1, false));
  CHECK(record(d, 1, O::kServerError, 5) == 1);
  CHECK_FALSE(d.on_health_check(1, true));
  CHECK(d.ejected(1));
  // Nor is one during an earlier ejection: each ejection starts with a clean slate.
  CHECK(d.on_health_check(1, false) == false);
  return_at_deadline(d, clock, 1);
  CHECK(record(d, 1, O::kServerError, 5) == 1);
  CHECK_FALSE(d.on_health_check(1, true));
  CHECK(d.ejected(1));
}

TEST_CASE("outlier: uneject_on_health_check_pass false keeps the whole ejection time") {
  FakeClock clock;
  auto c = local_config();
  c.uneject_on_health_check_pass = false;
  OutlierDetector d(c, clock, 2);
  eject_local(d, c, 0);
  CHECK_FALSE(d.on_health_check(0, false));
  CHECK_FALSE(d.on_health_check(0, true));
  CHECK(d.ejected(0));
  return_at_deadline(d, clock, 0);
}

TEST_CASE("outlier: a check after the ejection time ran out leaves the return to sweep") {
  FakeClock clock;
  auto c = local_config();
  OutlierDetector d(c, clock, 2);
  eject_local(d, c, 0);
  clock.advance(30 * kSecond);
  CHECK_FALSE(d.on_health_check(0, true));
  CHECK(d.sweep() == std::vector<size_t>{0});
}

TEST_CASE("outlier: an unejected endpoint's state is shared with its remapped detector") {
  FakeClock clock;
  auto c = local_config();
  OutlierDetector d(c, clock, 2);
  eject_local(d, c, 1);
  auto next = d.remapped({1, -1});  // endpoint 1 is now 0
  CHECK(next->ejected(0));
  CHECK(next->on_health_check(0, true));
  CHECK_FALSE(d.ejected(1));  // the old detector sees the same state
}

}  // namespace
}  // namespace bulwark::filters

namespace bulwark::filters {
namespace {

// Success rate: endpoints judged against each other. The consecutive rules are off, so only
// the comparison ejects.
OutlierDetectionConfig success_rate_config() {
  OutlierDetectionConfig c;
  c.consecutive_5xx = 0;
  c.consecutive_gateway_failure = 0;
  c.consecutive_local_origin_failure = 0;
  c.base_ejection_time = 30s;
  c.max_ejection_percent = 50;
  c.success_rate.emplace();
  c.success_rate->minimum_hosts = 3;
  c.success_rate->request_volume = 100;
  c.success_rate->stdev_factor = 1.9;
  return c;
}

// One interval of traffic: each endpoint gets `tries`, the first `failures[i]` of them failing.
void interval_of(OutlierDetector& d, const std::vector<int>& failures, int tries = 200) {
  for (size_t i = 0; i < failures.size(); ++i) {
    record(d, i, O::kServerError, failures[i]);
    record(d, i, O::kSuccess, tries - failures[i]);
  }
}

}  // namespace

TEST_CASE("outlier success rate: the one endpoint worse than its peers is ejected") {
  FakeClock clock;
  OutlierDetectionConfig c = success_rate_config();
  OutlierDetector d(c, clock, 5);
  // 5% failures where the others have none or one in two hundred: never three in a row, never
  // the failure_percent of a bad replica, but far below the group.
  interval_of(d, {0, 1, 0, 10, 1});
  auto j = d.judge_success_rate();
  CHECK(j.judged == 5);
  CHECK(j.mean == doctest::Approx((1000.0 - 12) / 1000));
  REQUIRE(j.ejected == std::vector<size_t>{3});
  CHECK(j.rates[0] == doctest::Approx(0.95));
  CHECK(j.threshold > 0.95);
  CHECK(j.threshold < 0.99);
  CHECK(d.ejected(3));
  for (size_t i : {0, 1, 2, 4}) CHECK_FALSE(d.ejected(i));

  // The next interval starts afresh, and an ejected endpoint is not judged.
  interval_of(d, {0, 0, 0, 200, 0});
  j = d.judge_success_rate();
  CHECK(j.judged == 4);
  CHECK(j.ejected.empty());
}

TEST_CASE("outlier success rate: equal endpoints, too few tries or too few hosts eject nobody") {
  FakeClock clock;
  OutlierDetectionConfig c = success_rate_config();
  OutlierDetector d(c, clock, 4);
  // Every endpoint fails as often: no stdev, nobody below the mean.
  interval_of(d, {20, 20, 20, 20});
  auto j = d.judge_success_rate();
  CHECK(j.judged == 4);
  CHECK(j.ejected.empty());
  // The bad one has fewer than request_volume tries: not judged, and then only two are left of
  // the three minimum_hosts.
  interval_of(d, {0, 0, 0});
  record(d, 3, O::kServerError, 99);
  j = d.judge_success_rate();
  CHECK(j.judged == 3);
  CHECK(j.ejected.empty());
  // Two endpoints are fewer than minimum_hosts: nothing is judged.
  OutlierDetector two(c, clock, 2);
  interval_of(two, {0, 100});
  CHECK(two.judge_success_rate().judged == 0);
  CHECK_FALSE(two.ejected(1));
}

TEST_CASE("outlier success rate: max_ejection_percent keeps the worst out first") {
  FakeClock clock;
  OutlierDetectionConfig c = success_rate_config();
  c.max_ejection_percent = 20;  // one of five
  c.success_rate->stdev_factor = 0.5;
  OutlierDetector d(c, clock, 5);
  interval_of(d, {0, 0, 0, 30, 60});
  auto j = d.judge_success_rate();
  REQUIRE(j.ejected == std::vector<size_t>{4});
  CHECK_FALSE(d.ejected(3));
  // Back after base_ejection_time, with a clean slate.
  clock.advance(31s);
  d.sweep();
  CHECK_FALSE(d.ejected(4));
  interval_of(d, {0, 0, 0, 0, 0});
  CHECK(d.judge_success_rate().ejected.empty());
}

TEST_CASE("outlier success rate: equal rates are equal, whatever the rounding") {
  // Three endpoints at 1/10: the mean comes out one ulp above 0.1, with a stdev of rounding
  // noise; a small stdev_factor must not make that an ejection.
  FakeClock clock;
  OutlierDetectionConfig c = success_rate_config();
  c.success_rate->stdev_factor = 0.1;
  c.success_rate->request_volume = 10;
  OutlierDetector d(c, clock, 3);
  interval_of(d, {9, 9, 9}, 10);
  auto j = d.judge_success_rate();
  CHECK(j.judged == 3);
  CHECK(j.ejected.empty());
}

TEST_CASE("outlier success rate: off without the section, and then counts nothing") {
  FakeClock clock;
  OutlierDetectionConfig c = success_rate_config();
  c.success_rate.reset();
  OutlierDetector d(c, clock, 3);
  interval_of(d, {0, 0, 200});
  auto j = d.judge_success_rate();
  CHECK(j.judged == 0);
  CHECK_FALSE(d.ejected(2));
}

}  // namespace bulwark::filters
