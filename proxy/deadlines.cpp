#include "proxy/deadlines.h"

namespace bulwark {

void DeadlineList::Entry::cancel() {
  if (list_ != nullptr) list_->remove(*this);
}

DeadlineList::DeadlineList(uv_loop_t* loop, uint64_t duration_ms)
    : loop_(loop),
      duration_ms_(duration_ms),
      timer_(Timer::make<&DeadlineList::on_timer>(loop, this)) {
  timer_.unref();  // what waits keeps the loop alive, not the list
}

DeadlineList::~DeadlineList() {
  while (Entry* e = entries_.front()) remove(*e);
}

void DeadlineList::add(Entry& e) {
  e.cancel();
  e.deadline_ = uv_now(loop_) + duration_ms_;
  e.list_ = this;
  entries_.push_back(&e);
  if (entries_.front() == &e) arm();
}

void DeadlineList::remove(Entry& e) {
  const bool first = entries_.front() == &e;
  entries_.remove(&e);
  e.list_ = nullptr;
  if (first) arm();
}

void DeadlineList::arm() {
  Entry* first = entries_.front();
  if (first == nullptr) {
    if (armed_for_ != 0) timer_.stop();
    armed_for_ = 0;
    return;
  }
  if (armed_for_ == first->deadline_) return;
  armed_for_ = first->deadline_;
  const uint64_t now = uv_now(loop_);
  timer_.start(first->deadline_ > now ? first->deadline_ - now : 0);
}

void DeadlineList::on_timer() {
  armed_for_ = 0;
  const uint64_t now = uv_now(loop_);
  // Each one's callback may add or remove entries (its own included); the list is read afresh.
  while (Entry* e = entries_.front()) {
    if (e->deadline_ > now) break;
    entries_.remove(e);
    e->list_ = nullptr;
    e->on_deadline();
  }
  arm();
}

}  // namespace bulwark
