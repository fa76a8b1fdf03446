#include "filters/rate_limit.h"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace bulwark::filters {
namespace {

using config::RateLimitConfig;

RateLimitConfig rate(double rps, uint32_t burst) {
  RateLimitConfig c;
  c.requests_per_second = rps;
  c.burst = burst;
  return c;
}

TEST_CASE("rate limit: starts full and lets a burst through at once") {
  FakeClock clock;
  auto c = rate(10, 5);  // a token every 100 ms
  RateLimiter rl(c, clock);
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(rl.try_acquire().allowed);
  }
  auto d = rl.try_acquire();
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == 100'000);
}

TEST_CASE("rate limit: a token comes back after one interval") {
  FakeClock clock;
  auto c = rate(10, 5);
  RateLimiter rl(c, clock);
  for (int i = 0; i < 5; ++i) REQUIRE(rl.try_acquire().allowed);
  clock.advance(99'999);
  auto d = rl.try_acquire();
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == 1);
  clock.advance(1);
  CHECK(rl.try_acquire().allowed);
  d = rl.try_acquire();
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == 100'000);
  clock.advance(250'000);  // two and a half intervals: two tokens
  CHECK(rl.try_acquire().allowed);
  CHECK(rl.try_acquire().allowed);
  d = rl.try_acquire();
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == 50'000);
}

TEST_CASE("rate limit: refused requests take no token") {
  FakeClock clock;
  auto c = rate(10, 1);
  RateLimiter rl(c, clock);
  REQUIRE(rl.try_acquire().allowed);
  for (int i = 0; i < 100; ++i) CHECK(rl.try_acquire().retry_after == 100'000);
  clock.advance(100'000);
  CHECK(rl.try_acquire().allowed);
}

TEST_CASE("rate limit: the bucket never holds more than burst") {
  FakeClock clock;
  auto c = rate(10, 3);
  RateLimiter rl(c, clock);
  clock.advance(std::chrono::milliseconds(60'000));  // idle for a minute
  for (int i = 0; i < 3; ++i) CHECK(rl.try_acquire().allowed);
  CHECK_FALSE(rl.try_acquire().allowed);
}

TEST_CASE("rate limit: a steady rate at the limit always passes") {
  FakeClock clock;
  auto c = rate(100, 1);  // 10 ms
  RateLimiter rl(c, clock);
  for (int i = 0; i < 1000; ++i) {
    CAPTURE(i);
    REQUIRE(rl.try_acquire().allowed);
    clock.advance(10'000);
  }
}

TEST_CASE("rate limit: burst 1 allows one then waits a full interval") {
  FakeClock clock;
  auto c = rate(100, 1);
  RateLimiter rl(c, clock);
  CHECK(rl.try_acquire().allowed);
  auto d = rl.try_acquire();
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == 10'000);
  clock.advance(4'000);
  CHECK(rl.try_acquire().retry_after == 6'000);
}

TEST_CASE("rate limit: fractional rates") {
  FakeClock clock;
  auto c = rate(0.5, 1);  // one every 2 s
  RateLimiter rl(c, clock);
  CHECK(rl.try_acquire().allowed);
  auto d = rl.try_acquire();
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == 2'000'000);
  clock.advance(std::chrono::milliseconds(1'999));
  CHECK(rl.try_acquire().retry_after == 1'000);
  clock.advance(std::chrono::milliseconds(1));
  CHECK(rl.try_acquire().allowed);

  auto c3 = rate(3, 2);  // 333'333 µs, rounded
  RateLimiter rl3(c3, clock);
  CHECK(rl3.try_acquire().allowed);
  CHECK(rl3.try_acquire().allowed);
  CHECK(rl3.try_acquire().retry_after == 333'333);
}

TEST_CASE("rate limit: the interval is at least one microsecond") {
  FakeClock clock;
  auto c = rate(1e9, 2);
  RateLimiter rl(c, clock);
  CHECK(rl.try_acquire().allowed);
  CHECK(rl.try_acquire().allowed);
  auto d = rl.try_acquire();
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after == 1);
  clock.advance(1);
  CHECK(rl.try_acquire().allowed);
}

TEST_CASE("rate limit: extreme configurations do not overflow") {
  FakeClock clock;
  auto slow = rate(1e-30, 4'000'000'000u);
  RateLimiter rl(slow, clock);
  for (int i = 0; i < 100; ++i) CHECK(rl.try_acquire().allowed);

  auto tiny = rate(1e-30, 1);
  RateLimiter rl2(tiny, clock);
  CHECK(rl2.try_acquire().allowed);
  auto d = rl2.try_acquire();
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after > 0);
}

TEST_CASE("rate limit: concurrent callers take exactly the tokens there are") {
  FakeClock clock;
  auto c = rate(1, 50);
  RateLimiter rl(c, clock);
  constexpr int kThreads = 8;
  std::atomic<bool> go{false};
  std::atomic<int> allowed{0};
  std::atomic<int> bad_retry_after{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      while (!go.load()) {
      }
      for (int i = 0; i < 1000; ++i) {
        auto d = rl.try_acquire();
        if (d.allowed) {
          allowed.fetch_add(1);
        } else if (d.retry_after != 1'000'000) {
          bad_retry_after.fetch_add(1);
        }
      }
    });
  }
  go.store(true);
  for (auto& th : threads) th.join();
  CHECK(allowed.load() == 50);
  CHECK(bad_retry_after.load() == 0);
}

}  // namespace
}  // namespace bulwark::filters
