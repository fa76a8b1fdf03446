#pragma once
// Passive outlier detection: watches the outcomes of real traffic to a cluster's endpoints, from
// every worker, and ejects an endpoint after too many consecutive failures (as Envoy's, with
// split_external_local_origin_errors).
//
// - Local-origin failures (the endpoint could not be reached: connect refused, unreachable or
//   timed out, or the connection closed before any response byte) are counted apart from the
//   endpoint's answers: consecutive_local_origin_failure of them in a row eject it. Anything else
//   (a response, a try timeout after the connection opened) shows the endpoint is reachable and
//   resets that count, and a local-origin failure leaves the two counts below alone. With
//   consecutive_local_origin_failure 0 they are not apart: they count as gateway failures.
// - consecutive_5xx: that many 5xx responses in a row (gateway failures count as 5xx too) eject
//   the endpoint; consecutive_gateway_failure: that many gateway failures (try timeout, reset
//   after response bytes, 502, 503, 504) in a row. A response below 500 resets every count; a 5xx
//   that is not a gateway failure resets the gateway count. A threshold of 0 is off.
//   Failures of an endpoint while it is ejected (requests already in flight, panic traffic) are
//   not counted, so once back it takes a whole new run to eject it again. An ejection refused by
//   max_ejection_percent resets the counts too: the next try comes after another whole run.
// - An ejection lasts base_ejection_time × n, n = how often this endpoint has been ejected
//   (this time included), at most max_ejection_time. n goes back to 0 once the endpoint has
//   stayed un-ejected for max_ejection_time.
// - max_ejection_percent caps how many of the cluster's endpoints may be ejected at once, but
//   one endpoint can always be ejected (not so with the implicit detection of a cluster without
//   an outlier_detection section: it never ejects a cluster's only endpoint).
// - failure_percent (0 = off): over each `interval` of an endpoint, counted from its first try,
//   the share of its tries that failed (any failure outcome, local-origin ones included). An
//   interval with at least failure_percent_minimum_requests tries and at least that share failed
//   ejects it, when the first try after the interval ends notices. So an endpoint failing 10% of
//   requests, which rarely gives a run of failures in a row, is still taken out. Costs a clock
//   read and an atomic increment per try, only when on.
// - success_rate (Envoy's): every `interval` the main thread calls judge_success_rate(), which
//   compares the endpoints with each other over the tries of that interval: of those with at
//   least request_volume tries (at least minimum_hosts of them, or nothing is judged), the ones
//   whose success share is below mean - stdev_factor × stdev of the group are ejected. So a
//   replica merely worse than its peers (5% failures where the others have none) goes too.
//   Costs a clock read and one or two atomic increments per try, only when on.
// - Active health checks (on_health_check()), with uneject_on_health_check_pass: an endpoint
//   ejected for local-origin failures comes back at its next passing check, since the check just
//   reached it. One ejected for its answers (5xx, gateway failures, failure_percent) comes back at
//   a passing check only after a check failed during the ejection: its checks said it was fine
//   while its real traffic failed, so a passing check alone is no evidence that it recovered, but
//   a failed one followed by a passing one is (a replica that crashed and restarted).
//
// Thread-safety: record() and ejected() are called by all workers; the success path is
// lock-free (and writes nothing when the counts are already 0). An ejection takes the mutex.
// sweep() and on_health_check() run on one thread (the main thread) and end ejections.
//
// Endpoints are addressed by index. When the endpoint set changes (DNS), remapped() makes the
// detector of the new set: it shares the state objects (and the lock) of the endpoints that
// stayed, so a worker still on the old set and one already on the new one count into the same
// place, and nothing is copied or lost while the new set reaches the workers.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "config/config.h"
#include "filters/clock.h"

namespace bulwark::filters {

class OutlierDetector {
 public:
  enum class Outcome : uint8_t {
    kSuccess,             // a response below 500
    kServerError,         // a 5xx that is not 502/503/504
    kGatewayFailure,      // 502, 503, 504, a try timeout, a reset after response bytes
    kLocalOriginFailure,  // connect refused/unreachable/timed out, closed before any byte
  };

  OutlierDetector(const config::OutlierDetectionConfig& config, const Clock& clock,
                  size_t endpoints);

  // Which run of failures ejected an endpoint.
  enum class Cause : uint8_t {
    kConsecutive5xx,
    kConsecutiveGatewayFailure,
    kConsecutiveLocalOriginFailure,
    kFailurePercent,
    kSuccessRate,
  };

  // What judge_success_rate() found: the group's figures (for the log) and whom it ejected.
  struct SuccessRateJudgement {
    size_t judged = 0;        // endpoints with request_volume tries; 0 when too few to judge
    double mean = 0;          // their mean success share, 0..1
    double threshold = 0;     // mean - stdev_factor × stdev
    std::vector<size_t> ejected;
    std::vector<double> rates;  // of the ejected, index-aligned
  };

