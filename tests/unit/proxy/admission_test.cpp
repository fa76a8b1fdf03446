// The admission chain against a fake clock: no loop, no sockets. The chain's timers are the
// caller's (the test plays the exchange, calling on_timer() when a wait's time is up).
#include "proxy/admission.h"

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <vector>

#include "filters/clock.h"
#include "proxy/lb.h"
#include "proxy/metrics.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

using namespace std::chrono_literals;
using Status = Admission::Status;

// One route of one worker, with the policies `configure` sets.
struct Route {
  explicit Route(void (*configure)(config::RouteConfig&)) {
    auto cfg = std::make_shared<config::Config>();
    cfg->listeners.emplace_back();
    config::RouteConfig& rc = cfg->listeners.back().routes.emplace_back();
    configure(rc);
    config = cfg;
    route.shared = std::make_shared<RouteState>(config, rc, clock, 1);
    route.stats = std::make_shared<RouteStats>();
    route.worker_id = 0;
  }
  RouteStats& stats() { return *route.stats; }

  filters::FakeClock clock;
  std::shared_ptr<const config::Config> config;
  WorkerRoute route;
  FastRandom random{42};
};

// Plays the exchange: records what the chain said after going on by itself.
struct Owner : Admission::Owner {
  void on_admission_resumed(const Admission::Result& r) override { resumed.push_back(r); }
  std::vector<Admission::Result> resumed;
};

TEST_CASE("admission: a route without policies admits at once") {
  Route r([](config::RouteConfig&) {});
  Owner owner;
  Admission a;
  CHECK(a.start(r.route, &owner, {}, r.random).status == Status::kContinue);
  CHECK_FALSE(a.waiting());
}

TEST_CASE("admission: the rate limit replies 429 with a Retry-After of at least a second") {
  Route r([](config::RouteConfig& rc) { rc.rate_limit = config::RateLimitConfig{0.5, 1}; });
  Owner owner;
  Admission first, second;
  CHECK(first.start(r.route, &owner, {}, r.random).status == Status::kContinue);
  const Admission::Result limited = second.start(r.route, &owner, {}, r.random);
  CHECK(limited.status == Status::kReply);
  CHECK(limited.reason == LocalReason::kRateLimited);
  CHECK(limited.retry_after_s == 2);  // a token every 2 s
  CHECK(r.stats().rate_limited.value() == 1);
  r.clock.advance(2000ms);
  CHECK(second.start(r.route, &owner, {}, r.random).status == Status::kContinue);
}

TEST_CASE("admission: a fault delay waits, then the chain goes on to the abort") {
  Route r([](config::RouteConfig& rc) {
    config::FaultConfig f;
    f.delay = config::FaultDelayConfig{100, config::Duration{250}};
    f.abort = config::FaultAbortConfig{100, 418};
    rc.fault = f;
  });
  Owner owner;
  Admission a;
  const Admission::Result wait = a.start(r.route, &owner, {}, r.random);
  CHECK(wait.status == Status::kWait);
  CHECK(wait.timer_ms == 250);
  CHECK(a.waiting());
  CHECK(a.fault_injected());
  CHECK(r.stats().fault_delays.value() == 1);
  CHECK(r.stats().fault_aborts.value() == 0);  // not before the delay is over
  const Admission::Result reply = a.on_timer();
  CHECK(reply.status == Status::kReply);
  CHECK(reply.reason == LocalReason::kFaultAbort);
  CHECK(reply.http_status == 418);
  CHECK(r.stats().fault_aborts.value() == 1);
}

TEST_CASE("admission: fault headers count only with header_control") {
  Admission::Request request;
  request.fault_delay_header = "40";
  {
    Route r([](config::RouteConfig& rc) { rc.fault = config::FaultConfig{}; });
    Admission a;
    CHECK(a.start(r.route, nullptr, request, r.random).status == Status::kContinue);
  }
  Route r([](config::RouteConfig& rc) {
    config::FaultConfig f;
    f.header_control = true;
    rc.fault = f;
  });
  Admission a;
  const Admission::Result wait = a.start(r.route, nullptr, request, r.random);
  CHECK(wait.status == Status::kWait);
  CHECK(wait.timer_ms == 40);
}

