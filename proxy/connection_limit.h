#pragma once
// A count of open client connections held against a limit, shared by every worker (one for the
// whole process, one per listener name). A worker takes a slot before it accepts a connection
// and gives it back when the connection closes; at the limit it stops accepting, so further
// connections wait in the kernel's backlog instead of costing memory and file descriptors here
// (Envoy's per-listener connection limit, HAProxy's maxconn).

#include <atomic>
#include <cstdint>

namespace bulwark {

class ConnectionLimit {
 public:
  explicit ConnectionLimit(uint64_t max = 0) : max_(max) {}
  ConnectionLimit(const ConnectionLimit&) = delete;
  ConnectionLimit& operator=(const ConnectionLimit&) = delete;

  // Takes a slot unless `max` are taken (0 = no limit). Lock-free; any thread.
  bool try_acquire() {
    uint64_t max = max_.load(std::memory_order_relaxed);
    uint64_t n = count_.load(std::memory_order_relaxed);
    do {
      if (max != 0 && n >= max) return false;
    } while (!count_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    return true;
  }
  void release() { count_.fetch_sub(1, std::memory_order_relaxed); }
  // A reload may change the limit; connections already open stay (the count may exceed it).
  void set_max(uint64_t max) { max_.store(max, std::memory_order_relaxed); }
  uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> max_;
  std::atomic<uint64_t> count_{0};
};

}  // namespace bulwark
