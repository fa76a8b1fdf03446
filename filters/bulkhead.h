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
  // A unit held of one of the bulkhead's counts (a slot, or a place in the queue), given back
  // when the guard is dropped or reset. Move-only; an empty guard (operator bool false) holds
  // nothing. The tag keeps a Slot and a QueuePlace from being mixed up.
  template <typename Tag>
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& o) noexcept : count_(o.count_) { o.count_ = nullptr; }
    Hold& operator=(Hold&& o) noexcept {
      if (this != &o) {
        reset();
        count_ = o.count_;
        o.count_ = nullptr;
      }
      return *this;
    }
    ~Hold() { reset(); }
    explicit operator bool() const { return count_ != nullptr; }
    void reset() {
      if (count_ == nullptr) return;
      count_->fetch_sub(1);
      count_ = nullptr;
    }

   private:
    friend class Bulkhead;
    explicit Hold(std::atomic<uint32_t>* count) : count_(count) {}
    std::atomic<uint32_t>* count_ = nullptr;
  };
  struct SlotTag;
  struct QueueTag;
  using Slot = Hold<SlotTag>;
  using QueuePlace = Hold<QueueTag>;

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
