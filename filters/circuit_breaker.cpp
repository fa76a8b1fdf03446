#include "filters/circuit_breaker.h"

#include <algorithm>

namespace bulwark::filters {

const char* to_string(CircuitState s) {
  switch (s) {
    case CircuitState::kClosed:
      return "closed";
    case CircuitState::kOpen:
      return "open";
    case CircuitState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

// ---- Permit ----

CircuitBreaker::Permit::Permit(Permit&& o) noexcept
    : breaker_(o.breaker_), generation_(o.generation_), probe_(o.probe_) {
  o.breaker_ = nullptr;
}

CircuitBreaker::Permit& CircuitBreaker::Permit::operator=(Permit&& o) noexcept {
  if (this != &o) {
    reset();
    breaker_ = o.breaker_;
    generation_ = o.generation_;
    probe_ = o.probe_;
    o.breaker_ = nullptr;
  }
  return *this;
}

CircuitBreaker::Permit::~Permit() { reset(); }

void CircuitBreaker::Permit::record(CallOutcome outcome, Micros duration) {
  CircuitBreaker* b = breaker_;
  if (b == nullptr) return;
  breaker_ = nullptr;
  b->on_outcome(generation_, probe_, outcome, duration);
}

void CircuitBreaker::Permit::reset() {
  CircuitBreaker* b = breaker_;
  if (b == nullptr) return;
  breaker_ = nullptr;
  if (probe_) b->on_probe_dropped(generation_);
}

// ---- CircuitBreaker ----

CircuitBreaker::CircuitBreaker(const config::CircuitBreakerConfig& config, const Clock& clock)
    : config_(config),
      clock_(clock),
      slow_call_us_(to_micros(config.slow_call_duration)),
      window_(to_micros(config.window)),
      open_duration_(to_micros(config.open_duration)) {}

CircuitBreaker::Permit CircuitBreaker::try_acquire() {
  uint64_t phase = phase_.load(std::memory_order_acquire);
  // The hot path: closed costs one atomic load.
  if (state_of(phase) == CircuitState::kClosed) return Permit(this, generation_of(phase), false);
  const Micros now = clock_.now();
  if (state_of(phase) == CircuitState::kOpen && now < open_until_.load(std::memory_order_acquire)) {
    return Permit();
  }

  Permit permit;
  bool moved_to_half_open = false;  // from open
  {
    std::lock_guard<std::mutex> lock(mu_);
    phase = phase_.load(std::memory_order_relaxed);
    switch (state_of(phase)) {
      case CircuitState::kClosed:  // closed meanwhile
        return Permit(this, generation_of(phase), false);
      case CircuitState::kOpen:
        if (now < open_until_.load(std::memory_order_relaxed)) return Permit();
        transition_locked(CircuitState::kHalfOpen, now);
        moved_to_half_open = true;
        phase = phase_.load(std::memory_order_relaxed);
        [[fallthrough]];
      case CircuitState::kHalfOpen:
        if (probes_out_ < config_.half_open_calls) {
          ++probes_out_;
          permit = Permit(this, generation_of(phase), true);
        }
        break;
    }
  }
  if (moved_to_half_open) run_hook(CircuitState::kOpen, CircuitState::kHalfOpen);
  return permit;
}

void CircuitBreaker::on_outcome(uint64_t generation, bool probe, CallOutcome outcome,
                                Micros duration) {
  const bool failure = outcome == CallOutcome::kFailure;
  const bool slow = duration > slow_call_us_;
  const Micros now = clock_.now();

  if (!probe) {
    const uint64_t phase = pack(generation, CircuitState::kClosed);
    if (phase_.load(std::memory_order_acquire) != phase) return;  // from an earlier period
    window_.add(now, kCalls);
    if (!failure && !slow) return;  // a success cannot trip the circuit
    if (failure) window_.add(now, kFailures);
    if (slow) window_.add(now, kSlow);
    const auto c = window_.sum(now);
    const bool trip = c[kCalls] >= config_.minimum_calls &&
                      (c[kFailures] * 100 >= uint64_t{config_.failure_rate_percent} * c[kCalls] ||
                       c[kSlow] * 100 >= uint64_t{config_.slow_call_rate_percent} * c[kCalls]);
    if (!trip) return;
    CircuitState from;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (phase_.load(std::memory_order_relaxed) != phase) return;  // someone else tripped it
      from = transition_locked(CircuitState::kOpen, now);
    }
    run_hook(from, CircuitState::kOpen);
    return;
  }

  CircuitState from;
  CircuitState to;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (phase_.load(std::memory_order_relaxed) != pack(generation, CircuitState::kHalfOpen)) return;
    ++probes_done_;
    if (failure) ++probe_failures_;
    if (slow) ++probe_slow_;
    if (probes_done_ < config_.half_open_calls) return;
    const uint64_t done = probes_done_;
    const bool healthy =
        uint64_t{probe_failures_} * 100 < uint64_t{config_.failure_rate_percent} * done &&
        uint64_t{probe_slow_} * 100 < uint64_t{config_.slow_call_rate_percent} * done;
    if (healthy) {
      to = CircuitState::kClosed;
    } else {
      to = CircuitState::kOpen;
      const Micros max = to_micros(config_.max_open_duration);
      open_duration_ = open_duration_ > max / 2 ? max : std::min(max, 2 * open_duration_);
    }
    from = transition_locked(to, now);
  }
  run_hook(from, to);
}

void CircuitBreaker::on_probe_dropped(uint64_t generation) {
  std::lock_guard<std::mutex> lock(mu_);
  if (phase_.load(std::memory_order_relaxed) != pack(generation, CircuitState::kHalfOpen)) return;
  if (probes_out_ > probes_done_) --probes_out_;
}

CircuitState CircuitBreaker::transition_locked(CircuitState to, Micros now) {
  const uint64_t phase = phase_.load(std::memory_order_relaxed);
  switch (to) {
    case CircuitState::kOpen:
      open_until_.store(now + open_duration_, std::memory_order_release);
      break;
    case CircuitState::kHalfOpen:
      probes_out_ = probes_done_ = probe_failures_ = probe_slow_ = 0;
      break;
    case CircuitState::kClosed:
      // Forget the outcomes from before the circuit opened, before anyone can add new ones.
      window_.reset();
      open_duration_ = to_micros(config_.open_duration);
      break;
  }
  phase_.store(pack(generation_of(phase) + 1, to), std::memory_order_release);
  transitions_[static_cast<size_t>(to)].fetch_add(1, std::memory_order_relaxed);
  return state_of(phase);
}

CircuitState CircuitBreaker::state() const {
  const CircuitState s = state_of(phase_.load(std::memory_order_acquire));
  if (s == CircuitState::kOpen && clock_.now() >= open_until_.load(std::memory_order_acquire)) {
    return CircuitState::kHalfOpen;
  }
  return s;
}

Micros CircuitBreaker::open_duration() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_duration_;
}

}  // namespace bulwark::filters
