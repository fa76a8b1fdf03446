#include "filters/outlier.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace bulwark::filters {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

bool at_threshold(uint32_t count, uint32_t threshold) {
  return threshold != 0 && count >= threshold;
}

}  // namespace

OutlierDetector::OutlierDetector(const config::OutlierDetectionConfig& config, const Clock& clock,
                                 size_t endpoints)
    : config_(config), clock_(clock) {
  endpoints_.reserve(endpoints);
  for (size_t i = 0; i < endpoints; ++i) endpoints_.push_back(std::make_shared<EndpointState>());
}

bool OutlierDetector::record(size_t endpoint, Outcome outcome, Cause* cause) {
  if (endpoint >= endpoints_.size()) return false;
  EndpointState& e = *endpoints_[endpoint];

  // Tries of an ejected endpoint (in flight when it was ejected, or panic traffic) are not
  // judged: once back it starts with a clean slate.
  if (config_.success_rate && clock_.now() >= e.ejected_until.load(std::memory_order_acquire)) {
    e.rate_tries.fetch_add(1, kRelaxed);
    if (outcome == Outcome::kSuccess) e.rate_successes.fetch_add(1, kRelaxed);
  }

  if (config_.failure_percent != 0 && failure_rate_exceeded(e, outcome != Outcome::kSuccess)) {
    std::lock_guard<std::mutex> lock(*mu_);
    if (eject_locked(endpoint, clock_.now(), Cause::kFailurePercent, cause)) return true;
  }

  // Without a local-origin threshold, not reaching the endpoint is a gateway failure.
  if (outcome == Outcome::kLocalOriginFailure && config_.consecutive_local_origin_failure == 0)
    outcome = Outcome::kGatewayFailure;

  if (outcome == Outcome::kSuccess) {
    // The hot path: three loads, and no write (no cache-line ping-pong) when the counts are 0.
    if (e.consecutive_5xx.load(kRelaxed) != 0) e.consecutive_5xx.store(0, kRelaxed);
    if (e.consecutive_gateway.load(kRelaxed) != 0) e.consecutive_gateway.store(0, kRelaxed);
    if (e.consecutive_local_origin.load(kRelaxed) != 0)
      e.consecutive_local_origin.store(0, kRelaxed);
    return false;
  }
  // Any outcome but a local-origin failure says the endpoint could be reached.
  if (outcome != Outcome::kLocalOriginFailure && e.consecutive_local_origin.load(kRelaxed) != 0)
    e.consecutive_local_origin.store(0, kRelaxed);

  // Failures of an ejected endpoint (requests already in flight when it was ejected, or panic
  // traffic) start no new run: once it is back it takes a whole new run to eject it again.
  const Micros now = clock_.now();
  if (now < e.ejected_until.load(std::memory_order_acquire)) return false;

  if (outcome == Outcome::kLocalOriginFailure) return record_local_origin(endpoint, e, now, cause);

  const uint32_t n5xx = e.consecutive_5xx.fetch_add(1, kRelaxed) + 1;
  uint32_t ngateway = 0;
  if (outcome == Outcome::kGatewayFailure) {
    ngateway = e.consecutive_gateway.fetch_add(1, kRelaxed) + 1;
  } else if (e.consecutive_gateway.load(kRelaxed) != 0) {
    e.consecutive_gateway.store(0, kRelaxed);
  }
  if (!at_threshold(n5xx, config_.consecutive_5xx) &&
      !at_threshold(ngateway, config_.consecutive_gateway_failure)) {
    return false;
  }
  std::lock_guard<std::mutex> lock(*mu_);
  // Re-check under the lock: another worker may have ejected it (and reset the counts), or the
  // cap refused it, since this thread saw its count reach the threshold.
  const bool gateway =
      at_threshold(e.consecutive_gateway.load(kRelaxed), config_.consecutive_gateway_failure);
  if (!gateway && !at_threshold(e.consecutive_5xx.load(kRelaxed), config_.consecutive_5xx)) {
    return false;
  }
  return eject_locked(endpoint, now,
                      gateway ? Cause::kConsecutiveGatewayFailure : Cause::kConsecutive5xx, cause);
}

bool OutlierDetector::record_local_origin(size_t endpoint, EndpointState& e, Micros now,
                                          Cause* cause) {
  const uint32_t n = e.consecutive_local_origin.fetch_add(1, kRelaxed) + 1;
  if (!at_threshold(n, config_.consecutive_local_origin_failure)) return false;
  std::lock_guard<std::mutex> lock(*mu_);
  // Re-check under the lock, as above.
  if (!at_threshold(e.consecutive_local_origin.load(kRelaxed),
                    config_.consecutive_local_origin_failure)) {
    return false;
  }
  return eject_locked(endpoint, now, Cause::kConsecutiveLocalOriginFailure, cause);
}

