#pragma once
// systemd's service notification protocol (sd_notify(3)), implemented directly: a newline-separated
// list of VAR=VALUE assignments sent as one datagram to the unix socket named by NOTIFY_SOCKET.
//
// - SystemdNotifier: the socket and the messages (READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1,
//   STATUS=...). Without NOTIFY_SOCKET every call does nothing.
// - WorkerHeartbeats: which workers answered their last heartbeat (pure bookkeeping, no I/O).
// - SystemdWatchdog: a timer on the main loop that sends WATCHDOG=1 every WATCHDOG_USEC / 2, but
//   only while every worker loop keeps turning, so that a stuck worker gets the process restarted.
//
// Everything here runs on the main thread, except WorkerHeartbeats::answer().

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bulwark {

class SystemdNotifier {
 public:
  // Disabled: every call is a no-op.
  SystemdNotifier() = default;
  // Notifies the socket named `socket` as NOTIFY_SOCKET would (an absolute path, or "@name" for
  // an abstract socket); disabled when `socket` is empty, and disabled with a warning when it is
  // neither form or too long. `watchdog` is WATCHDOG_USEC (zero: no watchdog).
  SystemdNotifier(std::string_view socket, std::chrono::microseconds watchdog);
  ~SystemdNotifier();
  SystemdNotifier(SystemdNotifier&& other) noexcept;
  SystemdNotifier& operator=(SystemdNotifier&& other) noexcept;
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  // From NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. The watchdog is honoured only when
  // WATCHDOG_PID is unset or names this process (`pid`); the variables are left in place.
  // `getenv` stands in for ::getenv in tests.
  static SystemdNotifier from_environment();
  static SystemdNotifier from_environment(const std::function<const char*(const char*)>& getenv,
                                          pid_t pid);

  bool enabled() const { return fd_ >= 0; }
  // WATCHDOG_USEC; zero when there is no watchdog (or no socket).
  std::chrono::microseconds watchdog_timeout() const { return watchdog_; }

  // Sends `message` as one datagram without blocking. A failure (nobody listening, a full queue)
  // drops the message and is logged at warn once until a send succeeds again; it is never fatal.
  // Returns whether the datagram went out (false when disabled).
  bool send(std::string_view message);

  // The messages bulwark sends. `status` becomes STATUS=..., shown by `systemctl status`
  // (newlines in it are replaced by spaces).
  void ready(std::string_view status);      // READY=1, STATUS, MAINPID
  void reloading(std::string_view status);  // RELOADING=1, MONOTONIC_USEC (CLOCK_MONOTONIC), STATUS
  void stopping(std::string_view status);   // STOPPING=1, STATUS
  void status(std::string_view status);     // STATUS alone
  void watchdog();                          // WATCHDOG=1
  // The status of the last ready(), so that it can be shown again after a transient state.
  const std::string& ready_status() const { return ready_status_; }

 private:
  int fd_ = -1;
  sockaddr_un address_{};
  socklen_t address_size_ = 0;
  std::string name_;  // NOTIFY_SOCKET as given, for logs
  std::chrono::microseconds watchdog_{0};
  std::string ready_status_;
  bool failing_ = false;  // the last send failed and was logged
};

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
  // Main thread. The first tick finds every worker alive (none was sent anything yet).
  Tick tick();
  // Any thread (the worker's, when it runs heartbeat `heartbeat`). Lock-free.
  void answer(size_t worker, uint64_t heartbeat);
  size_t workers() const { return posted_.size(); }

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> answered_;  // the last heartbeat each worker ran
  std::vector<uint64_t> posted_;                       // the last heartbeat sent to each worker
  std::vector<uint64_t> missed_;                       // ticks missed in a row, per worker
  uint64_t next_ = 0;
};

// Sends WATCHDOG=1 every WATCHDOG_USEC / 2 while every worker loop answers its heartbeats. Each
// tick posts a tiny task to the workers (through `post`) that records the answer; WATCHDOG=1 goes
// out only when every worker answered the heartbeat it was sent before. A worker that stops
// answering is logged at warn once per stall, and once again when it recovers.
class SystemdWatchdog {
 public:
  // Runs `fn` on worker `worker`'s loop thread (Worker::post). `notifier` must outlive this.
  using PostFn = std::function<void(size_t worker, std::function<void()> fn)>;

  SystemdWatchdog(uv_loop_t* loop, SystemdNotifier& notifier, size_t workers, PostFn post);
  ~SystemdWatchdog() = default;
  SystemdWatchdog(const SystemdWatchdog&) = delete;
  SystemdWatchdog& operator=(const SystemdWatchdog&) = delete;

  // Sends the workers their first heartbeat and starts the timer. Does nothing when the notifier
  // has no watchdog timeout.
  void start();
  // Stops pinging (the timer stays open). Idempotent.
  void stop();
  // Closes the timer handle; the loop must run once more before this object is destroyed.
  void close();

  std::chrono::milliseconds interval() const { return interval_; }

 private:
  static void on_timer(uv_timer_t* timer);
  void tick();
  void post_heartbeats(const WorkerHeartbeats::Tick& t);

  uv_loop_t* loop_;
  SystemdNotifier& notifier_;
  PostFn post_;
  std::shared_ptr<WorkerHeartbeats> heartbeats_;  // shared with the posted tasks
  std::chrono::milliseconds interval_{0};
  uv_timer_t timer_;
  bool initialized_ = false;
  bool closed_ = false;
  size_t stalled_ = 0;  // workers currently not answering
};

}  // namespace bulwark
