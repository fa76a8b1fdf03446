#pragma once
// A route's bulkhead, shared by all workers: at most max_concurrent requests in flight and at
// most max_queued more waiting. Lock-free counters; limits are exact under any number of threads.
//
// The bulkhead only counts. The queue itself (who waits, in which order, and the queue timer)
// belongs to the proxy, one FIFO per worker: a request that finds no free slot takes a
// QueuePlace, waits, and takes a Slot when one frees up. Both are RAII guards, so a request that
// ends in any way gives back what it held.
//
// The missed-wakeup rule (for the proxy): a worker that joins the queue must call try_acquire()
// once more right after try_enqueue(), and a worker that releases a slot while queued() > 0 must
// tell the workers with waiters. Sequentially consistent counters then guarantee that a freed
// slot is never left unused while someone waits.

#include <atomic>
#include <cstdint>

#include "config/config.h"

namespace bulwark::filters {

class Bulkhead {
 public:
  // Guards. Move-only; an empty guard (operator bool false) holds nothing.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& o) noexcept : b_(o.b_) { o.b_ = nullptr; }
    Slot& operator=(Slot&& o) noexcept;
    ~Slot() { reset(); }
    explicit operator bool() const { return b_ != nullptr; }
    void reset();

   private:
    friend class Bulkhead;
    explicit Slot(Bulkhead* b) : b_(b) {}
    Bulkhead* b_ = nullptr;
  };
  class QueuePlace {
   public:
    QueuePlace() = default;
    QueuePlace(QueuePlace&& o) noexcept : b_(o.b_) { o.b_ = nullptr; }
    QueuePlace& operator=(QueuePlace&& o) noexcept;
    ~QueuePlace() { reset(); }
    explicit operator bool() const { return b_ != nullptr; }
    void reset();

   private:
    friend class Bulkhead;
    explicit QueuePlace(Bulkhead* b) : b_(b) {}
    Bulkhead* b_ = nullptr;
  };

  explicit Bulkhead(const config::BulkheadConfig& config) : config_(config) {}
  const config::BulkheadConfig& config() const { return config_; }

  // A slot when fewer than max_concurrent are in flight; empty otherwise.
  Slot try_acquire();
  // A place in the queue when fewer than max_queued wait; empty otherwise.
  QueuePlace try_enqueue();

  uint32_t active() const { return active_.load(); }
  uint32_t queued() const { return queued_.load(); }

 private:
  const config::BulkheadConfig& config_;
  std::atomic<uint32_t> active_{0};
  std::atomic<uint32_t> queued_{0};
};

}  // namespace bulwark::filters
