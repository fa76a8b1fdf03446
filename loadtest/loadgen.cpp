// loadgen: an open-loop (constant-rate) HTTP/1.1 load generator for the benchmark runner.
//
//   loadgen --target HOST:PORT [--target HOST:PORT ...] --rate R --connections C --duration D
//           [--warmup D] [--path /] [--host HOST] [--timeout D] [--timeline FILE] [--bin D]
//   loadgen --idle N [--burst] --target HOST:PORT [--path /] [--host HOST] [--timeout D]
//
// Durations: 10s, 500ms, 2m, 1h, or plain seconds (1.5).
//
// Constant-rate mode. Request i is due at start + i/R whatever happened to the ones before it (an
// open loop, like wrk2, not a closed loop like wrk). C keep-alive connections, connection k to
// target k mod T, carry at most one request each. A due request goes to the connection that has
// been idle longest, or waits in a FIFO queue until one frees. Latency is measured from the due
// time to the end of the response, so the time a request waits for a connection counts: a stall
// of the server shows in every request due during it, not just the one it hit (no coordinated
// omission). Requests due in the warm-up are sent but not counted; those due in the next D are.
// After the last due time loadgen waits for every counted request's outcome (--timeout bounds
// that), then prints and exits 0.
//
// Outcomes: a complete 2xx response is ok; anything else is a failure, by status (non-2xx) or by
// error: connect (refused or failed; the connection then sits out 50 ms), reset (closed before the
// response was complete), timeout (no complete response --timeout after the due time), parse (a
// malformed response). A response that ends the connection (Connection: close, HTTP/1.0) is a
// normal completion; the connection reconnects on its next request.
//
// Output: a summary for people on stderr, and for the runner these lines on stdout, in order:
//   rate_target= duration_s= connections= sent= completed= rate_achieved= ok= failed=
//   status_<code>= (one per non-2xx status seen, ascending) error_connect= error_reset=
//   error_timeout= error_parse= p50_us= p90_us= p99_us= p999_us= max_us= mean_us=
//   ok_p50_us= ok_p99_us= ok_p999_us= (the same over the ok requests only: what the requests a
//   proxy admitted and served waited, apart from those it refused at once)
// With --timeline FILE, one TSV line per --bin (default 100ms) of completion time over the
// measured period: bin_start_unix_ms, ok, fail, first_ok_unix_ms (the first 2xx in the bin, or -).
// SIGINT/SIGTERM stop the run early; what was measured so far is printed and loadgen exits 0.
//
// Idle mode opens N connections, sends one GET on each, reads the response and keeps the
// connection open. At most 64 are between their connect and their answer at once, as clients
// that arrive over time would be: what is measured is the memory of idle connections, not of a
// 10,000-request burst (and the listener's backlog is not overrun). With --burst all N connect
// and send at once instead: what is measured is what a burst leaves behind. When every
// connection has its answer it prints idle_open=N and idle_failed=N, then holds them until
// SIGINT/SIGTERM and prints idle_closed_by_peer=N before exiting 0.
//
// Exit status: 0 with a result (also when every request failed), 1 on an internal failure (a
// target that does not resolve, a timeline that cannot be written), 2 on a bad argument.

#include <llhttp.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loadtest/histogram.h"

namespace {

using bulwark::loadtest::Histogram;

constexpr uint64_t kNsPerMs = 1'000'000;
constexpr uint64_t kNsPerSecond = 1'000'000'000;
constexpr double kMaxSeconds = 1e6;  // any duration
constexpr double kMaxRate = 1e7;     // requests per second
// Per mode, connections and idle connections. The timeout sweeps scan every connection (a cache
// line each) every few milliseconds, which stays cheap well past this; and one target can take at
// most ~28,000 connections from one address anyway (the ephemeral port range).
constexpr uint64_t kMaxConnections = 100'000;
constexpr uint64_t kMaxTimelineBins = 10'000'000;
constexpr size_t kReadBufferSize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Command line

struct TargetSpec {
  std::string text;  // as given, "HOST:PORT"; also the default Host header
  std::string host;  // without brackets
  std::string port;
};

struct Options {
  bool help = false;
  std::vector<TargetSpec> targets;
  std::string rate_text;  // as given, echoed in rate_target=
  double rate = 0;
  uint64_t connections = 0;
  uint64_t duration_ns = 0;
  uint64_t warmup_ns = 0;
  std::string path = "/";
  std::string host;  // Host header; empty: each target's HOST:PORT
  uint64_t timeout_ns = 10 * kNsPerSecond;
  std::string timeline_path;
  uint64_t bin_ns = 100 * kNsPerMs;
  uint64_t idle = 0;   // > 0: idle mode with this many connections
  bool burst = false;  // idle mode: every connection at once (else at most 64 opening at a time)
};

// A bad command line. The message names the argument; main prints it and exits 2.
struct UsageError {
  std::string message;
};

void usage(FILE* out) {
  std::fputs(
      "usage: loadgen --target HOST:PORT [--target HOST:PORT ...] --rate R --connections C\n"
      "               --duration D [--warmup D] [--path /] [--host HOST] [--timeout D]\n"
      "               [--timeline FILE] [--bin D]\n"
      "       loadgen --idle N [--burst] --target HOST:PORT [--path /] [--host HOST]\n"
      "               [--timeout D]\n"
      "Durations: 10s, 500ms, 2m, 1h or plain seconds (1.5). Defaults: --warmup 0, --path /,\n"
      "--timeout 10s, --bin 100ms, Host: the target's HOST:PORT.\n"
      "Sends R requests/s (open loop) for D and prints key=value results on stdout.\n",
      out);
}

// A plain decimal number ("12", "0.25"): no sign, exponent, inf or nan.
std::optional<double> parse_decimal(std::string_view text) {
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '.')) {
    return std::nullopt;
  }
  double value = 0;
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
  if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