TEST_CASE("admission: the bulkhead admits up to its limit, queues, and replies when full") {
  Route r([](config::RouteConfig& rc) {
    rc.bulkhead = config::BulkheadConfig{1, 1, config::Duration{300}};
  });
  Owner owner;
  Admission running, queued, refused;
  CHECK(running.start(r.route, &owner, {}, r.random).status == Status::kContinue);
  const Admission::Result wait = queued.start(r.route, &owner, {}, r.random);
  CHECK(wait.status == Status::kWait);
  CHECK(wait.timer_ms == 300);
  const Admission::Result full = refused.start(r.route, &owner, {}, r.random);
  CHECK(full.status == Status::kReply);
  CHECK(full.reason == LocalReason::kBulkheadFull);
  CHECK(r.stats().bulkhead_full.value() == 1);

  // The running request ends: its slot goes to the queued one, whose chain goes on.
  running.release();
  REQUIRE(owner.resumed.size() == 1);
  CHECK(owner.resumed[0].status == Status::kContinue);
  CHECK_FALSE(queued.waiting());
  CHECK(r.route.waiters.empty());
  // It holds the slot now: a newcomer queues behind nobody, but finds no slot.
  Admission next;
  CHECK(next.start(r.route, &owner, {}, r.random).status == Status::kWait);
}

TEST_CASE("admission: a queued request that times out leaves the queue with queue_timeout") {
  Route r([](config::RouteConfig& rc) {
    rc.bulkhead = config::BulkheadConfig{1, 4, config::Duration{300}};
  });
  Owner owner;
  Admission running, queued;
  REQUIRE(running.start(r.route, &owner, {}, r.random).status == Status::kContinue);
  REQUIRE(queued.start(r.route, &owner, {}, r.random).status == Status::kWait);
  const Admission::Result timeout = queued.on_timer();
  CHECK(timeout.status == Status::kReply);
  CHECK(timeout.reason == LocalReason::kQueueTimeout);
  CHECK(r.stats().queue_timeout.value() == 1);
  CHECK(r.route.waiters.empty());
  CHECK(r.route.shared->bulkhead->queued() == 0);
  running.release();
  CHECK(owner.resumed.empty());  // nobody was left to wake
}

TEST_CASE("admission: a request that ends while queued or admitted gives back what it holds") {
  Route r([](config::RouteConfig& rc) {
    rc.bulkhead = config::BulkheadConfig{1, 4, config::Duration{300}};
  });
  Owner owner;
  filters::Bulkhead& bulkhead = *r.route.shared->bulkhead;
  {
    Admission running;
    REQUIRE(running.start(r.route, &owner, {}, r.random).status == Status::kContinue);
    {
      Admission queued;
      REQUIRE(queued.start(r.route, &owner, {}, r.random).status == Status::kWait);
      CHECK(bulkhead.queued() == 1);
    }  // the client went away while queued
    CHECK(bulkhead.queued() == 0);
    CHECK(r.route.waiters.empty());
    CHECK(bulkhead.active() == 1);
  }  // the client of the running one went away
  CHECK(bulkhead.active() == 0);
  CHECK(owner.resumed.empty());
}

TEST_CASE("admission: a slot free while a request joins the queue is taken at once") {
  Route r([](config::RouteConfig& rc) {
    rc.bulkhead = config::BulkheadConfig{1, 4, config::Duration{300}};
  });
  Owner owner;
  filters::Bulkhead& bulkhead = *r.route.shared->bulkhead;
  // Another request queued, as if its slot had been freed by another worker a moment ago: the
  // queue is not empty, so a newcomer must queue too, and the dispatch it runs serves both in
  // order.
  Admission first;
  filters::Bulkhead::Slot held = bulkhead.try_acquire();
  REQUIRE(first.start(r.route, &owner, {}, r.random).status == Status::kWait);
  held.reset();  // freed without a dispatch (another worker's release, not yet seen)
  Admission second;
  const Admission::Result result = second.start(r.route, &owner, {}, r.random);
  // The first in the queue got the slot (and heard so); the second waits behind it.
  REQUIRE(owner.resumed.size() == 1);
  CHECK(owner.resumed[0].status == Status::kContinue);
  CHECK(result.status == Status::kWait);
  CHECK(bulkhead.active() == 1);
}

}  // namespace
}  // namespace bulwark
