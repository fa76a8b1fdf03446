#pragma once
// systemd's service notification protocol (sd_notify(3)), implemented directly: a newline-separated
// list of VAR=VALUE assignments sent as one datagram to the unix socket named by NOTIFY_SOCKET.
//
// - SystemdNotifier: the socket and the messages (READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1,
//   STATUS=...). Without NOTIFY_SOCKET every call does nothing.
// The watchdog that decides when WATCHDOG=1 may go out is LoopWatchdog (watchdog.h).
//
// Everything here runs on the main thread.

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

}  // namespace bulwark
