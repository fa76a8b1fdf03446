#pragma once
// Runs functions on a loop's thread, posted from any thread (uv_async_t plus a locked inbox).
// The lock is taken once per post and once per wake-up, never on the request path.

#include <uv.h>

#include <functional>
#include <mutex>
#include <vector>

namespace bulwark {

class TaskQueue {
 public:
  void init(uv_loop_t* loop) {
    uv_async_init(loop, &async_, &TaskQueue::on_async);
    async_.data = this;
  }
  // Drops `fn` once the queue is closed.
  void post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    inbox_.push_back(std::move(fn));
    uv_async_send(&async_);
  }
  // Closes the handle (on the loop's thread); posts after this are dropped.
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  }

 private:
  static void on_async(uv_async_t* a) {
    auto* self = static_cast<TaskQueue*>(a->data);
    std::vector<std::function<void()>> work;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      work.swap(self->inbox_);
    }
    for (auto& fn : work) fn();
  }

  uv_async_t async_;
  std::mutex mu_;
  std::vector<std::function<void()>> inbox_;
  bool closed_ = false;
};

}  // namespace bulwark
