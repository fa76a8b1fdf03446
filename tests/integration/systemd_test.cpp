// bulwark under systemd, with the test acting as systemd: it binds the notification socket, starts
// bulwark with NOTIFY_SOCKET and WATCHDOG_USEC, and checks the messages, their order and their
// pace; a worker loop that is really stuck (its thread stopped with ptrace) stops the watchdog
// pings while the main thread still answers.

#include <dirent.h>
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/proxy_fixture.h"
#include "tests/integration/thread_stopper.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

// The systemd side of the protocol: a unix datagram socket bound to a path, read by a thread
// that records each datagram with the time it arrived.
class FakeSystemd {
 public:
  struct Message {
    std::string text;
    Clock::time_point at;
  };

  explicit FakeSystemd(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    reader_ = std::thread([this] { read_loop(); });
  }
  ~FakeSystemd() {
    stop_ = true;
    reader_.join();
    ::close(fd_);
  }

  // NOTIFY_SOCKET=PATH, for the child's environment.
  std::string env() const { return "NOTIFY_SOCKET=" + path_; }

  std::vector<Message> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  // Waits until `condition` holds for the messages so far; false after `timeout`.
  bool wait_for(const std::function<bool(const std::vector<Message>&)>& condition,
                Millis timeout = kDefaultTimeout) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return condition(messages_); });
  }

 private:
  void read_loop() {
    char buf[4096];
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) != 1) continue;
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0) continue;
      std::lock_guard lock(mutex_);
      messages_.push_back({std::string(buf, static_cast<size_t>(n)), Clock::now()});
      cv_.notify_all();
    }
  }

  std::string path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<Message> messages_;
  std::thread reader_;
};

// Whether a datagram holds the assignment `line` ("READY=1") on one of its lines.
bool has_line(const std::string& message, std::string_view line) {
  size_t start = 0;
  while (start <= message.size()) {
    size_t end = message.find('\n', start);
    if (end == std::string::npos) end = message.size();
    if (std::string_view(message).substr(start, end - start) == line) return true;
    start = end + 1;
  }
  return false;
}

size_t count_with(const std::vector<FakeSystemd::Message>& messages, std::string_view line) {
  return static_cast<size_t>(std::count_if(messages.begin(), messages.end(),
                                           [&](const auto& m) { return has_line(m.text, line); }));
}

std::string describe(const std::vector<FakeSystemd::Message>& messages) {
  std::string out;
  for (const auto& m : messages) {
    std::string text = m.text;
    std::replace(text.begin(), text.end(), '\n', '|');
    out += "  " + text + "\n";
  }
  return out;
}

}  // namespace

TEST_CASE(
    "systemd: READY=1 once serving, WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1 on SIGTERM") {
  TempDir dir;
  FakeSystemd systemd(dir.file("notify"));
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.set_env({systemd.env(), "WATCHDOG_USEC=200000"});  // a ping every 100 ms
  bulwark.start(proxy_config(upstream.address()));

  REQUIRE_MESSAGE(systemd.wait_for([](const auto& m) { return count_with(m, "READY=1") > 0; }),
                  bulwark.logs_text());
  // READY=1 means serving: a request goes through at once.
  auto response = http_get(bulwark.port("inbound"), "/right-after-ready");
  REQUIRE_MESSAGE(response, bulwark.logs_text());
  CHECK(response->status == 200);
  auto ready = systemd.messages().front();
  INFO(describe(systemd.messages()));
  CHECK(has_line(ready.text, "READY=1"));
  CHECK(has_line(ready.text, "MAINPID=" + std::to_string(bulwark.pid())));
  CHECK(ready.text.find("STATUS=serving") != std::string::npos);

  constexpr size_t kPings = 8;
  REQUIRE_MESSAGE(
      systemd.wait_for([](const auto& m) { return count_with(m, "WATCHDOG=1") >= kPings; }),
      describe(systemd.messages()) << bulwark.logs_text());

  REQUIRE(bulwark.signal(SIGTERM));
  REQUIRE_MESSAGE(systemd.wait_for([](const auto& m) { return count_with(m, "STOPPING=1") > 0; }),
                  describe(systemd.messages()) << bulwark.logs_text());
  CHECK(bulwark.wait_exit(Millis{5000}) == 0);

  // Order: READY=1 first, STOPPING=1 last, pings in between (and, on a machine so loaded that a
  // worker missed a heartbeat, a STATUS line about it).
  auto messages = systemd.messages();
  INFO(describe(messages));
  REQUIRE(messages.size() >= kPings + 2);
  CHECK(count_with(messages, "READY=1") == 1);
  CHECK(count_with(messages, "STOPPING=1") == 1);
  CHECK(has_line(messages.front().text, "READY=1"));
  CHECK(has_line(messages.back().text, "STOPPING=1"));
  CHECK(messages.back().text.find("STATUS=draining after SIGTERM") != std::string::npos);
  std::vector<Clock::time_point> pings;
  for (size_t i = 1; i + 1 < messages.size(); ++i) {
    if (messages[i].text == "WATCHDOG=1") {
      pings.push_back(messages[i].at);
    } else {
      CHECK(messages[i].text.rfind("STATUS=", 0) == 0);
    }
  }

  // Pace: the k-th ping is sent k intervals (100 ms) after READY=1, at the earliest. Bounds are
  // loose for a loaded CI machine: no faster than half the interval, no slower than three times.
  REQUIRE(pings.size() >= kPings);
  auto span = std::chrono::duration_cast<Millis>(pings.back() - messages.front().at);
  long n = static_cast<long>(pings.size());
  INFO("pings: " << n << " in " << span.count() << " ms after READY=1");
  CHECK(span >= Millis{n * 50});
  CHECK(span <= Millis{n * 300 + 1000});
  Millis longest{0};
  for (size_t i = 1; i < pings.size(); ++i) {
    longest = std::max(longest, std::chrono::duration_cast<Millis>(pings[i] - pings[i - 1]));
  }
  INFO("longest gap between pings: " << longest.count() << " ms");
  CHECK(longest < Millis{1500});
}

