// The systemd notification protocol against a real unix datagram socket standing in for systemd
// (a path in a temporary directory, and an abstract name), the watchdog's heartbeat bookkeeping,
// and the watchdog timer on a real libuv loop with workers that can be made to stop answering.

#include "proxy/sd_notify.h"
#include "proxy/watchdog.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bulwark {
namespace {

using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "bulwark-sd-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A unique abstract socket name, without the leading '@'.
std::string abstract_name() {
  static std::atomic<int> counter{0};
  return "bulwark-sd-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

// What systemd does: a bound datagram socket that receives the notifications.
class FakeSystemd {
 public:
  // `name` is NOTIFY_SOCKET: a path, or "@abstract".
  explicit FakeSystemd(const std::string& name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(name.size() < sizeof addr.sun_path);
    std::memcpy(addr.sun_path, name.data(), name.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    if (name[0] == '@') {
      addr.sun_path[0] = '\0';
    } else {
      ++len;  // the path's NUL
    }
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0);
  }
  ~FakeSystemd() { ::close(fd_); }

  // The next datagram, or nullopt when none arrives within `timeout`.
  std::optional<std::string> receive(std::chrono::milliseconds timeout = 2000ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }

 private:
  int fd_ = -1;
};

uint64_t monotonic_usec() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
}

std::string mainpid() { return "MAINPID=" + std::to_string(::getpid()); }

// Checks every message bulwark sends, with exact payloads, through `notifier` to `systemd`.
void check_messages(SystemdNotifier& notifier, FakeSystemd& systemd) {
  REQUIRE(notifier.enabled());
  notifier.ready("serving: 2 workers");
  CHECK(systemd.receive() == "READY=1\nSTATUS=serving: 2 workers\n" + mainpid());
  CHECK(notifier.ready_status() == "serving: 2 workers");
  notifier.watchdog();
  CHECK(systemd.receive() == "WATCHDOG=1");
  notifier.status("line one\nline two");
  CHECK(systemd.receive() == "STATUS=line one line two");
  notifier.stopping("draining after SIGTERM");
  CHECK(systemd.receive() == "STOPPING=1\nSTATUS=draining after SIGTERM");
  CHECK(notifier.send("X=1"));
  CHECK(systemd.receive() == "X=1");
}

TEST_CASE("sd_notify: messages reach a socket named by its path, with exact payloads") {
  TempDir dir;
  std::string path = dir.file("notify");
  FakeSystemd systemd(path);
  SystemdNotifier notifier(path, 0us);
  check_messages(notifier, systemd);
  CHECK(notifier.watchdog_timeout() == 0us);
}

TEST_CASE("sd_notify: messages reach an abstract socket named with a leading @") {
  std::string name = "@" + abstract_name();
  FakeSystemd systemd(name);
  SystemdNotifier notifier(name, 0us);
  check_messages(notifier, systemd);
}

TEST_CASE(
    "sd_notify: reloading sends RELOADING=1 with CLOCK_MONOTONIC microseconds, then READY=1") {
  TempDir dir;
  FakeSystemd systemd(dir.file("notify"));
  SystemdNotifier notifier(dir.file("notify"), 0us);
  uint64_t before = monotonic_usec();
  notifier.reloading("reloading the configuration");
  uint64_t after = monotonic_usec();
  auto message = systemd.receive();
  REQUIRE(message);
  const std::string head = "RELOADING=1\nMONOTONIC_USEC=";
  const std::string tail = "\nSTATUS=reloading the configuration";
  REQUIRE(message->rfind(head, 0) == 0);
  REQUIRE(message->size() > head.size() + tail.size());
  REQUIRE(message->substr(message->size() - tail.size()) == tail);
  std::string digits = message->substr(head.size(), message->size() - head.size() - tail.size());
  REQUIRE(digits.find_first_not_of("0123456789") == std::string::npos);
  uint64_t usec = std::stoull(digits);
  CHECK(usec >= before);
  CHECK(usec <= after);

  notifier.ready("config v2 applied");
  CHECK(systemd.receive() == "READY=1\nSTATUS=config v2 applied\n" + mainpid());
}

std::function<const char*(const char*)> fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST_CASE("sd_notify: without NOTIFY_SOCKET nothing is sent and every call is a no-op") {
  SystemdNotifier notifier = SystemdNotifier::from_environment(fake_env({}), 1234);
  CHECK_FALSE(notifier.enabled());
  CHECK(notifier.watchdog_timeout() == 0us);
  CHECK_FALSE(notifier.send("READY=1"));
  notifier.ready("x");
  notifier.reloading("x");
  notifier.stopping("x");
  notifier.status("x");
  notifier.watchdog();

  SystemdNotifier empty =
      SystemdNotifier::from_environment(fake_env({{"NOTIFY_SOCKET", ""}}), 1234);
  CHECK_FALSE(empty.enabled());
  SystemdNotifier defaulted;
  CHECK_FALSE(defaulted.enabled());
  CHECK_FALSE(defaulted.send("READY=1"));
}

TEST_CASE("sd_notify: WATCHDOG_USEC is honoured only when WATCHDOG_PID is unset or names us") {
  TempDir dir;
  std::string path = dir.file("notify");
  auto notifier = [&](std::map<std::string, std::string> vars) {
    vars["NOTIFY_SOCKET"] = path;
    return SystemdNotifier::from_environment(fake_env(vars), 1234);
  };
  CHECK(notifier({}).watchdog_timeout() == 0us);
  CHECK(notifier({{"WATCHDOG_USEC", "200000"}}).watchdog_timeout() == 200000us);
  CHECK(notifier({{"WATCHDOG_USEC", "200000"}, {"WATCHDOG_PID", "1234"}}).watchdog_timeout() ==
        200000us);
  CHECK(notifier({{"WATCHDOG_USEC", "200000"}, {"WATCHDOG_PID", "4321"}}).watchdog_timeout() ==
        0us);
  CHECK(notifier({{"WATCHDOG_USEC", "200000"}, {"WATCHDOG_PID", "x"}}).watchdog_timeout() == 0us);
  CHECK(notifier({{"WATCHDOG_USEC", "0"}}).watchdog_timeout() == 0us);
  CHECK(notifier({{"WATCHDOG_USEC", "-5"}}).watchdog_timeout() == 0us);
  CHECK(notifier({{"WATCHDOG_USEC", "10s"}}).watchdog_timeout() == 0us);
  // The notifications themselves still work without a watchdog.
  CHECK(notifier({{"WATCHDOG_USEC", "10s"}}).enabled());
}

TEST_CASE("sd_notify: a NOTIFY_SOCKET that is relative or too long disables notifications") {
  CHECK_FALSE(SystemdNotifier("relative/notify", 1s).enabled());
  CHECK(SystemdNotifier("relative/notify", 1s).watchdog_timeout() == 0us);
  CHECK_FALSE(SystemdNotifier("/" + std::string(200, 'x'), 1s).enabled());
  CHECK_FALSE(SystemdNotifier("@" + std::string(200, 'x'), 1s).enabled());
  // A path of 107 bytes fits sun_path with its NUL; an abstract name of 108 bytes fits too.
  CHECK(SystemdNotifier("/" + std::string(106, 'x'), 1s).enabled());
  CHECK(SystemdNotifier("@" + std::string(107, 'x'), 1s).enabled());
}

TEST_CASE("sd_notify: a failed send is not fatal and sending works once systemd listens") {
  TempDir dir;
  std::string path = dir.file("notify");
  SystemdNotifier notifier(path, 0us);
  REQUIRE(notifier.enabled());
  CHECK_FALSE(notifier.send("READY=1"));  // nobody bound yet
  CHECK_FALSE(notifier.send("WATCHDOG=1"));
  FakeSystemd systemd(path);
  CHECK(notifier.send("WATCHDOG=1"));
  CHECK(systemd.receive() == "WATCHDOG=1");
}

TEST_CASE("sd_notify: a notifier moves with its socket") {
  TempDir dir;
  std::string path = dir.file("notify");
  FakeSystemd systemd(path);
  SystemdNotifier a(path, 5s);
  SystemdNotifier b(std::move(a));
  CHECK_FALSE(a.enabled());  // NOLINT(bugprone-use-after-move): a moved-from notifier is disabled
  CHECK(b.watchdog_timeout() == 5s);
  b.watchdog();
  CHECK(systemd.receive() == "WATCHDOG=1");
  SystemdNotifier c;
  c = std::move(b);
  c.watchdog();
  CHECK(systemd.receive() == "WATCHDOG=1");
}

// ---------------------------------------------------------------------------------------------
// WorkerHeartbeats

TEST_CASE("heartbeats: every worker answering keeps the watchdog going") {
  WorkerHeartbeats hb(3);
  auto t = hb.tick();  // nothing was sent yet: all alive
  CHECK(t.all_answered);
  CHECK(t.post_to == std::vector<size_t>{0, 1, 2});
  for (int i = 0; i < 5; ++i) {
    for (size_t w : t.post_to) hb.answer(w, t.heartbeat);
    t = hb.tick();
    CHECK(t.all_answered);
    CHECK(t.post_to.size() == 3);
    CHECK(t.newly_stalled.empty());
    CHECK(t.recovered.empty());
  }
}

TEST_CASE("heartbeats: a worker that stops answering withholds pings, is reported once, recovers") {
  WorkerHeartbeats hb(2);
  auto t = hb.tick();
  uint64_t stuck_heartbeat = t.heartbeat;  // worker 1 never runs this one, for now
  hb.answer(0, t.heartbeat);

  t = hb.tick();
  CHECK_FALSE(t.all_answered);
  CHECK(t.newly_stalled == std::vector<size_t>{1});
  CHECK(t.post_to == std::vector<size_t>{0});  // worker 1 still has its heartbeat queued
  for (int i = 0; i < 3; ++i) {
    hb.answer(0, t.heartbeat);
    t = hb.tick();
    CHECK_FALSE(t.all_answered);
    CHECK(t.newly_stalled.empty());  // reported once per stall, not per tick
    CHECK(t.post_to == std::vector<size_t>{0});
  }

  // Worker 1's loop turns again and runs its (old) heartbeat: it answered since the last tick.
  hb.answer(0, t.heartbeat);
  hb.answer(1, stuck_heartbeat);
  t = hb.tick();
  CHECK(t.all_answered);
  REQUIRE(t.recovered.size() == 1);
  CHECK(t.recovered[0].worker == 1);
  CHECK(t.recovered[0].missed_ticks == 4);
  CHECK(t.post_to == std::vector<size_t>{0, 1});

  for (size_t w : t.post_to) hb.answer(w, t.heartbeat);
  t = hb.tick();
  CHECK(t.all_answered);
  CHECK(t.recovered.empty());
}

TEST_CASE("heartbeats: an answer to an older heartbeat does not count for a newer one") {
  WorkerHeartbeats hb(1);
  auto first = hb.tick();
  hb.answer(0, first.heartbeat);
  auto second = hb.tick();
  REQUIRE(second.post_to == std::vector<size_t>{0});
  hb.answer(0, first.heartbeat);  // a stale answer
  auto third = hb.tick();
  CHECK_FALSE(third.all_answered);
  CHECK(third.newly_stalled == std::vector<size_t>{0});
}

// ---------------------------------------------------------------------------------------------
// LoopWatchdog on a real loop

// Workers stand-ins: a heartbeat posted to a turning worker runs on the next loop iteration; a
// stuck worker keeps it until it is released.
struct FakeWorkers {
  explicit FakeWorkers(size_t n) : queued(n), stuck(n, false), posts(n, 0) {}
  void post(size_t w, std::function<void()> fn) {
    ++posts[w];
    queued[w].push_back(std::move(fn));
  }
  void turn() {
    for (size_t w = 0; w < queued.size(); ++w) {
      if (stuck[w]) continue;
      auto work = std::move(queued[w]);
      queued[w].clear();
      for (auto& fn : work) fn();
    }
  }
  std::vector<std::vector<std::function<void()>>> queued;
  std::vector<bool> stuck;
  std::vector<int> posts;
};

struct TestLoop {
  TestLoop() {
    uv_loop_init(&loop);
    uv_check_init(&loop, &check);
    check.data = this;
    uv_check_start(&check, [](uv_check_t* c) { static_cast<TestLoop*>(c->data)->on_turn(); });
  }
  ~TestLoop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&check), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  // Turns the loop until `done` or 5 s have passed; returns done().
  bool run_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done() && std::chrono::steady_clock::now() < deadline) uv_run(&loop, UV_RUN_ONCE);
    return done();
  }
  std::function<void()> on_turn = [] {};
  uv_loop_t loop;
  uv_check_t check;
};

