// The process, file and pattern parts of the harness; the socket and HTTP parts are in
// harness_http.cpp.

#include "tests/support/harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

namespace bulwark::test {

namespace {

using Clock = std::chrono::steady_clock;

Millis remaining(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
  return left.count() > 0 ? left : Millis{0};
}

// The string value of "key" in a one-line JSON object, tolerating whitespace around the colon.
// Good enough for log lines; does not unescape.
std::optional<std::string> json_string_field(std::string_view line, std::string_view key) {
  std::string quoted = "\"" + std::string(key) + "\"";
  size_t at = 0;
  while ((at = line.find(quoted, at)) != std::string_view::npos) {
    size_t i = at + quoted.size();
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i < line.size() && line[i] == ':') {
      ++i;
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      if (i < line.size() && line[i] == '"') {
        size_t end = i + 1;
        while (end < line.size() && line[end] != '"') end += line[end] == '\\' ? 2 : 1;
        if (end < line.size()) return std::string(line.substr(i + 1, end - i - 1));
      }
    }
    at += quoted.size();
  }
  return std::nullopt;
}

bool is_msg(std::string_view line, std::string_view msg) {
  auto value = json_string_field(line, "msg");
  return value && *value == msg;
}

std::optional<uint16_t> port_of(std::string_view address) {
  size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string digits(address.substr(colon + 1));
  if (digits.empty() || digits.size() > 5 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  int port = std::stoi(digits);
  if (port <= 0 || port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Files

std::string test_binary(const char* relative) {
  const char* dir = std::getenv("BULWARK_TEST_BUILD_DIR");
  return std::string(dir != nullptr && *dir != '\0' ? dir : BULWARK_BUILD_DIR) + "/" + relative;
}

bool sanitized_binaries() {
  static const bool sanitized = [] {
    std::ifstream in(BULWARK_BINARY, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return bytes.find("__asan_init") != std::string::npos;
  }();
  return sanitized;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/bulwark-test-XXXXXX";
  std::vector<char> buffer(templ.begin(), templ.end());
  buffer.push_back('\0');
  if (!::mkdtemp(buffer.data())) {
    throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
  }
  path_ = buffer.data();
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::file(std::string_view name) const { return path_ + "/" + std::string(name); }

void write_file(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// ---------------------------------------------------------------------------------------------
// Synchronisation

void Event::set() {
  {
    std::lock_guard lock(mutex_);
    set_ = true;
  }
  cv_.notify_all();
}

bool Event::is_set() const {
  std::lock_guard lock(mutex_);
  return set_;
}

bool Event::wait(Millis timeout) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [this] { return set_; });
}

bool eventually(const std::function<bool()>& condition, Millis timeout, Millis interval) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::min(interval, remaining(deadline)));
  }
}

// ---------------------------------------------------------------------------------------------
// Subprocess

Subprocess::~Subprocess() {
  if (pid_ > 0 && !exit_status_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    std::lock_guard lock(mutex_);
    exit_status_ = -1;
  }
  // The child is gone, so its pipes reach end-of-file unless it passed them on; the reader thread
  // also gives up after a short grace period (see reader_loop).
  if (reader_.joinable()) reader_.join();
  if (pidfd_ >= 0) ::close(pidfd_);
}

void Subprocess::start(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  if (pid_ > 0) throw std::runtime_error("Subprocess::start called twice");
  if (argv.empty()) throw std::runtime_error("Subprocess::start: empty argv");
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    throw std::runtime_error("pipe2 failed");
  }
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool replaced = std::any_of(env.begin(), env.end(), [&](const std::string& extra) {
      return entry.substr(0, entry.find('=') + 1) == extra.substr(0, extra.find('=') + 1);
    });
    if (!replaced) environment.emplace_back(entry);
  }
  environment.insert(environment.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& entry : environment) envp.push_back(entry.data());
  envp.push_back(nullptr);
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(args[0], args.data(), envp.data());
    const char msg[] = "exec failed: ";
    [[maybe_unused]] auto ignored = ::write(2, msg, sizeof msg - 1);
    ignored = ::write(2, args[0], std::strlen(args[0]));
    ignored = ::write(2, "\n", 1);
    ::_exit(127);
  }
  pid_ = pid;
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
#ifdef SYS_pidfd_open
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
#endif
  {
    std::lock_guard lock(mutex_);
    out_open_ = err_open_ = true;
  }
  reader_ = std::thread([this, out = out_pipe[0], err = err_pipe[0]] { reader_loop(out, err); });
}