TEST_CASE("systemd: a worker loop that is stuck stops the watchdog pings") {
  TempDir dir;
  FakeSystemd systemd(dir.file("notify"));
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.set_env({systemd.env(), "WATCHDOG_USEC=200000"});
  // One worker, so the process has one loop thread besides the main one (and no helper threads:
  // no access log, no DNS). Stopping it with ptrace while it is idle stops its loop for real,
  // as a bug that spun forever on the loop thread would; route regexes cannot since they are RE2.
  ProxyOptions options;
  options.workers = 1;
  bulwark.start(proxy_config(upstream.address(), options));
  REQUIRE_MESSAGE(systemd.wait_for([](const auto& m) { return count_with(m, "WATCHDOG=1") >= 2; }),
                  describe(systemd.messages()) << bulwark.logs_text());

  ThreadStopper stopper;  // destroyed before `bulwark`: the worker runs again, then is killed
  const std::string stopped = stopper.stop_all_but_main(bulwark.pid());
  REQUIRE_MESSAGE(stopped.empty(), stopped);
  REQUIRE_MESSAGE(bulwark.wait_for_log("worker loop did not answer its heartbeat"),
                  describe(systemd.messages()) << bulwark.logs_text());
  REQUIRE_MESSAGE(systemd.wait_for([](const auto& m) {
    return std::any_of(m.begin(), m.end(), [](const auto& x) {
      return x.text.find("not answering: watchdog pings withheld") != std::string::npos;
    });
  }),
                  describe(systemd.messages()));
  size_t pings = count_with(systemd.messages(), "WATCHDOG=1");

  // Ten intervals without a ping (systemd would restart bulwark after WATCHDOG_USEC), while the
  // main thread is well: the admin listener answers, and /healthz stays 200 until the stall has
  // lasted `watchdog` (10 s by default; see admin_controls_test.cpp).
  bool pinged = systemd.wait_for([&](const auto& m) { return count_with(m, "WATCHDOG=1") > pings; },
                                 Millis{1000});
  INFO(describe(systemd.messages()) << bulwark.logs_text());
  CHECK_FALSE(pinged);
  auto healthz = http_get(bulwark.admin_port(), "/healthz", {}, Millis{2000});
  REQUIRE(healthz);
  CHECK(healthz->status == 200);
  // Reported once per stall, not once per tick.
  auto logs = bulwark.logs();
  CHECK(std::count_if(logs.begin(), logs.end(), [](const std::string& line) {
          return line.find("worker loop did not answer its heartbeat") != std::string::npos;
        }) == 1);
}

