#pragma once
// The admission chain: the route's policies (filters/) a request passes, in order, before its
// first try: rate limit, fault injection (delay, then abort), bulkhead. The circuit breaker is
// not a step here: it guards calls to the cluster, and every try (a retry, a hedge, a half-open
// probe) is one call, so the exchange asks it for every try (filters/README.md says more).
//
// Every step answers with one convention (Envoy's FilterHeadersStatus, HAProxy's <0 / 0 / >0):
//   kContinue  go on to the next step; after the last, the request may be tried;
//   kReply     stop and answer with a local reply (reason, a status override, Retry-After);
//   kWait      stop until resumed: after `timer_ms` (the caller runs the timer and calls
//              on_timer(), which answers), or, in the bulkhead queue, when a slot comes first
//              (the chain goes on and its owner hears the answer: Owner::on_admission_resumed).
//              A slot that comes while the chain is still running is simply taken.
// The chain counts what it decides in the route's statistics. What a request holds from it (a
// bulkhead slot or a place in its queue) is held here and given back by release() or the
// destructor, whichever way the request ends.

#include <cstdint>
#include <string_view>

#include "filters/bulkhead.h"
#include "proxy/fwd.h"
#include "proxy/reasons.h"
#include "proxy/route_state.h"

namespace bulwark {

class Admission : private BulkheadWaiter {
 public:
  enum class Status : uint8_t { kContinue, kReply, kWait };
  struct Result {
    Status status = Status::kContinue;
    LocalReason reason = LocalReason::kCount;  // kReply
    int http_status = 0;                       // kReply: overrides the reason's (a fault abort)
    uint32_t retry_after_s = 0;                // kReply: adds Retry-After (rate limited)
    uint64_t timer_ms = 0;                     // kWait: call on_timer() after this long
  };
  // The request's fault-injection headers (x-bulwark-fault-*), when the route lets them count.
  // Read only inside start(): they point into the client's read buffer.
  struct Request {
    std::string_view fault_delay_header;
    std::string_view fault_abort_header;
  };

  // Hears the answer of a chain that went on by itself (a bulkhead slot came).
  class Owner {
   public:
    virtual void on_admission_resumed(const Result& result) = 0;

   protected:
    ~Owner() = default;
  };

  Admission() = default;
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;
  ~Admission() { release(); }

  // Runs the chain for a request of `route` from its first step.
  Result start(WorkerRoute& route, Owner* owner, const Request& request, FastRandom& random);
  // Whether the request waits in the route's bulkhead queue now.
  bool in_queue() const { return in_queue_; }
  // The wait's timer ran out: a fault delay ended (the chain goes on), or the bulkhead queue
  // timed out (kReply queue_timeout).
  Result on_timer();
  // Whether the request is waiting in the chain (for a timer or a bulkhead slot).
  bool waiting() const { return waiting_; }
  // A delay (or abort) was injected: the access log's FI flag.
  bool fault_injected() const { return fault_injected_; }
  // Stops waiting (leaves the bulkhead queue) and gives back the bulkhead slot, if held.
  void release();

 private:
  using Step = Result (Admission::*)();
  // BulkheadWaiter: the route's bulkhead gave this waiting request a slot.
  void on_bulkhead_slot(filters::Bulkhead::Slot slot) override;
  Result run();
  Result rate_limit();
  Result fault_delay();
  Result fault_abort();
  Result bulkhead();
  void leave_queue();

  static const Step kSteps[];

  WorkerRoute* route_ = nullptr;
  Owner* owner_ = nullptr;
  FastRandom* random_ = nullptr;
  Request request_;
  uint8_t next_ = 0;  // the step run() starts with
  bool waiting_ = false;
  bool in_queue_ = false;     // waiting in the bulkhead queue (else for the fault delay)
  bool dispatching_ = false;  // inside bulkhead(): a slot that comes now is taken there
  bool fault_injected_ = false;
  int fault_abort_status_ = 0;
  filters::Bulkhead::Slot slot_;
  filters::Bulkhead::QueuePlace queue_place_;
};

}  // namespace bulwark
