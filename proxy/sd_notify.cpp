#include "proxy/sd_notify.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>

#include "proxy/log.h"

namespace bulwark {
namespace {

std::string status_line(std::string_view status) {
  std::string out = "STATUS=";
  for (char c : status) out += (c == '\n' || c == '\r') ? ' ' : c;
  return out;
}

// A decimal unsigned integer and nothing else.
bool parse_u64(const char* text, uint64_t* out) {
  if (text == nullptr || *text < '0' || *text > '9') return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SystemdNotifier

SystemdNotifier::SystemdNotifier(std::string_view socket, std::chrono::microseconds watchdog)
    : name_(socket) {
  if (socket.empty()) return;
  if (socket.front() != '/' && socket.front() != '@') {
    log::warn("NOTIFY_SOCKET is neither an absolute path nor @abstract: not notifying systemd")
        .str("notify_socket", socket);
    return;
  }
  // An abstract name may hold any byte and is not terminated; a path needs its terminating NUL.
  size_t limit = sizeof address_.sun_path - (socket.front() == '/' ? 1 : 0);
  if (socket.size() > limit) {
    log::warn("NOTIFY_SOCKET is too long: not notifying systemd").str("notify_socket", socket);
    return;
  }
  address_.sun_family = AF_UNIX;
  std::memcpy(address_.sun_path, socket.data(), socket.size());
  if (socket.front() == '@') address_.sun_path[0] = '\0';
  address_size_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket.size() +
                                         (socket.front() == '/' ? 1 : 0));
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) {
    log::warn("cannot create the systemd notification socket").str("error", strerror(errno));
    return;
  }
  watchdog_ = watchdog;
}

SystemdNotifier::~SystemdNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

SystemdNotifier::SystemdNotifier(SystemdNotifier&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      address_(other.address_),
      address_size_(other.address_size_),
      name_(std::move(other.name_)),
      watchdog_(other.watchdog_),
      ready_status_(std::move(other.ready_status_)),
      failing_(other.failing_) {}

SystemdNotifier& SystemdNotifier::operator=(SystemdNotifier&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    address_ = other.address_;
    address_size_ = other.address_size_;
    name_ = std::move(other.name_);
    watchdog_ = other.watchdog_;
    ready_status_ = std::move(other.ready_status_);
    failing_ = other.failing_;
  }
  return *this;
}

SystemdNotifier SystemdNotifier::from_environment() {
  return from_environment([](const char* name) { return static_cast<const char*>(::getenv(name)); },
                          ::getpid());
}

SystemdNotifier SystemdNotifier::from_environment(
    const std::function<const char*(const char*)>& getenv, pid_t pid) {
  const char* socket = getenv("NOTIFY_SOCKET");
  if (socket == nullptr || *socket == '\0') return {};
  std::chrono::microseconds watchdog{0};
  uint64_t usec = 0;
  const char* usec_text = getenv("WATCHDOG_USEC");
  if (usec_text != nullptr && (!parse_u64(usec_text, &usec) || usec == 0)) {
    log::warn("WATCHDOG_USEC is not a positive number of microseconds: no watchdog pings")
        .str("watchdog_usec", usec_text);
    usec = 0;
  }
  if (usec > 0) {
    const char* pid_text = getenv("WATCHDOG_PID");
    uint64_t watchdog_pid = 0;
    if (pid_text == nullptr) {
      watchdog = std::chrono::microseconds(usec);
    } else if (parse_u64(pid_text, &watchdog_pid) && watchdog_pid == static_cast<uint64_t>(pid)) {
      watchdog = std::chrono::microseconds(usec);
    } else {
      log::info("WATCHDOG_PID names another process: no watchdog pings")
          .str("watchdog_pid", pid_text);
    }
  }
  return SystemdNotifier(socket, watchdog);
}

bool SystemdNotifier::send(std::string_view message) {
  if (fd_ < 0) return false;
  ssize_t n;
  do {
    n = ::sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&address_), address_size_);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(message.size())) {
    if (failing_) log::info("systemd notification socket works again").str("notify_socket", name_);
    failing_ = false;
    return true;
  }
  if (!failing_) {
    std::string_view first = message.substr(0, message.find('\n'));
    log::warn("cannot notify systemd; dropping the message (logged once until it works)")
        .str("notify_socket", name_)
        .str("message", first)
        .str("error", n < 0 ? strerror(errno) : "short send");
  }
  failing_ = true;
  return false;
}

void SystemdNotifier::ready(std::string_view status) {
  if (fd_ < 0) return;
  ready_status_ = std::string(status);
  send("READY=1\n" + status_line(status) + "\nMAINPID=" + std::to_string(::getpid()));
}

void SystemdNotifier::reloading(std::string_view status) {
  if (fd_ < 0) return;
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  uint64_t usec =
      static_cast<uint64_t>(now.tv_sec) * 1000000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\n" + status_line(status));
}

void SystemdNotifier::stopping(std::string_view status) {
  if (fd_ < 0) return;
  send("STOPPING=1\n" + status_line(status));
}

void SystemdNotifier::status(std::string_view status) {
  if (fd_ < 0) return;
  send(status_line(status));
}

void SystemdNotifier::watchdog() { send("WATCHDOG=1"); }

}  // namespace bulwark
