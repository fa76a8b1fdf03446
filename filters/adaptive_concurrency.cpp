#include "filters/adaptive_concurrency.h"

#include <algorithm>
#include <cmath>

namespace bulwark::filters {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
// Latencies kept per window: the median of the first ones is as good as of all of them, and the
// array never grows on the request path.
constexpr size_t kMaxSamples = 4096;

}  // namespace

AdaptiveConcurrency::Permit& AdaptiveConcurrency::Permit::operator=(Permit&& o) noexcept {
  if (this != &o) {
    reset();
    owner_ = o.owner_;
    epoch_ = o.epoch_;
    o.owner_ = nullptr;
  }
  return *this;
}

void AdaptiveConcurrency::Permit::record(Micros latency) {
  if (owner_ == nullptr) return;
  AdaptiveConcurrency* owner = owner_;
  owner_ = nullptr;
  owner->end(true, latency, epoch_);
}

void AdaptiveConcurrency::Permit::reset() {
  if (owner_ == nullptr) return;
  AdaptiveConcurrency* owner = owner_;
  owner_ = nullptr;
  owner->end(false, 0, epoch_);
}

AdaptiveConcurrency::AdaptiveConcurrency(const config::AdaptiveConcurrencyConfig& config,
                                         const Clock& clock, uint64_t seed)
    : config_(config),
      clock_(clock),
      limit_(config.min_limit),
      random_(seed | 1),
      limit_before_(config.min_limit) {
  samples_.reserve(std::max<size_t>(kMaxSamples, config.min_rtt_samples));
}

AdaptiveConcurrency::Permit AdaptiveConcurrency::acquire(bool count_refusal) {
  uint32_t n = in_flight_.load(kRelaxed);
  do {
    if (n >= limit_.load(kRelaxed)) {
      if (count_refusal) rejected_.fetch_add(1, kRelaxed);
      return Permit();
    }
  } while (!in_flight_.compare_exchange_weak(n, n + 1, kRelaxed));
  // Racy but never low for long: a lost update is another request's near-equal count.
  if (n + 1 > peak_in_flight_.load(kRelaxed)) peak_in_flight_.store(n + 1, kRelaxed);
  return Permit(this, epoch_.load(kRelaxed));
}

bool AdaptiveConcurrency::measuring() const {
  std::lock_guard<std::mutex> lock(mu_);
  return measuring_;
}

void AdaptiveConcurrency::end(bool sampled, Micros latency, uint32_t epoch) {
  in_flight_.fetch_sub(1, kRelaxed);
  if (!sampled) return;
  std::lock_guard<std::mutex> lock(mu_);
  const Micros now = clock_.now();
  if (measuring_) {
    if (epoch != epoch_.load(kRelaxed)) return;  // admitted before the limit came down
    if (samples_.size() < samples_.capacity()) samples_.push_back(latency);
    if (samples_.size() < config_.min_rtt_samples) return;
    min_rtt_.store(std::max<Micros>(median_locked(), 1), kRelaxed);
    measuring_ = false;
    samples_.clear();
    limit_.store(limit_before_, kRelaxed);
    window_end_ = now + to_micros(config_.sample_window);
    next_measurement_ = next_measurement(now);
    return;
  }
  if (now >= window_end_) close_window_locked(now);
  if (now >= next_measurement_) {
    start_measuring_locked();
    return;  // this latency was had at the old limit: not a minimum sample
  }
  if (samples_.size() < samples_.capacity()) samples_.push_back(latency);
}

void AdaptiveConcurrency::close_window_locked(Micros now) {
  const Micros min_rtt = min_rtt_.load(kRelaxed);
  if (!samples_.empty() && min_rtt > 0) {
    const double sample_rtt = static_cast<double>(std::max<Micros>(median_locked(), 1));
    const double target = static_cast<double>(min_rtt) * (1 + config_.buffer_percent / 100);
    const double gradient = std::clamp(target / sample_rtt, 0.5, 2.0);
    const uint32_t limit = limit_.load(kRelaxed);
    const double scaled = gradient * limit;
    double next = std::round(scaled + std::sqrt(scaled));
    // Grown only when the window's traffic used at least half of it.
    if (next > limit && 2 * peak_in_flight_.load(kRelaxed) < limit) next = limit;
    limit_.store(static_cast<uint32_t>(std::clamp(next, static_cast<double>(config_.min_limit),
                                                  static_cast<double>(config_.max_limit))),
                 kRelaxed);
  }
  peak_in_flight_.store(in_flight_.load(kRelaxed), kRelaxed);
  samples_.clear();
  window_end_ = now + to_micros(config_.sample_window);
}

void AdaptiveConcurrency::start_measuring_locked() {
  measuring_ = true;
  epoch_.fetch_add(1, kRelaxed);
  limit_before_ = limit_.load(kRelaxed);
  limit_.store(config_.min_limit, kRelaxed);
  samples_.clear();
}

Micros AdaptiveConcurrency::next_measurement(Micros now) {
  const Micros interval = to_micros(config_.min_rtt_interval);
  const auto spread = static_cast<Micros>(static_cast<double>(interval) *
                                          config_.jitter_percent / 100);
  if (spread <= 0) return now + interval;
  random_ ^= random_ << 13;
  random_ ^= random_ >> 7;
  random_ ^= random_ << 17;
  const auto offset = static_cast<Micros>(random_ % static_cast<uint64_t>(2 * spread + 1));
  return now + interval - spread + offset;
}

Micros AdaptiveConcurrency::median_locked() {
  auto middle = samples_.begin() + static_cast<std::ptrdiff_t>(samples_.size() / 2);
  std::nth_element(samples_.begin(), middle, samples_.end());
  return *middle;
}

}  // namespace bulwark::filters
