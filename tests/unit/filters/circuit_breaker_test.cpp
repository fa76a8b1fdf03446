#include "filters/circuit_breaker.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

namespace bulwark::filters {
namespace {

using namespace std::chrono_literals;
using config::CircuitBreakerConfig;
using S = CircuitState;

constexpr Micros kFast = 1000;  // 1 ms: never slow

CircuitBreakerConfig test_config() {
  CircuitBreakerConfig c;
  c.failure_rate_percent = 50;
  c.slow_call_duration = 2s;
  c.slow_call_rate_percent = 100;
  c.window = 10s;
  c.minimum_calls = 4;
  c.open_duration = 1s;
  c.max_open_duration = 5s;
  c.half_open_calls = 3;
  return c;
}

void call(CircuitBreaker& cb, CallOutcome outcome, Micros duration = kFast) {
  CircuitBreaker::Permit p = cb.try_acquire();
  REQUIRE(p);
  p.record(outcome, duration);
}
void succeed(CircuitBreaker& cb, int n = 1) {
  for (int i = 0; i < n; ++i) call(cb, CallOutcome::kSuccess);
}
void fail(CircuitBreaker& cb, int n = 1) {
  for (int i = 0; i < n; ++i) call(cb, CallOutcome::kFailure);
}

// Trips a closed breaker with minimum_calls failures.
void trip(CircuitBreaker& cb, const CircuitBreakerConfig& c) {
  REQUIRE(cb.state() == S::kClosed);
  fail(cb, static_cast<int>(c.minimum_calls));
  REQUIRE(cb.state() == S::kOpen);
}

// Takes every probe of a half-open breaker (the clock must be past the open time).
std::vector<CircuitBreaker::Permit> take_probes(CircuitBreaker& cb, uint32_t n) {
  std::vector<CircuitBreaker::Permit> probes;
  for (uint32_t i = 0; i < n; ++i) {
    probes.push_back(cb.try_acquire());
    REQUIRE(probes.back());
  }
  CHECK(cb.state() == S::kHalfOpen);
  return probes;
}

struct HookLog {
  std::vector<std::pair<S, S>> calls;
  void attach(CircuitBreaker& cb) {
    cb.set_transition_hook([this](S from, S to) { calls.emplace_back(from, to); });
  }
};

TEST_CASE("circuit breaker: state names") {
  CHECK(std::string_view(to_string(S::kClosed)) == "closed");
  CHECK(std::string_view(to_string(S::kOpen)) == "open");
  CHECK(std::string_view(to_string(S::kHalfOpen)) == "half_open");
}

TEST_CASE("circuit breaker: starts closed and successes never trip it") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  CHECK(cb.state() == S::kClosed);
  CHECK(cb.open_duration() == 1'000'000);
  succeed(cb, 1000);
  CHECK(cb.state() == S::kClosed);
  CHECK(cb.transitions(S::kOpen) == 0);
  CHECK(cb.transitions(S::kHalfOpen) == 0);
  CHECK(cb.transitions(S::kClosed) == 0);
}

TEST_CASE("circuit breaker: no trip below minimum_calls") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  fail(cb, 3);  // 100% failures, but only 3 calls
  CHECK(cb.state() == S::kClosed);
  fail(cb);
  CHECK(cb.state() == S::kOpen);
  CHECK(cb.transitions(S::kOpen) == 1);
}

