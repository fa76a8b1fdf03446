#pragma once
// A per-cluster circuit breaker, shared by all workers: closed / open / half-open over a sliding
// time window, as in Resilience4j.
//
// Closed: every call is admitted and its outcome counted in the window. Once at least
// minimum_calls completed within the window, the circuit opens when the failure rate reaches
// failure_rate_percent or the slow-call rate reaches slow_call_rate_percent.
// Open: no call is admitted. After the open duration it becomes half-open.
// Half-open: exactly half_open_calls probe permits are handed out (never more, whatever the
// number of threads). When all of them have reported, the circuit closes (window reset, open
// duration back to open_duration) if both rates are under their thresholds, and opens again
// otherwise, for twice the previous open duration, capped at max_open_duration. A probe permit
// dropped without an outcome (the client went away, the try never reached the upstream) goes
// back to the pool, so another call can probe.
//
// Outcomes of calls admitted in an earlier state (a call that started while closed and ends
// while half-open) are ignored: every permit carries the generation it was issued in.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>

#include "config/config.h"
#include "filters/clock.h"
#include "filters/sliding_window.h"

namespace bulwark::filters {

enum class CircuitState : uint8_t {
  kClosed = 0,
  kOpen = 1,
  kHalfOpen = 2
};                                      // bulwark_circuit_state
const char* to_string(CircuitState s);  // "closed", "open", "half_open"

enum class CallOutcome : uint8_t {
  kSuccess,  // a response below 500
  kFailure,  // a 5xx response, connect failure, reset, timeout
};

class CircuitBreaker {
 public:
  // Called on every transition, on the thread that caused it, outside the breaker's lock.
  using TransitionHook = std::function<void(CircuitState from, CircuitState to)>;

  // The right to make one call. Move-only; reports nothing if dropped unrecorded, except that a
  // half-open probe permit is returned.
  class Permit {
   public:
    Permit() = default;
    Permit(Permit&& o) noexcept;
    Permit& operator=(Permit&& o) noexcept;
    ~Permit();
    explicit operator bool() const { return breaker_ != nullptr; }
    // Reports how the call went; `duration` is how long it took (slow when longer than
    // slow_call_duration). The permit is spent afterwards; recording an empty permit does nothing.
    void record(CallOutcome outcome, Micros duration);
    // Gives the permit back without an outcome (same as dropping it).
    void reset();

   private:
    friend class CircuitBreaker;
    Permit(CircuitBreaker* b, uint64_t generation, bool probe)
        : breaker_(b), generation_(generation), probe_(probe) {}
    CircuitBreaker* breaker_ = nullptr;
    uint64_t generation_ = 0;
    bool probe_ = false;
  };

  // `config` and `clock` must outlive the breaker, and the breaker every permit it issued.
  CircuitBreaker(const config::CircuitBreakerConfig& config, const Clock& clock);
  // Not thread-safe: set the hook before the breaker is shared.
  void set_transition_hook(TransitionHook hook) { hook_ = std::move(hook); }

  // A permit when a call may go now (closed, or one of the half-open probes); an empty permit
  // when the circuit is open or all probes are out. May move open -> half-open.
  Permit try_acquire();

  // The state as a caller would see it now: an open circuit whose open time has passed reads as
  // half-open.
  CircuitState state() const;
  // How many transitions into `to` happened so far.
  uint64_t transitions(CircuitState to) const {
    return transitions_[static_cast<size_t>(to)].load(std::memory_order_relaxed);
  }
  // The length of the current (or next) open period.
  Micros open_duration() const;

 private:
  enum { kCalls, kFailures, kSlow };
  // The state and the generation change together, so they live in one atomic word: the
  // generation (incremented by every transition) above two bits of CircuitState.
  static constexpr uint64_t pack(uint64_t generation, CircuitState s) {
    return generation << 2 | static_cast<uint64_t>(s);
  }
  static constexpr CircuitState state_of(uint64_t phase) {
    return static_cast<CircuitState>(phase & 3);
  }
  static constexpr uint64_t generation_of(uint64_t phase) { return phase >> 2; }

  void on_outcome(uint64_t generation, bool probe, CallOutcome outcome, Micros duration);
  void on_probe_dropped(uint64_t generation);
  // Under mu_: moves to `to` (a new generation) and returns the state it left, for the hook,
  // which the caller runs after unlocking. Moving to kOpen uses open_duration_ as it is.
  CircuitState transition_locked(CircuitState to, Micros now);
  void run_hook(CircuitState from, CircuitState to) const {
    if (hook_) hook_(from, to);
  }

  const config::CircuitBreakerConfig& config_;
  const Clock& clock_;
  const Micros slow_call_us_;
  TransitionHook hook_;      // set before the breaker is shared; read by every thread afterwards
  SlidingWindow<3> window_;  // closed-state outcomes
  std::atomic<uint64_t> phase_{pack(0, CircuitState::kClosed)};  // written under mu_
  std::array<std::atomic<uint64_t>, 3> transitions_{};

  // Under mu_ (read without it where noted).
  mutable std::mutex mu_;
  std::atomic<Micros> open_until_{0};  // read without the lock by state() and try_acquire()
  Micros open_duration_;
  uint32_t probes_out_ = 0;   // permits handed out (and not dropped) in this half-open period
  uint32_t probes_done_ = 0;  // of which reported
  uint32_t probe_failures_ = 0;
  uint32_t probe_slow_ = 0;
};

}  // namespace bulwark::filters
