#include "proxy/pacer.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <vector>

namespace bulwark {
namespace {

// A real loop with a pacer; turn() runs one loop iteration without blocking.
class Loop {
 public:
  // A worker loop always has live handles (listening sockets, its task queue); a 2 s timer
  // stands in for them here, so the loop runs and, when nothing else is due, sleeps in poll.
  Loop() {
    REQUIRE(uv_loop_init(&loop_) == 0);
    pacer_ = std::make_unique<Pacer>(&loop_);
    uv_timer_init(&loop_, &keep_alive_);
    uv_timer_start(
        &keep_alive_, [](uv_timer_t*) {}, 2000, 2000);
  }
  ~Loop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&keep_alive_), nullptr);
    pacer_->close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }
  Pacer& pacer() { return *pacer_; }
  void turn() { uv_run(&loop_, UV_RUN_NOWAIT); }
  // One iteration that may block in poll; returns at once only if something keeps it from
  // blocking (or there is nothing at all to wait for: then no iteration runs).
  void turn_once() { uv_run(&loop_, UV_RUN_ONCE); }

 private:
  uv_loop_t loop_;
  uv_timer_t keep_alive_;
  std::unique_ptr<Pacer> pacer_;
};

struct Recorder : Pacer::Waiter {
  Recorder(std::vector<int>& log, int id) : log(log), id(id) {}
  void on_turn() override { log.push_back(id); }
  std::vector<int>& log;
  int id;
};

TEST_CASE("pacer: a turn's budget is kStepsPerTurn steps, and the next turn has a fresh one") {
  Loop loop;
  for (size_t i = 0; i < Pacer::kStepsPerTurn; ++i) CHECK(loop.pacer().take_step());
  CHECK_FALSE(loop.pacer().take_step());
  loop.turn();
  CHECK(loop.pacer().take_step());
}

TEST_CASE(
    "pacer: waiters go in later turns, first come first served, as many as the budget allows") {
  Loop loop;
  std::vector<int> log;
  std::vector<std::unique_ptr<Recorder>> waiters;
  const int n = static_cast<int>(Pacer::kStepsPerTurn) + 5;
  for (int i = 0; i < n; ++i) waiters.push_back(std::make_unique<Recorder>(log, i));
  while (loop.pacer().take_step()) {
  }
  for (auto& w : waiters) loop.pacer().wait(w.get());
  CHECK(log.empty());  // nothing is called back from inside wait()

  loop.turn();  // the coming poll's budget is used up: nobody goes yet
  CHECK(log.empty());
  loop.turn();  // a fresh budget: a whole budget of waiters
  REQUIRE(log.size() == Pacer::kStepsPerTurn);
  for (size_t i = 0; i < log.size(); ++i) CHECK(log[i] == static_cast<int>(i));

  loop.turn();  // the rest, in order
  REQUIRE(log.size() == static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) CHECK(log[static_cast<size_t>(i)] == i);
}

TEST_CASE("pacer: a cancelled waiter is never called") {
  Loop loop;
  std::vector<int> log;
  Recorder a(log, 1), b(log, 2);
  while (loop.pacer().take_step()) {
  }
  loop.pacer().wait(&a);
  loop.pacer().wait(&b);
  loop.pacer().cancel(&a);
  loop.turn();
  loop.turn();
  CHECK(log == std::vector<int>{2});
}

TEST_CASE("pacer: the loop does not sleep while someone waits") {
  // A waiter must get its turn even when no I/O or timer would wake the loop.
  Loop loop;
  std::vector<int> log;
  Recorder a(log, 1);
  while (loop.pacer().take_step()) {
  }
  loop.pacer().wait(&a);
  auto started = std::chrono::steady_clock::now();
  loop.turn_once();  // over budget: not yet, but the poll must not sleep (until the 2 s timer)
  loop.turn_once();
  CHECK(log == std::vector<int>{1});
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(1000));
}

}  // namespace
}  // namespace bulwark
