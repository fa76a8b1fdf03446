#pragma once
// Time for policies. Every policy takes a Clock so unit tests can drive it with a FakeClock
// through every state without sleeping. Time is monotonic microseconds; only differences mean
// anything.

#include <chrono>
#include <cstdint>

namespace bulwark::filters {

using Micros = int64_t;

inline constexpr Micros to_micros(std::chrono::milliseconds d) {
  return static_cast<Micros>(d.count()) * 1000;
}

class Clock {
 public:
  virtual ~Clock() = default;
  // Safe to call from any thread.
  virtual Micros now() const = 0;
};

// std::chrono::steady_clock (CLOCK_MONOTONIC, the clock libuv uses too).
class MonotonicClock final : public Clock {
 public:
  Micros now() const override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

// A clock that moves only when told. Not thread-safe to advance while others read.
class FakeClock final : public Clock {
 public:
  Micros now() const override { return now_; }
  void advance(Micros us) { now_ += us; }
  void advance(std::chrono::milliseconds d) { now_ += to_micros(d); }

 private:
  Micros now_ = 1'000'000'000;  // not zero, so code that treats 0 as "never" is caught
};

}  // namespace bulwark::filters