void Subprocess::reader_loop(int out_fd, int err_fd) {
  std::array<char, 65536> buffer;
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_count = 2;
  // Once the child has been reaped, a pipe still held open by a grandchild must not keep this
  // thread alive: give it a short grace period.
  std::optional<Clock::time_point> reaped_at;
  while (open_count > 0) {
    int ready = ::poll(fds, 2, 100);
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buffer.data(), buffer.size());
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      std::lock_guard lock(mutex_);
      auto& partial = i == 0 ? out_partial_ : err_partial_;
      auto& lines = i == 0 ? out_lines_ : err_lines_;
      if (n <= 0) {
        if (!partial.empty()) lines.push_back(std::move(partial));
        partial.clear();
        (i == 0 ? out_open_ : err_open_) = false;
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_count;
      } else {
        partial.append(buffer.data(), static_cast<size_t>(n));
        size_t start = 0, newline;
        while ((newline = partial.find('\n', start)) != std::string::npos) {
          lines.push_back(partial.substr(start, newline - start));
          start = newline + 1;
        }
        partial.erase(0, start);
      }
      cv_.notify_all();
    }
    if (ready == 0) {
      std::lock_guard lock(mutex_);
      if (exit_status_ && !reaped_at) reaped_at = Clock::now();
      if (reaped_at && Clock::now() - *reaped_at > Millis{500}) break;
    }
  }
  std::lock_guard lock(mutex_);
  for (auto& fd : fds) {
    if (fd.fd >= 0) ::close(fd.fd);
  }
  out_open_ = err_open_ = false;
  cv_.notify_all();
}

bool Subprocess::running() const { return pid_ > 0 && !exit_status_; }

std::vector<std::string> Subprocess::lines(Stream stream) const {
  std::lock_guard lock(mutex_);
  return stream == Stream::kStdout ? out_lines_ : err_lines_;
}

std::string Subprocess::text(Stream stream) const {
  std::lock_guard lock(mutex_);
  const auto& lines = stream == Stream::kStdout ? out_lines_ : err_lines_;
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  text += stream == Stream::kStdout ? out_partial_ : err_partial_;
  return text;
}

bool Subprocess::wait_for_lines(
    Stream stream, const std::function<bool(const std::vector<std::string>&)>& condition,
    Millis timeout) const {
  std::unique_lock lock(mutex_);
  const auto& lines = stream == Stream::kStdout ? out_lines_ : err_lines_;
  const bool& open = stream == Stream::kStdout ? out_open_ : err_open_;
  bool result = false;
  cv_.wait_for(lock, timeout, [&] {
    result = condition(lines);
    return result || !open;
  });
  return result;
}

std::optional<std::string> Subprocess::wait_for_line(Stream stream, std::string_view needle,
                                                     Millis timeout) const {
  std::optional<std::string> found;
  wait_for_lines(
      stream,
      [&](const std::vector<std::string>& lines) {
        for (const auto& line : lines) {
          if (line.find(needle) != std::string::npos) {
            found = line;
            return true;
          }
        }
        return false;
      },
      timeout);
  return found;
}

bool Subprocess::wait_streams_closed(Millis timeout) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [this] { return !out_open_ && !err_open_; });
}

bool Subprocess::signal(int signo) {
  if (pid_ <= 0 || exit_status_) return false;
  return ::kill(pid_, signo) == 0;
}