// "10s", "500ms", "2m", "1h" or plain seconds, in nanoseconds; nullopt when malformed or longer
// than kMaxSeconds.
std::optional<uint64_t> parse_duration_ns(std::string_view text) {
  struct Unit {
    std::string_view suffix;
    double ns;
  };
  // "ms" before "s" and "m", which it ends with and starts with.
  static constexpr Unit kUnits[] = {{"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
  double scale = 1e9;
  for (const Unit& unit : kUnits) {
    if (text.ends_with(unit.suffix)) {
      text.remove_suffix(unit.suffix.size());
      scale = unit.ns;
      break;
    }
  }
  auto number = parse_decimal(text);
  if (!number || *number * scale > kMaxSeconds * 1e9) return std::nullopt;
  return static_cast<uint64_t>(std::llround(*number * scale));
}

std::optional<uint64_t> parse_count(std::string_view text, uint64_t min, uint64_t max) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value < min ||
      value > max) {
    return std::nullopt;
  }
  return value;
}

// HOST:PORT, or [IPv6]:PORT.
std::optional<TargetSpec> parse_target(std::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return std::nullopt;  // an IPv6 address needs brackets
  }
  if (host.empty() || !parse_count(port, 1, 65535)) return std::nullopt;
  return TargetSpec{std::string(text), std::string(host), std::string(port)};
}

// Text that goes into the request line or a header: visible ASCII only, so nothing given on the
// command line can split the request.
bool is_visible_ascii(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> seen;  // option names given, to reject repeats and mixed modes
  auto given = [&](std::string_view name) {
    return std::find(seen.begin(), seen.end(), name) != seen.end();
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      o.help = true;
      return o;
    }
    // --name VALUE or --name=VALUE
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    std::string name_text(name);
    auto value = [&]() -> std::string_view {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) throw UsageError{name_text + " needs a value"};
      return argv[++i];
    };
    auto bad = [&](std::string_view v, std::string_view expected) {
      return UsageError{name_text + ": expected " + std::string(expected) + ", got '" +
                        std::string(v) + "'"};
    };
    auto duration = [&](bool allow_zero) {
      std::string_view v = value();
      auto ns = parse_duration_ns(v);
      if (!ns || (!allow_zero && *ns == 0)) {
        throw bad(v, allow_zero ? "a duration like 10s, 500ms, 2m or 1.5"
                                : "a duration > 0 like 10s, 500ms, 2m or 1.5");
      }
      return *ns;
    };
    if (name != "--target" && given(name)) throw UsageError{name_text + " given twice"};
    seen.push_back(name_text);

    if (name == "--target") {
      std::string_view v = value();
      auto target = parse_target(v);
      if (!target) throw bad(v, "HOST:PORT (or [IPv6]:PORT) with a port in 1..65535");
      o.targets.push_back(std::move(*target));
    } else if (name == "--rate") {
      std::string_view v = value();
      auto rate = parse_decimal(v);
      if (!rate || *rate <= 0 || *rate > kMaxRate) {
        throw bad(v, "requests per second, a number > 0 and <= 10000000");
      }
      o.rate = *rate;
      o.rate_text = v;
    } else if (name == "--connections") {
      std::string_view v = value();
      auto n = parse_count(v, 1, kMaxConnections);
      if (!n) throw bad(v, "a whole number in 1..100000");
      o.connections = *n;
    } else if (name == "--idle") {
      std::string_view v = value();
      auto n = parse_count(v, 1, kMaxConnections);
      if (!n) throw bad(v, "a whole number in 1..100000");
      o.idle = *n;
    } else if (name == "--burst") {
      if (inline_value) throw UsageError{"--burst takes no value"};
      o.burst = true;
    } else if (name == "--duration") {
      o.duration_ns = duration(false);
    } else if (name == "--warmup") {
      o.warmup_ns = duration(true);
    } else if (name == "--timeout") {
      o.timeout_ns = duration(false);
    } else if (name == "--bin") {
      o.bin_ns = duration(false);
    } else if (name == "--path") {
      std::string_view v = value();
      if (!v.starts_with('/') || !is_visible_ascii(v)) {
        throw bad(v, "a path starting with / and without spaces or control characters");
      }
      o.path = v;
    } else if (name == "--host") {
      std::string_view v = value();
      if (!is_visible_ascii(v)) throw bad(v, "a Host header value without spaces");
      o.host = v;
    } else if (name == "--timeline") {
      std::string_view v = value();
      if (v.empty()) throw bad(v, "a file name");
      o.timeline_path = v;
    } else {
      throw UsageError{"unknown argument '" + std::string(arg) + "'"};
    }
  }

  if (o.targets.empty()) throw UsageError{"--target is required"};
  if (o.idle > 0) {
    for (const char* name :
         {"--rate", "--connections", "--duration", "--warmup", "--timeline", "--bin"}) {
      if (given(name)) throw UsageError{std::string(name) + " cannot be used with --idle"};
    }
    return o;
  }
  if (given("--burst")) throw UsageError{"--burst needs --idle N"};
  for (const char* name : {"--rate", "--connections", "--duration"}) {
    if (!given(name)) throw UsageError{std::string(name) + " is required (or use --idle N)"};
  }
  if (!o.timeline_path.empty() && (o.duration_ns + o.timeout_ns) / o.bin_ns > kMaxTimelineBins) {
    throw UsageError{"--bin: too small for --duration, the timeline would have more than " +
                     std::to_string(kMaxTimelineBins) + " bins"};
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Small pieces

// A FIFO on a power-of-two ring buffer. push() doubles the capacity when it is full, the only
// time it allocates, so a steady load moves through it without allocating.
template <typename T>
class Ring {
 public:
  explicit Ring(size_t capacity = 16) : slots_(std::bit_ceil(std::max<size_t>(capacity, 2))) {}

  bool empty() const { return size_ == 0; }
  const T& front() const { return slots_[head_]; }
  void pop() {
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
  }
  void push(const T& value) {
    if (size_ == slots_.size()) grow();
    slots_[(head_ + size_) & (slots_.size() - 1)] = value;
    ++size_;
  }

 private:
  void grow() {
    std::vector<T> bigger(slots_.size() * 2);
    for (size_t i = 0; i < size_; ++i) bigger[i] = slots_[(head_ + i) & (slots_.size() - 1)];
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;
  size_t head_ = 0;
  size_t size_ = 0;
};

// A resolved target and the request sent to it, built once.
struct Target {
  std::string name;
  sockaddr_storage address{};
  std::string request;
};

// Resolves with a blocking getaddrinfo: this runs once, before the loop starts.
std::optional<Target> resolve(uv_loop_t* loop, const TargetSpec& spec, const Options& options,
                              std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  uv_getaddrinfo_t req;
  int status = uv_getaddrinfo(loop, &req, nullptr, spec.host.c_str(), spec.port.c_str(), &hints);
  if (status != 0 || req.addrinfo == nullptr) {
    error = status != 0 ? uv_strerror(status) : "no address";
    return std::nullopt;
  }
  Target target;
  target.name = spec.text;
  std::memcpy(&target.address, req.addrinfo->ai_addr,
              std::min<size_t>(req.addrinfo->ai_addrlen, sizeof target.address));
  uv_freeaddrinfo(req.addrinfo);
  target.request = "GET " + options.path +
                   " HTTP/1.1\r\nHost: " + (options.host.empty() ? spec.text : options.host) +
                   "\r\nUser-Agent: bulwark-loadgen\r\n\r\n";
  return target;
}

// Lifts the soft limit on open files to the hard limit; warns when `needed` will not fit.
void raise_fd_limit(uint64_t needed) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed + 16) {
    std::fprintf(stderr,
                 "loadgen: warning: the open file limit is %llu, too low for %llu connections; "
                 "connects beyond it fail as connect errors\n",
                 static_cast<unsigned long long>(limit.rlim_cur),
                 static_cast<unsigned long long>(needed));
  }
}

