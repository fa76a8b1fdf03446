#pragma once
// Takes turns between large transfers on one worker loop. A response body (or tunnel) streams a
// read buffer at a time: read from one socket, write to the other, read again once the write is
// done. With hundreds of large responses under way, every loop turn would move one buffer of
// each, and a short request sharing the worker waits through all of them at each of the turns it
// needs (read the request, read the response...): at the start of the slow-client attack in
// loadtest/run, 200 responses of 6 MiB being pushed into socket buffers held everyone else's
// requests for up to a second and a half. The pacer bounds how many buffers may be armed for one
// poll of the loop (kStepsPerTurn); a transfer over the budget waits for a later turn, and short
// exchanges, which never ask the pacer, go first. Loop turns stay short whatever the number of
// large transfers; each transfer still moves a buffer per turn while they are few.

#include <uv.h>

#include <cstddef>
#include <vector>

namespace bulwark {

class Pacer {
 public:
  // One read buffer (16 KiB) per step.
  static constexpr size_t kStepsPerTurn = 32;

  // Something that waits for a turn of its own.
  class Waiter {
   public:
    // It may take its step now (the pacer counted it).
    virtual void on_turn() = 0;

   protected:
    ~Waiter() = default;
  };

  explicit Pacer(uv_loop_t* loop);
  Pacer(const Pacer&) = delete;
  Pacer& operator=(const Pacer&) = delete;
  // Closes the pacer's handles (the loop must then run to let them go).
  void close();

  // True (and counted) when one more step fits in this turn's budget.
  bool take_step();
  // `w` gets on_turn() in a later loop turn, in the order of asking; at most once per call.
  void wait(Waiter* w);
  // `w` no longer waits (it is going away).
  void cancel(Waiter* w);

 private:
  static void on_check(uv_check_t* h);
  static void on_prepare(uv_prepare_t* h);

  uv_check_t check_;      // after each poll: a fresh budget for the next one
  uv_prepare_t prepare_;  // before each poll: the waiters that fit go
  uv_idle_t idle_;        // active while someone waits: the poll must not block
  size_t steps_ = 0;
  std::vector<Waiter*> waiting_;
  std::vector<Waiter*> running_;  // the waiters being served by on_prepare()
};

}  // namespace bulwark
