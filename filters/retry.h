#pragma once
// Retries: which failed tries may go again, whether the request may be re-sent, how long to
// wait first (RetryPolicy, per route, immutable), and how many retries the route may add over
// time (RetryBudget, per route, shared by all workers).
//
// For a try that failed, the proxy takes the reason from retriable_failure() or
// retriable_status() and asks decide(), which checks, in this order:
//   1. retry_on covers the failure, and no response has gone to the client;
//   2. attempts left (tries < attempts);
//   3. the whole request is at hand, and may_resend() when bytes of it already went out;
//   4. the backoff ends before the route's deadline;
//   5. the budget has a retry left (last, so a retry that would not happen spends nothing);
// and the proxy then waits the decision's backoff before the next try, on another endpoint.

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

#include "config/config.h"
#include "filters/clock.h"
#include "filters/sliding_window.h"

namespace bulwark::filters {

// How a try failed without a usable response.
enum class TryFailure : uint8_t {
  kConnectFailure,  // refused, unreachable, connect timeout
  kReset,          // the connection was lost (or the response was malformed) before a response head
  kPerTryTimeout,  // no response head within per_try_timeout
};

// Why a try was retried: the `reason` label of bulwark_retries_total.
enum class RetryReason : uint8_t {
  kConnectFailure,
  kReset,
  kGatewayError,
  k5xx,
  kRetriableStatusCode,
  kPerTryTimeout,
  kCount,
};
// "connect-failure", "reset", "gateway-error", "5xx", "retriable-status-codes", "per-try-timeout"
std::string_view to_string(RetryReason r);
// The reason word of a failure without a response (whatever retry_on says).
constexpr RetryReason retry_reason_of(TryFailure f) {
  return f == TryFailure::kConnectFailure ? RetryReason::kConnectFailure
         : f == TryFailure::kReset        ? RetryReason::kReset
                                          : RetryReason::kPerTryTimeout;
}

// What the proxy knows about a request whose try just failed (see RetryPolicy::decide).
struct RetryAsk {
  std::optional<RetryReason>
      reason;                       // retriable_failure() / retriable_status(): none = not covered
  uint32_t tries = 0;               // made so far, the failed one included
  bool response_sent = false;       // a response (head) already went to the client
  bool request_at_hand = false;     // every byte of the request is still held for re-sending
  bool request_bytes_sent = false;  // some request byte went to an upstream (any try)
  bool may_resend = false;          // may_resend() for this request
  Micros until_deadline = -1;       // time left before the route's deadline; < 0: none
};

// The answer, and why not when it is no.
enum class RetryVerdict : uint8_t {
  kRetry,
  kNotRetriable,       // retry_on does not cover it, or the client has a response already
  kAttemptsExhausted,  // every attempt was made (flag URX when attempts > 1)
  kCannotResend,       // the request is not at hand whole, or may not go again after bytes went out
  kPastDeadline,       // the backoff would end after the route's deadline
  kBudgetExhausted,    // the retry budget is spent (flag URX, count it)
};
struct RetryDecision {
  RetryVerdict verdict = RetryVerdict::kNotRetriable;
  RetryReason reason = RetryReason::kCount;  // with kRetry
  Micros backoff = 0;                        // with kRetry: wait this long first
};

class RetryBudget;

class RetryPolicy {
 public:
  explicit RetryPolicy(const config::RetryConfig& config) : config_(config) {}
  const config::RetryConfig& config() const { return config_; }

  // The retry reason when retry_on covers this failure; nothing otherwise.
  std::optional<RetryReason> retriable_failure(TryFailure f) const;
  // The retry reason when retry_on covers a response with this status; nothing otherwise.
  // A 502/503/504 is kGatewayError when "gateway-error" is on, else k5xx when "5xx" is on; a
  // listed retriable status code is kRetriableStatusCode when "retriable-status-codes" is on.
  std::optional<RetryReason> retriable_status(int status) const;

  // GET, HEAD, OPTIONS, PUT, DELETE, TRACE (RFC 9110 9.2.2). Method names are case-sensitive.
  static bool is_idempotent(std::string_view method);
  // Whether a request whose bytes (some or all) already went to an upstream may be sent again:
  // an idempotent method, an Idempotency-Key header, or retry_non_idempotent. A request that
  // never reached an upstream is always safe to send again and needs no call here.
  bool may_resend(std::string_view method, bool has_idempotency_key) const;

  // The wait before retry number `retry` (1 for the first retry): exponential backoff with full
  // jitter, uniform in [0, min(backoff_max, backoff_base × 2^(retry-1))]. `random` is uniform over
  // all uint64 values (the caller's generator). Never overflows, whatever `retry` is; retry 0 is
  // treated as 1.
  Micros backoff(uint32_t retry, uint64_t random) const;

  // Whether the failed try described by `ask` goes again (see the top of the file). Spends from
  // `budget` only when the answer is kRetry. `random` as for backoff().
  RetryDecision decide(const RetryAsk& ask, RetryBudget& budget, uint64_t random) const;

 private:
  const config::RetryConfig& config_;
};

// Retries may add at most `ratio` of the original requests over the window, and always at
// least min_retries_per_second × window seconds, rounded down (so a quiet route can still retry).
// Shared by all workers of a route; lock-free: threads racing for the last retry of a window may
// each get it, so the budget can be exceeded by at most one retry per racing thread.
class RetryBudget {
 public:
  RetryBudget(const config::RetryBudgetConfig& config, const Clock& clock);

  // Counts an original request (its first try).
  void on_request();
  // A retry wants to go: true, and it is counted, when the budget allows it (always when the
  // budget is disabled); false when it is exhausted.
  bool try_spend();

  // For tests and /clusters-style introspection: the retries the window still allows now
  // (UINT64_MAX when the budget is disabled).
  uint64_t remaining() const;

 private:
  enum { kRequests, kRetries };
  uint64_t allowed(const SlidingWindow<2>::Counts& c) const;

  const config::RetryBudgetConfig& config_;
  const Clock& clock_;
  SlidingWindow<2> window_;
};

}  // namespace bulwark::filters