double ms(uint64_t us) { return static_cast<double>(us) / 1000.0; }

// Calls back at an exact uv_hrtime() instant. libuv's timers count whole milliseconds, which would
// add up to a millisecond of issue delay to every latency measured from a due time (ten times the
// loopback round trip being measured). A timerfd on CLOCK_MONOTONIC, the clock uv_hrtime() reads,
// wakes the loop within microseconds.
class DeadlineTimer {
 public:
  using Callback = void (*)(void* arg);

  // False (with errno set) when no timerfd can be made.
  bool init(uv_loop_t* loop, Callback callback, void* arg) {
    fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd_ < 0 || uv_poll_init(loop, &poll_, fd_) != 0) return false;
    callback_ = callback;
    arg_ = arg;
    poll_.data = this;
    return uv_poll_start(&poll_, UV_READABLE, on_ready) == 0;
  }

  // Fires once at `at_ns` (at once if that has passed), unless it is already set to fire no later.
  // Arming is a system call that reprograms a hardware timer (slow on a VM): callers arm sparingly.
  void arm(uint64_t at_ns) {
    if (armed_ && armed_at_ <= at_ns) return;
    armed_ = true;
    armed_at_ = at_ns;
    itimerspec spec{};
    spec.it_value.tv_sec = static_cast<time_t>(at_ns / kNsPerSecond);
    spec.it_value.tv_nsec = static_cast<long>(at_ns % kNsPerSecond);
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
    timerfd_settime(fd_, TFD_TIMER_ABSTIME, &spec, nullptr);
  }

  void stop() {
    armed_ = false;
    itimerspec spec{};  // all zero: disarmed
    timerfd_settime(fd_, TFD_TIMER_ABSTIME, &spec, nullptr);
  }

 private:
  static void on_ready(uv_poll_t* handle, int, int) {
    auto* timer = static_cast<DeadlineTimer*>(handle->data);
    uint64_t expirations = 0;
    if (read(timer->fd_, &expirations, sizeof expirations) != sizeof expirations) return;
    timer->armed_ = false;
    timer->callback_(timer->arg_);
  }

  int fd_ = -1;
  uv_poll_t poll_{};
  Callback callback_ = nullptr;
  void* arg_ = nullptr;
  bool armed_ = false;
  uint64_t armed_at_ = 0;
};

// ---------------------------------------------------------------------------------------------
// One client connection

enum class Failure : uint8_t { kConnect, kReset, kTimeout, kParse };
constexpr size_t kFailureKinds = 4;
constexpr const char* kFailureNames[kFailureKinds] = {"connect", "reset", "timeout", "parse"};

class Connection;

// What a Connection reports to its owner. on_response, on_failure and on_idle_close are called
// from libuv callbacks only, never from inside Connection::send(), fail() or close(), and with the
// connection already in its new state, so the owner may call send() again from any of them.
class ConnectionEvents {
 public:
  // The request has been handed to the socket. May be called from inside send().
  virtual void on_sent(Connection& conn) = 0;
  // A complete final response; `at` is when it completed (uv_hrtime). The connection is idle
  // again (is_open()), or closing when the response ended the connection.
  virtual void on_response(Connection& conn, int status, uint64_t at) = 0;
  // The request in flight failed at `at`. The connection is closed.
  virtual void on_failure(Connection& conn, Failure failure, uint64_t at) = 0;
  // With no request in flight the peer closed the connection (or sent bytes nobody asked for,
  // and it was closed). The connection is closing; send() may still be called.
  virtual void on_idle_close(Connection& conn) = 0;

 protected:
  ~ConnectionEvents() = default;
};

