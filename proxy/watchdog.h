#pragma once
// Is every worker loop still turning? The main thread posts each worker a tiny task (a
// heartbeat) at every tick and notes when each answers. Two readers use the answer:
// - GET /healthz answers 503 once a worker has left a heartbeat unanswered for `watchdog`
//   (config), so the kubelet's liveness probe restarts a process whose loop is stuck;
// - systemd's watchdog gets WATCHDOG=1 every WATCHDOG_USEC / 2 only while every worker answered.
//
// - WorkerHeartbeats: the bookkeeping (no I/O): which heartbeat each worker was sent, when, and
//   which it answered.
// - LoopWatchdog: the timer on the main loop that ticks, posts, logs stalls and pings systemd.
//
// Everything here runs on the main thread, except WorkerHeartbeats::answer().

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "proxy/sd_notify.h"

namespace bulwark {

// Heartbeat bookkeeping for the watchdog. At each tick the main thread asks tick() which workers
// answered the heartbeat they were last sent; those get the next one. A worker that has not
// answered still has its heartbeat queued, so it is sent nothing more until it does. A worker that
// answers late (an older heartbeat) counts as alive again: its loop turned since the last tick.
class WorkerHeartbeats {
 public:
  explicit WorkerHeartbeats(size_t workers);

  struct Recovered {
    size_t worker;
    uint64_t missed_ticks;  // how many ticks it missed in a row
  };
  struct Tick {
    bool all_answered = true;           // every worker answered: send WATCHDOG=1
    uint64_t heartbeat = 0;             // the number to post to each worker of `post_to`
    std::vector<size_t> post_to;        // the workers that answered their last heartbeat
    std::vector<size_t> newly_stalled;  // did not answer, and had at the tick before
    std::vector<Recovered> recovered;   // answered again after missing ticks
  };
  // Main thread, at `now_ms` (any monotonic clock, the same for every call). The first tick
  // finds every worker alive (none was sent anything yet).
  Tick tick(uint64_t now_ms = 0);
  // Any thread (the worker's, when it runs heartbeat `heartbeat`). Lock-free.
  void answer(size_t worker, uint64_t heartbeat);
  size_t workers() const { return posted_.size(); }

  struct Stall {
    size_t worker;
    uint64_t ms;  // since its unanswered heartbeat was posted
  };
  // The worker that has left a heartbeat unanswered longest at `now_ms`, if any has.
  std::optional<Stall> longest_stall(uint64_t now_ms) const;

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> answered_;  // the last heartbeat each worker ran
  std::vector<uint64_t> posted_;                       // the last heartbeat sent to each worker
  std::vector<uint64_t> posted_at_;                    // when it was sent (now_ms of its tick)
  std::vector<uint64_t> missed_;                       // ticks missed in a row, per worker
  uint64_t next_ = 0;
};

// Ticks every `interval()`: the shorter of WATCHDOG_USEC / 2 (when systemd asks for a watchdog)
// and a quarter of `healthz_limit` (when not zero), so a stall is seen within a quarter of either
// limit. Each tick posts a heartbeat to the workers that answered the last one (through `post`);
// WATCHDOG=1 goes out only when every worker answered the heartbeat it was sent before. A worker
// that stops answering is logged at warn once per stall, and once again when it recovers.
class LoopWatchdog {
 public:
  // Runs `fn` on worker `worker`'s loop thread (Worker::post). `notifier` must outlive this.
  using PostFn = std::function<void(size_t worker, std::function<void()> fn)>;

  LoopWatchdog(uv_loop_t* loop, SystemdNotifier& notifier, size_t workers, PostFn post,
               std::chrono::milliseconds healthz_limit = std::chrono::milliseconds(0));
  ~LoopWatchdog() = default;
  LoopWatchdog(const LoopWatchdog&) = delete;
  LoopWatchdog& operator=(const LoopWatchdog&) = delete;

  // Sends the workers their first heartbeat and starts the timer. Does nothing when neither
  // systemd nor /healthz wants a watchdog.
  void start();
  // Stops the systemd pings (systemd stops watching once the service is stopping); the
  // heartbeats go on for /healthz. Idempotent.
  void stop_pings();
  // Closes the timer handle; the loop must run once more before this object is destroyed.
  void close();

  std::chrono::milliseconds interval() const { return interval_; }
  // Why /healthz fails: "worker 1 loop has not turned for 12345 ms" once a worker has left a
  // heartbeat unanswered for healthz_limit; empty otherwise (or without a limit).
  std::string stalled_reason() const;

 private:
  static void on_timer(uv_timer_t* timer);
  void tick();
  void post_heartbeats(const WorkerHeartbeats::Tick& t);
  uint64_t now_ms() const { return uv_now(loop_); }

  uv_loop_t* loop_;
  SystemdNotifier& notifier_;
  PostFn post_;
  std::shared_ptr<WorkerHeartbeats> heartbeats_;  // shared with the posted tasks
  std::chrono::milliseconds healthz_limit_{0};
  std::chrono::milliseconds interval_{0};
  uv_timer_t timer_;
  bool systemd_ = false;  // WATCHDOG=1 pings wanted (and not stopped)
  bool initialized_ = false;
  bool closed_ = false;
  size_t stalled_ = 0;  // workers currently not answering
};

}  // namespace bulwark
