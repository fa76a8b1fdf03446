#include "filters/bulkhead.h"

namespace bulwark::filters {

namespace {

// Increments `count` when it is below `limit`, exactly, whatever the number of threads.
bool increment_below(std::atomic<uint32_t>& count, uint32_t limit) {
  uint32_t cur = count.load();
  while (cur < limit) {
    if (count.compare_exchange_weak(cur, cur + 1)) return true;
  }
  return false;
}

}  // namespace

Bulkhead::Slot Bulkhead::try_acquire() {
  return increment_below(active_, config_.max_concurrent) ? Slot(&active_) : Slot();
}

Bulkhead::QueuePlace Bulkhead::try_enqueue() {
  return increment_below(queued_, config_.max_queued) ? QueuePlace(&queued_) : QueuePlace();
}

}  // namespace bulwark::filters
