#pragma once
// Owners for libuv handles, and deferred deletion.
//
// libuv may touch a handle until its close callback has run, so a handle's memory can be freed
// only there. UvHandle owns one heap-allocated handle and frees it exactly there: destroying (or
// resetting) the owner closes the handle, which stops it at once (a closed timer never fires, a
// closed socket is read and written no more), and the memory goes a loop turn later. The object
// that held the owner may be freed right away, with no count of open handles and no `delete
// this` in a close callback.
//
// An object that is closed from inside one of its own callbacks cannot be freed there (its
// callers still run on it): it hands itself to a DeferredDeleter, which frees it once the
// current loop phase is over (Envoy's deferredDelete).

#include <uv.h>

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "proxy/slab.h"

namespace bulwark {

template <class H>
class UvHandle {
 public:
  UvHandle() = default;
  // Takes a handle that was allocated with `new` and initialised with its uv_*_init.
  explicit UvHandle(H* h) : h_(h) {}
  ~UvHandle() { reset(); }
  UvHandle(UvHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  UvHandle& operator=(UvHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  H* get() const { return h_; }
  H* operator->() const { return h_; }
  explicit operator bool() const { return h_ != nullptr; }
  uv_handle_t* handle() const { return reinterpret_cast<uv_handle_t*>(h_); }

  // Closes the handle (its memory goes in the close callback) and owns nothing after.
  void reset() {
    if (h_ == nullptr) return;
    uv_close(reinterpret_cast<uv_handle_t*>(std::exchange(h_, nullptr)),
             [](uv_handle_t* h) { delete reinterpret_cast<H*>(h); });
  }

 private:
  H* h_ = nullptr;
};

template <class M>
struct MemberFunctionOf;
template <class T>
struct MemberFunctionOf<void (T::*)()> {
  using Class = T;
};

// A one-shot or repeating timer calling a member function of its owner. Destroying (or closing)
// it stops it: the callback never runs after that.
class Timer {
 public:
  Timer() = default;
  // A timer on `loop` that calls `M` on `owner` when it fires.
  template <auto M>
  static Timer make(uv_loop_t* loop, typename MemberFunctionOf<decltype(M)>::Class* owner) {
    Timer t;
    auto* h = new Handle;
    uv_timer_init(loop, &h->timer);
    h->timer.data = owner;
    t.h_ = UvHandle<Handle>(h);
    t.cb_ = &Timer::call<M>;
    return t;
  }

  void start(uint64_t timeout_ms, uint64_t repeat_ms = 0) {
    uv_timer_start(&h_->timer, cb_, timeout_ms, repeat_ms);
  }
  // Once, calling `M` (another member function of the owner) instead.
  template <auto M>
  void start_once(uint64_t timeout_ms) {
    uv_timer_start(&h_->timer, &Timer::call<M>, timeout_ms, 0);
  }
  void stop() { uv_timer_stop(&h_->timer); }
  bool active() const { return uv_is_active(h_.handle()) != 0; }
  // The timer does not keep its loop running.
  void unref() { uv_unref(h_.handle()); }
  void close() { h_.reset(); }
  explicit operator bool() const { return static_cast<bool>(h_); }

 private:
  template <auto M>
  static void call(uv_timer_t* timer) {
    using T = typename MemberFunctionOf<decltype(M)>::Class;
    (static_cast<T*>(timer->data)->*M)();
  }

  // The handle lives as long as its owner, usually a connection: in the slab with them.
  struct Handle : SlabAllocated<Handle> {
    uv_timer_t timer;
  };
  static_assert(offsetof(Handle, timer) == 0);  // UvHandle casts the uv handle back to it

  UvHandle<Handle> h_;
  uv_timer_cb cb_ = nullptr;
};

// Something a DeferredDeleter may free.
class DeferredDeletable {
 public:
  virtual ~DeferredDeletable() = default;
};

// Frees objects (or hands them back to a free list) once the loop phase that handed them over is
// over: before the loop next polls (its prepare phase) or right after the poll (its check
// phase), whichever comes first, or at flush(). Both handles stay started and unreferenced: the
// loop never blocks with something pending, and no extra system call is made for it.
class DeferredDeleter {
 public:
  explicit DeferredDeleter(uv_loop_t* loop) {
    auto* prepare = new uv_prepare_t;
    uv_prepare_init(loop, prepare);
    prepare->data = this;
    uv_prepare_start(prepare,
                     [](uv_prepare_t* h) { static_cast<DeferredDeleter*>(h->data)->flush(); });
    uv_unref(reinterpret_cast<uv_handle_t*>(prepare));
    prepare_ = UvHandle<uv_prepare_t>(prepare);
    auto* check = new uv_check_t;
    uv_check_init(loop, check);
    check->data = this;
    uv_check_start(check, [](uv_check_t* h) { static_cast<DeferredDeleter*>(h->data)->flush(); });
    uv_unref(reinterpret_cast<uv_handle_t*>(check));
    check_ = UvHandle<uv_check_t>(check);
  }
  ~DeferredDeleter() { flush(); }
  DeferredDeleter(const DeferredDeleter&) = delete;
  DeferredDeleter& operator=(const DeferredDeleter&) = delete;

  // `object` is deleted.
  void defer(DeferredDeletable* object) { defer(object, &delete_deletable); }
  // `release(object)` is called (a free list takes it back, say).
  void defer(void* object, void (*release)(void*)) {
    // While something waits the loop stays alive for it (uv_run would return at once otherwise).
    if (pending_.empty() && check_) uv_ref(check_.handle());
    pending_.push_back({object, release});
  }
  // Frees everything handed over so far (and what that hands over in turn).
  // Not re-entered: what a release hands over in turn is taken by the loop below.
  void flush() {
    if (pending_.empty() || flushing_) return;
    flushing_ = true;
    do {
      deleting_.swap(pending_);
      for (size_t i = 0; i < deleting_.size(); ++i) {
        if (deleting_[i].object != nullptr) deleting_[i].release(deleting_[i].object);
      }
      deleting_.clear();
    } while (!pending_.empty());
    flushing_ = false;
    if (check_) uv_unref(check_.handle());
    // A burst (thousands closed in one turn) does not leave its lists' memory behind.
    if (deleting_.capacity() > kKeptEntries) std::vector<Entry>().swap(deleting_);
    if (pending_.capacity() > kKeptEntries) std::vector<Entry>().swap(pending_);
  }
  // Frees what is pending and closes the handles (the loop is stopping). Objects handed over
  // later wait for flush() or the destructor.
  void close() {
    flush();
    prepare_.reset();
    check_.reset();
  }
  size_t pending() const { return pending_.size(); }
  // Drops what was handed over for `object` and not run yet (it is going away). Linear: for the
  // rare object that goes away with something pending.
  void cancel(void* object) {
    for (Entry& e : pending_) {
      if (e.object == object) e.object = nullptr;
    }
    for (Entry& e : deleting_) {
      if (e.object == object) e.object = nullptr;
    }
  }

 private:
  struct Entry {
    void* object;
    void (*release)(void*);
  };
  static constexpr size_t kKeptEntries = 1024;
  // Not checked by UBSan's vptr check: when the process is out of descriptors (a case the tests
  // drive), the check cannot make the pipe it probes memory with and reports a valid object as
  // invalid, aborting the sanitizer build. ASan still checks the memory.
  __attribute__((no_sanitize("vptr"))) static void delete_deletable(void* p) {
    delete static_cast<DeferredDeletable*>(p);
  }
  UvHandle<uv_prepare_t> prepare_;
  UvHandle<uv_check_t> check_;
  std::vector<Entry> pending_;
  std::vector<Entry> deleting_;
  bool flushing_ = false;
};

}  // namespace bulwark
