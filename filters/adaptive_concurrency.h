#pragma once
// Adaptive concurrency: a limit on a cluster's requests in flight that follows the latency the
// cluster answers with, so nobody has to guess a bulkhead size, and an overloaded upstream is
// given less work before its queue (and its latency) grows. A gradient controller, as Envoy's
// adaptive_concurrency filter and Netflix's concurrency-limits:
//
// - The minimum latency (min_rtt) is measured with the limit held at min_limit: the median of
//   the next min_rtt_samples latencies. Again every min_rtt_interval (± jitter_percent), since
//   what the upstream can do changes (a deploy, a bigger node).
// - Between measurements, at the end of each sample_window, the median latency of the window
//   (sample_rtt) moves the limit:
//     gradient = clamp(min_rtt × (1 + buffer_percent / 100) / sample_rtt, 0.5, 2)
//     limit    = clamp(gradient × limit + sqrt(gradient × limit), min_limit, max_limit)
//   Latency near the minimum (within the buffer) grows the limit; latency that rises, because
//   requests queue at the upstream, shrinks it, at most by half per window. The square root is
//   headroom for bursts, and keeps probing for more.
// - A request is admitted while fewer than `limit` are in flight; the others are refused (the
//   proxy answers 503 adaptive_concurrency_limited).
//
// Thread-safety: shared by all workers. try_acquire() and a permit's end are lock-free; a
// recorded latency takes the mutex (a push into a fixed array), and the end of a window its
// median (once per window).

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "config/config.h"
#include "filters/clock.h"

namespace bulwark::filters {

class AdaptiveConcurrency {
 public:
  // The right to have one request in flight. Move-only; ends (the request is no longer in
  // flight) when recorded, reset or dropped.
  class Permit {
   public:
    Permit() = default;
    Permit(Permit&& o) noexcept : owner_(o.owner_), epoch_(o.epoch_) { o.owner_ = nullptr; }
    Permit& operator=(Permit&& o) noexcept;
    ~Permit() { reset(); }
    explicit operator bool() const { return owner_ != nullptr; }
    // The request got its answer after `latency`: a sample, and the permit ends.
    void record(Micros latency);
    // Ends without a sample (the request never reached the upstream, or failed in a way that
    // says nothing of its latency).
    void reset();

   private:
    friend class AdaptiveConcurrency;
    Permit(AdaptiveConcurrency* owner, uint32_t epoch) : owner_(owner), epoch_(epoch) {}
    AdaptiveConcurrency* owner_ = nullptr;
    uint32_t epoch_ = 0;  // the measurement it was issued under (see epoch_ below)
  };

  // `config` and `clock` must outlive this, and this every permit it issued. `seed` draws the
  // jitter.
  AdaptiveConcurrency(const config::AdaptiveConcurrencyConfig& config, const Clock& clock,
                      uint64_t seed);

  // A permit when fewer than limit() requests are in flight; else an empty one (counted).
  Permit try_acquire() { return acquire(true); }
  // The same for a request already refused once and waiting: a miss is not counted again.
  Permit try_acquire_waiting() { return acquire(false); }

  uint32_t limit() const { return limit_.load(std::memory_order_relaxed); }
  uint32_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }
  // The last minimum latency measured; 0 before the first measurement ends.
  Micros min_rtt() const { return min_rtt_.load(std::memory_order_relaxed); }
  // Whether the minimum latency is being measured (the limit is held at min_limit).
  bool measuring() const;

 private:
  Permit acquire(bool count_refusal);
  void end(bool sampled, Micros latency, uint32_t epoch);
  // Under mu_: the window that ended at `now` moves the limit; a new window starts.
  void close_window_locked(Micros now);
  void start_measuring_locked();
  Micros next_measurement(Micros now);
  // The median of samples_ (reordered).
  Micros median_locked();

  const config::AdaptiveConcurrencyConfig& config_;
  const Clock& clock_;
  std::atomic<uint32_t> limit_;
  std::atomic<uint32_t> in_flight_{0};
  // The most requests in flight at once since the window began: a limit the traffic never came
  // near is not raised (the cluster is not what limits it: "app-limited", as Netflix's
  // concurrency-limits says), so a quiet spell cannot leave a limit far above what the upstream
  // takes when a surge comes.
  std::atomic<uint32_t> peak_in_flight_{0};
  std::atomic<uint64_t> rejected_{0};
  std::atomic<Micros> min_rtt_{0};
  // Counts the minimum measurements begun: only requests admitted during one (at min_limit)
  // measure the minimum, not those still in flight from the higher limit before it.
  std::atomic<uint32_t> epoch_{0};

  mutable std::mutex mu_;
  uint64_t random_;                // xorshift state for the jitter, under mu_
  bool measuring_ = true;          // under mu_
  uint32_t limit_before_ = 0;      // the limit to go back to after a measurement
  Micros window_end_ = 0;          // sampling: when the current window ends
  Micros next_measurement_ = 0;    // sampling: when to measure min_rtt again
  std::vector<Micros> samples_;    // of the measurement or the window; capacity fixed
};

}  // namespace bulwark::filters
