#include "filters/health.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string_view>

namespace bulwark::filters {
namespace {

using namespace std::chrono_literals;
using config::HealthCheckConfig;
using config::StatusRange;
using S = HealthState;

constexpr uint64_t kMaxRandom = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kHalfRandom = uint64_t{1} << 63;

HealthCheckConfig test_config() {
  HealthCheckConfig c;
  c.interval = 5s;
  c.interval_jitter_percent = 10;
  c.healthy_threshold = 2;
  c.unhealthy_threshold = 3;
  c.unhealthy_interval = 0ms;
  return c;
}

// A deterministic stream of uniform uint64 values (splitmix64).
struct Randoms {
  uint64_t state = 0x9e3779b97f4a7c15;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
};

void record(EndpointHealth& h, bool success, int n) {
  for (int i = 0; i < n; ++i) h.on_result(success);
}

// ---- names and statuses ----

TEST_CASE("health: state names") {
  CHECK(std::string_view(to_string(S::kPending)) == "pending");
  CHECK(std::string_view(to_string(S::kHealthy)) == "healthy");
  CHECK(std::string_view(to_string(S::kUnhealthy)) == "unhealthy");
}

TEST_CASE("health: the default expected statuses are 200 to 399 inclusive") {
  HealthCheckConfig c;
  CHECK_FALSE(status_expected(c, 199));
  CHECK(status_expected(c, 200));
  CHECK(status_expected(c, 302));
  CHECK(status_expected(c, 399));
  CHECK_FALSE(status_expected(c, 400));
  CHECK_FALSE(status_expected(c, 503));
}

TEST_CASE("health: a status is expected when any range holds it") {
  HealthCheckConfig c;
  c.expected_statuses = {StatusRange{204, 204}, StatusRange{500, 503}};
  CHECK(status_expected(c, 204));
  CHECK_FALSE(status_expected(c, 200));
  CHECK_FALSE(status_expected(c, 205));
  CHECK_FALSE(status_expected(c, 499));
  CHECK(status_expected(c, 500));
  CHECK(status_expected(c, 503));
  CHECK_FALSE(status_expected(c, 504));
}

TEST_CASE("health: no expected ranges accept nothing") {
  HealthCheckConfig c;
  c.expected_statuses.clear();
  CHECK_FALSE(status_expected(c, 200));
}

// ---- states ----

TEST_CASE("health: starts pending and routable") {
  auto c = test_config();
  EndpointHealth h(c);
  CHECK(h.state() == S::kPending);
  CHECK(h.routable());
  CHECK(h.consecutive_successes() == 0);
  CHECK(h.consecutive_failures() == 0);
}

TEST_CASE("health: the first success decides healthy at once") {
  auto c = test_config();
  EndpointHealth h(c);
  CHECK(h.on_result(true));
  CHECK(h.state() == S::kHealthy);
  CHECK(h.routable());
  CHECK(h.consecutive_successes() == 1);
}

TEST_CASE("health: the first failure decides unhealthy at once") {
  auto c = test_config();
  EndpointHealth h(c);
  CHECK(h.on_result(false));
  CHECK(h.state() == S::kUnhealthy);
  CHECK_FALSE(h.routable());
  CHECK(h.consecutive_failures() == 1);
}

TEST_CASE("health: healthy turns unhealthy exactly at unhealthy_threshold failures") {
  auto c = test_config();  // 3
  EndpointHealth h(c);
  REQUIRE(h.on_result(true));
  CHECK_FALSE(h.on_result(false));
  CHECK_FALSE(h.on_result(false));
  CHECK(h.state() == S::kHealthy);
  CHECK(h.routable());
  CHECK(h.consecutive_failures() == 2);
  CHECK(h.on_result(false));
  CHECK(h.state() == S::kUnhealthy);
  CHECK_FALSE(h.routable());
  CHECK(h.consecutive_failures() == 3);
  // More failures change nothing.
  CHECK_FALSE(h.on_result(false));
  CHECK(h.state() == S::kUnhealthy);
  CHECK(h.consecutive_failures() == 4);
}

TEST_CASE("health: unhealthy turns healthy exactly at healthy_threshold successes") {
  auto c = test_config();  // 2
  EndpointHealth h(c);
  REQUIRE(h.on_result(false));
  CHECK_FALSE(h.on_result(true));
  CHECK(h.state() == S::kUnhealthy);
  CHECK(h.consecutive_successes() == 1);
  CHECK(h.on_result(true));
  CHECK(h.state() == S::kHealthy);
  CHECK(h.consecutive_successes() == 2);
  CHECK_FALSE(h.on_result(true));
  CHECK(h.state() == S::kHealthy);
}

TEST_CASE("health: a success resets the failure run") {
  auto c = test_config();
  EndpointHealth h(c);
  REQUIRE(h.on_result(true));
  record(h, false, 2);
  CHECK_FALSE(h.on_result(true));
  CHECK(h.consecutive_failures() == 0);
  CHECK(h.consecutive_successes() == 1);
  record(h, false, 2);  // a new run of 2 is not 3
  CHECK(h.state() == S::kHealthy);
  CHECK(h.on_result(false));
  CHECK(h.state() == S::kUnhealthy);
}

TEST_CASE("health: a failure resets the success run") {
  auto c = test_config();
  c.healthy_threshold = 3;
  EndpointHealth h(c);
  REQUIRE(h.on_result(false));
  record(h, true, 2);
  CHECK_FALSE(h.on_result(false));
  CHECK(h.consecutive_successes() == 0);
  CHECK(h.consecutive_failures() == 1);
  record(h, true, 2);
  CHECK(h.state() == S::kUnhealthy);
  CHECK(h.on_result(true));
  CHECK(h.state() == S::kHealthy);
}

TEST_CASE("health: thresholds of 1 flip on every change of result") {
  auto c = test_config();
  c.healthy_threshold = 1;
  c.unhealthy_threshold = 1;
  EndpointHealth h(c);
  CHECK(h.on_result(true));
  CHECK(h.on_result(false));
  CHECK(h.state() == S::kUnhealthy);
  CHECK(h.on_result(true));
  CHECK(h.state() == S::kHealthy);
  CHECK_FALSE(h.on_result(true));
}

TEST_CASE("health: a pending endpoint is decided by its first result, whatever the thresholds") {
  auto c = test_config();
  c.healthy_threshold = 10;
  c.unhealthy_threshold = 10;
  EndpointHealth a(c);
  CHECK(a.on_result(true));
  CHECK(a.state() == S::kHealthy);
  EndpointHealth b(c);
  CHECK(b.on_result(false));
  CHECK(b.state() == S::kUnhealthy);
  // After that the thresholds hold.
  record(b, true, 9);
  CHECK(b.state() == S::kUnhealthy);
  CHECK(b.on_result(true));
  CHECK(b.state() == S::kHealthy);
}

TEST_CASE("health: a full cycle healthy, unhealthy, healthy reports each change once") {
  auto c = test_config();
  EndpointHealth h(c);
  int changes = 0;
  auto feed = [&](bool success, int n) {
    for (int i = 0; i < n; ++i) changes += h.on_result(success) ? 1 : 0;
  };
  feed(true, 5);
  CHECK(changes == 1);
  feed(false, 5);
  CHECK(changes == 2);
  feed(true, 5);
  CHECK(changes == 3);
  CHECK(h.state() == S::kHealthy);
}

// ---- next_delay ----

TEST_CASE("health: next_delay with no jitter is exactly the interval") {
  auto c = test_config();
  c.interval_jitter_percent = 0;
  EndpointHealth h(c);
  for (uint64_t r : {uint64_t{0}, uint64_t{1}, kHalfRandom, kMaxRandom - 1, kMaxRandom}) {
    CAPTURE(r);
    CHECK(h.next_delay(r) == 5'000'000);
  }
}

TEST_CASE("health: next_delay jitter bounds are reached by the extreme randoms") {
  auto c = test_config();  // 5 s ± 10%
  EndpointHealth h(c);
  CHECK(h.next_delay(0) == 4'500'000);
  CHECK(h.next_delay(kMaxRandom) == 5'500'000);
  const Micros mid = h.next_delay(kHalfRandom);
  CHECK(mid >= 4'999'999);
  CHECK(mid <= 5'000'001);
}

TEST_CASE("health: next_delay stays within the jitter bounds and spreads over them") {
  auto c = test_config();
  c.interval = 1s;
  c.interval_jitter_percent = 25;  // 750 ms .. 1250 ms
  EndpointHealth h(c);
  Randoms rng;
  Micros lo = std::numeric_limits<Micros>::max();
  Micros hi = 0;
  double sum = 0;
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) {
    const Micros d = h.next_delay(rng.next());
    REQUIRE(d >= 750'000);
    REQUIRE(d <= 1'250'000);
    lo = std::min(lo, d);
    hi = std::max(hi, d);
    sum += static_cast<double>(d);
  }
  CHECK(lo < 760'000);
  CHECK(hi > 1'240'000);
  CHECK(sum / kDraws > 990'000);
  CHECK(sum / kDraws < 1'010'000);
}

TEST_CASE("health: next_delay uses unhealthy_interval only while unhealthy and when set") {
  auto c = test_config();
  c.interval_jitter_percent = 0;
  c.unhealthy_interval = 1s;
  EndpointHealth h(c);
  CHECK(h.next_delay(kHalfRandom) == 5'000'000);  // pending
  REQUIRE(h.on_result(true));
  CHECK(h.next_delay(kHalfRandom) == 5'000'000);  // healthy
  record(h, false, 3);
  REQUIRE(h.state() == S::kUnhealthy);
  CHECK(h.next_delay(kHalfRandom) == 1'000'000);  // unhealthy
  record(h, true, 2);
  REQUIRE(h.state() == S::kHealthy);
  CHECK(h.next_delay(kHalfRandom) == 5'000'000);  // healthy again

  c.unhealthy_interval = 0ms;  // unset: the interval, even while unhealthy
  EndpointHealth u(c);
  REQUIRE(u.on_result(false));
  CHECK(u.next_delay(kHalfRandom) == 5'000'000);
}

TEST_CASE("health: the jitter applies to unhealthy_interval too") {
  auto c = test_config();  // ±10%
  c.unhealthy_interval = 2s;
  EndpointHealth h(c);
  REQUIRE(h.on_result(false));
  CHECK(h.next_delay(0) == 1'800'000);
  CHECK(h.next_delay(kMaxRandom) == 2'200'000);
}

TEST_CASE("health: next_delay is never below 1 ms") {
  auto c = test_config();
  c.interval = 0ms;
  EndpointHealth zero(c);
  CHECK(zero.next_delay(0) == 1000);
  CHECK(zero.next_delay(kMaxRandom) == 1000);

  c.interval = 1ms;
  c.interval_jitter_percent = 100;  // 0 .. 2 ms
  EndpointHealth tiny(c);
  CHECK(tiny.next_delay(0) == 1000);
  CHECK(tiny.next_delay(kHalfRandom / 2) == 1000);  // 0.5 ms, raised to 1 ms
  CHECK(tiny.next_delay(kMaxRandom) == 2000);

  c.interval = 10s;  // 0 .. 20 s
  EndpointHealth wide(c);
  CHECK(wide.next_delay(0) == 1000);
  CHECK(wide.next_delay(kMaxRandom) == 20'000'000);
}

TEST_CASE("health: out-of-range jitter percents are clamped") {
  auto c = test_config();
  c.interval_jitter_percent = -5;
  EndpointHealth negative(c);
  CHECK(negative.next_delay(0) == 5'000'000);
  CHECK(negative.next_delay(kMaxRandom) == 5'000'000);
  c.interval_jitter_percent = 250;
  EndpointHealth over(c);
  CHECK(over.next_delay(0) == 1000);
  CHECK(over.next_delay(kMaxRandom) == 10'000'000);
}

TEST_CASE("health: next_delay does not overflow for a huge interval") {
  auto c = test_config();
  c.interval = std::chrono::milliseconds(std::numeric_limits<int64_t>::max() / 1000);
  c.interval_jitter_percent = 100;
  EndpointHealth h(c);
  CHECK(h.next_delay(0) == 1000);
  CHECK(h.next_delay(kMaxRandom) == std::numeric_limits<Micros>::max());
  const Micros mid = h.next_delay(kHalfRandom);
  CHECK(mid > 0);
  CHECK(mid <= std::numeric_limits<Micros>::max());
}

}  // namespace
}  // namespace bulwark::filters