// An HTTP/1.1 keep-alive connection to one target with at most one request in flight, always the
// target's prepared GET. It connects lazily: send() on a closed connection connects first, and
// send() on a closing one connects once the close completes. It does not allocate after init().
// Its libuv handle and requests are members, so it must not move once init() has been called.
class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // `read_buffer` may be shared by every connection on the loop: a read is parsed at once and
  // nothing refers to the buffer afterwards.
  void init(uv_loop_t* loop, const Target& target, ConnectionEvents& events, char* read_buffer) {
    loop_ = loop;
    target_ = &target;
    events_ = &events;
    read_buffer_ = read_buffer;
  }

  // Starts the request. Call only when no request is in flight.
  void send() {
    request_written_ = false;
    response_complete_ = false;
    llhttp_init(&parser_, HTTP_RESPONSE, &kParserSettings);
    parser_.data = this;
    switch (state_) {
      case State::kIdle:
        state_ = State::kBusy;
        write_request();
        break;
      case State::kClosed:
        connect();
        break;
      case State::kClosing:
        send_after_close_ = true;
        break;
      case State::kConnecting:
      case State::kBusy:
        break;  // a request is already in flight: the caller broke the contract
    }
  }

  // Ends the request in flight with `failure` and closes the connection; on_failure follows from
  // the close callback.
  void fail(Failure failure) {
    failure_ = failure;
    failed_at_ = uv_hrtime();
    send_after_close_ = false;
    begin_close();
  }

  // Closes a connection that has no request in flight. Nothing is reported.
  void close() { begin_close(); }

  // A request is on its way and has no outcome yet (timeouts apply).
  bool awaiting_response() const { return state_ == State::kConnecting || state_ == State::kBusy; }
  bool is_open() const { return state_ == State::kIdle || state_ == State::kBusy; }
  // The current request has been handed to the socket.
  bool request_written() const { return request_written_; }

  // The owner's: when the current request was due (uv_hrtime).
  uint64_t due_ns = 0;

 private:
  enum class State : uint8_t {
    kClosed,      // no socket
    kConnecting,  // connecting, with the request to send once connected
    kBusy,        // connected, request written, response awaited
    kIdle,        // connected, nothing in flight; still reading, to notice a close at once
    kClosing,     // uv_close() called, its callback pending
  };

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

  void connect() {
    uv_tcp_init(loop_, &tcp_);  // no socket yet: cannot fail
    tcp_.data = this;
    state_ = State::kConnecting;
    if (uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<const sockaddr*>(&target_->address),
                       on_connect) != 0) {
      fail(Failure::kConnect);  // e.g. out of file descriptors; reported from the close callback
    }
  }

  static void on_connect(uv_connect_t* req, int status) {
    auto* conn = static_cast<Connection*>(req->handle->data);
    if (conn->state_ != State::kConnecting) return;  // closed meanwhile (timeout): ECANCELED
    if (status < 0) {
      conn->fail(Failure::kConnect);
      return;
    }
    uv_tcp_nodelay(&conn->tcp_, 1);
    conn->state_ = State::kBusy;
    if (uv_read_start(conn->stream(), on_alloc, on_read) != 0) {
      conn->fail(Failure::kReset);
      return;
    }
    conn->write_request();
  }

  // The request is ~100 bytes and the socket has nothing else queued (no pipelining), so the
  // write almost always completes at once, without a write request or callback.
  void write_request() {
    const std::string& bytes = target_->request;
    uv_buf_t buf = uv_buf_init(const_cast<char*>(bytes.data()), bytes.size());
    int written = uv_try_write(stream(), &buf, 1);
    if (written == UV_EAGAIN) written = 0;
    if (written < 0) {
      fail(Failure::kReset);
      return;
    }
    if (static_cast<size_t>(written) < bytes.size()) {
      buf = uv_buf_init(buf.base + written, buf.len - written);
      if (uv_write(&write_req_, stream(), &buf, 1, on_write) != 0) {
        fail(Failure::kReset);
        return;
      }
      write_in_progress_ = true;
    }
    request_written_ = true;
    events_->on_sent(*this);
  }

  static void on_write(uv_write_t* req, int status) {
    auto* conn = static_cast<Connection*>(req->handle->data);
    conn->write_in_progress_ = false;
    if (status < 0 && status != UV_ECANCELED && conn->state_ == State::kBusy) {
      conn->fail(Failure::kReset);
    }
  }

  static void on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    *buf = uv_buf_init(static_cast<Connection*>(handle->data)->read_buffer_, kReadBufferSize);
  }

  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    auto* conn = static_cast<Connection*>(stream->data);
    if (nread == 0 || conn->state_ == State::kClosing) return;
    if (conn->state_ == State::kIdle) {  // a close, a reset, or bytes nobody asked for
      conn->begin_close();
      conn->events_->on_idle_close(*conn);
      return;
    }
    if (nread < 0) {
      // A close-delimited body ends here; anything else is cut short. llhttp_finish() completes
      // the former through on_message_complete.
      if (nread == UV_EOF) llhttp_finish(&conn->parser_);
      if (conn->response_complete_) {
        conn->finish_response(false);
      } else {
        conn->fail(Failure::kReset);
      }
      return;
    }
    llhttp_errno_t error = llhttp_execute(&conn->parser_, buf->base, static_cast<size_t>(nread));
    if (conn->response_complete_) {
      // on_message_complete paused the parser right after the response. Any byte after it (or an
      // upgrade) was not asked for: keep the result but not the connection.
      bool clean = error == HPE_PAUSED && llhttp_get_error_pos(&conn->parser_) == buf->base + nread;
      conn->finish_response(conn->keep_alive_ && clean);
    } else if (error != HPE_OK) {
      conn->fail(Failure::kParse);
    }
  }

  static int on_message_complete(llhttp_t* parser) {
    auto* conn = static_cast<Connection*>(parser->data);
    int status = llhttp_get_status_code(parser);
    if (status >= 100 && status < 200 && status != 101) return HPE_OK;  // interim; more follows
    conn->response_complete_ = true;
    conn->status_ = status;
    conn->keep_alive_ = llhttp_should_keep_alive(parser) != 0;
    return HPE_PAUSED;
  }

  void finish_response(bool keep_alive) {
    uint64_t at = uv_hrtime();
    if (keep_alive && !write_in_progress_) {
      state_ = State::kIdle;
    } else {
      begin_close();
    }
    events_->on_response(*this, status_, at);
  }

  void begin_close() {
    if (state_ == State::kClosed || state_ == State::kClosing) return;
    state_ = State::kClosing;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
  }

  // The handle is free for the next connect: report a failure, or make a deferred connect.
  static void on_close(uv_handle_t* handle) {
    auto* conn = static_cast<Connection*>(handle->data);
    conn->state_ = State::kClosed;
    conn->write_in_progress_ = false;
    if (conn->failure_) {
      Failure failure = *conn->failure_;
      conn->failure_.reset();
      conn->events_->on_failure(*conn, failure, conn->failed_at_);
    } else if (conn->send_after_close_) {
      conn->send_after_close_ = false;
      conn->connect();
    }
  }

  static const llhttp_settings_t kParserSettings;

  uv_loop_t* loop_ = nullptr;
  const Target* target_ = nullptr;
  ConnectionEvents* events_ = nullptr;
  char* read_buffer_ = nullptr;

  State state_ = State::kClosed;
  uv_tcp_t tcp_{};
  uv_connect_t connect_req_{};
  uv_write_t write_req_{};
  llhttp_t parser_{};

  bool request_written_ = false;
  bool write_in_progress_ = false;
  bool response_complete_ = false;
  bool keep_alive_ = false;
  bool send_after_close_ = false;
  int status_ = 0;
  std::optional<Failure> failure_;  // set by fail(), reported by on_close
  uint64_t failed_at_ = 0;
};

