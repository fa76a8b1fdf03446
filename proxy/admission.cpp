#include "proxy/admission.h"

#include <algorithm>

#include "proxy/lb.h"
#include "proxy/worker.h"

namespace bulwark {

// The chain, in order. A step that waits resumes the chain at the step after it.
const Admission::Step Admission::kSteps[] = {
    &Admission::rate_limit,
    &Admission::fault_delay,
    &Admission::fault_abort,
    &Admission::bulkhead,
};

Admission::Result Admission::start(WorkerRoute& route, Owner* owner, const Request& request,
                                   FastRandom& random) {
  release();
  route_ = &route;
  owner_ = owner;
  random_ = &random;
  request_ = request;
  next_ = 0;
  fault_injected_ = false;
  fault_abort_status_ = 0;
  Result r = run();
  // The request's views point into the client's read buffer, which may be reused once the head
  // has been handled: no step after a wait may read them (fault_delay() decides the abort too).
  request_ = {};
  return r;
}

Admission::Result Admission::run() {
  while (next_ < std::size(kSteps)) {
    Result r = (this->*kSteps[next_++])();
    if (r.status != Status::kContinue) {
      waiting_ = r.status == Status::kWait;
      return r;
    }
  }
  return {};
}

Admission::Result Admission::on_timer() {
  if (!waiting_) return {};
  waiting_ = false;
  if (in_queue_) {
    leave_queue();
    route_->stats->queue_timeout.inc();
    return {Status::kReply, LocalReason::kQueueTimeout};
  }
  return run();  // the fault delay is over
}

void Admission::on_bulkhead_slot(filters::Bulkhead::Slot slot) {
  in_queue_ = false;
  waiting_ = false;
  queue_place_.reset();
  slot_ = std::move(slot);
  if (dispatching_) return;  // bulkhead() goes on
  owner_->on_admission_resumed(run());
}

void Admission::leave_queue() {
  if (!in_queue_) return;
  in_queue_ = false;
  route_->remove_waiter(this);
  queue_place_.reset();
}

void Admission::release() {
  leave_queue();
  waiting_ = false;
  if (slot_) {
    slot_.reset();
    route_->dispatch();  // the slot may go to a waiter
  }
}

Admission::Result Admission::rate_limit() {
  filters::RateLimiter* limiter = route_->shared->rate_limit.get();
  if (limiter == nullptr) return {};
  filters::RateLimiter::Decision d = limiter->try_acquire();
  if (d.allowed) return {};
  route_->stats->rate_limited.inc();
  auto seconds = static_cast<uint32_t>((d.retry_after + 999'999) / 1'000'000);
  return {Status::kReply, LocalReason::kRateLimited, 0, std::max<uint32_t>(seconds, 1)};
}

Admission::Result Admission::fault_delay() {
  const filters::FaultInjector* fault = route_->shared->fault.get();
  if (fault == nullptr) return {};
  std::string_view delay_header, abort_header;
  if (fault->config().header_control) {
    delay_header = request_.fault_delay_header;
    abort_header = request_.fault_abort_header;
  }
  const uint64_t random_delay = random_->next();
  const uint64_t random_abort = random_->next();
  filters::FaultDecision d = fault->decide(random_delay, random_abort, delay_header, abort_header);
  fault_abort_status_ = d.abort_status;
  if (d.delay <= 0) return {};
  route_->stats->fault_delays.inc();
  fault_injected_ = true;
  Result r{Status::kWait};
  r.timer_ms = static_cast<uint64_t>((d.delay + 999) / 1000);
  return r;
}

Admission::Result Admission::fault_abort() {
  if (fault_abort_status_ == 0) return {};
  route_->stats->fault_aborts.inc();
  return {Status::kReply, LocalReason::kFaultAbort, fault_abort_status_};
}

Admission::Result Admission::bulkhead() {
  filters::Bulkhead* bulkhead = route_->shared->bulkhead.get();
  if (bulkhead == nullptr) return {};
  // A free slot is taken at once, unless others wait: then this request queues behind them.
  if (bulkhead->queued() == 0) slot_ = bulkhead->try_acquire();
  if (slot_) return {};
  queue_place_ = bulkhead->try_enqueue();
  if (!queue_place_) {
    route_->stats->bulkhead_full.inc();
    return {Status::kReply, LocalReason::kBulkheadFull};
  }
  in_queue_ = true;
  route_->enqueue(this);
  // A slot may have freed up meanwhile (see filters/bulkhead.h): hand it to the oldest waiter,
  // maybe this one.
  dispatching_ = true;
  route_->dispatch();
  dispatching_ = false;
  if (!in_queue_) return {};
  Result r{Status::kWait};
  r.timer_ms = static_cast<uint64_t>(bulkhead->config().queue_timeout.count());
  return r;
}

}  // namespace bulwark
