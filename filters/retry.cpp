#include "filters/retry.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace bulwark::filters {

std::string_view to_string(RetryReason r) {
  switch (r) {
    case RetryReason::kConnectFailure:
      return "connect-failure";
    case RetryReason::kReset:
      return "reset";
    case RetryReason::kGatewayError:
      return "gateway-error";
    case RetryReason::k5xx:
      return "5xx";
    case RetryReason::kRetriableStatusCode:
      return "retriable-status-codes";
    case RetryReason::kPerTryTimeout:
      return "per-try-timeout";
    case RetryReason::kCount:
      break;
  }
  return "unknown";
}

std::optional<RetryReason> RetryPolicy::retriable_failure(TryFailure f) const {
  const uint32_t on = config_.retry_on;
  switch (f) {
    case TryFailure::kConnectFailure:
      if (on & config::kRetryOnConnectFailure) return RetryReason::kConnectFailure;
      break;
    case TryFailure::kReset:
      if (on & config::kRetryOnReset) return RetryReason::kReset;
      break;
    case TryFailure::kPerTryTimeout:
      if (on & config::kRetryOnPerTryTimeout) return RetryReason::kPerTryTimeout;
      break;
  }
  return std::nullopt;
}

std::optional<RetryReason> RetryPolicy::retriable_status(int status) const {
  const uint32_t on = config_.retry_on;
  if ((on & config::kRetryOnGatewayError) && status >= 502 && status <= 504) {
    return RetryReason::kGatewayError;
  }
  if ((on & config::kRetryOn5xx) && status >= 500 && status <= 599) return RetryReason::k5xx;
  if (on & config::kRetryOnRetriableStatusCodes) {
    const auto& codes = config_.retriable_status_codes;
    if (std::find(codes.begin(), codes.end(), status) != codes.end()) {
      return RetryReason::kRetriableStatusCode;
    }
  }
  return std::nullopt;
}

bool RetryPolicy::is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

bool RetryPolicy::may_resend(std::string_view method, bool has_idempotency_key) const {
  return is_idempotent(method) || has_idempotency_key || config_.retry_non_idempotent;
}

Micros RetryPolicy::backoff(uint32_t retry, uint64_t random) const {
  const Micros base = std::max<Micros>(0, to_micros(config_.backoff_base));
  const Micros max = std::max<Micros>(0, to_micros(config_.backoff_max));
  // The ceiling base × 2^(retry-1), computed only while it stays below `max` (so it never
  // overflows, whatever `retry` is). Retry 0 is treated as the first retry.
  const uint32_t exponent = retry > 0 ? retry - 1 : 0;
  Micros ceiling = max;
  if (exponent < 62 && base <= (max >> exponent)) ceiling = base << exponent;
  // Uniform in [0, ceiling]: the high 64 bits of random × (ceiling + 1).
  const auto span = static_cast<unsigned __int128>(static_cast<uint64_t>(ceiling) + 1);
  return static_cast<Micros>((static_cast<unsigned __int128>(random) * span) >> 64);
}

RetryDecision RetryPolicy::decide(const RetryAsk& ask, RetryBudget& budget, uint64_t random) const {
  RetryDecision d;
  if (!ask.reason || ask.response_sent) return d;
  if (ask.tries >= config_.attempts) {
    d.verdict = RetryVerdict::kAttemptsExhausted;
    return d;
  }
  if (!ask.request_at_hand || (ask.request_bytes_sent && !ask.may_resend)) {
    d.verdict = RetryVerdict::kCannotResend;
    return d;
  }
  const Micros wait = backoff(ask.tries, random);
  // Whole milliseconds, as the proxy's timers count (a wait rounded up to the deadline is past it).
  const Micros wait_ms_us = (wait + 999) / 1000 * 1000;
  if (ask.until_deadline >= 0 && wait_ms_us >= ask.until_deadline) {
    d.verdict = RetryVerdict::kPastDeadline;
    return d;
  }
  if (!budget.try_spend()) {
    d.verdict = RetryVerdict::kBudgetExhausted;
    return d;
  }
  d.verdict = RetryVerdict::kRetry;
  d.reason = *ask.reason;
  d.backoff = wait;
  return d;
}

RetryBudget::RetryBudget(const config::RetryBudgetConfig& config, const Clock& clock)
    : config_(config), clock_(clock), window_(to_micros(config.window)) {}

void RetryBudget::on_request() {
  if (!config_.enabled) return;
  window_.add(clock_.now(), kRequests);
}

bool RetryBudget::try_spend() {
  if (!config_.enabled) return true;
  const Micros now = clock_.now();
  // Check, then count: threads racing for the last retry of a window may all get it. A budget
  // is a rate, not a hard limit, so a few retries over it under contention are acceptable.
  const auto counts = window_.sum(now);
  if (counts[kRetries] >= allowed(counts)) return false;
  window_.add(now, kRetries);
  return true;
}

uint64_t RetryBudget::remaining() const {
  if (!config_.enabled) return std::numeric_limits<uint64_t>::max();
  const auto counts = window_.sum(clock_.now());
  const uint64_t limit = allowed(counts);
  return counts[kRetries] < limit ? limit - counts[kRetries] : 0;
}

uint64_t RetryBudget::allowed(const SlidingWindow<2>::Counts& c) const {
  // A tiny epsilon so that, e.g., 0.29 × 100 (28.999...96 in binary) allows 29.
  const double by_ratio = std::floor(config_.ratio * static_cast<double>(c[kRequests]) + 1e-9);
  uint64_t from_ratio = 0;
  if (by_ratio >= 0x1p64) {
    from_ratio = std::numeric_limits<uint64_t>::max();
  } else if (by_ratio > 0) {
    from_ratio = static_cast<uint64_t>(by_ratio);
  }
  const auto window_ms = static_cast<uint64_t>(std::max<int64_t>(0, config_.window.count()));
  const uint64_t at_least = uint64_t{config_.min_retries_per_second} * window_ms / 1000;
  return std::max(from_ratio, at_least);
}

}  // namespace bulwark::filters