// Only the end of a message matters: the status and keep-alive are read from the parser then.
const llhttp_settings_t Connection::kParserSettings = [] {
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_message_complete = Connection::on_message_complete;
  return settings;
}();

// ---------------------------------------------------------------------------------------------
// The two modes

class Runner {
 public:
  virtual ~Runner() = default;
  // False on an internal failure, with a message on stderr.
  virtual bool start() = 0;
  // SIGINT or SIGTERM: report and stop the loop.
  virtual void interrupt() = 0;
  int exit_code() const { return exit_code_; }

 protected:
  int exit_code_ = 0;
};

template <typename T, void (T::*method)()>
void call_on_timer(uv_timer_t* timer) {
  (static_cast<T*>(timer->data)->*method)();
}

// Constant-rate mode.
class RateRun final : public Runner, private ConnectionEvents {
 public:
  RateRun(uv_loop_t* loop, const Options& options, const std::vector<Target>& targets,
          FILE* timeline)
      : loop_(loop),
        options_(options),
        timeline_file_(timeline),
        read_buffer_(kReadBufferSize),
        connections_(options.connections),
        idle_(options.connections),
        cooling_(options.connections),
        // Room for a second of requests before the queue first grows.
        queue_(static_cast<size_t>(std::min(options.rate, 1e6)) + 1),
        ns_per_request_(1e9 / options.rate) {
    for (size_t k = 0; k < connections_.size(); ++k) {
      connections_[k].init(loop, targets[k % targets.size()], *this, read_buffer_.data());
      idle_.push(&connections_[k]);
    }
    if (timeline_file_) bins_.resize((options.duration_ns + options.bin_ns - 1) / options.bin_ns);
    uv_timer_init(loop, &sweep_timer_);
    uv_check_init(loop, &issue_check_);
    sweep_timer_.data = issue_check_.data = this;
  }

  bool start() override {
    auto issue = [](void* self) { static_cast<RateRun*>(self)->issue_due(); };
    if (!issue_timer_.init(loop_, issue, this)) {
      std::fprintf(stderr, "loadgen: cannot create a timer: %s\n", std::strerror(errno));
      return false;
    }
    start_ns_ = uv_hrtime();
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    unix_offset_ns_ = static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec -
                      static_cast<int64_t>(start_ns_);
    measure_start_ns_ = start_ns_ + options_.warmup_ns;
    measure_end_ns_ = measure_start_ns_ + options_.duration_ns;
    next_due_ns_ = start_ns_;
    uv_timer_start(&sweep_timer_, call_on_timer<RateRun, &RateRun::sweep>, kSweepIntervalMs,
                   kSweepIntervalMs);
    uv_check_start(&issue_check_,
                   [](uv_check_t* check) { static_cast<RateRun*>(check->data)->issue_due(); });
    issue_due();
    return true;
  }

  void interrupt() override { finish(true); }

 private:
  static constexpr uint64_t kSweepIntervalMs = 10;
  static constexpr uint64_t kConnectCooldownNs = 50 * kNsPerMs;
  static constexpr uint64_t kMinTimerGapNs = 50'000;

  struct Cooling {
    Connection* conn = nullptr;
    uint64_t until_ns = 0;
  };
  struct Bin {
    uint64_t ok = 0;
    uint64_t fail = 0;
    uint64_t first_ok_ns = 0;  // uv_hrtime of the first 2xx; 0 when none
  };

  uint64_t due_time(uint64_t index) const {
    return start_ns_ + static_cast<uint64_t>(static_cast<double>(index) * ns_per_request_);
  }
  bool counted(uint64_t due) const { return due >= measure_start_ns_ && due < measure_end_ns_; }

  // Issues every request that is due, and sets the timer for the next one. It runs when the timer
  // fires and also after every poll of the loop (issue_check_), which costs nothing but a clock
  // read. At high rates the loop wakes for responses all the time and issues from there, and the
  // timer, never set closer than kMinTimerGapNs ahead, only fills quiet gaps: it is expensive to
  // set (see DeadlineTimer) and would cost more than the requests at 40,000 a second.
  void issue_due() {
    if (finished_) return;
    uint64_t now = uv_hrtime();
    while (next_due_ns_ <= now && next_due_ns_ < measure_end_ns_) {
      if (counted(next_due_ns_)) {
        ++outstanding_;
        ++issued_;
        issue_lag_sum_ns_ += now - next_due_ns_;
        max_issue_lag_ns_ = std::max(max_issue_lag_ns_, now - next_due_ns_);
      }
      if (idle_.empty()) {
        queue_.push(next_due_ns_);
      } else {
        Connection* conn = idle_.front();
        idle_.pop();
        start_request(*conn, next_due_ns_);
      }
      next_due_ns_ = due_time(++next_index_);
    }
    if (next_due_ns_ >= measure_end_ns_) {
      issuing_done_ = true;
      maybe_finish();
      return;
    }
    issue_timer_.arm(std::max(next_due_ns_, now + kMinTimerGapNs));
  }

