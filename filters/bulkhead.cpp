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

Bulkhead::Slot& Bulkhead::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    reset();
    b_ = o.b_;
    o.b_ = nullptr;
  }
  return *this;
}

void Bulkhead::Slot::reset() {
  if (b_ == nullptr) return;
  b_->active_.fetch_sub(1);
  b_ = nullptr;
}

Bulkhead::QueuePlace& Bulkhead::QueuePlace::operator=(QueuePlace&& o) noexcept {
  if (this != &o) {
    reset();
    b_ = o.b_;
    o.b_ = nullptr;
  }
  return *this;
}

void Bulkhead::QueuePlace::reset() {
  if (b_ == nullptr) return;
  b_->queued_.fetch_sub(1);
  b_ = nullptr;
}

Bulkhead::Slot Bulkhead::try_acquire() {
  return increment_below(active_, config_.max_concurrent) ? Slot(this) : Slot();
}

Bulkhead::QueuePlace Bulkhead::try_enqueue() {
  return increment_below(queued_, config_.max_queued) ? QueuePlace(this) : QueuePlace();
}

}  // namespace bulwark::filters
