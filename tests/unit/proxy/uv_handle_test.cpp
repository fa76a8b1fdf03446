#include "proxy/uv_handle.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <memory>

#include "tests/unit/proxy/test_loop.h"

namespace bulwark {
namespace {

using testing::Loop;

struct Counter {
  int fired = 0;
  int other = 0;
  void fire() { ++fired; }
  void fire_other() { ++other; }
};

TEST_CASE("timer: fires its owner's member function, and start_once another one") {
  Loop l;
  Counter c;
  Timer t = Timer::make<&Counter::fire>(&l.loop, &c);
  t.start(0);
  uv_run(&l.loop, UV_RUN_ONCE);
  CHECK(c.fired == 1);
  t.start_once<&Counter::fire_other>(0);
  uv_run(&l.loop, UV_RUN_ONCE);
  CHECK(c.other == 1);
  CHECK(c.fired == 1);
  t.start(0);  // back to the timer's own callback
  uv_run(&l.loop, UV_RUN_ONCE);
  CHECK(c.fired == 2);
}

TEST_CASE("timer: destroyed while armed, it never fires and its handle is released") {
  Loop l;
  auto c = std::make_unique<Counter>();
  {
    Timer t = Timer::make<&Counter::fire>(&l.loop, c.get());
    t.start(0);
    CHECK(t.active());
  }
  c.reset();  // the owner is gone too: a late callback would touch freed memory
  uv_run(&l.loop, UV_RUN_NOWAIT);
}

TEST_CASE("uv handle: moving hands over the handle, the moved-from owner closes nothing") {
  Loop l;
  auto* raw = new uv_timer_t;
  uv_timer_init(&l.loop, raw);
  UvHandle<uv_timer_t> a(raw);
  UvHandle<uv_timer_t> b(std::move(a));
  CHECK_FALSE(a);
  CHECK(b.get() == raw);
  b.reset();
  CHECK_FALSE(b);
}

struct Tracked : DeferredDeletable {
  explicit Tracked(int* deleted) : deleted(deleted) {}
  ~Tracked() override { ++*deleted; }
  int* deleted;
};

TEST_CASE("deferred deleter: frees after the loop phase, not when handed over") {
  Loop l;
  int deleted = 0;
  {
    DeferredDeleter d(&l.loop);
    // Handed over from inside a callback, as a connection closing itself would be.
    struct Closer {
      DeferredDeleter* d;
      int* deleted;
      bool seen_alive = false;
      void fire() {
        d->defer(new Tracked(deleted));
        seen_alive = *deleted == 0;
      }
    } closer{&d, &deleted};
    Timer t = Timer::make<&Closer::fire>(&l.loop, &closer);
    t.start(0);
    uv_run(&l.loop, UV_RUN_ONCE);
    CHECK(closer.seen_alive);
    CHECK(deleted == 1);  // the prepare phase after the timers freed it
    CHECK(d.pending() == 0);
    d.defer(new Tracked(&deleted));
    d.close();  // a stopping loop: frees what is pending
    CHECK(deleted == 2);
    d.defer(new Tracked(&deleted));  // after close: freed by the destructor
  }
  CHECK(deleted == 3);
}

}  // namespace
}  // namespace bulwark