  void start_request(Connection& conn, uint64_t due) {
    conn.due_ns = due;
    conn.send();
  }

  // A connection is free: it takes the oldest queued request, or joins the back of the idle list.
  void release(Connection& conn) {
    if (queue_.empty()) {
      idle_.push(&conn);
      return;
    }
    uint64_t due = queue_.front();
    queue_.pop();
    start_request(conn, due);
  }

  // Every 10 ms: time out queued and in-flight requests, and end connect cooldowns.
  void sweep() {
    if (finished_) return;
    uint64_t now = uv_hrtime();
    while (!queue_.empty() && queue_.front() + options_.timeout_ns <= now) {
      uint64_t due = queue_.front();
      queue_.pop();
      if (counted(due)) record_failure(Failure::kTimeout, due, now);
    }
    for (Connection& conn : connections_) {
      if (conn.awaiting_response() && conn.due_ns + options_.timeout_ns <= now) {
        conn.fail(Failure::kTimeout);
      }
    }
    while (!cooling_.empty() && cooling_.front().until_ns <= now) {
      Connection* conn = cooling_.front().conn;
      cooling_.pop();
      release(*conn);
    }
    maybe_finish();
  }

  void on_sent(Connection& conn) override {
    if (!finished_ && counted(conn.due_ns)) ++sent_;
  }

  void on_response(Connection& conn, int status, uint64_t at) override {
    if (finished_) return;
    if (counted(conn.due_ns)) {
      bool ok = status >= 200 && status < 300;
      if (!ok) ++status_counts_[static_cast<size_t>(std::clamp(status, 0, 999))];
      record(conn.due_ns, at, ok);
    }
    release(conn);
    maybe_finish();
  }

  void on_failure(Connection& conn, Failure failure, uint64_t at) override {
    if (finished_) return;
    if (counted(conn.due_ns)) record_failure(failure, conn.due_ns, at);
    if (failure == Failure::kConnect) {
      cooling_.push({&conn, at + kConnectCooldownNs});
    } else {
      release(conn);
    }
    maybe_finish();
  }

  // The connection stays in the idle list and reconnects when it next gets a request.
  void on_idle_close(Connection&) override {}

  void record_failure(Failure failure, uint64_t due, uint64_t at) {
    ++failure_counts_[static_cast<size_t>(failure)];
    record(due, at, false);
  }

  // One counted request has its outcome.
  void record(uint64_t due, uint64_t at, bool ok) {
    ++completed_;
    --outstanding_;
    if (ok) ++ok_;
    latency_us_.record(at > due ? (at - due) / 1000 : 0);
    if (ok) ok_latency_us_.record(at > due ? (at - due) / 1000 : 0);
    if (timeline_file_ == nullptr) return;
    size_t index = static_cast<size_t>((at - measure_start_ns_) / options_.bin_ns);
    if (index >= bins_.size()) bins_.resize(index + 1);  // the drain after the measured period
    Bin& bin = bins_[index];
    if (!ok) {
      ++bin.fail;
    } else if (bin.ok++ == 0) {
      bin.first_ok_ns = at;
    }
  }

  void maybe_finish() {
    if (issuing_done_ && outstanding_ == 0) finish(false);
  }

  void finish(bool interrupted) {
    if (finished_) return;
    finished_ = true;
    issue_timer_.stop();
    uv_check_stop(&issue_check_);
    uv_timer_stop(&sweep_timer_);
    uint64_t now = uv_hrtime();
    uint64_t measured_ns = options_.duration_ns;
    if (interrupted) {
      measured_ns = std::clamp(now, measure_start_ns_, measure_end_ns_) - measure_start_ns_;
    }
    print_results(measured_ns);
    print_summary(measured_ns, now, interrupted);
    if (timeline_file_ && !write_timeline(measured_ns)) exit_code_ = 1;
    uv_stop(loop_);
  }

  void print_results(uint64_t measured_ns) {
    double seconds = static_cast<double>(measured_ns) / 1e9;
    std::printf("rate_target=%s\n", options_.rate_text.c_str());
    std::printf("duration_s=%.3f\n", seconds);
    std::printf("connections=%" PRIu64 "\n", options_.connections);
    std::printf("sent=%" PRIu64 "\n", sent_);
    std::printf("completed=%" PRIu64 "\n", completed_);
    std::printf("rate_achieved=%.1f\n",
                seconds > 0 ? static_cast<double>(completed_) / seconds : 0);
    std::printf("ok=%" PRIu64 "\n", ok_);
    std::printf("failed=%" PRIu64 "\n", completed_ - ok_);
    for (size_t code = 0; code < status_counts_.size(); ++code) {
      if (status_counts_[code] > 0) {
        std::printf("status_%zu=%" PRIu64 "\n", code, status_counts_[code]);
      }
    }
    for (size_t kind = 0; kind < kFailureKinds; ++kind) {
      std::printf("error_%s=%" PRIu64 "\n", kFailureNames[kind], failure_counts_[kind]);
    }
    std::printf("p50_us=%" PRIu64 "\n", latency_us_.percentile(50));
    std::printf("p90_us=%" PRIu64 "\n", latency_us_.percentile(90));
    std::printf("p99_us=%" PRIu64 "\n", latency_us_.percentile(99));
    std::printf("p999_us=%" PRIu64 "\n", latency_us_.percentile(99.9));
    std::printf("max_us=%" PRIu64 "\n", latency_us_.max());
    std::printf("mean_us=%.0f\n", latency_us_.mean());
    std::printf("ok_p50_us=%" PRIu64 "\n", ok_latency_us_.percentile(50));
    std::printf("ok_p99_us=%" PRIu64 "\n", ok_latency_us_.percentile(99));
    std::printf("ok_p999_us=%" PRIu64 "\n", ok_latency_us_.percentile(99.9));
    std::fflush(stdout);
  }