std::optional<int> Subprocess::wait_exit(Millis timeout) {
  if (pid_ <= 0) return std::nullopt;
  if (exit_status_) return exit_status_;
  auto deadline = Clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t reaped = ::waitpid(pid_, &status, WNOHANG);
    if (reaped == pid_) {
      int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      std::lock_guard lock(mutex_);
      exit_status_ = code;
      return code;
    }
    if (reaped < 0 && errno != EINTR) return std::nullopt;
    Millis left = remaining(deadline);
    if (left.count() == 0) return std::nullopt;
    if (pidfd_ >= 0) {
      pollfd pfd{pidfd_, POLLIN, 0};
      ::poll(&pfd, 1, static_cast<int>(left.count()));
    } else {
      std::this_thread::sleep_for(std::min(left, Millis{10}));
    }
  }
}

long Subprocess::status_field_kib(const char* field) const {
  if (pid_ <= 0 || exit_status_) return 0;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  size_t field_size = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, field_size, field) == 0 && line.size() > field_size &&
        line[field_size] == ':') {
      return std::strtol(line.c_str() + field_size + 1, nullptr, 10);
    }
  }
  return 0;
}

long Subprocess::rss_kib() const { return status_field_kib("VmRSS"); }
long Subprocess::peak_rss_kib() const { return status_field_kib("VmHWM"); }

// ---------------------------------------------------------------------------------------------
// BulwarkProcess

void BulwarkProcess::start(const std::string& yaml, const std::vector<std::string>& extra_args,
                           Millis timeout) {
  config_path_ = dir_.file("bulwark.yaml");
  write_file(config_path_, yaml);
  std::vector<std::string> argv = prefix_;
  argv.insert(argv.end(), {binary_, "--config", config_path_});
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  if (!prefix_.empty() && ::chmod(config_path_.c_str(), 0644) != 0)
    throw std::runtime_error("chmod " + config_path_ + ": " + std::strerror(errno));
  process_.start(argv, env_);

  bool started = process_.wait_for_lines(
      Subprocess::Stream::kStderr,
      [](const std::vector<std::string>& lines) {
        return std::any_of(lines.begin(), lines.end(),
                           [](const std::string& line) { return is_msg(line, "started"); });
      },
      timeout);
  if (!started) {
    auto status = process_.wait_exit(Millis{0});
    std::string why = status ? "bulwark exited with status " + std::to_string(*status)
                             : "bulwark did not log \"msg\":\"started\" within " +
                                   std::to_string(timeout.count()) + " ms";
    throw std::runtime_error(why + "\n--- config ---\n" + yaml + "--- stderr ---\n" + logs_text() +
                             "--- stdout ---\n" + stdout_text());
  }
  for (const auto& line : logs()) {
    if (!is_msg(line, "listening")) continue;
    auto name = json_string_field(line, "listener");
    auto address = json_string_field(line, "address");
    auto port = address ? port_of(*address) : std::nullopt;
    if (!name || !port) {
      throw std::runtime_error(
          "a \"listening\" log line lacks \"listener\" or a valid "
          "\"address\":\n" +
          line);
    }
    auto [it, inserted] = ports_.emplace(*name, *port);
    if (!inserted && it->second != *port) {
      throw std::runtime_error("listener \"" + *name + "\" reported two ports, " +
                               std::to_string(it->second) + " and " + std::to_string(*port) +
                               "\n--- stderr ---\n" + logs_text());
    }
  }
}

void BulwarkProcess::run_as(uid_t uid, gid_t gid) {
  if (::chown(dir_.path().c_str(), uid, gid) != 0)
    throw std::runtime_error("chown " + dir_.path() + ": " + std::strerror(errno));
  prefix_ = {"/usr/bin/setpriv", "--reuid=" + std::to_string(uid),
             "--regid=" + std::to_string(gid), "--clear-groups"};
}

uint16_t BulwarkProcess::port(const std::string& listener) const {
  auto it = ports_.find(listener);
  if (it == ports_.end()) {
    throw std::runtime_error("bulwark did not log a \"listening\" line for listener \"" + listener +
                             "\"\n--- stderr ---\n" + logs_text());
  }
  return it->second;
}