  // Records an outcome of real traffic to `endpoint`. Returns true when this outcome ejected it
  // (the caller logs that, once), and then sets *cause when given.
  bool record(size_t endpoint, Outcome outcome, Cause* cause = nullptr);
  // Whether the endpoint is ejected now. Lock-free.
  bool ejected(size_t endpoint) const;

  // Ends the ejections whose time passed; returns the endpoints that came back (to log).
  std::vector<size_t> sweep();
  // success_rate: judges the interval that ends now and starts the next one. Main thread.
  SuccessRateJudgement judge_success_rate();
  // An active health check of `endpoint` finished. Returns true when it ended the endpoint's
  // ejection (see uneject_on_health_check_pass above; the caller logs that).
  bool on_health_check(size_t endpoint, bool passed);

  // Introspection for /clusters and metrics.
  size_t size() const;
  Micros ejected_until(size_t endpoint) const;  // 0 when not ejected
  uint32_t times_ejected(size_t endpoint) const;
  uint32_t consecutive_5xx(size_t endpoint) const;
  uint32_t consecutive_gateway_failures(size_t endpoint) const;
  uint32_t consecutive_local_origin_failures(size_t endpoint) const;
  const config::OutlierDetectionConfig& config() const { return config_; }
  uint64_t ejections_total(size_t endpoint) const;  // for bulwark_outlier_ejections_total

  // The detector of a new endpoint set: new_to_old[i] is the old index of new endpoint i, or -1
  // for a new one (an index out of range or used twice also starts afresh). Safe while other
  // threads use this one.
  // `config` is the new detector's (a reload may have changed it); by default this one's.
  std::shared_ptr<OutlierDetector> remapped(const std::vector<long>& new_to_old) const {
    return remapped(new_to_old, config_);
  }
  std::shared_ptr<OutlierDetector> remapped(const std::vector<long>& new_to_old,
                                            const config::OutlierDetectionConfig& config) const;

 private:
  // One endpoint's counts and ejection. Every field is an atomic so that workers and the
  // introspection read it without the mutex; the ejection fields (ejected_until, returned_at,
  // times_ejected, ejections_total) are written only under the mutex. A cache line each, so
  // workers hammering one endpoint's counts do not slow down another's.
  struct alignas(64) EndpointState {
    std::atomic<uint32_t> consecutive_5xx{0};
    std::atomic<uint32_t> consecutive_gateway{0};
    std::atomic<uint32_t> consecutive_local_origin{0};
    // The end of the current ejection, or of the last one until sweep() clears it; 0: none.
    std::atomic<Micros> ejected_until{0};
    // The deadline of the last ejection sweep() ended; 0 when never ejected.
    std::atomic<Micros> returned_at{0};
    std::atomic<uint32_t> times_ejected{0};
    std::atomic<uint64_t> ejections_total{0};
    // Of the current (or last) ejection: its cause, and whether an active check failed during it.
    // Written under the mutex.
    std::atomic<Cause> ejection_cause{Cause::kConsecutive5xx};
    std::atomic<bool> check_failed_while_ejected{false};
    // failure_percent: the tries and failures of the interval that began at window_start
    // (0: no try yet).
    std::atomic<uint32_t> window_tries{0};
    std::atomic<uint32_t> window_failures{0};
    std::atomic<Micros> window_start{0};
    // success_rate: the tries and successes since the last judge_success_rate().
    std::atomic<uint32_t> rate_tries{0};
    std::atomic<uint32_t> rate_successes{0};

    void reset_counts() {
      consecutive_5xx.store(0, std::memory_order_relaxed);
      consecutive_gateway.store(0, std::memory_order_relaxed);
      consecutive_local_origin.store(0, std::memory_order_relaxed);
      window_tries.store(0, std::memory_order_relaxed);
      window_failures.store(0, std::memory_order_relaxed);
      window_start.store(0, std::memory_order_relaxed);
    }
    // When it last came back from an ejection (call only while it is not ejected): the deadline
    // of its last ejection, whether sweep() has cleared it yet or not.
    Micros returned() const {
      const Micros until = ejected_until.load(std::memory_order_acquire);
      return until != 0 ? until : returned_at.load(std::memory_order_relaxed);
    }
  };

  // The failure_percent check: counts the try, and when it is the first after its endpoint's
  // interval ended, says whether that interval failed often enough to eject.
  bool failure_rate_exceeded(EndpointState& e, bool failed);
  // Ejects for `why` unless it is ejected already or max_ejection_percent refuses.
  bool eject_locked(size_t endpoint, Micros now, Cause why, Cause* cause);
  // A local-origin failure of an endpoint that is not ejected.
  bool record_local_origin(size_t endpoint, EndpointState& e, Micros now, Cause* cause);

  const config::OutlierDetectionConfig& config_;
  const Clock& clock_;
  // Shared with the detectors remapped() makes, as are the endpoint states.
  std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();
  std::vector<std::shared_ptr<EndpointState>> endpoints_;
};

}  // namespace bulwark::filters