TEST_CASE("systemd: a notification socket nobody listens on is not fatal and is logged once") {
  TempDir dir;
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.set_env({"NOTIFY_SOCKET=" + dir.file("nobody"), "WATCHDOG_USEC=100000"});
  bulwark.start(proxy_config(upstream.address()));
  auto response = http_get(bulwark.port("inbound"), "/");
  REQUIRE_MESSAGE(response, bulwark.logs_text());
  CHECK(response->status == 200);
  REQUIRE(bulwark.signal(SIGTERM));
  CHECK(bulwark.wait_exit(Millis{5000}) == 0);
  auto logs = bulwark.logs();
  INFO(bulwark.logs_text());
  CHECK(std::count_if(logs.begin(), logs.end(), [](const std::string& line) {
          return line.find("cannot notify systemd") != std::string::npos;
        }) == 1);
}

TEST_CASE("systemd: a reload is framed by RELOADING=1 and READY=1, a refused one too") {
  TempDir dir;
  FakeSystemd systemd(dir.file("notify"));
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.set_env({systemd.env()});
  bulwark.start(proxy_config(upstream.address()));
  REQUIRE(systemd.wait_for([](const auto& m) { return count_with(m, "READY=1") == 1; }));

  // The config file is unchanged: a valid reload.
  REQUIRE(bulwark.signal(SIGHUP));
  REQUIRE_MESSAGE(systemd.wait_for([](const auto& m) { return count_with(m, "READY=1") == 2; }),
                  describe(systemd.messages()));
  auto messages = systemd.messages();
  REQUIRE(messages.size() >= 3);
  CHECK(count_with(messages, "RELOADING=1") == 1);
  // RELOADING=1 comes with the monotonic clock (as Type=notify-reload wants), then READY=1.
  const auto reloading = std::find_if(messages.begin(), messages.end(), [](const auto& m) {
    return has_line(m.text, "RELOADING=1");
  });
  REQUIRE(reloading != messages.end());
  CHECK(reloading->text.find("MONOTONIC_USEC=") != std::string::npos);
  CHECK(has_line(messages.back().text, "READY=1"));
  CHECK(messages.back().at >= reloading->at);
  CHECK(wait_for_log_lines(bulwark, {"config reloaded", "\"trigger\":\"SIGHUP\""}));

  // A refused reload (an invalid file) is framed the same way: systemd must not wait for
  // READY=1 forever.
  write_file(bulwark.config_path(), "listeners: [\n");
  REQUIRE(bulwark.signal(SIGHUP));
  REQUIRE_MESSAGE(systemd.wait_for([](const auto& m) { return count_with(m, "READY=1") == 3; }),
                  describe(systemd.messages()));
  CHECK(count_with(systemd.messages(), "RELOADING=1") == 2);
  CHECK(wait_for_log_lines(bulwark, {"config reload failed"}));

  // While draining a reload is refused before it starts: logged, nothing sent.
  auto drain = http_request(bulwark.admin_port(), "POST", "/drain");
  REQUIRE(drain);
  REQUIRE(bulwark.signal(SIGHUP));
  CHECK(wait_for_log_lines(bulwark, {"config reload ignored"}));
  CHECK(count_with(systemd.messages(), "RELOADING=1") == 2);
}

// ---------------------------------------------------------------------------------------------
// The unit in deploy/systemd, read as systemd reads it, its reload run as systemd runs it.

namespace {

const std::string kUnitPath = std::string(BULWARK_SOURCE_DIR) + "/deploy/systemd/bulwark.service";

// The [Service] section of the unit: each key's values, in order (a key may repeat).
std::map<std::string, std::vector<std::string>> unit_service_section() {
  std::ifstream in(kUnitPath);
  REQUIRE(in);
  std::map<std::string, std::vector<std::string>> keys;
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line;
      continue;
    }
    const size_t eq = line.find('=');
    if (section == "[Service]" && eq != std::string::npos)
      keys[line.substr(0, eq)].push_back(line.substr(eq + 1));
  }
  return keys;
}

struct Ran {
  int status = -1;
  std::string output;
};

// Runs one Exec line of the unit with its installed paths made this test's: the binary, the config
// file and $MAINPID. The unit's lines have no quoting, so words split at spaces.
Ran run_exec_line(const std::string& line, const std::string& config, pid_t main_pid) {
  std::vector<std::string> argv;
  std::istringstream words(line);
  for (std::string word; words >> word;) {
    if (word == "/usr/local/bin/bulwark") word = BULWARK_BINARY;
    if (word == "/etc/bulwark/bulwark.yaml") word = config;
    if (word == "$MAINPID") word = std::to_string(main_pid);
    argv.push_back(word);
  }
  Subprocess process;
  process.start(argv);
  Ran ran;
  ran.status = process.wait_exit().value_or(-1);
  process.wait_streams_closed();
  ran.output =
      process.text(Subprocess::Stream::kStdout) + process.text(Subprocess::Stream::kStderr);
  return ran;
}