bool BulwarkProcess::wait_for_log(std::string_view substring, Millis timeout) const {
  return process_.wait_for_line(Subprocess::Stream::kStderr, substring, timeout).has_value();
}

std::vector<std::string> BulwarkProcess::logs() const {
  return process_.lines(Subprocess::Stream::kStderr);
}

std::string BulwarkProcess::logs_text() const { return process_.text(Subprocess::Stream::kStderr); }

std::string BulwarkProcess::stdout_text() const {
  return process_.text(Subprocess::Stream::kStdout);
}

CheckResult run_check(const std::string& yaml) {
  TempDir dir;
  CheckResult result;
  result.config_path = dir.file("bulwark.yaml");
  write_file(result.config_path, yaml);
  Subprocess process;
  process.start({BULWARK_BINARY, "--config", result.config_path, "--check"});
  auto status = process.wait_exit(Millis{10000});
  process.wait_streams_closed(Millis{1000});
  result.exit_code = status.value_or(-1);
  result.out = process.text(Subprocess::Stream::kStdout);
  result.err = process.text(Subprocess::Stream::kStderr);
  return result;
}

// ---------------------------------------------------------------------------------------------
// DemoUpstreamProcess

void DemoUpstreamProcess::start(const std::string& name, Millis timeout) {
  process_.start({DEMO_UPSTREAM_BINARY, "--port", "0", "--address", "127.0.0.1", "--name", name});
  auto line = process_.wait_for_line(Subprocess::Stream::kStdout, "listening on ", timeout);
  auto port = line ? port_of(*line) : std::nullopt;
  if (!port) {
    throw std::runtime_error(
        "demo-upstream did not print \"listening on ADDR:PORT\"\n"
        "--- stdout ---\n" +
        process_.text(Subprocess::Stream::kStdout) + "--- stderr ---\n" +
        process_.text(Subprocess::Stream::kStderr));
  }
  port_ = *port;
}

// ---------------------------------------------------------------------------------------------
// Pattern

namespace {

constexpr size_t kPatternBlock = 65536;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Two copies of one random block back to back, so any rotation of it is one contiguous range.
const char* pattern_table() {
  static const std::vector<char> table = [] {
    std::vector<char> bytes(2 * kPatternBlock);
    for (size_t i = 0; i < kPatternBlock; i += 8) {
      uint64_t word = splitmix64(i);
      std::memcpy(bytes.data() + i, &word, 8);
    }
    std::memcpy(bytes.data() + kPatternBlock, bytes.data(), kPatternBlock);
    return bytes;
  }();
  return table.data();
}

// Each 64 KiB block of the stream is the table rotated by an amount that depends on the block
// number, so the stream has no short period.
const char* pattern_at(uint64_t offset, size_t& run) {
  uint64_t block = offset / kPatternBlock;
  size_t within = static_cast<size_t>(offset % kPatternBlock);
  size_t rotation = static_cast<size_t>(splitmix64(block ^ 0x5bd1e995ULL) % kPatternBlock);
  run = kPatternBlock - within;
  return pattern_table() + rotation + within;
}

}  // namespace

void pattern_fill(uint64_t offset, char* out, size_t n) {
  while (n > 0) {
    size_t run = 0;
    const char* source = pattern_at(offset, run);
    size_t take = std::min(run, n);
    std::memcpy(out, source, take);
    out += take;
    offset += take;
    n -= take;
  }
}

std::string pattern_string(uint64_t offset, size_t n) {
  std::string text(n, '\0');
  pattern_fill(offset, text.data(), n);
  return text;
}

void PatternVerifier::feed(std::string_view data) {
  while (!data.empty()) {
    size_t run = 0;
    const char* expected = pattern_at(received_, run);
    size_t take = std::min(run, data.size());
    if (!mismatch_ && std::memcmp(expected, data.data(), take) != 0) {
      for (size_t i = 0; i < take; ++i) {
        if (expected[i] != data[i]) {
          mismatch_ = received_ + i;
          break;
        }
      }
    }
    received_ += take;
    data.remove_prefix(take);
  }
}

}  // namespace bulwark::test
