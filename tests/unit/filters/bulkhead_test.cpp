#include "filters/bulkhead.h"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <utility>
#include <vector>

namespace bulwark::filters {
namespace {

using config::BulkheadConfig;

BulkheadConfig limits(uint32_t concurrent, uint32_t queued) {
  BulkheadConfig c;
  c.max_concurrent = concurrent;
  c.max_queued = queued;
  return c;
}

TEST_CASE("bulkhead: admits up to max_concurrent") {
  auto c = limits(2, 0);
  Bulkhead b(c);
  Bulkhead::Slot s1 = b.try_acquire();
  Bulkhead::Slot s2 = b.try_acquire();
  CHECK(s1);
  CHECK(s2);
  CHECK(b.active() == 2);
  Bulkhead::Slot s3 = b.try_acquire();
  CHECK_FALSE(s3);
  CHECK(b.active() == 2);
  s1.reset();
  CHECK_FALSE(s1);
  CHECK(b.active() == 1);
  s1.reset();  // twice is harmless
  CHECK(b.active() == 1);
  s3 = b.try_acquire();
  CHECK(s3);
  CHECK(b.active() == 2);
}

TEST_CASE("bulkhead: a slot is released when its guard dies") {
  auto c = limits(1, 0);
  Bulkhead b(c);
  {
    Bulkhead::Slot s = b.try_acquire();
    CHECK(s);
    CHECK_FALSE(b.try_acquire());
  }
  CHECK(b.active() == 0);
  CHECK(b.try_acquire());  // a temporary: taken and released at once
  CHECK(b.active() == 0);
}

TEST_CASE("bulkhead: moving a slot moves the hold") {
  auto c = limits(2, 0);
  Bulkhead b(c);
  Bulkhead::Slot a = b.try_acquire();
  Bulkhead::Slot moved(std::move(a));
  CHECK(moved);
  CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move)
  CHECK(b.active() == 1);
  a.reset();
  CHECK(b.active() == 1);

  Bulkhead::Slot other = b.try_acquire();
  CHECK(b.active() == 2);
  moved = std::move(other);  // moved's old slot is released
  CHECK(b.active() == 1);
  CHECK(moved);
  CHECK_FALSE(other);  // NOLINT(bugprone-use-after-move)

  auto& self = moved;
  moved = std::move(self);
  CHECK(moved);
  CHECK(b.active() == 1);

  moved = Bulkhead::Slot();  // assigning an empty guard releases
  CHECK(b.active() == 0);
}

TEST_CASE("bulkhead: a queue of zero takes no one") {
  auto c = limits(1, 0);
  Bulkhead b(c);
  CHECK_FALSE(b.try_enqueue());
  CHECK(b.queued() == 0);
}

TEST_CASE("bulkhead: queue places up to max_queued and released by RAII") {
  auto c = limits(1, 2);
  Bulkhead b(c);
  Bulkhead::Slot s = b.try_acquire();
  CHECK_FALSE(b.try_acquire());
  Bulkhead::QueuePlace q1 = b.try_enqueue();
  Bulkhead::QueuePlace q2 = b.try_enqueue();
  CHECK(q1);
  CHECK(q2);
  CHECK_FALSE(b.try_enqueue());
  CHECK(b.queued() == 2);
  {
    Bulkhead::QueuePlace q3(std::move(q2));
    CHECK(b.queued() == 2);
  }
  CHECK(b.queued() == 1);
  // The waiter's turn: the slot frees, it takes it and leaves the queue.
  s.reset();
  Bulkhead::Slot mine = b.try_acquire();
  CHECK(mine);
  q1.reset();
  CHECK(b.queued() == 0);
  CHECK(b.active() == 1);
  q1 = b.try_enqueue();
  CHECK(b.queued() == 1);
  q1 = b.try_enqueue();  // the new place replaces (and releases) the old one
  CHECK(b.queued() == 1);
  q1 = Bulkhead::QueuePlace();
  CHECK(b.queued() == 0);
}

TEST_CASE("bulkhead: exact limits under concurrent threads") {
  auto c = limits(5, 3);
  Bulkhead b(c);
  constexpr int kThreads = 8;
  std::atomic<bool> go{false};
  std::vector<std::vector<Bulkhead::Slot>> slots(kThreads);
  std::vector<std::vector<Bulkhead::QueuePlace>> places(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) {
      }
      for (int i = 0; i < 1000; ++i) {
        if (auto s = b.try_acquire()) slots[static_cast<size_t>(t)].push_back(std::move(s));
        if (auto q = b.try_enqueue()) places[static_cast<size_t>(t)].push_back(std::move(q));
      }
    });
  }
  go.store(true);
  for (auto& th : threads) th.join();
  size_t granted = 0, queued = 0;
  for (auto& v : slots) granted += v.size();
  for (auto& v : places) queued += v.size();
  CHECK(granted == 5);
  CHECK(queued == 3);
  CHECK(b.active() == 5);
  CHECK(b.queued() == 3);
  slots.clear();
  places.clear();
  CHECK(b.active() == 0);
  CHECK(b.queued() == 0);
}

TEST_CASE("bulkhead: in-flight never exceeds the limit while threads churn") {
  auto c = limits(3, 0);
  Bulkhead b(c);
  constexpr int kThreads = 8;
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        Bulkhead::Slot s = b.try_acquire();
        if (!s) continue;
        admitted.fetch_add(1);
        int now = inside.fetch_add(1) + 1;
        int m = max_inside.load();
        while (now > m && !max_inside.compare_exchange_weak(m, now)) {
        }
        inside.fetch_sub(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(max_inside.load() <= 3);
  CHECK(admitted.load() >= 1);
  CHECK(b.active() == 0);
}

}  // namespace
}  // namespace bulwark::filters
