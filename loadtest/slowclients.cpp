// slowclients: holds slow and non-reading client connections against one HTTP/1.1 server on this
// machine, for the slowclients scenario of loadtest/run. Each connection costs the attacker a
// socket and a few bytes a second; the question is what it costs the server.
//
//   slowclients --target ADDR:PORT --duration D [--slow-headers N] [--no-read M]
//               [--byte-interval 1s] [--path /] [--large-path /large] [--host HOST]
//               [--reconnect-after 1s] [--report-interval 1s]
//
// ADDR is a numeric loopback address (127.x.x.x or [::1]): this tool talks to nothing else.
// Durations: 10s, 500ms, 2m, or plain seconds (1.5).
//
// --slow-headers N: N connections that each send a request head one byte every --byte-interval,
// the first byte as soon as the connection is up:
//   GET PATH HTTP/1.1\r\nHost: HOST\r\nUser-Agent: bulwark-slowclients\r\nX-Slow-1: 1\r\n
//   X-Slow-2: 1\r\n...
// The head never ends (its empty line never comes): a slowloris. The N connections' bytes are
// spread evenly over each interval, not sent in one burst. Whatever the server answers (a 408) is
// read and counted by status; when the server closes or resets the connection, the connection is
// opened again and starts its head over, so the server faces N of them for the whole run.
//
// --no-read M: M connections that each send "GET LARGE_PATH HTTP/1.1" in one piece and never read
// a byte, so the response fills the socket buffers and the server is left holding the rest. The
// server's FIN waits behind the bytes this side does not read, so a close is seen only once the
// connection is reset: from its TCP state (TCP_INFO), checked every --report-interval. Such a
// connection is then opened again with a new request.
//
// Connecting: at most 64 connections are connecting at once, and a connection is opened again no
// sooner than --reconnect-after after its previous connect began, so a server that closes
// connections at once sees at most (N + M) connects per --reconnect-after. A failed connect is
// counted and retried after the same pause.
//
// Output on stdout, for the runner:
//   every --report-interval:  t_ms=T slow_open=S no_read_open=R connecting=C slow_closed=A
//                             no_read_closed=B connect_errors=E
//     (T since the start; *_open: connected and not seen closed; the last three are totals)
//   once, when all N + M are open for the first time:  all_open_ms=T
//   at the end, one per line:  duration_s= slow_headers= no_read= slow_connects=
//     no_read_connects= slow_closed_by_peer= no_read_closed_by_peer= slow_answered=
//     slow_status_<code>= (one per status seen, ascending) slow_bytes_sent= connect_errors=
//     slow_open_end= no_read_open_end=
// After --duration (or SIGINT/SIGTERM, the same way) every connection is closed and the process
// exits 0. 1 on an internal failure, 2 on a bad argument.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <uv.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr uint64_t kNsPerMs = 1'000'000;
constexpr uint64_t kNsPerSecond = 1'000'000'000;
constexpr uint64_t kMaxConnections = 20'000;  // each kind
constexpr uint64_t kMaxDurationNs = 3600 * kNsPerSecond;
constexpr uint64_t kMinIntervalNs = 10 * kNsPerMs;  // the tick
constexpr size_t kMaxConnecting = 64;
constexpr uint64_t kTickMs = 10;
constexpr size_t kReadBufferSize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
  bool help = false;
  sockaddr_storage address{};
  std::string target_text;
  uint64_t slow = 0;
  uint64_t no_read = 0;
  uint64_t duration_ns = 0;
  uint64_t byte_interval_ns = kNsPerSecond;
  uint64_t reconnect_after_ns = kNsPerSecond;
  uint64_t report_interval_ns = kNsPerSecond;
  std::string path = "/";
  std::string large_path = "/large";
  std::string host;  // empty: the target as given
};

struct UsageError {
  std::string message;
};

void usage(FILE* out) {
  std::fputs(
      "usage: slowclients --target ADDR:PORT --duration D [--slow-headers N] [--no-read M]\n"
      "                   [--byte-interval 1s] [--path /] [--large-path /large] [--host HOST]\n"
      "                   [--reconnect-after 1s] [--report-interval 1s]\n"
      "Holds N connections sending a request head a byte per interval and M connections that\n"
      "never read their response, against a loopback address, for D. Prints held connections\n"
      "every report interval and key=value totals at the end on stdout.\n",
      out);
}