bool OutlierDetector::failure_rate_exceeded(EndpointState& e, bool failed) {
  const Micros now = clock_.now();
  // Tries of an ejected endpoint (in flight when it was ejected, or panic traffic) count in no
  // interval: once back it starts a fresh one.
  if (now < e.ejected_until.load(std::memory_order_acquire)) return false;
  const uint32_t tries = e.window_tries.fetch_add(1, kRelaxed) + 1;
  const uint32_t failures =
      failed ? e.window_failures.fetch_add(1, kRelaxed) + 1 : e.window_failures.load(kRelaxed);
  Micros start = e.window_start.load(kRelaxed);
  if (start == 0) {
    e.window_start.compare_exchange_strong(start, now, kRelaxed);
    return false;
  }
  if (now - start < to_micros(config_.interval)) return false;
  // The interval is over: the one thread that moves its start judges it and begins the next.
  if (!e.window_start.compare_exchange_strong(start, now, kRelaxed)) return false;
  e.window_tries.fetch_sub(tries, kRelaxed);
  e.window_failures.fetch_sub(failures, kRelaxed);
  return tries >= config_.failure_percent_minimum_requests &&
         uint64_t{failures} * 100 >= uint64_t{config_.failure_percent} * tries;
}

bool OutlierDetector::eject_locked(size_t endpoint, Micros now, Cause why, Cause* cause) {
  EndpointState& e = *endpoints_[endpoint];
  if (now < e.ejected_until.load(kRelaxed)) return false;

  // max_ejection_percent, but one endpoint can always be ejected (unless the detection is the
  // implicit one: then the cap is strict, and a cluster's only endpoint stays).
  uint64_t ejected_now = 0;
  for (const auto& other : endpoints_) {
    if (now < other->ejected_until.load(kRelaxed)) ++ejected_now;
  }
  if ((ejected_now > 0 || config_.implicit) &&
      (ejected_now + 1) * 100 > uint64_t{config_.max_ejection_percent} * endpoints_.size()) {
    e.reset_counts();  // try again after another whole run of failures
    return false;
  }

  const Micros base = std::max<Micros>(0, to_micros(config_.base_ejection_time));
  const Micros max = std::max<Micros>(0, to_micros(config_.max_ejection_time));
  uint32_t times = e.times_ejected.load(kRelaxed);
  if (times > 0 && now - e.returned() >= max) times = 0;  // it stayed back long enough
  if (times < std::numeric_limits<uint32_t>::max()) ++times;
  // min(base × times, max), without overflow.
  const Micros duration = (base != 0 && times > max / base) ? max : std::min(base * times, max);

  e.times_ejected.store(times, kRelaxed);
  e.ejections_total.fetch_add(1, kRelaxed);
  e.ejection_cause.store(why, kRelaxed);
  e.check_failed_while_ejected.store(false, kRelaxed);
  e.ejected_until.store(now + duration, std::memory_order_release);
  e.reset_counts();
  if (cause != nullptr) *cause = why;
  return true;
}

bool OutlierDetector::ejected(size_t endpoint) const {
  if (endpoint >= endpoints_.size()) return false;
  return clock_.now() < endpoints_[endpoint]->ejected_until.load(std::memory_order_acquire);
}

std::vector<size_t> OutlierDetector::sweep() {
  std::vector<size_t> back;
  std::lock_guard<std::mutex> lock(*mu_);
  const Micros now = clock_.now();
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    EndpointState& e = *endpoints_[i];
    const Micros until = e.ejected_until.load(kRelaxed);
    if (until == 0 || now < until) continue;
    // It came back at its deadline (ejected() said so from then on), however late this runs.
    e.returned_at.store(until, kRelaxed);
    e.ejected_until.store(0, std::memory_order_release);
    back.push_back(i);
  }
  return back;
}

OutlierDetector::SuccessRateJudgement OutlierDetector::judge_success_rate() {
  SuccessRateJudgement out;
  if (!config_.success_rate) return out;
  const config::OutlierDetectionConfig::SuccessRate& sr = *config_.success_rate;
  std::lock_guard<std::mutex> lock(*mu_);
  const Micros now = clock_.now();
  // Every interval starts afresh, judged or not.
  std::vector<std::pair<size_t, double>> judged;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    EndpointState& e = *endpoints_[i];
    const uint32_t tries = e.rate_tries.exchange(0, kRelaxed);
    const uint32_t successes = std::min(e.rate_successes.exchange(0, kRelaxed), tries);
    if (now < e.ejected_until.load(kRelaxed) || tries == 0 || tries < sr.request_volume) continue;
    judged.emplace_back(i, static_cast<double>(successes) / tries);
  }
  if (judged.size() < sr.minimum_hosts) return out;
  double sum = 0;
  for (const auto& j : judged) sum += j.second;
  const double mean = sum / static_cast<double>(judged.size());
  double squares = 0;
  for (const auto& j : judged) squares += (j.second - mean) * (j.second - mean);
  const double stdev = std::sqrt(squares / static_cast<double>(judged.size()));
  out.judged = judged.size();
  out.mean = mean;
  out.threshold = mean - sr.stdev_factor * stdev;
  // Equal rates give a stdev of rounding noise (a mean one ulp above them): nobody is worse.
  constexpr double kNoise = 1e-9;
  if (stdev < kNoise) return out;
  // The worst first, so max_ejection_percent keeps the worst out when it refuses some.
  std::sort(judged.begin(), judged.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  for (const auto& [index, rate] : judged) {
    if (rate >= out.threshold - kNoise) break;
    if (eject_locked(index, now, Cause::kSuccessRate, nullptr)) {
      out.ejected.push_back(index);
      out.rates.push_back(rate);
    }
  }
  return out;
}

