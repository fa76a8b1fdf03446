#pragma once
// A route's local rate limit, shared by all workers: a token bucket that refills at
// requests_per_second and holds at most `burst` tokens, starting full.
//
// Implemented as GCRA (the "virtual scheduling" form of a token bucket): one atomic holds the
// theoretical arrival time of the next request, so deciding is one compare-and-swap and there is
// no refill timer.

#include <atomic>
#include <cstdint>

#include "config/config.h"
#include "filters/clock.h"

namespace bulwark::filters {

class RateLimiter {
 public:
  struct Decision {
    bool allowed = false;
    // When refused: how long until a token is available (> 0). The proxy sends it rounded up to
    // whole seconds as Retry-After.
    Micros retry_after = 0;
  };

  RateLimiter(const config::RateLimitConfig& config, const Clock& clock);
  // Takes a token if there is one.
  Decision try_acquire();

 private:
  const Clock& clock_;
  const Micros interval_;    // 1 / requests_per_second, at least 1 µs
  const Micros tolerance_;   // (burst - 1) × interval_
  std::atomic<Micros> tat_;  // theoretical arrival time
};

}  // namespace bulwark::filters
