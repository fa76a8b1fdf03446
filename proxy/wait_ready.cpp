#include "proxy/wait_ready.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "config/units.h"
#include "proxy/net.h"

namespace bulwark {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kUsage =
    "usage: bulwark wait-ready [--admin ADDR] [--timeout DURATION]\n"
    "\n"
    "Asks GET /ready of a running bulwark until it answers 200, then exits 0; exits 1 when the\n"
    "timeout passes first (printing the last answer), 2 on a usage error. For postStart hooks,\n"
    "init scripts and tests.\n"
    "\n"
    "      --admin ADDR        the admin or probes listener (default 127.0.0.1:9901)\n"
    "      --timeout DURATION  how long to keep asking (default 30s)\n";

// What one GET /ready got: the status (0 when there was no answer) and the body or the error.
struct Answer {
  int status = 0;
  std::string text;
};

// Whether `fd` becomes ready for `events` before `deadline`.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

// One GET /ready on a new connection, given until `deadline`.
Answer ask_ready(const sockaddr_storage& address, const std::string& host,
                 Clock::time_point deadline) {
  const int fd = start_connect(reinterpret_cast<const sockaddr*>(&address));
  if (fd < 0) return {0, std::string("cannot connect: ") + std::strerror(-fd)};
  Answer answer;
  int error = 0;
  socklen_t size = sizeof error;
  if (!wait_for(fd, POLLOUT, deadline)) {
    answer.text = "no answer (connect timed out)";
  } else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0 || error != 0) {
    answer.text = std::string("cannot connect: ") + std::strerror(error);
  } else {
    const std::string request =
        "GET /ready HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
    std::string response;
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      answer.text = std::string("cannot send: ") + std::strerror(errno);
    } else {
      // The admin listener closes after answering (Connection: close): read until it does.
      char buf[4096];
      while (response.size() < 64 * 1024 && wait_for(fd, POLLIN, deadline)) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
          response.append(buf, static_cast<size_t>(n));
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          break;
        }
      }
      // "HTTP/1.1 200 OK\r\n...\r\n\r\nbody": the status line must be exactly that shape.
      const size_t body = response.find("\r\n\r\n");
      const bool status_line = response.size() >= 13 && response.compare(0, 7, "HTTP/1.") == 0 &&
                               response[7] >= '0' && response[7] <= '9' && response[8] == ' ' &&
                               std::isdigit(static_cast<unsigned char>(response[9])) &&
                               std::isdigit(static_cast<unsigned char>(response[10])) &&
                               std::isdigit(static_cast<unsigned char>(response[11])) &&
                               (response[12] == ' ' || response[12] == '\r');
      if (status_line && body != std::string::npos) {
        answer.status = std::atoi(response.c_str() + 9);
        answer.text = response.substr(body + 4);
        while (!answer.text.empty() && answer.text.back() == '\n') answer.text.pop_back();
      } else {
        answer.text = response.empty() ? "no answer" : "not an HTTP response";
      }
    }
  }
  ::close(fd);
  return answer;
}

}  // namespace

int wait_ready_main(int argc, char** argv) {
  std::string admin = "127.0.0.1:9901";
  milliseconds timeout{30000};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--admin" && i + 1 < argc) {
      admin = argv[++i];
    } else if (a == "--timeout" && i + 1 < argc) {
      auto parsed = config::parse_duration(argv[++i]);
      if (!parsed) {
        std::fprintf(stderr, "bulwark wait-ready: invalid duration '%s' (e.g. 500ms, 30s, 2m)\n",
                     argv[i]);
        return 2;
      }
      timeout = *parsed;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "bulwark wait-ready: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  std::string why;
  auto parsed = config::parse_address(admin, &why);
  sockaddr_storage address{};
  if (!parsed || !parsed->is_ip || to_sockaddr(*parsed, &address) != 0) {
    std::fprintf(stderr, "bulwark wait-ready: --admin needs an IP address and port, got '%s'%s%s\n",
                 admin.c_str(), why.empty() ? "" : ": ", why.c_str());
    return 2;
  }
  const Clock::time_point deadline = Clock::now() + timeout;
  Answer last;
  bool first = true;
  for (;;) {
    // Each try gets at most a second, so a listener that accepts and never answers is asked
    // again rather than waited on to the end; the first gets its second whatever the timeout
    // (--timeout 0s asks once).
    const Clock::time_point now = Clock::now();
    const Clock::time_point attempt_end =
        first ? now + milliseconds(1000) : std::min(deadline, now + milliseconds(1000));
    first = false;
    last = ask_ready(address, parsed->text(), attempt_end);
    if (last.status == 200) {
      std::printf("ready: %s\n", admin.c_str());
      return 0;
    }
    if (Clock::now() + milliseconds(100) >= deadline) break;
    std::this_thread::sleep_for(milliseconds(100));  // a CLI between polls, not a loop thread
  }
  std::fprintf(stderr, "bulwark wait-ready: %s not ready after %lld ms: %s%s\n", admin.c_str(),
               static_cast<long long>(timeout.count()),
               last.status > 0 ? (std::to_string(last.status) + " ").c_str() : "",
               last.text.c_str());
  return 1;
}

}  // namespace bulwark