TEST_CASE(
    "watchdog: pings every WATCHDOG_USEC / 2 while every worker answers, none while one is stuck") {
  TempDir dir;
  std::string path = dir.file("notify");
  FakeSystemd systemd(path);
  SystemdNotifier notifier(path, 40ms);  // a ping every 20 ms
  notifier.ready("serving");
  REQUIRE(systemd.receive() == "READY=1\nSTATUS=serving\n" + mainpid());

  TestLoop loop;
  FakeWorkers workers(2);
  loop.on_turn = [&] { workers.turn(); };
  LoopWatchdog watchdog(&loop.loop, notifier, 2, [&](size_t w, std::function<void()> fn) {
    workers.post(w, std::move(fn));
  });
  CHECK(watchdog.interval() == 20ms);
  watchdog.start();
  CHECK(workers.posts == std::vector<int>{1, 1});  // the first heartbeat goes out at once

  // The datagrams seen, drained without blocking on each loop turn.
  std::vector<std::string> seen;
  auto drain = [&] {
    while (auto m = systemd.receive(0ms)) seen.push_back(*m);
  };
  auto pings = [&] {
    drain();
    return std::count(seen.begin(), seen.end(), "WATCHDOG=1");
  };
  auto start = std::chrono::steady_clock::now();
  REQUIRE(loop.run_until([&] { return pings() >= 5; }));
  auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed >= 5 * 20ms - 5ms);  // no faster than the interval (timer granularity aside)

  // Worker 1 stops turning. At most one more ping (for the heartbeat it answered before), then
  // none while worker 0 keeps getting (and answering) heartbeats tick after tick.
  workers.stuck[1] = true;
  seen.clear();
  REQUIRE(loop.run_until([&] {
    drain();
    return std::count(seen.begin(), seen.end(),
                      "STATUS=worker 1 not answering: watchdog pings withheld") == 1;
  }));
  int pings_before_stall_noticed = static_cast<int>(pings());
  CHECK(pings_before_stall_noticed <= 1);
  int posts0 = workers.posts[0];
  int posts1 = workers.posts[1];
  REQUIRE(loop.run_until([&] { return workers.posts[0] >= posts0 + 10; }));  // ten more ticks
  CHECK(pings() == pings_before_stall_noticed);
  CHECK(workers.posts[1] == posts1);  // nothing more piles up on the stuck worker
  CHECK(workers.queued[1].size() == 1);

  // It turns again: pings resume and the ready status is shown again.
  workers.stuck[1] = false;
  seen.clear();
  REQUIRE(loop.run_until([&] { return pings() >= 3; }));
  CHECK(std::count(seen.begin(), seen.end(), "STATUS=serving") == 1);

  // stop_pings() ends the pings (the heartbeats go on, for /healthz); close() releases the timer.
  watchdog.stop_pings();
  int posts_at_stop = workers.posts[0];
  seen.clear();
  bool turned = false;
  uv_timer_t later;
  uv_timer_init(&loop.loop, &later);
  later.data = &turned;
  uv_timer_start(
      &later, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 100, 0);
  REQUIRE(loop.run_until([&] { return turned; }));
  CHECK(workers.posts[0] > posts_at_stop);
  CHECK(pings() == 0);
  uv_close(reinterpret_cast<uv_handle_t*>(&later), nullptr);
  watchdog.close();
  uv_run(&loop.loop, UV_RUN_NOWAIT);  // the handles' memory must outlive their close
}