// `systemctl reload`: the ExecReload= lines in order, stopping at the first that fails. Returns
// the output of each line run.
std::vector<Ran> systemctl_reload(const std::vector<std::string>& exec_reload,
                                  const std::string& config, pid_t main_pid) {
  std::vector<Ran> ran;
  for (const std::string& line : exec_reload) {
    ran.push_back(run_exec_line(line, config, main_pid));
    if (ran.back().status != 0) break;
  }
  return ran;
}

}  // namespace

TEST_CASE(
    "systemd unit: ExecReload checks the config before it signals, and LogsDirectory is set") {
  auto unit = unit_service_section();
  CHECK(unit["LogsDirectory"] == std::vector<std::string>{"bulwark"});
  REQUIRE(unit["ExecStart"].size() == 1);
  const std::string start = unit["ExecStart"][0];
  const std::string check = start + " --check";
  CHECK(unit["ExecStartPre"] == std::vector<std::string>{check});
  const std::vector<std::string> exec_reload = unit["ExecReload"];
  REQUIRE(exec_reload == std::vector<std::string>{check, "/bin/kill -HUP $MAINPID"});

  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address()));
  const std::string config = bulwark.config_path();
  auto reloads = [&bulwark] {
    size_t n = 0;
    for (const std::string& line : bulwark.logs())
      n += line.find("config reloaded") != std::string::npos;
    return n;
  };

  // A valid file: checked, then signalled, then applied.
  std::vector<Ran> ran = systemctl_reload(exec_reload, config, bulwark.pid());
  REQUIRE(ran.size() == 2);
  CHECK(ran[0].status == 0);
  CHECK(ran[1].status == 0);
  CHECK(wait_for_log_lines(bulwark, {"config reloaded", "\"trigger\":\"SIGHUP\""}));

  // An invalid file, then an access log that cannot be opened: the check fails with FILE:LINE:COL
  // and bulwark gets no signal.
  const std::string valid = read_file(config);
  for (const std::string& bad :
       {valid + "bogus_key: 1\n", "access_log: {path: /no-such-dir/access.log}\n" + valid}) {
    CAPTURE(bad);
    write_file(config, bad);
    ran = systemctl_reload(exec_reload, config, bulwark.pid());
    REQUIRE(ran.size() == 1);
    CHECK(ran[0].status == 1);
    CHECK(ran[0].output.find(config + ":") != std::string::npos);
  }
  // Valid again: the next reload is the second bulwark sees, so neither refused one reached it.
  write_file(config, valid);
  ran = systemctl_reload(exec_reload, config, bulwark.pid());
  REQUIRE(ran.size() == 2);
  CHECK(wait_for_log_lines(bulwark, {"config reloaded"}, 2));
  INFO(bulwark.logs_text());
  CHECK(reloads() == 2);
  CHECK_FALSE(wait_for_log_lines(bulwark, {"config reload failed"}, 1, Millis{0}));
}

TEST_CASE("systemd unit: systemd-analyze verify finds nothing to say") {
  const std::string analyze = "/usr/bin/systemd-analyze";
  if (::access(analyze.c_str(), X_OK) != 0) {
    MESSAGE("skipped: no " << analyze << " on this machine");
    return;
  }
  // It wants the unit's binary to exist: a copy names the one just built.
  TempDir dir;
  std::string unit = read_file(kUnitPath);
  for (size_t at; (at = unit.find("/usr/local/bin/bulwark")) != std::string::npos;)
    unit.replace(at, std::strlen("/usr/local/bin/bulwark"), BULWARK_BINARY);
  const std::string copy = dir.file("bulwark.service");
  write_file(copy, unit);
  Subprocess process;
  process.start({analyze, "verify", copy});
  const auto status = process.wait_exit();
  process.wait_streams_closed();
  const std::string output =
      process.text(Subprocess::Stream::kStdout) + process.text(Subprocess::Stream::kStderr);
  INFO(output);
  CHECK(status == 0);
  CHECK(output.empty());  // an unknown or misspelt key is only a warning
}
