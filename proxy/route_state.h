#pragma once
// The shared, cross-worker state of one route's policies (filters/): its retry policy and
// budget, and, when configured, its bulkhead, rate limiter and fault injector. Owned by the
// Server, created when the config is applied; workers reach it by pointer and never take a lock
// on it. The per-worker side (the bulkhead's waiting requests) is WorkerRoute in worker.h.

#include <functional>
#include <memory>

#include "config/config.h"
#include "filters/bulkhead.h"
#include "filters/clock.h"
#include "filters/fault.h"
#include "filters/rate_limit.h"
#include "filters/retry.h"

namespace bulwark {

class RouteState {
 public:
  RouteState(const config::RouteConfig& config, const filters::Clock& clock)
      : config(config),
        retry(config.retry),
        budget(config.retry.budget, clock),
        bulkhead(config.bulkhead ? std::make_unique<filters::Bulkhead>(*config.bulkhead) : nullptr),
        rate_limit(config.rate_limit ? std::make_unique<filters::RateLimiter>(*config.rate_limit, clock) : nullptr),
        fault(config.fault ? std::make_unique<filters::FaultInjector>(*config.fault) : nullptr) {}

  const config::RouteConfig& config;
  const filters::RetryPolicy retry;
  filters::RetryBudget budget;
  const std::unique_ptr<filters::Bulkhead> bulkhead;        // null: no bulkhead
  const std::unique_ptr<filters::RateLimiter> rate_limit;   // null: no rate limit
  const std::unique_ptr<filters::FaultInjector> fault;      // null: no fault injection

  // Set by the Server before workers start: a worker that freed a bulkhead slot while requests
  // wait in other workers' queues calls this, and those workers are told to serve their queues.
  std::function<void(size_t from_worker)> wake_other_workers;
};

}  // namespace bulwark
