#include "proxy/pacer.h"

#include <algorithm>

namespace bulwark {

Pacer::Pacer(uv_loop_t* loop) {
  uv_check_init(loop, &check_);
  uv_prepare_init(loop, &prepare_);
  uv_idle_init(loop, &idle_);
  check_.data = prepare_.data = idle_.data = this;
  uv_check_start(&check_, &Pacer::on_check);
  uv_prepare_start(&prepare_, &Pacer::on_prepare);
  // Neither keeps the loop alive; the idle handle does, but only while someone waits.
  uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
  uv_unref(reinterpret_cast<uv_handle_t*>(&prepare_));
}

void Pacer::close() {
  waiting_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), nullptr);
}

bool Pacer::take_step() {
  if (steps_ >= kStepsPerTurn) return false;
  ++steps_;
  return true;
}

void Pacer::wait(Waiter* w) {
  if (waiting_.empty()) uv_idle_start(&idle_, [](uv_idle_t*) {});
  waiting_.push_back(w);
}

void Pacer::cancel(Waiter* w) {
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), w), waiting_.end());
  running_.erase(std::remove(running_.begin(), running_.end(), w), running_.end());
  if (waiting_.empty()) uv_idle_stop(&idle_);
}

void Pacer::on_check(uv_check_t* h) { static_cast<Pacer*>(h->data)->steps_ = 0; }

void Pacer::on_prepare(uv_prepare_t* h) {
  auto* self = static_cast<Pacer*>(h->data);
  if (self->waiting_.empty()) return;
  // Serve from the front while the budget lasts; an on_turn() may wait() or cancel() again.
  size_t n = std::min(self->waiting_.size(), kStepsPerTurn - std::min(self->steps_, kStepsPerTurn));
  self->running_.assign(self->waiting_.begin(), self->waiting_.begin() + static_cast<long>(n));
  self->waiting_.erase(self->waiting_.begin(), self->waiting_.begin() + static_cast<long>(n));
  while (!self->running_.empty()) {
    Waiter* w = self->running_.front();
    self->running_.erase(self->running_.begin());
    ++self->steps_;
    w->on_turn();
  }
  if (self->waiting_.empty()) uv_idle_stop(&self->idle_);
}

}  // namespace bulwark