TEST_CASE("circuit breaker: trips exactly at the failure rate threshold") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  succeed(cb, 3);
  fail(cb);  // 1/4 = 25%
  CHECK(cb.state() == S::kClosed);
  fail(cb);  // 2/5 = 40%
  CHECK(cb.state() == S::kClosed);
  fail(cb);  // 3/6 = 50%: at the threshold
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: a rate just under the threshold stays closed") {
  FakeClock clock;
  auto c = test_config();
  c.failure_rate_percent = 34;
  CircuitBreaker cb(c, clock);
  succeed(cb, 2);
  fail(cb);  // 1/3 = 33.3%, and under minimum_calls anyway
  succeed(cb, 3);
  fail(cb);  // 2/7 = 28.6%
  CHECK(cb.state() == S::kClosed);
  succeed(cb, 1);
  fail(cb);  // 3/9 = 33.3% < 34%
  CHECK(cb.state() == S::kClosed);
  fail(cb);  // 4/10 = 40%
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: only failures and slow calls evaluate the thresholds") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  fail(cb, 2);     // 2 calls: under minimum_calls
  succeed(cb, 2);  // 2/4 = 50%, but a success does not evaluate
  CHECK(cb.state() == S::kClosed);
  fail(cb);  // 3/5 = 60%
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: failures older than the window do not count") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  fail(cb, 3);
  clock.advance(10s);  // the window
  fail(cb, 3);
  CHECK(cb.state() == S::kClosed);
  clock.advance(5s);  // the second three are still in the window
  fail(cb);
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: slow calls trip it at the slow-call rate") {
  FakeClock clock;
  auto c = test_config();
  c.slow_call_rate_percent = 50;
  CircuitBreaker cb(c, clock);
  const Micros slow = to_micros(c.slow_call_duration) + 1;
  const Micros limit = to_micros(c.slow_call_duration);
  call(cb, CallOutcome::kSuccess, limit);  // exactly the limit is not slow
  call(cb, CallOutcome::kSuccess, limit);
  call(cb, CallOutcome::kSuccess, slow);  // 1/3 slow, under minimum_calls
  CHECK(cb.state() == S::kClosed);
  call(cb, CallOutcome::kSuccess, slow);  // 2/4 = 50% slow
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: a slow failure counts as both") {
  FakeClock clock;
  auto c = test_config();
  c.failure_rate_percent = 100;
  c.slow_call_rate_percent = 100;
  CircuitBreaker cb(c, clock);
  const Micros slow = to_micros(c.slow_call_duration) + 1;
  call(cb, CallOutcome::kFailure, slow);
  call(cb, CallOutcome::kSuccess, slow);
  call(cb, CallOutcome::kFailure, kFast);
  CHECK(cb.state() == S::kClosed);
  call(cb, CallOutcome::kFailure, slow);  // failures 3/4, slow 3/4
  CHECK(cb.state() == S::kClosed);
  call(cb, CallOutcome::kSuccess, slow);  // slow 4/5
  CHECK(cb.state() == S::kClosed);
  c.slow_call_rate_percent = 80;
  call(cb, CallOutcome::kSuccess, slow);  // slow 5/6 >= 80%
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE(
    "circuit breaker: open refuses until open_duration passed and state reads half-open lazily") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  CHECK_FALSE(cb.try_acquire());
  clock.advance(999'999);
  CHECK(cb.state() == S::kOpen);
  CHECK_FALSE(cb.try_acquire());
  clock.advance(1);
  CHECK(cb.state() == S::kHalfOpen);  // lazily: nothing moved yet
  CHECK(cb.transitions(S::kHalfOpen) == 0);
  CircuitBreaker::Permit p = cb.try_acquire();
  CHECK(p);
  CHECK(cb.transitions(S::kHalfOpen) == 1);
  CHECK(cb.state() == S::kHalfOpen);
}

TEST_CASE("circuit breaker: half-open hands out exactly half_open_calls probes") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  clock.advance(1s);
  auto probes = take_probes(cb, 3);
  CHECK_FALSE(cb.try_acquire());
  CHECK_FALSE(cb.try_acquire());
  CHECK(cb.transitions(S::kHalfOpen) == 1);
}

TEST_CASE("circuit breaker: successful probes close it and reset the window") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  fail(cb, 3);
  succeed(cb, 1);
  fail(cb);  // 4/5
  REQUIRE(cb.state() == S::kOpen);
  clock.advance(1s);
  auto probes = take_probes(cb, 3);
  probes[0].record(CallOutcome::kSuccess, kFast);
  probes[1].record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kHalfOpen);  // not all reported yet
  CHECK_FALSE(cb.try_acquire());
  probes[2].record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kClosed);
  CHECK(cb.transitions(S::kClosed) == 1);
  CHECK(cb.open_duration() == 1'000'000);
  // The failures from before are forgotten: three more do not reach minimum_calls.
  fail(cb, 3);
  CHECK(cb.state() == S::kClosed);
  fail(cb);
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: probe rates under the thresholds close it") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  clock.advance(1s);
  auto probes = take_probes(cb, 3);
  probes[0].record(CallOutcome::kFailure, kFast);  // 1/3 = 33% < 50%
  probes[1].record(CallOutcome::kSuccess, kFast);
  probes[2].record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kClosed);
}