TEST_CASE("watchdog: a worker stuck for the healthz limit is named, and forgotten once it turns") {
  SystemdNotifier notifier;  // no systemd: the heartbeats serve /healthz alone
  TestLoop loop;
  FakeWorkers workers(2);
  loop.on_turn = [&] { workers.turn(); };
  LoopWatchdog watchdog(&loop.loop, notifier, 2,
                        [&](size_t w, std::function<void()> fn) { workers.post(w, std::move(fn)); },
                        80ms);
  CHECK(watchdog.interval() == 20ms);  // a quarter of the limit
  watchdog.start();
  REQUIRE(loop.run_until([&] { return workers.posts[0] >= 5; }));
  CHECK(watchdog.stalled_reason().empty());

  workers.stuck[1] = true;
  const auto stuck_at = std::chrono::steady_clock::now();
  REQUIRE(loop.run_until([&] { return !watchdog.stalled_reason().empty(); }));
  const auto seen_after = std::chrono::steady_clock::now() - stuck_at;
  INFO(watchdog.stalled_reason());
  CHECK(watchdog.stalled_reason().rfind("worker 1 loop has not turned for ", 0) == 0);
  // Not before the limit (the heartbeat it missed went out at most one tick before it stuck),
  // and within a tick or so after it.
  CHECK(seen_after >= 80ms - 20ms - 5ms);
  CHECK(seen_after < 80ms + 2s);

  workers.stuck[1] = false;
  REQUIRE(loop.run_until([&] { return watchdog.stalled_reason().empty(); }));
  watchdog.close();
  uv_run(&loop.loop, UV_RUN_NOWAIT);
}

TEST_CASE("watchdog: without WATCHDOG_USEC or a healthz limit start() does nothing") {
  TempDir dir;
  std::string path = dir.file("notify");
  FakeSystemd systemd(path);
  SystemdNotifier notifier(path, 0us);
  TestLoop loop;
  int posts = 0;
  LoopWatchdog watchdog(&loop.loop, notifier, 2,
                           [&](size_t, std::function<void()>) { ++posts; });
  watchdog.start();
  CHECK(watchdog.interval() == 0ms);
  CHECK(posts == 0);
  CHECK_FALSE(systemd.receive(0ms));
  watchdog.stop_pings();
  watchdog.close();
  uv_run(&loop.loop, UV_RUN_NOWAIT);
}

}  // namespace
}  // namespace bulwark
