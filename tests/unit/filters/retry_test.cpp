#include "filters/retry.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

namespace bulwark::filters {
namespace {

using namespace std::chrono_literals;
using config::RetryBudgetConfig;
using config::RetryConfig;

constexpr uint64_t kMaxRandom = std::numeric_limits<uint64_t>::max();

// ---- RetryReason / retriable_* ----

TEST_CASE("retry: reason tokens") {
  CHECK(to_string(RetryReason::kConnectFailure) == "connect-failure");
  CHECK(to_string(RetryReason::kReset) == "reset");
  CHECK(to_string(RetryReason::kGatewayError) == "gateway-error");
  CHECK(to_string(RetryReason::k5xx) == "5xx");
  CHECK(to_string(RetryReason::kRetriableStatusCode) == "retriable-status-codes");
  CHECK(to_string(RetryReason::kPerTryTimeout) == "per-try-timeout");
}

TEST_CASE("retry: failures under the default retry_on") {
  RetryConfig c;
  RetryPolicy p(c);
  CHECK(p.retriable_failure(TryFailure::kConnectFailure) == RetryReason::kConnectFailure);
  CHECK(p.retriable_failure(TryFailure::kReset) == RetryReason::kReset);
  CHECK_FALSE(p.retriable_failure(TryFailure::kPerTryTimeout).has_value());
}

TEST_CASE("retry: each failure needs its own retry_on bit") {
  RetryConfig c;
  RetryPolicy p(c);
  c.retry_on = 0;
  CHECK_FALSE(p.retriable_failure(TryFailure::kConnectFailure).has_value());
  CHECK_FALSE(p.retriable_failure(TryFailure::kReset).has_value());
  CHECK_FALSE(p.retriable_failure(TryFailure::kPerTryTimeout).has_value());
  c.retry_on = config::kRetryOnPerTryTimeout;
  CHECK(p.retriable_failure(TryFailure::kPerTryTimeout) == RetryReason::kPerTryTimeout);
  CHECK_FALSE(p.retriable_failure(TryFailure::kConnectFailure).has_value());
  c.retry_on =
      config::kRetryOn5xx | config::kRetryOnGatewayError | config::kRetryOnRetriableStatusCodes;
  CHECK_FALSE(p.retriable_failure(TryFailure::kConnectFailure).has_value());
  CHECK_FALSE(p.retriable_failure(TryFailure::kReset).has_value());
  CHECK_FALSE(p.retriable_failure(TryFailure::kPerTryTimeout).has_value());
}

TEST_CASE("retry: gateway-error covers 502 503 504 only") {
  RetryConfig c;
  c.retry_on = config::kRetryOnGatewayError;
  RetryPolicy p(c);
  CHECK(p.retriable_status(502) == RetryReason::kGatewayError);
  CHECK(p.retriable_status(503) == RetryReason::kGatewayError);
  CHECK(p.retriable_status(504) == RetryReason::kGatewayError);
  for (int s : {200, 404, 499, 500, 501, 505, 599}) {
    CAPTURE(s);
    CHECK_FALSE(p.retriable_status(s).has_value());
  }
}

TEST_CASE("retry: 5xx covers 500..599 and yields to gateway-error") {
  RetryConfig c;
  c.retry_on = config::kRetryOn5xx;
  RetryPolicy p(c);
  for (int s : {500, 501, 502, 503, 504, 599}) {
    CAPTURE(s);
    CHECK(p.retriable_status(s) == RetryReason::k5xx);
  }
  for (int s : {200, 429, 499, 600}) {
    CAPTURE(s);
    CHECK_FALSE(p.retriable_status(s).has_value());
  }
  c.retry_on |= config::kRetryOnGatewayError;
  CHECK(p.retriable_status(503) == RetryReason::kGatewayError);
  CHECK(p.retriable_status(500) == RetryReason::k5xx);
}

TEST_CASE("retry: listed status codes need retriable-status-codes") {
  RetryConfig c;
  c.retry_on = 0;
  c.retriable_status_codes = {409, 429, 500};
  RetryPolicy p(c);
  CHECK_FALSE(p.retriable_status(409).has_value());
  c.retry_on = config::kRetryOnRetriableStatusCodes;
  CHECK(p.retriable_status(409) == RetryReason::kRetriableStatusCode);
  CHECK(p.retriable_status(429) == RetryReason::kRetriableStatusCode);
  CHECK(p.retriable_status(500) == RetryReason::kRetriableStatusCode);
  CHECK_FALSE(p.retriable_status(503).has_value());
  CHECK_FALSE(p.retriable_status(200).has_value());
  c.retry_on |= config::kRetryOn5xx;
  CHECK(p.retriable_status(500) == RetryReason::k5xx);
  CHECK(p.retriable_status(429) == RetryReason::kRetriableStatusCode);
}

// ---- Idempotency ----

TEST_CASE("retry: idempotent methods are exactly the RFC 9110 ones and case-sensitive") {
  for (const char* m : {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}) {
    CAPTURE(m);
    CHECK(RetryPolicy::is_idempotent(m));
  }
  for (const char* m :
       {"POST", "PATCH", "CONNECT", "get", "Get", "put", "", "GET ", "GETS", "PROPFIND"}) {
    CAPTURE(m);
    CHECK_FALSE(RetryPolicy::is_idempotent(m));
  }
}

TEST_CASE("retry: may_resend an idempotent method or with an idempotency key or when allowed") {
  RetryConfig c;
  RetryPolicy p(c);
  CHECK(p.may_resend("GET", false));
  CHECK(p.may_resend("DELETE", false));
  CHECK_FALSE(p.may_resend("POST", false));
  CHECK_FALSE(p.may_resend("PATCH", false));
  CHECK(p.may_resend("POST", true));
  c.retry_non_idempotent = true;
  CHECK(p.may_resend("POST", false));
  CHECK(p.may_resend("PATCH", false));
}

// ---- Backoff ----

TEST_CASE("retry: backoff ceiling doubles from base and stops at max") {
  RetryConfig c;  // 25 ms .. 250 ms
  RetryPolicy p(c);
  CHECK(p.backoff(1, kMaxRandom) == 25'000);
  CHECK(p.backoff(2, kMaxRandom) == 50'000);
  CHECK(p.backoff(3, kMaxRandom) == 100'000);
  CHECK(p.backoff(4, kMaxRandom) == 200'000);
  CHECK(p.backoff(5, kMaxRandom) == 250'000);
  CHECK(p.backoff(6, kMaxRandom) == 250'000);
  for (uint32_t r : {1u, 2u, 5u, 100u}) {
    CAPTURE(r);
    CHECK(p.backoff(r, 0) == 0);
  }
}

TEST_CASE("retry: backoff never overflows for huge retry numbers") {
  RetryConfig c;
  RetryPolicy p(c);
  for (uint32_t r :
       {31u, 32u, 33u, 62u, 63u, 64u, 65u, 1000u, std::numeric_limits<uint32_t>::max()}) {
    CAPTURE(r);
    CHECK(p.backoff(r, kMaxRandom) == 250'000);
    CHECK(p.backoff(r, 0) == 0);
    Micros mid = p.backoff(r, kMaxRandom / 2);
    CHECK(mid >= 124'999);
    CHECK(mid <= 125'001);
  }
}

TEST_CASE("retry: backoff is exact up to a very large max") {
  RetryConfig c;
  c.backoff_base = 1ms;
  c.backoff_max = std::chrono::milliseconds(int64_t{1} << 40);  // 1000 × 2^40 µs
  RetryPolicy p(c);
  CHECK(p.backoff(41, kMaxRandom) == to_micros(c.backoff_max));  // exactly at the cap
  CHECK(p.backoff(40, kMaxRandom) == to_micros(c.backoff_max) / 2);
  CHECK(p.backoff(42, kMaxRandom) == to_micros(c.backoff_max));
  CHECK(p.backoff(63, kMaxRandom) == to_micros(c.backoff_max));
}

TEST_CASE("retry: backoff retry 0 is treated as the first retry") {
  RetryConfig c;
  RetryPolicy p(c);
  CHECK(p.backoff(0, kMaxRandom) == 25'000);
}

TEST_CASE("retry: backoff with base equal to max or above it stays at max") {
  RetryConfig c;
  c.backoff_base = 100ms;
  c.backoff_max = 100ms;
  RetryPolicy p(c);
  CHECK(p.backoff(1, kMaxRandom) == 100'000);
  CHECK(p.backoff(7, kMaxRandom) == 100'000);
  c.backoff_base = 300ms;  // invalid config, but still bounded by max
  CHECK(p.backoff(1, kMaxRandom) == 100'000);
}

TEST_CASE("retry: backoff is uniform over the whole range and monotonic in the random") {
  RetryConfig c;
  c.backoff_base = 1ms;
  c.backoff_max = 1ms;  // ceiling 1000 µs: 1001 possible values
  RetryPolicy p(c);
  std::vector<int> hits(1001, 0);
  Micros prev = -1;
  constexpr int kSamples = 1 << 16;
  for (uint64_t i = 0; i < kSamples; ++i) {
    uint64_t random = i << 48 | (i * 0x9E3779B97F4A7C15ull >> 16);  // spread over the range
    Micros b = p.backoff(1, random);
    REQUIRE(b >= 0);
    REQUIRE(b <= 1000);
    CHECK(b >= prev);
    prev = b;
    ++hits[static_cast<size_t>(b)];
  }
  // Every value is reached, each about kSamples / 1001 ≈ 65 times.
  for (size_t v = 0; v < hits.size(); ++v) {
    CAPTURE(v);
    CHECK(hits[v] >= 64);
    CHECK(hits[v] <= 66);
  }
}

// ---- RetryBudget ----

// ---- decide(): the whole rule, attempts included ----

// A request whose first try failed with a connect failure, kept whole, nothing sent yet.
RetryAsk failed_first_try() {
  RetryAsk ask;
  ask.reason = RetryReason::kConnectFailure;
  ask.tries = 1;
  ask.request_at_hand = true;
  return ask;
}

// A budget with one retry in it (the minimum: 1 per second over a 1 s window).
struct OneRetryBudget {
  OneRetryBudget() {
    config.ratio = 0;
    config.min_retries_per_second = 1;
    config.window = 1s;
  }
  FakeClock clock;
  RetryBudgetConfig config;
  RetryBudget budget{config, clock};
};

TEST_CASE("retry decide: a covered failure with attempts, request and budget left goes again") {
  RetryConfig c;  // attempts 2, backoff 25 ms base
  RetryPolicy p(c);
  OneRetryBudget b;
  const RetryDecision d = p.decide(failed_first_try(), b.budget, kMaxRandom);
  CHECK(d.verdict == RetryVerdict::kRetry);
  CHECK(d.reason == RetryReason::kConnectFailure);
  CHECK(d.backoff == p.backoff(1, kMaxRandom));
  CHECK(b.budget.remaining() == 0);  // spent
}

TEST_CASE("retry decide: each no names its cause and spends nothing from the budget") {
  RetryConfig c;
  c.attempts = 3;
  RetryPolicy p(c);
  OneRetryBudget b;

  RetryAsk ask = failed_first_try();
  ask.reason.reset();
  CHECK(p.decide(ask, b.budget, 0).verdict == RetryVerdict::kNotRetriable);

  ask = failed_first_try();
  ask.response_sent = true;  // the client has a response already: nothing can be taken back
  CHECK(p.decide(ask, b.budget, 0).verdict == RetryVerdict::kNotRetriable);

  ask = failed_first_try();
  ask.tries = 3;
  CHECK(p.decide(ask, b.budget, 0).verdict == RetryVerdict::kAttemptsExhausted);

  ask = failed_first_try();
  ask.request_at_hand = false;  // a body too large to keep streamed
  CHECK(p.decide(ask, b.budget, 0).verdict == RetryVerdict::kCannotResend);

  ask = failed_first_try();
  ask.request_bytes_sent = true;  // a POST whose bytes went out
  CHECK(p.decide(ask, b.budget, 0).verdict == RetryVerdict::kCannotResend);
  ask.may_resend = true;  // ... unless it may go again (idempotent, a key, or allowed)
  CHECK(p.decide(ask, b.budget, 0).verdict == RetryVerdict::kRetry);
  CHECK(b.budget.remaining() == 0);

  ask = failed_first_try();
  CHECK(p.decide(ask, b.budget, 0).verdict == RetryVerdict::kBudgetExhausted);
}

TEST_CASE("retry decide: attempts 1 never retries, and the last attempt is the limit") {
  RetryConfig c;
  c.attempts = 1;
  OneRetryBudget b;
  CHECK(RetryPolicy(c).decide(failed_first_try(), b.budget, 0).verdict ==
        RetryVerdict::kAttemptsExhausted);
  c.attempts = 2;
  RetryAsk ask = failed_first_try();
  ask.tries = 2;
  CHECK(RetryPolicy(c).decide(ask, b.budget, 0).verdict == RetryVerdict::kAttemptsExhausted);
  CHECK(b.budget.remaining() == 1);
}

TEST_CASE("retry decide: a backoff that would end at or after the route's deadline is a no") {
  RetryConfig c;
  c.backoff_base = 100ms;
  c.backoff_max = 100ms;
  RetryPolicy p(c);
  OneRetryBudget b;
  RetryAsk ask = failed_first_try();
  // The largest random gives the whole 100 ms.
  ask.until_deadline = 100'000;
  CHECK(p.decide(ask, b.budget, kMaxRandom).verdict == RetryVerdict::kPastDeadline);
  ask.until_deadline = 0;  // the deadline is now: even no wait is too late
  CHECK(p.decide(ask, b.budget, 0).verdict == RetryVerdict::kPastDeadline);
  CHECK(b.budget.remaining() == 1);
  ask.until_deadline = 100'001;
  CHECK(p.decide(ask, b.budget, kMaxRandom).verdict == RetryVerdict::kRetry);
  ask.until_deadline = -1;  // no deadline
  OneRetryBudget b2;
  CHECK(p.decide(ask, b2.budget, kMaxRandom).verdict == RetryVerdict::kRetry);
}

TEST_CASE("retry budget: ratio of the original requests") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.ratio = 0.2;
  c.min_retries_per_second = 1;
  c.window = 10s;  // floor: 10
  RetryBudget b(c, clock);
  for (int i = 0; i < 100; ++i) b.on_request();
  CHECK(b.remaining() == 20);
  for (int i = 0; i < 20; ++i) {
    CAPTURE(i);
    CHECK(b.try_spend());
  }
  CHECK(b.remaining() == 0);
  CHECK_FALSE(b.try_spend());
  CHECK_FALSE(b.try_spend());
  CHECK(b.remaining() == 0);
  for (int i = 0; i < 5; ++i) b.on_request();  // 105 × 0.2 = 21
  CHECK(b.remaining() == 1);
  CHECK(b.try_spend());
  CHECK_FALSE(b.try_spend());
}

TEST_CASE("retry budget: the minimum applies to a quiet route") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.ratio = 0.2;
  c.min_retries_per_second = 10;
  c.window = 500ms;  // 10/s × 0.5 s = 5
  RetryBudget b(c, clock);
  CHECK(b.remaining() == 5);
  for (int i = 0; i < 5; ++i) CHECK(b.try_spend());
  CHECK_FALSE(b.try_spend());
  for (int i = 0; i < 25; ++i) b.on_request();  // ratio gives 5: still the minimum
  CHECK_FALSE(b.try_spend());
  b.on_request();  // 26 × 0.2 = 5.2 -> 5
  CHECK_FALSE(b.try_spend());
  for (int i = 0; i < 4; ++i) b.on_request();  // 30 × 0.2 = 6
  CHECK(b.try_spend());
  CHECK_FALSE(b.try_spend());
}

TEST_CASE("retry budget: a fractional minimum rounds down") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.ratio = 0;
  c.min_retries_per_second = 1;
  c.window = 1500ms;  // 1.5 -> 1
  RetryBudget b(c, clock);
  CHECK(b.remaining() == 1);
  c.min_retries_per_second = 3;  // 4.5 -> 4
  CHECK(b.remaining() == 4);
}

TEST_CASE("retry budget: ratio arithmetic is not fooled by binary fractions") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.ratio = 0.29;  // 0.29 × 100 is 28.999999999999996 in doubles
  c.min_retries_per_second = 0;
  RetryBudget b(c, clock);
  for (int i = 0; i < 100; ++i) b.on_request();
  CHECK(b.remaining() == 29);
  c.ratio = 1;
  CHECK(b.remaining() == 100);
}

TEST_CASE("retry budget: zero ratio and zero minimum allow no retry") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.ratio = 0;
  c.min_retries_per_second = 0;
  RetryBudget b(c, clock);
  for (int i = 0; i < 1000; ++i) b.on_request();
  CHECK(b.remaining() == 0);
  CHECK_FALSE(b.try_spend());
}

TEST_CASE("retry budget: requests and retries expire with the window") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.ratio = 0.5;
  c.min_retries_per_second = 0;
  c.window = 1s;
  RetryBudget b(c, clock);
  for (int i = 0; i < 10; ++i) b.on_request();
  for (int i = 0; i < 5; ++i) CHECK(b.try_spend());
  CHECK_FALSE(b.try_spend());

  clock.advance(500ms);  // still in the window
  CHECK(b.remaining() == 0);
  for (int i = 0; i < 4; ++i) b.on_request();  // 14 × 0.5 = 7
  CHECK(b.remaining() == 2);

  clock.advance(500ms);  // the first 10 requests and 5 retries leave: 4 × 0.5 = 2
  CHECK(b.remaining() == 2);
  CHECK(b.try_spend());
  CHECK(b.try_spend());
  CHECK_FALSE(b.try_spend());

  clock.advance(1s);  // everything left
  CHECK(b.remaining() == 0);
  b.on_request();
  b.on_request();
  CHECK(b.remaining() == 1);
}

TEST_CASE("retry budget: the minimum refills after the window") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.ratio = 0.2;
  c.min_retries_per_second = 10;
  c.window = 1s;
  RetryBudget b(c, clock);
  for (int i = 0; i < 10; ++i) CHECK(b.try_spend());
  CHECK_FALSE(b.try_spend());
  clock.advance(999ms);
  CHECK_FALSE(b.try_spend());
  clock.advance(1ms);
  CHECK(b.remaining() == 10);
  CHECK(b.try_spend());
}

TEST_CASE("retry budget: disabled always allows and counts nothing") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.enabled = false;
  c.ratio = 0;
  c.min_retries_per_second = 0;
  RetryBudget b(c, clock);
  for (int i = 0; i < 10000; ++i) REQUIRE(b.try_spend());
  b.on_request();
  CHECK(b.remaining() == std::numeric_limits<uint64_t>::max());
}

TEST_CASE("retry budget: concurrent spenders stay near the limit") {
  FakeClock clock;
  RetryBudgetConfig c;
  c.ratio = 0.1;
  c.min_retries_per_second = 0;
  c.window = 10s;
  RetryBudget b(c, clock);
  for (int i = 0; i < 1000; ++i) b.on_request();  // 100 retries
  constexpr int kThreads = 8;
  std::atomic<int> spent{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        if (b.try_spend()) spent.fetch_add(1);
        b.on_request();
      }
    });
  }
  for (auto& th : threads) th.join();
  // 1800 requests allow 180; racing spenders may each take one more at the boundary.
  CHECK(spent.load() >= 179);  // the last try saw at least 1792 requests
  CHECK(spent.load() <= 180 + kThreads);
}

}  // namespace
}  // namespace bulwark::filters
