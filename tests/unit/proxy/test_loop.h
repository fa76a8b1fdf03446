#pragma once
// A libuv loop for a unit test. At the end it runs until every handle the test closed is
// released, and checks that none is left open.

#include <doctest/doctest.h>
#include <uv.h>

namespace bulwark::testing {

struct Loop {
  Loop() { REQUIRE(uv_loop_init(&loop) == 0); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);  // every handle was closed and released
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Runs until `done` holds (bounded), kept alive by a timer of its own: what the test waits on
  // may not keep the loop running by itself.
  template <class F>
  void run_until(F done) {
    uv_timer_t keep;
    uv_timer_init(&loop, &keep);
    uv_timer_start(
        &keep, [](uv_timer_t*) {}, 5, 5);
    for (int i = 0; i < 2000 && !done(); ++i) uv_run(&loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&keep), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
    REQUIRE(done());
  }

  uv_loop_t loop;
};

}  // namespace bulwark::testing
