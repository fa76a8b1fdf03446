#include "filters/sliding_window.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace bulwark::filters {
namespace {

constexpr Micros kWindow = 1'000'000;  // 1 s: buckets of 100 ms
constexpr Micros kBucket = kWindow / 10;
constexpr Micros kStart = 1'000'000'000;  // a bucket boundary, like FakeClock's start

TEST_CASE("sliding window: an event counts until one window after its bucket began") {
  SlidingWindow<2> w(kWindow);
  w.add(kStart, 0);
  CHECK(w.sum(kStart)[0] == 1);
  CHECK(w.sum(kStart)[1] == 0);
  CHECK(w.sum(kStart + kWindow - 1)[0] == 1);
  CHECK(w.sum(kStart + kWindow)[0] == 0);
  CHECK(w.sum(kStart + 5 * kWindow)[0] == 0);
}

TEST_CASE("sliding window: an event late in its bucket expires with the bucket") {
  SlidingWindow<1> w(kWindow);
  w.add(kStart + kBucket / 2, 0);
  CHECK(w.sum(kStart + kWindow - 1)[0] == 1);
  // Gone only 95% of a window after it happened: the window slides in whole buckets.
  CHECK(w.sum(kStart + kWindow)[0] == 0);
}

TEST_CASE("sliding window: slides one bucket at a time") {
  SlidingWindow<1> w(kWindow);
  for (int i = 0; i < 10; ++i) w.add(kStart + i * kBucket, 0, static_cast<uint64_t>(i + 1));
  CHECK(w.sum(kStart + 9 * kBucket)[0] == 55);
  uint64_t expected = 55;
  for (int i = 0; i < 10; ++i) {
    expected -= static_cast<uint64_t>(i + 1);  // bucket i leaves
    CHECK(w.sum(kStart + (10 + i) * kBucket)[0] == expected);
  }
}

TEST_CASE("sliding window: counters are independent and add n at once") {
  SlidingWindow<3> w(kWindow);
  w.add(kStart, 0);
  w.add(kStart, 1, 5);
  w.add(kStart + kBucket, 2, 7);
  w.add(kStart + kBucket, 1);
  auto c = w.sum(kStart + kBucket);
  CHECK(c[0] == 1);
  CHECK(c[1] == 6);
  CHECK(c[2] == 7);
  // Asking about the past does not count buckets from its future.
  CHECK(w.sum(kStart)[2] == 0);
}

TEST_CASE("sliding window: a recycled bucket starts from zero") {
  SlidingWindow<1> w(kWindow);
  w.add(kStart, 0, 100);
  w.add(kStart + kWindow, 0);  // same bucket slot, one window later
  CHECK(w.sum(kStart + kWindow)[0] == 1);
  w.add(kStart + 7 * kWindow + 3 * kBucket, 0);  // after a long silence
  CHECK(w.sum(kStart + 7 * kWindow + 3 * kBucket)[0] == 1);
}

TEST_CASE("sliding window: an add with an older time joins the newer bucket") {
  SlidingWindow<1> w(kWindow);
  w.add(kStart + kWindow, 0);
  w.add(kStart, 0);  // a writer that read the clock long ago: counted, not lost
  CHECK(w.sum(kStart + kWindow)[0] == 2);
}

TEST_CASE("sliding window: reset forgets everything") {
  SlidingWindow<2> w(kWindow);
  for (int i = 0; i < 10; ++i) w.add(kStart + i * kBucket, i % 2);
  w.reset();
  auto c = w.sum(kStart + 9 * kBucket);
  CHECK(c[0] == 0);
  CHECK(c[1] == 0);
  w.add(kStart + 9 * kBucket, 1);
  CHECK(w.sum(kStart + 9 * kBucket)[1] == 1);
}

TEST_CASE("sliding window: a window shorter than ten microseconds uses one-microsecond buckets") {
  SlidingWindow<1> w(5);
  w.add(kStart, 0);
  CHECK(w.sum(kStart + 9)[0] == 1);
  CHECK(w.sum(kStart + 10)[0] == 0);
}

TEST_CASE("sliding window: concurrent adds within one bucket are all counted") {
  SlidingWindow<2> w(kWindow);
  constexpr int kThreads = 8;
  constexpr int kAdds = 10000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&w, t] {
      for (int i = 0; i < kAdds; ++i) w.add(kStart + kBucket / 2, static_cast<size_t>(t % 2));
    });
  }
  for (auto& th : threads) th.join();
  auto c = w.sum(kStart + kBucket / 2);
  CHECK(c[0] == uint64_t{kThreads / 2} * kAdds);
  CHECK(c[1] == uint64_t{kThreads / 2} * kAdds);
}

TEST_CASE("sliding window: concurrent adds while buckets recycle stay within the events added") {
  // Mostly a ThreadSanitizer target: writers recycle buckets under each other.
  SlidingWindow<1> w(kWindow);
  constexpr int kThreads = 8;
  constexpr int kSteps = 2000;
  std::atomic<uint64_t> max_seen{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kSteps; ++i) {
        Micros now = kStart + i * kBucket;  // each step is a new bucket
        w.add(now, 0);
        uint64_t s = w.sum(now)[0];
        uint64_t m = max_seen.load();
        while (s > m && !max_seen.compare_exchange_weak(m, s)) {
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(max_seen.load() >= 1);
  CHECK(max_seen.load() <= uint64_t{kThreads} * kSteps);
  CHECK(w.sum(kStart + (kSteps - 1) * kBucket)[0] <= uint64_t{kThreads} * kSteps);
}

}  // namespace
}  // namespace bulwark::filters