bool OutlierDetector::on_health_check(size_t endpoint, bool passed) {
  if (endpoint >= endpoints_.size()) return false;
  EndpointState& e = *endpoints_[endpoint];
  // Not ejected (or its time is over, and sweep() brings it back): nothing to do. No lock.
  if (clock_.now() >= e.ejected_until.load(std::memory_order_acquire)) return false;
  std::lock_guard<std::mutex> lock(*mu_);
  const Micros now = clock_.now();
  if (now >= e.ejected_until.load(kRelaxed)) return false;
  if (!passed) {
    e.check_failed_while_ejected.store(true, kRelaxed);
    return false;
  }
  if (!config_.uneject_on_health_check_pass) return false;
  // A passing check reached the endpoint, which refutes a local-origin ejection at once; an
  // ejection for its answers only once a check failed meanwhile (see the header).
  if (e.ejection_cause.load(kRelaxed) != Cause::kConsecutiveLocalOriginFailure &&
      !e.check_failed_while_ejected.load(kRelaxed)) {
    return false;
  }
  e.returned_at.store(now, kRelaxed);
  e.ejected_until.store(0, std::memory_order_release);
  return true;
}

size_t OutlierDetector::size() const { return endpoints_.size(); }

Micros OutlierDetector::ejected_until(size_t endpoint) const {
  if (endpoint >= endpoints_.size()) return 0;
  const Micros until = endpoints_[endpoint]->ejected_until.load(std::memory_order_acquire);
  return clock_.now() < until ? until : 0;
}

uint32_t OutlierDetector::times_ejected(size_t endpoint) const {
  if (endpoint >= endpoints_.size()) return 0;
  const EndpointState& e = *endpoints_[endpoint];
  const uint32_t times = e.times_ejected.load(kRelaxed);
  if (times == 0) return 0;
  const Micros now = clock_.now();
  if (now < e.ejected_until.load(std::memory_order_acquire)) return times;
  // The count the next ejection would start from.
  return now - e.returned() >= to_micros(config_.max_ejection_time) ? 0 : times;
}

uint32_t OutlierDetector::consecutive_5xx(size_t endpoint) const {
  return endpoint < endpoints_.size() ? endpoints_[endpoint]->consecutive_5xx.load(kRelaxed) : 0;
}

uint32_t OutlierDetector::consecutive_gateway_failures(size_t endpoint) const {
  return endpoint < endpoints_.size() ? endpoints_[endpoint]->consecutive_gateway.load(kRelaxed)
                                      : 0;
}

uint32_t OutlierDetector::consecutive_local_origin_failures(size_t endpoint) const {
  return endpoint < endpoints_.size()
             ? endpoints_[endpoint]->consecutive_local_origin.load(kRelaxed)
             : 0;
}

uint64_t OutlierDetector::ejections_total(size_t endpoint) const {
  return endpoint < endpoints_.size() ? endpoints_[endpoint]->ejections_total.load(kRelaxed) : 0;
}

std::shared_ptr<OutlierDetector> OutlierDetector::remapped(
    const std::vector<long>& new_to_old, const config::OutlierDetectionConfig& config) const {
  auto next = std::make_shared<OutlierDetector>(config, clock_, 0);
  next->mu_ = mu_;
  next->endpoints_.resize(new_to_old.size());
  std::vector<bool> taken(endpoints_.size(), false);
  for (size_t i = 0; i < new_to_old.size(); ++i) {
    const long old = new_to_old[i];
    if (old >= 0 && static_cast<size_t>(old) < endpoints_.size() &&
        !taken[static_cast<size_t>(old)]) {
      taken[static_cast<size_t>(old)] = true;
      next->endpoints_[i] = endpoints_[static_cast<size_t>(old)];
    } else {
      next->endpoints_[i] = std::make_shared<EndpointState>();
    }
  }
  return next;
}

}  // namespace bulwark::filters