TEST_CASE("circuit breaker: probe failure rate at the threshold re-opens it") {
  FakeClock clock;
  auto c = test_config();
  c.half_open_calls = 4;
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  clock.advance(1s);
  auto probes = take_probes(cb, 4);
  probes[0].record(CallOutcome::kFailure, kFast);  // 2/4 = 50%
  probes[1].record(CallOutcome::kSuccess, kFast);
  probes[2].record(CallOutcome::kFailure, kFast);
  probes[3].record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kOpen);
  CHECK(cb.open_duration() == 2'000'000);
}

TEST_CASE("circuit breaker: slow probes re-open it") {
  FakeClock clock;
  auto c = test_config();
  c.slow_call_rate_percent = 50;
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  clock.advance(1s);
  auto probes = take_probes(cb, 3);
  const Micros slow = to_micros(c.slow_call_duration) + 1;
  probes[0].record(CallOutcome::kSuccess, slow);
  probes[1].record(CallOutcome::kSuccess, slow);  // 2/3 slow
  probes[2].record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: each failed half-open doubles the open time up to the max") {
  FakeClock clock;
  auto c = test_config();  // 1 s, max 5 s
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  clock.advance(1s);
  for (Micros expected : {2'000'000, 4'000'000, 5'000'000, 5'000'000}) {
    CAPTURE(expected);
    auto probes = take_probes(cb, 3);
    for (auto& p : probes) p.record(CallOutcome::kFailure, kFast);
    CHECK(cb.state() == S::kOpen);
    CHECK(cb.open_duration() == expected);
    clock.advance(expected - 1);
    CHECK(cb.state() == S::kOpen);
    CHECK_FALSE(cb.try_acquire());
    clock.advance(1);
    CHECK(cb.state() == S::kHalfOpen);
  }
  auto probes = take_probes(cb, 3);
  for (auto& p : probes) p.record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kClosed);
  CHECK(cb.open_duration() == 1'000'000);
  trip(cb, c);  // the next open period is the configured one again
  clock.advance(999'999);
  CHECK(cb.state() == S::kOpen);
  clock.advance(1);
  CHECK(cb.state() == S::kHalfOpen);
}

TEST_CASE("circuit breaker: doubling an odd max caps at the max") {
  FakeClock clock;
  auto c = test_config();
  c.open_duration = 3s;
  c.max_open_duration = 7s;
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  for (Micros expected : {6'000'000, 7'000'000, 7'000'000}) {
    clock.advance(cb.open_duration());
    auto probes = take_probes(cb, 3);
    for (auto& p : probes) p.record(CallOutcome::kFailure, kFast);
    CHECK(cb.open_duration() == expected);
  }
}

TEST_CASE("circuit breaker: a dropped probe goes back to the pool") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  clock.advance(1s);
  auto probes = take_probes(cb, 3);
  CHECK_FALSE(cb.try_acquire());
  probes.pop_back();  // dropped unrecorded
  CircuitBreaker::Permit again = cb.try_acquire();
  CHECK(again);
  CHECK_FALSE(cb.try_acquire());
  again.reset();  // given back explicitly
  CHECK_FALSE(again);
  again.reset();  // twice is harmless
  again = cb.try_acquire();
  CHECK(again);
  // A recorded probe stays counted: recording and then dropping does not free a slot.
  probes[0].record(CallOutcome::kSuccess, kFast);
  CHECK_FALSE(probes[0]);
  probes[0].reset();
  CHECK_FALSE(cb.try_acquire());
  probes[1].record(CallOutcome::kSuccess, kFast);
  again.record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kClosed);
}