  void print_summary(uint64_t measured_ns, uint64_t now, bool interrupted) {
    double seconds = static_cast<double>(measured_ns) / 1e9;
    std::fprintf(stderr, "loadgen: %s req/s for %.3f s%s, %" PRIu64 " connections\n",
                 options_.rate_text.c_str(), seconds, interrupted ? " (interrupted)" : "",
                 options_.connections);
    std::fprintf(stderr,
                 "  requests  %" PRIu64 " sent, %" PRIu64 " completed (%.1f/s), %" PRIu64
                 " ok, %" PRIu64 " failed\n",
                 sent_, completed_, seconds > 0 ? static_cast<double>(completed_) / seconds : 0.0,
                 ok_, completed_ - ok_);
    if (completed_ > ok_) {
      std::fprintf(stderr, "  failures ");
      for (size_t code = 0; code < status_counts_.size(); ++code) {
        if (status_counts_[code] > 0) {
          std::fprintf(stderr, " status %zu: %" PRIu64 ",", code, status_counts_[code]);
        }
      }
      for (size_t kind = 0; kind < kFailureKinds; ++kind) {
        std::fprintf(stderr, " %s: %" PRIu64 "%s", kFailureNames[kind], failure_counts_[kind],
                     kind + 1 < kFailureKinds ? "," : "\n");
      }
    }
    std::fprintf(stderr,
                 "  latency   p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms,"
                 " mean %.3f ms\n",
                 ms(latency_us_.percentile(50)), ms(latency_us_.percentile(90)),
                 ms(latency_us_.percentile(99)), ms(latency_us_.percentile(99.9)),
                 ms(latency_us_.max()), latency_us_.mean() / 1000.0);
    // loadgen's own health: if it falls behind the schedule, the numbers above measure it too.
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                 static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    double wall = static_cast<double>(now - start_ns_) / 1e9;
    double mean_lag_us = issued_ > 0 ? static_cast<double>(issue_lag_sum_ns_) / issued_ / 1e3 : 0;
    std::fprintf(stderr,
                 "  loadgen   %.2f s CPU in %.2f s (%.0f%% of a core); issued requests %.0f us late"
                 " on average, %.3f ms at most\n",
                 cpu, wall, wall > 0 ? 100 * cpu / wall : 0.0, mean_lag_us,
                 static_cast<double>(max_issue_lag_ns_) / 1e6);
  }

  bool write_timeline(uint64_t measured_ns) {
    auto unix_ms = [this](uint64_t hrtime_ns) {
      return (static_cast<int64_t>(hrtime_ns) + unix_offset_ns_) / 1'000'000;
    };
    size_t count =
        std::max<size_t>(bins_used(), (measured_ns + options_.bin_ns - 1) / options_.bin_ns);
    std::fprintf(timeline_file_, "# bin_start_unix_ms\tok\tfail\tfirst_ok_unix_ms\n");
    for (size_t i = 0; i < count; ++i) {
      Bin bin = i < bins_.size() ? bins_[i] : Bin{};
      std::fprintf(timeline_file_, "%" PRId64 "\t%" PRIu64 "\t%" PRIu64 "\t",
                   unix_ms(measure_start_ns_ + i * options_.bin_ns), bin.ok, bin.fail);
      if (bin.ok > 0) {
        std::fprintf(timeline_file_, "%" PRId64 "\n", unix_ms(bin.first_ok_ns));
      } else {
        std::fputs("-\n", timeline_file_);
      }
    }
    bool ok = std::fflush(timeline_file_) == 0 && !std::ferror(timeline_file_);
    if (std::fclose(timeline_file_) != 0) ok = false;
    timeline_file_ = nullptr;
    if (!ok) {
      std::fprintf(stderr, "loadgen: --timeline %s: write failed: %s\n",
                   options_.timeline_path.c_str(), std::strerror(errno));
    }
    return ok;
  }

  // The number of bins up to the last one with a completion.
  size_t bins_used() const {
    size_t n = bins_.size();
    while (n > 0 && bins_[n - 1].ok == 0 && bins_[n - 1].fail == 0) --n;
    return n;
  }

  uv_loop_t* loop_;
  const Options& options_;
  FILE* timeline_file_;
  std::vector<char> read_buffer_;        // shared by every connection
  std::vector<Connection> connections_;  // never resized: connections hold libuv handles
  Ring<Connection*> idle_;               // free connections, least recently used first
  Ring<Cooling> cooling_;                // after a failed connect, in order of their end
  Ring<uint64_t> queue_;                 // due times of requests waiting for a connection
  DeadlineTimer issue_timer_;
  uv_check_t issue_check_{};
  uv_timer_t sweep_timer_{};

  double ns_per_request_;
  uint64_t start_ns_ = 0;
  int64_t unix_offset_ns_ = 0;  // CLOCK_REALTIME - uv_hrtime, taken once at start
  uint64_t measure_start_ns_ = 0;
  uint64_t measure_end_ns_ = 0;
  uint64_t next_index_ = 0;
  uint64_t next_due_ns_ = 0;
  uint64_t outstanding_ = 0;  // counted requests issued without an outcome yet
  bool issuing_done_ = false;
  bool finished_ = false;

  // Counted requests only.
  uint64_t sent_ = 0;
  uint64_t completed_ = 0;
  uint64_t ok_ = 0;
  std::array<uint64_t, 1000> status_counts_{};  // non-2xx, by status code
  std::array<uint64_t, kFailureKinds> failure_counts_{};
  Histogram latency_us_;
  Histogram ok_latency_us_;
  std::vector<Bin> bins_;  // by completion time since measure_start_ns_; only with --timeline
  uint64_t issued_ = 0;
  uint64_t issue_lag_sum_ns_ = 0;  // how late loadgen itself issued requests
  uint64_t max_issue_lag_ns_ = 0;
};

