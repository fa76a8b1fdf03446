#pragma once
// The shared, cross-worker state of one route's policies (filters/): its retry policy and
// budget, and, when configured, its bulkhead, rate limiter and fault injector. Owned by the
// Server, created when the config is applied; workers reach it by pointer and never take a lock
// on it. The per-worker side (the bulkhead's waiting requests) is WorkerRoute in worker.h.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "config/config.h"
#include "filters/bulkhead.h"
#include "filters/clock.h"
#include "filters/fault.h"
#include "filters/rate_limit.h"
#include "filters/retry.h"

namespace bulwark {

// A request waiting for a bulkhead slot of its route.
class BulkheadWaiter {
 public:
  // The route's bulkhead gave this waiting request a slot (it is out of the queue already).
  virtual void on_bulkhead_slot(filters::Bulkhead::Slot slot) = 0;

 protected:
  ~BulkheadWaiter() = default;
};

class RouteState {
 public:
  // `owner` is the config `config` belongs to, kept alive with this state (see ClusterState).
  RouteState(std::shared_ptr<const config::Config> owner, const config::RouteConfig& config,
             const filters::Clock& clock, size_t workers)
      : owner(std::move(owner)),
        workers(workers),
        oldest_waiter(std::make_unique<std::atomic<uint64_t>[]>(workers)),
        config(config),
        retry(config.retry),
        budget(config.retry.budget, clock),
        bulkhead(config.bulkhead ? std::make_unique<filters::Bulkhead>(*config.bulkhead) : nullptr),
        rate_limit(config.rate_limit
                       ? std::make_unique<filters::RateLimiter>(*config.rate_limit, clock)
                       : nullptr),
        fault(config.fault ? std::make_unique<filters::FaultInjector>(*config.fault) : nullptr) {
    for (size_t w = 0; w < workers; ++w) oldest_waiter[w].store(kNoWaiter);
  }

  // The bulkhead queue across workers. Each waiting request takes a ticket (ascending); each
  // worker publishes the ticket of its oldest waiter; a free slot goes to the worker with the
  // smallest, so waiting is FIFO over the whole route.
  static constexpr uint64_t kNoWaiter = UINT64_MAX;
  static constexpr size_t kNoWorker = SIZE_MAX;
  const std::shared_ptr<const config::Config> owner;
  const size_t workers;
  std::atomic<uint64_t> next_ticket{0};
  const std::unique_ptr<std::atomic<uint64_t>[]> oldest_waiter;  // [worker]
  size_t oldest_waiting_worker() const {
    size_t best = kNoWorker;
    uint64_t best_ticket = kNoWaiter;
    for (size_t w = 0; w < workers; ++w) {
      uint64_t t = oldest_waiter[w].load();
      if (t < best_ticket) {
        best_ticket = t;
        best = w;
      }
    }
    return best;
  }

  const config::RouteConfig& config;
  const filters::RetryPolicy retry;
  filters::RetryBudget budget;
  const std::unique_ptr<filters::Bulkhead> bulkhead;       // null: no bulkhead
  const std::unique_ptr<filters::RateLimiter> rate_limit;  // null: no rate limit
  const std::unique_ptr<filters::FaultInjector> fault;     // null: no fault injection

  // Set by the Server before workers start: tells a worker to dispatch this route's bulkhead
  // queue (WorkerRoute::dispatch) on its own loop.
  std::function<void(size_t worker)> wake_worker;
};

}  // namespace bulwark