TEST_CASE("circuit breaker: dropped closed permits change nothing") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  for (int i = 0; i < 100; ++i) {
    CircuitBreaker::Permit p = cb.try_acquire();
    CHECK(p);
  }
  // Dropped permits are not calls: four failures alone reach minimum_calls at 100%.
  fail(cb, 3);
  CHECK(cb.state() == S::kClosed);
  fail(cb);
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: outcomes from an earlier period are ignored") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  CircuitBreaker::Permit early1 = cb.try_acquire();
  CircuitBreaker::Permit early2 = cb.try_acquire();
  CircuitBreaker::Permit early3 = cb.try_acquire();
  REQUIRE(early1);
  trip(cb, c);
  early1.record(CallOutcome::kFailure, kFast);  // while open
  CHECK_FALSE(early1);
  clock.advance(1s);
  auto probes = take_probes(cb, 3);
  early2.record(CallOutcome::kFailure, kFast);  // while half-open: not a probe
  for (auto& p : probes) p.record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kClosed);
  // Closed again, in a new generation: the last early permit still does not count.
  fail(cb, 3);
  early3.record(CallOutcome::kFailure, kFast);
  CHECK(cb.state() == S::kClosed);
  fail(cb);
  CHECK(cb.state() == S::kOpen);
}

TEST_CASE("circuit breaker: the hook sees every transition and transitions() counts them") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  HookLog log;
  log.attach(cb);
  trip(cb, c);
  clock.advance(1s);
  {
    auto probes = take_probes(cb, 3);
    for (auto& p : probes) p.record(CallOutcome::kFailure, kFast);
  }
  clock.advance(2s);
  {
    auto probes = take_probes(cb, 3);
    for (auto& p : probes) p.record(CallOutcome::kSuccess, kFast);
  }
  std::vector<std::pair<S, S>> expected = {
      {S::kClosed, S::kOpen},   {S::kOpen, S::kHalfOpen},   {S::kHalfOpen, S::kOpen},
      {S::kOpen, S::kHalfOpen}, {S::kHalfOpen, S::kClosed},
  };
  CHECK(log.calls == expected);
  CHECK(cb.transitions(S::kOpen) == 2);
  CHECK(cb.transitions(S::kHalfOpen) == 2);
  CHECK(cb.transitions(S::kClosed) == 1);
}

TEST_CASE("circuit breaker: the hook runs outside the lock") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  std::vector<S> seen;
  // Calling back into the breaker from the hook would deadlock if the lock were held.
  cb.set_transition_hook([&](S, S to) {
    seen.push_back(cb.state());
    (void)cb.open_duration();
    CHECK(cb.transitions(to) >= 1);
  });
  trip(cb, c);
  clock.advance(1s);
  auto probes = take_probes(cb, 3);
  for (auto& p : probes) p.record(CallOutcome::kSuccess, kFast);
  CHECK(seen == std::vector<S>{S::kOpen, S::kHalfOpen, S::kClosed});
}

TEST_CASE("circuit breaker: permits move") {
  FakeClock clock;
  auto c = test_config();
  CircuitBreaker cb(c, clock);
  CircuitBreaker::Permit none;
  CHECK_FALSE(none);
  none.record(CallOutcome::kFailure, kFast);  // no-op
  none.reset();

  trip(cb, c);
  clock.advance(1s);
  CircuitBreaker::Permit a = cb.try_acquire();
  CircuitBreaker::Permit b = cb.try_acquire();
  CircuitBreaker::Permit moved(std::move(a));
  CHECK(moved);
  CHECK_FALSE(a);                          // NOLINT(bugprone-use-after-move)
  a.record(CallOutcome::kFailure, kFast);  // empty: no-op
  CHECK(cb.try_acquire());                 // the third probe, dropped at once
  CircuitBreaker::Permit third = cb.try_acquire();
  CHECK(third);
  CHECK_FALSE(cb.try_acquire());

  // Move-assigning over a probe gives that probe back.
  moved = std::move(b);
  CHECK(moved);
  CHECK_FALSE(b);  // NOLINT(bugprone-use-after-move)
  CircuitBreaker::Permit fourth = cb.try_acquire();
  CHECK(fourth);
  CHECK_FALSE(cb.try_acquire());

  auto& self = moved;
  moved = std::move(self);  // self-move keeps the permit
  CHECK(moved);
  CHECK_FALSE(cb.try_acquire());

  moved.record(CallOutcome::kSuccess, kFast);
  third.record(CallOutcome::kSuccess, kFast);
  fourth.record(CallOutcome::kSuccess, kFast);
  CHECK(cb.state() == S::kClosed);
}