// Idle mode: open N connections, one request each, and hold them.
class IdleRun final : public Runner, private ConnectionEvents {
 public:
  IdleRun(uv_loop_t* loop, const Options& options, const std::vector<Target>& targets)
      : loop_(loop), options_(options), read_buffer_(kReadBufferSize), connections_(options.idle) {
    for (size_t k = 0; k < connections_.size(); ++k) {
      connections_[k].init(loop, targets[k % targets.size()], *this, read_buffer_.data());
    }
    uv_timer_init(loop, &sweep_timer_);
    sweep_timer_.data = this;
  }

  bool start() override {
    uv_timer_start(&sweep_timer_, call_on_timer<IdleRun, &IdleRun::sweep>, kSweepIntervalMs,
                   kSweepIntervalMs);
    start_more();
    return true;
  }

  void interrupt() override {
    if (stopped_) return;
    stopped_ = true;
    if (!reported_) report();  // unanswered connections count as failed
    std::printf("idle_closed_by_peer=%zu\n", closed_by_peer_);
    std::fflush(stdout);
    std::fprintf(stderr, "loadgen: %zu of %zu idle connections were closed by the peer\n",
                 closed_by_peer_, open_);
    uv_stop(loop_);
  }

 private:
  static constexpr size_t kMaxOpening = 64;
  static constexpr uint64_t kSweepIntervalMs = 100;

  // Starts connections while fewer than kMaxOpening are waiting for their connect or answer.
  void start_more() {
    size_t max_opening = options_.burst ? connections_.size() : kMaxOpening;
    while (next_ < connections_.size() && opening_ < max_opening) {
      Connection& conn = connections_[next_++];
      ++opening_;
      conn.due_ns = uv_hrtime();
      conn.send();
    }
  }

  // Until the report: connections that have no answer within --timeout fail. No timer afterwards.
  void sweep() {
    uint64_t now = uv_hrtime();
    for (Connection& conn : connections_) {
      if (conn.awaiting_response() && conn.due_ns + options_.timeout_ns <= now) {
        conn.fail(Failure::kTimeout);
      }
    }
  }

  void on_sent(Connection&) override {}

  void on_response(Connection& conn, int status, uint64_t) override {
    bool open = status >= 200 && status < 300 && conn.is_open();
    if (!open) conn.close();
    --opening_;
    resolve(open);
    start_more();
  }

  void on_failure(Connection&, Failure, uint64_t) override {
    --opening_;
    resolve(false);
    start_more();
  }

  void on_idle_close(Connection&) override {
    if (reported_) {
      ++closed_by_peer_;
    } else {
      --open_;
      ++failed_;
    }
  }

  void resolve(bool open) {
    ++(open ? open_ : failed_);
    if (open_ + failed_ == connections_.size() && !reported_) report();
  }

  void report() {
    reported_ = true;
    uv_timer_stop(&sweep_timer_);
    std::printf("idle_open=%zu\nidle_failed=%zu\n", open_, connections_.size() - open_);
    std::fflush(stdout);
    std::fprintf(stderr, "loadgen: %zu idle connections open, %zu failed; holding them\n", open_,
                 connections_.size() - open_);
  }

  uv_loop_t* loop_;
  const Options& options_;
  std::vector<char> read_buffer_;
  std::vector<Connection> connections_;  // never resized: connections hold libuv handles
  uv_timer_t sweep_timer_{};
  size_t next_ = 0;     // connections started
  size_t opening_ = 0;  // started, without their answer or failure yet
  size_t open_ = 0;     // answered 2xx and still open
  size_t failed_ = 0;
  size_t closed_by_peer_ = 0;  // after the report
  bool reported_ = false;
  bool stopped_ = false;
};

void on_signal(uv_signal_t* handle, int) { static_cast<Runner*>(handle->data)->interrupt(); }

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "loadgen: %s\n", e.message.c_str());
    std::fprintf(stderr, "run 'loadgen --help' for usage\n");
    return 2;
  }
  if (options.help) {
    usage(stdout);
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit(options.idle > 0 ? options.idle : options.connections);

  // Static: the process exits without closing the loop (below), and what the loop allocated
  // stays reachable from it, so leak checkers do not report it.
  static uv_loop_t loop;
  if (int status = uv_loop_init(&loop); status != 0) {
    std::fprintf(stderr, "loadgen: cannot start the event loop: %s\n", uv_strerror(status));
    return 1;
  }
  std::vector<Target> targets;
  for (const TargetSpec& spec : options.targets) {
    std::string error;
    auto target = resolve(&loop, spec, options, error);
    if (!target) {
      std::fprintf(stderr, "loadgen: --target %s: cannot resolve: %s\n", spec.text.c_str(),
                   error.c_str());
      return 1;
    }
    targets.push_back(std::move(*target));
  }
  FILE* timeline = nullptr;
  if (!options.timeline_path.empty()) {
    timeline = std::fopen(options.timeline_path.c_str(), "w");
    if (timeline == nullptr) {
      std::fprintf(stderr, "loadgen: --timeline %s: cannot open: %s\n",
                   options.timeline_path.c_str(), std::strerror(errno));
      return 2;
    }
  }

  std::unique_ptr<Runner> runner;
  if (options.idle > 0) {
    runner = std::make_unique<IdleRun>(&loop, options, targets);
  } else {
    runner = std::make_unique<RateRun>(&loop, options, targets, timeline);
  }
  uv_signal_t sigint{}, sigterm{};
  for (auto [handle, signo] : {std::pair{&sigint, SIGINT}, std::pair{&sigterm, SIGTERM}}) {
    uv_signal_init(&loop, handle);
    handle->data = runner.get();
    uv_signal_start(handle, on_signal, signo);
  }
  if (!runner->start()) return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  // The run has printed its results. Exit without tearing down the connections one by one: the
  // kernel closes the sockets, and the loop is never used again.
  return runner->exit_code();
}