std::optional<uint64_t> parse_duration_ns(std::string_view text) {
  double scale = 1e9;
  if (text.ends_with("ms")) {
    text.remove_suffix(2);
    scale = 1e6;
  } else if (text.ends_with("s")) {
    text.remove_suffix(1);
  } else if (text.ends_with("m")) {
    text.remove_suffix(1);
    scale = 60e9;
  }
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '.')) {
    return std::nullopt;
  }
  double value = 0;
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
  if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value) ||
      value * scale > static_cast<double>(kMaxDurationNs)) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(std::llround(value * scale));
}

std::optional<uint64_t> parse_count(std::string_view text, uint64_t max) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > max) {
    return std::nullopt;
  }
  return value;
}

// ADDR:PORT or [ADDR]:PORT with a numeric loopback address.
bool parse_loopback_target(std::string_view text, sockaddr_storage& out) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return false;
  std::string host(text.substr(0, colon));
  auto port = parse_count(text.substr(colon + 1), 65535);
  if (!port || *port == 0) return false;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    sockaddr_in6 a6{};
    if (uv_ip6_addr(host.c_str(), static_cast<int>(*port), &a6) != 0) return false;
    if (!IN6_IS_ADDR_LOOPBACK(&a6.sin6_addr)) return false;
    std::memcpy(&out, &a6, sizeof a6);
    return true;
  }
  sockaddr_in a4{};
  if (uv_ip4_addr(host.c_str(), static_cast<int>(*port), &a4) != 0) return false;
  if ((ntohl(a4.sin_addr.s_addr) >> 24) != 127) return false;
  std::memcpy(&out, &a4, sizeof a4);
  return true;
}

bool is_visible_ascii(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> seen;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      o.help = true;
      return o;
    }
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    std::string name_text(name);
    if (std::find(seen.begin(), seen.end(), name_text) != seen.end()) {
      throw UsageError{name_text + " given twice"};
    }
    seen.push_back(name_text);
    auto value = [&]() -> std::string_view {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) throw UsageError{name_text + " needs a value"};
      return argv[++i];
    };
    auto bad = [&](std::string_view v, std::string_view expected) {
      return UsageError{name_text + ": expected " + std::string(expected) + ", got '" +
                        std::string(v) + "'"};
    };
    auto duration = [&](uint64_t min_ns, std::string_view expected) {
      std::string_view v = value();
      auto ns = parse_duration_ns(v);
      if (!ns || *ns < min_ns) throw bad(v, expected);
      return *ns;
    };
    auto count = [&] {
      std::string_view v = value();
      auto n = parse_count(v, kMaxConnections);
      if (!n) throw bad(v, "a whole number in 0..20000");
      return *n;
    };
    auto path = [&] {
      std::string_view v = value();
      if (!v.starts_with('/') || !is_visible_ascii(v)) {
        throw bad(v, "a path starting with / and without spaces or control characters");
      }
      return std::string(v);
    };

    if (name == "--target") {
      std::string_view v = value();
      if (!parse_loopback_target(v, o.address)) {
        throw bad(v, "a numeric loopback ADDR:PORT (127.x.x.x:PORT or [::1]:PORT)");
      }
      o.target_text = v;
    } else if (name == "--slow-headers") {
      o.slow = count();
    } else if (name == "--no-read") {
      o.no_read = count();
    } else if (name == "--duration") {
      o.duration_ns = duration(1, "a duration > 0 and <= 1h like 30s or 500ms");
    } else if (name == "--byte-interval") {
      o.byte_interval_ns = duration(kMinIntervalNs, "a duration >= 10ms like 1s");
    } else if (name == "--reconnect-after") {
      o.reconnect_after_ns = duration(kMinIntervalNs, "a duration >= 10ms like 1s");
    } else if (name == "--report-interval") {
      o.report_interval_ns = duration(kMinIntervalNs, "a duration >= 10ms like 1s");
    } else if (name == "--path") {
      o.path = path();
    } else if (name == "--large-path") {
      o.large_path = path();
    } else if (name == "--host") {
      std::string_view v = value();
      if (!is_visible_ascii(v)) throw bad(v, "a Host header value without spaces");
      o.host = v;
    } else {
      throw UsageError{"unknown argument '" + std::string(arg) + "'"};
    }
  }
  if (o.target_text.empty()) throw UsageError{"--target is required"};
  if (o.duration_ns == 0) throw UsageError{"--duration is required"};
  if (o.slow + o.no_read == 0) throw UsageError{"--slow-headers or --no-read must be above 0"};
  return o;
}

// ---------------------------------------------------------------------------------------------
// The attack

enum class Kind : uint8_t { kSlow, kNoRead };

class Attack;