TEST_CASE("circuit breaker: concurrent acquirers in half-open get exactly half_open_calls probes") {
  FakeClock clock;
  auto c = test_config();
  c.half_open_calls = 5;
  CircuitBreaker cb(c, clock);
  std::atomic<int> hook_half_open{0};
  cb.set_transition_hook([&](S, S to) {
    if (to == S::kHalfOpen) hook_half_open.fetch_add(1);
  });
  trip(cb, c);
  constexpr int kThreads = 8;
  constexpr int kRounds = 20;
  for (int round = 0; round < kRounds; ++round) {
    CAPTURE(round);
    clock.advance(cb.open_duration());  // no thread runs while the clock moves
    std::atomic<bool> go{false};
    std::vector<std::vector<CircuitBreaker::Permit>> held(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        while (!go.load()) {
        }
        for (int i = 0; i < 1000; ++i) {
          CircuitBreaker::Permit p = cb.try_acquire();
          if (p) held[static_cast<size_t>(t)].push_back(std::move(p));
        }
      });
    }
    go.store(true);
    for (auto& th : threads) th.join();
    size_t granted = 0;
    for (auto& h : held) granted += h.size();
    CHECK(granted == c.half_open_calls);
    CHECK(cb.transitions(S::kHalfOpen) == static_cast<uint64_t>(round + 1));
    CHECK(hook_half_open.load() == round + 1);
    for (auto& h : held) {
      for (auto& p : h) p.record(CallOutcome::kFailure, kFast);  // re-open for the next round
    }
    REQUIRE(cb.state() == S::kOpen);
  }
}

TEST_CASE("circuit breaker: concurrent drops and acquires never lose or add probes") {
  FakeClock clock;
  auto c = test_config();
  c.half_open_calls = 3;
  CircuitBreaker cb(c, clock);
  trip(cb, c);
  clock.advance(1s);
  constexpr int kThreads = 8;
  std::atomic<int> max_held{0};
  std::atomic<int> held_now{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        CircuitBreaker::Permit p = cb.try_acquire();
        if (!p) continue;
        int h = held_now.fetch_add(1) + 1;
        int m = max_held.load();
        while (h > m && !max_held.compare_exchange_weak(m, h)) {
        }
        held_now.fetch_sub(1);
        // dropped here
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(max_held.load() <= 3);
  CHECK(max_held.load() >= 1);
  CHECK(cb.state() == S::kHalfOpen);
  auto probes = take_probes(cb, 3);  // all three came back
  CHECK_FALSE(cb.try_acquire());
}

TEST_CASE("circuit breaker: concurrent failures in closed trip it exactly once") {
  FakeClock clock;
  auto c = test_config();
  c.minimum_calls = 10;
  CircuitBreaker cb(c, clock);
  std::atomic<int> hook_open{0};
  cb.set_transition_hook([&](S from, S to) {
    if (from == S::kClosed && to == S::kOpen) hook_open.fetch_add(1);
  });
  constexpr int kThreads = 8;
  std::atomic<bool> go{false};
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      while (!go.load()) {
      }
      for (int i = 0; i < 500; ++i) {
        CircuitBreaker::Permit p = cb.try_acquire();
        if (!p) continue;
        admitted.fetch_add(1);
        p.record(i % 2 == 0 ? CallOutcome::kFailure : CallOutcome::kSuccess, kFast);
        (void)cb.state();
      }
    });
  }
  go.store(true);
  for (auto& th : threads) th.join();
  CHECK(cb.state() == S::kOpen);
  CHECK(cb.transitions(S::kOpen) == 1);
  CHECK(hook_open.load() == 1);
  CHECK(admitted.load() >= 10);
  CHECK(admitted.load() < kThreads * 500);
}

}  // namespace
}  // namespace bulwark::filters