// One attacking connection. It lives in Attack's vector, which is never resized (libuv handles
// point into it). Between connections it waits (kWaiting) until Attack's tick connects it again.
struct Conn {
  enum class State : uint8_t { kWaiting, kConnecting, kOpen, kClosing };

  Attack* attack = nullptr;
  Kind kind = Kind::kSlow;
  State state = State::kWaiting;
  uv_tcp_t tcp{};
  uv_connect_t connect_req{};
  uv_write_t write_req{};
  uint64_t not_before_ns = 0;     // earliest next connect
  uint64_t slot_ns = 0;           // slow: this connection's offset within each byte interval
  uint64_t next_byte_ns = 0;      // slow: when the next byte is due
  size_t head_sent = 0;           // slow: bytes of the endless head sent on this connection
  std::array<char, 12> answer{};  // slow: the first bytes the server sent ("HTTP/1.1 408")
  size_t answer_len = 0;

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
  uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&tcp); }
};

class Attack {
 public:
  Attack(uv_loop_t* loop, const Options& options) : loop_(loop), options_(options) {
    std::string host = options.host.empty() ? options.target_text : options.host;
    std::string common = "Host: " + host + "\r\nUser-Agent: bulwark-slowclients\r\n";
    large_request_ = "GET " + options.large_path + " HTTP/1.1\r\n" + common + "\r\n";
    // The endless head, as far as one connection can get through it in one run.
    slow_head_ = "GET " + options.path + " HTTP/1.1\r\n" + common;
    size_t needed = static_cast<size_t>(options.duration_ns / options.byte_interval_ns) + 2;
    for (int k = 1; slow_head_.size() < needed; ++k) {
      slow_head_ += "X-Slow-" + std::to_string(k) + ": 1\r\n";
    }
    conns_.resize(options.slow + options.no_read);
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn& c = conns_[i];
      c.attack = this;
      c.kind = i < options.slow ? Kind::kSlow : Kind::kNoRead;
      if (c.kind == Kind::kSlow) c.slot_ns = options.byte_interval_ns * i / options.slow;
    }
    uv_timer_init(loop, &tick_);
    tick_.data = this;
  }

  void start() {
    start_ns_ = uv_hrtime();
    end_ns_ = start_ns_ + options_.duration_ns;
    next_report_ns_ = start_ns_ + options_.report_interval_ns;
    uv_timer_start(
        &tick_, [](uv_timer_t* t) { static_cast<Attack*>(t->data)->tick(); }, 0, kTickMs);
  }

  // Ends the run: every connection is closed; the loop ends once their handles are.
  void stop() {
    if (stopping_) return;
    stopping_ = true;
    duration_ns_ = uv_hrtime() - start_ns_;
    slow_open_end_ = open_[0];
    no_read_open_end_ = open_[1];
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    for (Conn& c : conns_) {
      if (c.state == Conn::State::kConnecting || c.state == Conn::State::kOpen) close(c, false);
    }
  }

  void print_totals() const {
    std::printf("duration_s=%.3f\n", static_cast<double>(duration_ns_) / 1e9);
    std::printf("slow_headers=%" PRIu64 "\nno_read=%" PRIu64 "\n", options_.slow, options_.no_read);
    std::printf("slow_connects=%" PRIu64 "\nno_read_connects=%" PRIu64 "\n", connects_[0],
                connects_[1]);
    std::printf("slow_closed_by_peer=%" PRIu64 "\nno_read_closed_by_peer=%" PRIu64 "\n", closed_[0],
                closed_[1]);
    std::printf("slow_answered=%" PRIu64 "\n", answered_);
    for (size_t code = 0; code < statuses_.size(); ++code) {
      if (statuses_[code] > 0) std::printf("slow_status_%zu=%" PRIu64 "\n", code, statuses_[code]);
    }
    std::printf("slow_bytes_sent=%" PRIu64 "\n", slow_bytes_);
    std::printf("connect_errors=%" PRIu64 "\n", connect_errors_);
    std::printf("slow_open_end=%" PRIu64 "\nno_read_open_end=%" PRIu64 "\n", slow_open_end_,
                no_read_open_end_);
    std::fflush(stdout);
  }

 private:
  static size_t k(Kind kind) { return kind == Kind::kSlow ? 0 : 1; }

  // Every 10 ms: connect what may connect, send the bytes that are due, report.
  void tick() {
    if (stopping_) return;
    uint64_t now = uv_hrtime();
    if (now >= end_ns_) {
      stop();
      return;
    }
    for (Conn& c : conns_) {
      if (c.state == Conn::State::kWaiting) {
        if (connecting_ < kMaxConnecting && now >= c.not_before_ns) connect(c, now);
      } else if (c.state == Conn::State::kOpen && c.kind == Kind::kSlow && now >= c.next_byte_ns) {
        send_byte(c, now);
      }
    }
    if (now >= next_report_ns_) {
      next_report_ns_ += options_.report_interval_ns;
      check_no_read();
      report(now);
    }
    if (!all_open_reported_ && open_[0] + open_[1] == conns_.size()) {
      all_open_reported_ = true;
      std::printf("all_open_ms=%" PRIu64 "\n", (now - start_ns_) / kNsPerMs);
      std::fflush(stdout);
    }
  }

  void report(uint64_t now) {
    std::printf("t_ms=%" PRIu64 " slow_open=%" PRIu64 " no_read_open=%" PRIu64
                " connecting=%zu slow_closed=%" PRIu64 " no_read_closed=%" PRIu64
                " connect_errors=%" PRIu64 "\n",
                (now - start_ns_) / kNsPerMs, open_[0], open_[1], connecting_, closed_[0],
                closed_[1], connect_errors_);
    std::fflush(stdout);
  }

  void connect(Conn& c, uint64_t now) {
    c.not_before_ns = now + options_.reconnect_after_ns;
    uv_tcp_init(loop_, &c.tcp);  // no socket yet: cannot fail
    c.tcp.data = &c;
    c.state = Conn::State::kConnecting;
    ++connecting_;
    if (uv_tcp_connect(&c.connect_req, &c.tcp, reinterpret_cast<const sockaddr*>(&options_.address),
                       on_connect) != 0) {
      ++connect_errors_;  // out of descriptors, say
      close(c, false);
    }
  }

  static void on_connect(uv_connect_t* req, int status) {
    Conn& c = *static_cast<Conn*>(req->handle->data);
    Attack& a = *c.attack;
    if (c.state != Conn::State::kConnecting) return;  // closed meanwhile: ECANCELED
    if (status < 0) {
      ++a.connect_errors_;
      a.close(c, false);
      return;
    }
    --a.connecting_;
    c.state = Conn::State::kOpen;
    ++a.open_[k(c.kind)];
    ++a.connects_[k(c.kind)];
    uv_tcp_nodelay(&c.tcp, 1);
    if (c.kind == Kind::kNoRead) {
      uv_buf_t buf = uv_buf_init(a.large_request_.data(), a.large_request_.size());
      if (uv_write(&c.write_req, c.stream(), &buf, 1, on_write) != 0) a.close(c, true);
      return;  // and never read
    }
    c.head_sent = 0;
    c.answer_len = 0;
    if (uv_read_start(c.stream(), on_alloc, on_read) != 0) {
      a.close(c, true);
      return;
    }
    uint64_t now = uv_hrtime();
    a.send_byte(c, now);
    c.next_byte_ns = now + a.options_.byte_interval_ns + c.slot_ns;
  }

  static void on_write(uv_write_t* req, int status) {
    Conn& c = *static_cast<Conn*>(req->handle->data);
    if (status < 0 && c.state == Conn::State::kOpen) c.attack->close(c, true);
  }

  void send_byte(Conn& c, uint64_t now) {
    if (c.head_sent < slow_head_.size()) {
      uv_buf_t buf = uv_buf_init(slow_head_.data() + c.head_sent, 1);
      int written = uv_try_write(c.stream(), &buf, 1);
      if (written < 0 && written != UV_EAGAIN) {
        close(c, true);
        return;
      }
      if (written == 1) {
        ++c.head_sent;
        ++slow_bytes_;
      }
    }
    c.next_byte_ns = std::max(c.next_byte_ns + options_.byte_interval_ns, now + kTickMs * kNsPerMs);
  }

  static void on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    Attack& a = *static_cast<Conn*>(handle->data)->attack;
    *buf = uv_buf_init(a.read_buffer_.data(), a.read_buffer_.size());
  }

  // Slow connections only. What the server answers is counted by status; its close ends the
  // connection, which is opened again.
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    Conn& c = *static_cast<Conn*>(stream->data);
    Attack& a = *c.attack;
    if (c.state != Conn::State::kOpen || nread == 0) return;
    if (nread > 0) {
      if (c.answer_len == 0) ++a.answered_;
      size_t n = std::min(static_cast<size_t>(nread), c.answer.size() - c.answer_len);
      std::memcpy(c.answer.data() + c.answer_len, buf->base, n);
      c.answer_len += n;
      return;
    }
    a.close(c, true);
  }

  // No-read connections are closed by the server only as far as their TCP state shows it.
  void check_no_read() {
    for (Conn& c : conns_) {
      if (c.kind != Kind::kNoRead || c.state != Conn::State::kOpen) continue;
      uv_os_fd_t fd;
      tcp_info info{};
      socklen_t size = sizeof info;
      if (uv_fileno(c.handle(), &fd) != 0 ||
          getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0 ||
          info.tcpi_state != TCP_ESTABLISHED) {
        close(c, true);
      }
    }
  }

  // Closes a connecting or open connection. `by_peer`: the server ended it (counted, and the
  // connection is opened again unless the run is over).
  void close(Conn& c, bool by_peer) {
    if (c.state == Conn::State::kConnecting) {
      --connecting_;
    } else if (c.state == Conn::State::kOpen) {
      --open_[k(c.kind)];
      if (by_peer) ++closed_[k(c.kind)];
      if (c.kind == Kind::kSlow) record_answer(c);
    }
    c.state = Conn::State::kClosing;
    uv_close(c.handle(), [](uv_handle_t* handle) {
      static_cast<Conn*>(handle->data)->state = Conn::State::kWaiting;
    });
  }

  void record_answer(Conn& c) {
    std::string_view text(c.answer.data(), c.answer_len);
    unsigned code = 0;
    // "HTTP/1.1 408"
    if (text.size() == 12 && text.starts_with("HTTP/") && text[8] == ' ' &&
        std::from_chars(text.data() + 9, text.data() + 12, code).ptr == text.data() + 12 &&
        code < statuses_.size()) {
      ++statuses_[code];
    }
    c.answer_len = 0;
  }

  uv_loop_t* loop_;
  const Options& options_;
  std::string large_request_;
  std::string slow_head_;
  std::vector<Conn> conns_;
  std::vector<char> read_buffer_ = std::vector<char>(kReadBufferSize);
  uv_timer_t tick_{};
  uint64_t start_ns_ = 0;
  uint64_t end_ns_ = 0;
  uint64_t next_report_ns_ = 0;
  uint64_t duration_ns_ = 0;
  bool stopping_ = false;
  bool all_open_reported_ = false;

  size_t connecting_ = 0;
  std::array<uint64_t, 2> open_{};      // by kind: slow, no-read
  std::array<uint64_t, 2> connects_{};  // by kind
  std::array<uint64_t, 2> closed_{};    // by kind, by the server
  uint64_t connect_errors_ = 0;
  uint64_t answered_ = 0;
  uint64_t slow_bytes_ = 0;
  std::array<uint64_t, 600> statuses_{};
  uint64_t slow_open_end_ = 0;
  uint64_t no_read_open_end_ = 0;
};

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
                 "slowclients: warning: the open file limit is %llu, too low for %llu "
                 "connections; connects beyond it count as connect errors\n",
                 static_cast<unsigned long long>(limit.rlim_cur),
                 static_cast<unsigned long long>(needed));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "slowclients: %s\nrun 'slowclients --help' for usage\n",
                 e.message.c_str());
    return 2;
  }
  if (options.help) {
    usage(stdout);
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit(options.slow + options.no_read);

  uv_loop_t loop;
  if (int status = uv_loop_init(&loop); status != 0) {
    std::fprintf(stderr, "slowclients: cannot start the event loop: %s\n", uv_strerror(status));
    return 1;
  }
  Attack attack(&loop, options);
  uv_signal_t signals[2]{};
  int signos[2] = {SIGINT, SIGTERM};
  for (int i = 0; i < 2; ++i) {
    uv_signal_init(&loop, &signals[i]);
    signals[i].data = &attack;
    uv_signal_start(
        &signals[i], [](uv_signal_t* s, int) { static_cast<Attack*>(s->data)->stop(); }, signos[i]);
    uv_unref(reinterpret_cast<uv_handle_t*>(&signals[i]));  // the run ends the loop, not them
  }
  attack.start();
  uv_run(&loop, UV_RUN_DEFAULT);  // until stop() has closed every handle
  attack.print_totals();
  for (uv_signal_t& s : signals) uv_close(reinterpret_cast<uv_handle_t*>(&s), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  int status = uv_loop_close(&loop);
  if (status != 0) {
    std::fprintf(stderr, "slowclients: the loop did not close: %s\n", uv_strerror(status));
    return 1;
  }
  std::fprintf(stderr, "slowclients: done\n");
  return 0;
}
