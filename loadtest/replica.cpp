// replica: an upstream for chaos benchmarks that can be told to fail, slow down, reset or stop.
//
//   replica --port P --control-port C [--address 127.0.0.1] [--name NAME] [--body-bytes 100]
//           [--health-path /health] [--seed N]
//
// Data port: HTTP/1.1 with keep-alive (HTTP/1.0 only with "Connection: keep-alive") and
// pipelining; any method and path; request bodies are read and dropped. A request is answered
// 200, text/plain, "X-Replica: NAME", with a fixed body of --body-bytes bytes, unless the shares
// set over the control port say otherwise. For each request, from a PRNG seeded with --seed
// (default: the data port, so runs repeat), in this order:
//   reset  share: the connection is aborted with a TCP RST instead of an answer;
//   fail   share, drawn only when not reset: 503 with the body "replica NAME failing\n";
//   delay  share, drawn independently: that outcome (200, 503 or RST) happens delay_ms after the
//          request was read, with a timer. Answers on a connection leave in request order, so a
//          pipelined request behind a delayed one waits for it.
// Apart from the shares, a replica can model a server of finite capacity (for the overload and
// cold-start scenarios): every request takes service_ms, at most `capacity` at once (0: no
// limit), the others wait their turn first come first served, whatever connection they came on;
// and for the first --cold-ms after the process started (or the last /start) service takes
// --cold-factor times as long (a cold cache). The health path is not served this way: it stays
// cheap, as a real health endpoint would.
// The health path gets the same treatment (a failing replica fails its checks) but is counted
// apart. A malformed request gets 400 and the connection is closed.
//
// Control port: one request per connection, answered text/plain with "Connection: close".
//   POST /set?fail=F&delay=F&delay_ms=N&reset=F&service_ms=N&capacity=N  any subset (F in
//                        [0,1], N an integer in [0, 3600000]); 200 with all settings as key=value
//                        lines, or 400 naming the first bad parameter (and nothing changes).
//   POST /stop           close the data listener and reset every data connection, as if the
//                        process had crashed. Idempotent.
//   POST /start          listen again on the same address and port; 500 with the error if that
//                        fails. Idempotent.
//   GET  /stats          key=value lines: name; requests (not on the health path, counted once
//                        the head is read, whatever happens next); health_requests;
//                        responses_200; responses_503; resets (by the reset share, not /stop);
//                        connections_accepted; open_connections; listening (0 or 1);
//                        started_unix_ms (process start or the last /start that started);
//                        first_request_unix_ms (the first non-health request since then);
//                        last_request_unix_ms (the latest ever). 0 for none; times are
//                        CLOCK_REALTIME milliseconds.
//   POST /reset-stats    zero the counters (not the settings, not the times).
//   /stop, /start and /reset-stats answer 200 with the /stats lines. Other paths 404, other
//   methods 405. Query values are not percent-decoded.
//
// Prints "listening on ADDR:PORT control ADDR:CPORT" once both ports are bound. SIGTERM and
// SIGINT exit 0; bad arguments exit 2; a port that cannot be bound exits 1.
//
// One libuv loop. Response bytes are built once at start-up and written straight from there. A
// connection stops reading while 1024 answers wait or 1 MiB waits to be sent, and request heads
// are limited to 64 KiB, so no client can make the process grow without bound.

#include <llhttp.h>
#include <netinet/in.h>
#include <signal.h>
#include <time.h>
#include <uv.h>

#include <algorithm>
#include <array>
#include <functional>
#include <vector>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>

namespace {

constexpr size_t kMaxHeadBytes = 64 * 1024;      // request line and headers; more gets 400
constexpr size_t kMaxControlTarget = 4096;       // control request-target; longer gets 400
constexpr size_t kMaxQueuedAnswers = 1024;       // per connection; reading pauses beyond
constexpr size_t kMaxWriteQueueBytes = 1 << 20;  // per connection; reading pauses beyond
constexpr size_t kReadBufferBytes = 64 * 1024;
constexpr uint64_t kMaxBodyBytes = 16ull << 20;  // each of the three 200 responses holds a copy
constexpr uint64_t kMaxDelayMs = 3'600'000;
constexpr unsigned kMaxBatch = 64;  // answers handed to the socket in one write
constexpr int kBacklog = 1024;

uint64_t unix_ms() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000 + static_cast<uint64_t>(now.tv_nsec) / 1'000'000;
}

uint16_t port_of(const sockaddr_storage& address) {
  return ntohs(address.ss_family == AF_INET6
                   ? reinterpret_cast<const sockaddr_in6&>(address).sin6_port
                   : reinterpret_cast<const sockaddr_in&>(address).sin_port);
}

// The close callback of a heap-allocated listener.
void delete_tcp(uv_handle_t* handle) { delete reinterpret_cast<uv_tcp_t*>(handle); }

// "127.0.0.1:8080" or "[::1]:8080".
std::string format_address(const sockaddr_storage& address) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (address.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(&address), host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(port_of(address));
  }
  uv_ip4_name(reinterpret_cast<const sockaddr_in*>(&address), host, sizeof host);
  return std::string(host) + ":" + std::to_string(port_of(address));
}

// A whole decimal integer in [0, max].
bool parse_uint(std::string_view text, uint64_t max, uint64_t* out) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > max) {
    return false;
  }
  *out = value;
  return true;
}

// A share: a whole decimal number in [0, 1] ("0.25", "1", "5e-2").
bool parse_share(std::string_view text, double* out) {
  double value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() ||
      !(value >= 0 && value <= 1)) {  // also rejects NaN
    return false;
  }
  *out = value;
  return true;
}

// The shortest text that reads back as the same double ("0.1", not "0.10000000000000001").
std::string format_share(double value) {
  char text[32];
  auto result = std::to_chars(text, text + sizeof text, value);
  return std::string(text, result.ptr);
}

// splitmix64 (Steele, Lea and Flood 2014): small, fast and well mixed, which is all a share
// needs. Seeded explicitly so that a run can be repeated.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // True with probability `share`: never for 0, always for 1.
  bool chance(double share) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < share; }

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
  uint64_t service_ms = 0;   // initial service_ms
  uint64_t capacity = 0;     // initial capacity
  uint64_t cold_ms = 0;      // after each start, service takes cold_factor times as long
  uint64_t cold_factor = 1;
  sockaddr_storage data_address{};
  sockaddr_storage control_address{};
  std::string name = "replica";
  uint64_t body_bytes = 100;
  std::string health_path = "/health";
  std::optional<uint64_t> seed;  // default: the data port
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: replica --port P --control-port C [--address 127.0.0.1] [--name NAME]\n"
               "               [--body-bytes 100] [--health-path /health] [--seed N]\n"
               "               [--service-ms N] [--capacity N] [--cold-ms N] [--cold-factor N]\n"
               "  An upstream for chaos benchmarks: answers 200 with a fixed body on --port,\n"
               "  and is told over --control-port to fail, delay, reset or stop.\n"
               "  Control: POST /set?fail=F&delay=F&delay_ms=N&reset=F, POST /stop, POST /start,\n"
               "           GET /stats, POST /reset-stats. Port 0 picks a free port.\n");
}

// A header value must not let the name break the response apart.
bool is_header_safe(std::string_view text) {
  for (char c : text) {
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

// Parses argv into `options`; on a mistake returns what is wrong.
std::optional<std::string> parse_options(int argc, char** argv, Options* options) {
  std::string address = "127.0.0.1";
  uint64_t port = 0, control_port = 0;
  bool have_port = false, have_control_port = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) return "missing value for " + std::string(flag);
    std::string_view value = argv[++i];
    bool ok = true;
    if (flag == "--port") {
      ok = have_port = parse_uint(value, 65535, &port);
    } else if (flag == "--control-port") {
      ok = have_control_port = parse_uint(value, 65535, &control_port);
    } else if (flag == "--address") {
      address = value;
    } else if (flag == "--name") {
      ok = !value.empty() && is_header_safe(value);
      options->name = value;
    } else if (flag == "--body-bytes") {
      ok = parse_uint(value, kMaxBodyBytes, &options->body_bytes);
    } else if (flag == "--health-path") {
      ok = value.starts_with('/');
      options->health_path = value;
    } else if (flag == "--service-ms") {
      ok = parse_uint(value, kMaxDelayMs, &options->service_ms);
    } else if (flag == "--capacity") {
      ok = parse_uint(value, kMaxDelayMs, &options->capacity);
    } else if (flag == "--cold-ms") {
      ok = parse_uint(value, kMaxDelayMs, &options->cold_ms);
    } else if (flag == "--cold-factor") {
      ok = parse_uint(value, 1000, &options->cold_factor) && options->cold_factor > 0;
    } else if (flag == "--seed") {
      uint64_t seed = 0;
      ok = parse_uint(value, UINT64_MAX, &seed);
      options->seed = seed;
    } else {
      return "unknown option " + std::string(flag);
    }
    if (!ok) return "bad value for " + std::string(flag) + ": " + std::string(value);
  }
  if (!have_port) return "--port is required";
  if (!have_control_port) return "--control-port is required";
  for (auto [port_number, out] : {std::pair{port, &options->data_address},
                                  std::pair{control_port, &options->control_address}}) {
    int p = static_cast<int>(port_number);
    if (uv_ip4_addr(address.c_str(), p, reinterpret_cast<sockaddr_in*>(out)) != 0 &&
        uv_ip6_addr(address.c_str(), p, reinterpret_cast<sockaddr_in6*>(out)) != 0) {
      return "--address must be an IPv4 or IPv6 address: " + address;
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// What the data port answers

enum class Outcome : uint8_t { kOk, kFail, kReset, kBadRequest };

// How a response ends its connection's turn: HTTP/1.1 keep-alive needs no header, HTTP/1.0
// keep-alive says so, and a last response says "Connection: close".
enum class Framing : uint8_t { kDefault, kKeepAlive, kClose };

// One answer waiting on a connection, in request order.
struct Answer {
  Outcome outcome;
  Framing framing;
  bool head_only;   // a HEAD request: status line and headers, no body
  uint64_t due_ns;  // uv_hrtime() before which it must not leave; 0: at once
};

constexpr Answer kBadRequest{Outcome::kBadRequest, Framing::kClose, false, 0};

// The bytes of one prepared response.
struct CannedResponse {
  std::string bytes;
  size_t head_size = 0;  // status line and headers, what a HEAD request gets
};

CannedResponse make_response(std::string_view status, std::string_view name, std::string_view body,
                             Framing framing) {
  CannedResponse response;
  response.bytes =
      "HTTP/1.1 " + std::string(status) +
      "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nX-Replica: " + std::string(name) + "\r\n";
  if (framing == Framing::kKeepAlive) response.bytes += "Connection: keep-alive\r\n";
  if (framing == Framing::kClose) response.bytes += "Connection: close\r\n";
  response.bytes += "\r\n";
  response.head_size = response.bytes.size();
  response.bytes += body;
  return response;
}

// The chaos settings, changed only by POST /set.
struct Settings {
  double fail = 0;
  double delay = 0;
  uint64_t delay_ms = 0;
  double reset = 0;
  uint64_t service_ms = 0;
  uint64_t capacity = 0;  // requests in service at once; 0: no limit
};

// The counters POST /reset-stats zeroes.
struct Counters {
  uint64_t requests = 0;  // data-port requests not on the health path, counted at head complete
  uint64_t health_requests = 0;
  uint64_t responses_200 = 0;  // counted when handed to the socket
  uint64_t responses_503 = 0;
  uint64_t resets = 0;  // connections reset by the reset share (not by /stop)
  uint64_t connections_accepted = 0;
};

// A control-port answer.
struct ControlReply {
  ControlReply(int status, std::string body, std::string_view allow = {})
      : status(status), body(std::move(body)), allow(allow) {}
  int status;
  std::string body;
  std::string_view allow;  // for 405: the method the path takes
};

class DataConnection;

// The server: both listeners, the settings, the counters and the open data connections. Lives
// for the whole process, on main()'s stack; connections hold a reference to it.
class Replica {
 public:
  Replica(uv_loop_t* loop, Options options);
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  // Binds both ports. On failure returns the message for the user, naming the port.
  std::optional<std::string> open();
  // "listening on ADDR:PORT control ADDR:CPORT", with the real ports.
  std::string listening_line() const;

  uv_loop_t* loop() const { return loop_; }
  // One read buffer for every connection: the loop is single-threaded and each read is
  // consumed before the next buffer is handed out.
  uv_buf_t read_buffer() { return uv_buf_init(read_buffer_.data(), read_buffer_.size()); }

  // Data-port bookkeeping, called by DataConnection.
  void count_request(std::string_view target);
  bool is_health_path(std::string_view target) const {
    return target.substr(0, target.find('?')) == options_.health_path;
  }
  Answer plan_answer(Framing framing, bool head_only, bool health);
  // The bytes of `answer`'s response (which live as long as the Replica); counts it as sent.
  uv_buf_t take_response(const Answer& answer);
  void count_reset() { ++counters_.resets; }
  void forget(DataConnection* connection) { connections_.erase(connection); }

  // Handles one control request.
  ControlReply control(llhttp_method_t method, std::string_view target);

 private:
  static void on_data_connection(uv_stream_t* listener, int status);
  static void on_control_connection(uv_stream_t* listener, int status);

  // Listens on the data address (same port every time). On failure returns libuv's error text.
  std::optional<std::string> start_listening();
  // Closes the data listener and resets every data connection.
  void stop_listening();
  ControlReply apply_settings(std::string_view query);
  std::string settings_text() const;
  std::string stats_text() const;

  uv_loop_t* loop_;
  Options options_;
  Settings settings_;
  Counters counters_;
  Random random_{0};
  std::array<std::array<CannedResponse, 3>, 2> responses_;  // [ok, fail][Framing]
  CannedResponse bad_request_;
  std::array<char, kReadBufferBytes> read_buffer_{};

  uv_tcp_t* data_listener_ = nullptr;  // null while stopped; freed in its close callback
  uv_tcp_t control_listener_{};
  std::unordered_set<DataConnection*> connections_;  // open, not yet closing
  uint64_t started_unix_ms_ = 0;
  uint64_t started_ns_ = 0;  // uv_hrtime() of the same moment
  // With a capacity: when each of its service slots is free again (a min-heap of uv_hrtime()s).
  std::vector<uint64_t> slot_free_ns_;
  uint64_t first_request_unix_ms_ = 0;
  uint64_t last_request_unix_ms_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Data connections

// One accepted data-port connection. It owns its socket and its delay timer and deletes itself
// in the close callback of the last of them; close() starts that and may be called any number of
// times. Nothing touches the object after close() except libuv's remaining callbacks (cancelled
// writes, then the close callbacks), which only look at closing_ and the handle count.
class DataConnection {
 public:
  explicit DataConnection(Replica& replica);
  DataConnection(const DataConnection&) = delete;
  DataConnection& operator=(const DataConnection&) = delete;

  // Accepts the pending connection of `listener` and starts reading. On failure the connection
  // closes itself and this returns false.
  bool accept(uv_stream_t* listener);
  // Closes now; with `reset` the peer gets a TCP RST instead of a FIN.
  void close(bool reset);

 private:
  static const llhttp_settings_t& parser_settings();
  static DataConnection* from(llhttp_t* parser) {
    return static_cast<DataConnection*>(parser->data);
  }
  static int on_message_begin(llhttp_t* parser);
  static int on_url(llhttp_t* parser, const char* at, size_t length);
  static int on_header_bytes(llhttp_t* parser, const char* at, size_t length);
  static int on_headers_complete(llhttp_t* parser);
  static int on_message_complete(llhttp_t* parser);

  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* request, int status);
  static void on_shutdown(uv_shutdown_t* request, int status);
  static void on_timer(uv_timer_t* timer);
  static void on_closed(uv_handle_t* handle);

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  void handle_input(const char* data, size_t size);
  void flush();
  bool write(uv_buf_t* bufs, unsigned count);
  void update_reading();

  Replica& replica_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};  // runs while the first waiting answer is not yet due
  uv_shutdown_t shutdown_{};
  llhttp_t parser_{};
  std::string target_;     // the request-target of the request being parsed
  bool health_ = false;     // it is the health path
  size_t head_bytes_ = 0;  // of the head being parsed, held to kMaxHeadBytes
  std::deque<Answer> answers_;
  int open_handles_ = 2;    // tcp_ and timer_
  bool reading_ = false;    // uv_read_start is in effect
  bool parsing_ = true;     // false once no further request will be read; input is dropped
  bool peer_done_ = false;  // the peer sent FIN
  bool finishing_ = false;  // the last answer is out and a shutdown is pending
  bool closing_ = false;
};

DataConnection::DataConnection(Replica& replica) : replica_(replica) {
  uv_tcp_init(replica.loop(), &tcp_);
  uv_timer_init(replica.loop(), &timer_);
  tcp_.data = this;
  timer_.data = this;
  llhttp_init(&parser_, HTTP_REQUEST, &parser_settings());
  parser_.data = this;
}

const llhttp_settings_t& DataConnection::parser_settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_url = on_url;
    s.on_header_field = on_header_bytes;
    s.on_header_value = on_header_bytes;
    s.on_headers_complete = on_headers_complete;
    s.on_message_complete = on_message_complete;
    return s;
  }();
  return settings;
}

bool DataConnection::accept(uv_stream_t* listener) {
  int rc = uv_accept(listener, stream());
  if (rc == 0) rc = uv_read_start(stream(), on_alloc, on_read);
  if (rc != 0) {
    close(false);
    return false;
  }
  reading_ = true;
  uv_tcp_nodelay(&tcp_, 1);
  return true;
}

void DataConnection::close(bool reset) {
  if (closing_) return;
  closing_ = true;
  replica_.forget(this);
  // uv_tcp_close_reset refuses while a shutdown is pending; a plain close is all that is left.
  if (!reset || uv_tcp_close_reset(&tcp_, on_closed) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_closed);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_closed);
}

void DataConnection::on_closed(uv_handle_t* handle) {
  auto* self = static_cast<DataConnection*>(handle->data);
  if (--self->open_handles_ == 0) delete self;  // libuv is done with both handles
}

int DataConnection::on_message_begin(llhttp_t* parser) {
  DataConnection* self = from(parser);
  self->target_.clear();
  self->head_bytes_ = 0;
  return 0;
}

int DataConnection::on_url(llhttp_t* parser, const char* at, size_t length) {
  DataConnection* self = from(parser);
  if (on_header_bytes(parser, at, length) != 0) return -1;
  self->target_.append(at, length);
  return 0;
}

int DataConnection::on_header_bytes(llhttp_t* parser, const char*, size_t length) {
  DataConnection* self = from(parser);
  self->head_bytes_ += length;
  return self->head_bytes_ > kMaxHeadBytes ? -1 : 0;  // -1: llhttp reports HPE_USER, we 400
}

int DataConnection::on_headers_complete(llhttp_t* parser) {
  DataConnection* self = from(parser);
  self->replica_.count_request(self->target_);
  self->health_ = self->replica_.is_health_path(self->target_);
  return 0;
}

// The whole request is in: its answer joins the queue. After a request that ends the connection
// (Connection: close, HTTP/1.0 without keep-alive, an Upgrade we do not do) parsing stops.
int DataConnection::on_message_complete(llhttp_t* parser) {
  DataConnection* self = from(parser);
  bool keep_alive = llhttp_should_keep_alive(parser) && !llhttp_get_upgrade(parser);
  Framing framing = !keep_alive                          ? Framing::kClose
                    : llhttp_get_http_minor(parser) == 0 ? Framing::kKeepAlive
                                                         : Framing::kDefault;
  bool head_only = llhttp_get_method(parser) == HTTP_HEAD;
  self->answers_.push_back(self->replica_.plan_answer(framing, head_only, self->health_));
  if (keep_alive) return HPE_OK;
  self->parsing_ = false;
  return HPE_PAUSED;
}

void DataConnection::on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  *buf = static_cast<DataConnection*>(handle->data)->replica_.read_buffer();
}

void DataConnection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<DataConnection*>(stream->data);
  if (nread > 0) {
    self->handle_input(buf->base, static_cast<size_t>(nread));
  } else if (nread == UV_EOF) {
    // The peer will send nothing more (libuv has stopped reading); answers already owed still
    // go out, as the peer may only have half-closed.
    self->peer_done_ = true;
    self->reading_ = false;
    self->flush();
  } else if (nread < 0) {
    self->close(false);
  }
}

void DataConnection::handle_input(const char* data, size_t size) {
  if (parsing_) {
    llhttp_errno_t error = llhttp_execute(&parser_, data, size);
    if (error != HPE_OK && error != HPE_PAUSED) {
      // Malformed, too large, or HPE_PAUSED_UPGRADE (whose answer is queued already, with
      // Connection: close): nothing after this is read as a request.
      if (error != HPE_PAUSED_UPGRADE) answers_.push_back(kBadRequest);
      parsing_ = false;
    }
  }
  flush();
}

// Hands every due answer at the head of the queue to the socket, in order, and arms the timer
// for the first one not yet due. A reset at the head aborts the connection; once the last answer
// is out (a "close" one, or the peer is done), a shutdown ends the connection gracefully.
void DataConnection::flush() {
  if (closing_ || finishing_) return;
  // The precise clock, not the loop's: that one is coarse enough that a timer may fire up to
  // two milliseconds early, and a delay must never be shorter than asked.
  const uint64_t now = uv_hrtime();
  uv_buf_t batch[kMaxBatch];
  unsigned count = 0;
  while (!answers_.empty() && answers_.front().due_ns <= now) {
    Answer answer = answers_.front();
    answers_.pop_front();
    if (answer.outcome == Outcome::kReset) {
      // Earlier answers go first, though the RST may overtake them, as a crash would.
      if (write(batch, count)) {
        replica_.count_reset();
        close(true);
      }
      return;
    }
    batch[count++] = replica_.take_response(answer);
    if (count == kMaxBatch) {
      if (!write(batch, count)) return;
      count = 0;
    }
  }
  if (!write(batch, count)) return;

  if (!answers_.empty()) {
    uint64_t wait_ms = (answers_.front().due_ns - now + 999'999) / 1'000'000;  // rounded up
    uv_timer_start(&timer_, on_timer, wait_ms, 0);
  } else if (!parsing_ || peer_done_) {
    // The shutdown waits for the queued writes; the peer then sees FIN after the last byte.
    finishing_ = true;
    if (uv_shutdown(&shutdown_, stream(), on_shutdown) != 0) close(false);
    return;
  }
  update_reading();
}

// Writes `bufs` (prepared response bytes, which outlive the connection): what the socket takes
// at once directly, the rest queued in libuv. False when the connection failed and is closing.
bool DataConnection::write(uv_buf_t* bufs, unsigned count) {
  if (count == 0) return true;
  int sent = uv_try_write(stream(), bufs, count);
  if (sent == UV_EAGAIN) sent = 0;  // earlier writes still queued, or the socket buffer is full
  if (sent < 0) {
    close(false);
    return false;
  }
  // Drop what went out: whole buffers, then the part of the first one left that did.
  auto skip = static_cast<size_t>(sent);
  for (; count > 0 && skip >= bufs->len; --count, ++bufs) skip -= bufs->len;
  if (count == 0) return true;
  bufs->base += skip;
  bufs->len -= skip;
  auto* request = new uv_write_t;
  request->data = this;
  if (uv_write(request, stream(), bufs, count, on_write) != 0) {
    delete request;
    close(false);
    return false;
  }
  return true;
}

void DataConnection::on_write(uv_write_t* request, int status) {
  auto* self = static_cast<DataConnection*>(request->data);
  delete request;
  if (status < 0) {
    self->close(false);  // also UV_ECANCELED after close(): then a no-op
  } else {
    self->update_reading();
  }
}

void DataConnection::on_shutdown(uv_shutdown_t* request, int) {
  static_cast<DataConnection*>(request->handle->data)->close(false);
}

void DataConnection::on_timer(uv_timer_t* timer) {
  static_cast<DataConnection*>(timer->data)->flush();
}

// Reads only while the connection keeps up: pauses when too many answers wait or the peer does
// not take its bytes, and resumes once they drain.
void DataConnection::update_reading() {
  if (closing_ || peer_done_) return;
  bool wanted = answers_.size() < kMaxQueuedAnswers &&
                uv_stream_get_write_queue_size(stream()) < kMaxWriteQueueBytes;
  if (wanted == reading_) return;
  if (wanted && uv_read_start(stream(), on_alloc, on_read) != 0) {
    close(false);
    return;
  }
  if (!wanted) uv_read_stop(stream());
  reading_ = wanted;
}

// ---------------------------------------------------------------------------------------------
// Control connections

// One control-port connection: reads one request, answers it with "Connection: close", shuts
// down and closes. Deletes itself in its close callback.
class ControlConnection {
 public:
  explicit ControlConnection(Replica& replica) : replica_(replica) {
    uv_tcp_init(replica.loop(), &tcp_);
    tcp_.data = this;
    llhttp_init(&parser_, HTTP_REQUEST, &parser_settings());
    parser_.data = this;
  }
  ControlConnection(const ControlConnection&) = delete;
  ControlConnection& operator=(const ControlConnection&) = delete;

  void accept(uv_stream_t* listener) {
    if (uv_accept(listener, stream()) != 0 || uv_read_start(stream(), on_alloc, on_read) != 0) {
      close();
    }
  }

 private:
  static const llhttp_settings_t& parser_settings() {
    static const llhttp_settings_t settings = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_url = on_url;
      s.on_message_complete = on_message_complete;
      return s;
    }();
    return settings;
  }

  static int on_url(llhttp_t* parser, const char* at, size_t length) {
    auto* self = static_cast<ControlConnection*>(parser->data);
    self->target_.append(at, length);
    return self->target_.size() > kMaxControlTarget ? -1 : 0;
  }

  static int on_message_complete(llhttp_t* parser) {
    auto* self = static_cast<ControlConnection*>(parser->data);
    auto method = static_cast<llhttp_method_t>(llhttp_get_method(parser));
    self->respond(self->replica_.control(method, self->target_));
    return HPE_PAUSED;  // one request per connection
  }

  static void on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    *buf = static_cast<ControlConnection*>(handle->data)->replica_.read_buffer();
  }

  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    auto* self = static_cast<ControlConnection*>(stream->data);
    if (nread > 0 && !self->answered_) {
      llhttp_errno_t error = llhttp_execute(&self->parser_, buf->base, static_cast<size_t>(nread));
      if (!self->answered_ && error != HPE_OK) {
        self->respond({400, "bad request: " + std::string(llhttp_errno_name(error)) + "\n"});
      }
    } else if (nread < 0 && !(nread == UV_EOF && self->answered_)) {
      self->close();  // gone, or closed before a whole request; after an answer, on_shutdown closes
    }
  }

  static void on_shutdown(uv_shutdown_t* request, int) {
    static_cast<ControlConnection*>(request->handle->data)->close();
  }

  static void on_closed(uv_handle_t* handle) {
    delete static_cast<ControlConnection*>(handle->data);
  }

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

  void respond(const ControlReply& reply) {
    answered_ = true;
    const char* reason = reply.status == 200   ? "OK"
                         : reply.status == 400 ? "Bad Request"
                         : reply.status == 404 ? "Not Found"
                         : reply.status == 405 ? "Method Not Allowed"
                                               : "Internal Server Error";
    response_ =
        "HTTP/1.1 " + std::to_string(reply.status) + " " + reason +
        "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(reply.body.size()) +
        "\r\nConnection: close\r\n";
    if (!reply.allow.empty()) response_ += "Allow: " + std::string(reply.allow) + "\r\n";
    response_ += "\r\n" + reply.body;
    uv_buf_t buf = uv_buf_init(response_.data(), response_.size());
    if (uv_write(&write_, stream(), &buf, 1, nullptr) != 0 ||
        uv_shutdown(&shutdown_, stream(), on_shutdown) != 0) {
      close();
    }
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_closed);
  }

  Replica& replica_;
  uv_tcp_t tcp_{};
  uv_write_t write_{};
  uv_shutdown_t shutdown_{};
  llhttp_t parser_{};
  std::string target_;
  std::string response_;   // kept until the write is done
  bool answered_ = false;  // later input is read and dropped
  bool closing_ = false;
};

// ---------------------------------------------------------------------------------------------
// Replica

Replica::Replica(uv_loop_t* loop, Options options) : loop_(loop), options_(std::move(options)) {
  settings_.service_ms = options_.service_ms;
  settings_.capacity = options_.capacity;
  std::string ok_body(options_.body_bytes, 'x');
  if (!ok_body.empty()) ok_body.back() = '\n';
  const std::string fail_body = "replica " + options_.name + " failing\n";
  for (auto framing : {Framing::kDefault, Framing::kKeepAlive, Framing::kClose}) {
    auto i = static_cast<size_t>(framing);
    responses_[0][i] = make_response("200 OK", options_.name, ok_body, framing);
    responses_[1][i] = make_response("503 Service Unavailable", options_.name, fail_body, framing);
  }
  bad_request_ = make_response("400 Bad Request", options_.name, "bad request\n", Framing::kClose);
}

std::optional<std::string> Replica::open() {
  if (auto error = start_listening()) {
    return "cannot listen on data port " + format_address(options_.data_address) + ": " + *error;
  }
  uv_tcp_init(loop_, &control_listener_);
  control_listener_.data = this;
  auto* listener = reinterpret_cast<uv_stream_t*>(&control_listener_);
  int rc = uv_tcp_bind(&control_listener_,
                       reinterpret_cast<const sockaddr*>(&options_.control_address), 0);
  if (rc == 0) rc = uv_listen(listener, kBacklog, on_control_connection);
  if (rc != 0) {
    return "cannot listen on control port " + format_address(options_.control_address) + ": " +
           uv_strerror(rc);
  }
  int size = sizeof options_.control_address;
  uv_tcp_getsockname(&control_listener_, reinterpret_cast<sockaddr*>(&options_.control_address),
                     &size);
  random_ = Random(options_.seed.value_or(port_of(options_.data_address)));
  return std::nullopt;
}

std::string Replica::listening_line() const {
  return "listening on " + format_address(options_.data_address) + " control " +
         format_address(options_.control_address);
}

std::optional<std::string> Replica::start_listening() {
  if (data_listener_ != nullptr) return std::nullopt;
  auto* tcp = new uv_tcp_t;
  uv_tcp_init(loop_, tcp);
  tcp->data = this;
  // libuv sets SO_REUSEADDR, so the port can be bound again right after /stop.
  int rc = uv_tcp_bind(tcp, reinterpret_cast<const sockaddr*>(&options_.data_address), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp), kBacklog, on_data_connection);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(tcp), delete_tcp);
    return uv_strerror(rc);
  }
  int size = sizeof options_.data_address;  // learn the port when it was 0, for the next /start
  uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&options_.data_address), &size);
  data_listener_ = tcp;
  started_unix_ms_ = unix_ms();
  started_ns_ = uv_hrtime();
  first_request_unix_ms_ = 0;
  return std::nullopt;
}

void Replica::stop_listening() {
  if (data_listener_ != nullptr) {
    // Closing the socket also makes the kernel reset connections not yet accepted.
    uv_close(reinterpret_cast<uv_handle_t*>(data_listener_), delete_tcp);
    data_listener_ = nullptr;
  }
  auto doomed = std::move(connections_);
  connections_.clear();
  for (DataConnection* connection : doomed) connection->close(true);
}

void Replica::on_data_connection(uv_stream_t* listener, int status) {
  auto* self = static_cast<Replica*>(listener->data);
  if (status < 0) return;
  auto* connection = new DataConnection(*self);
  if (!connection->accept(listener)) return;
  self->connections_.insert(connection);
  ++self->counters_.connections_accepted;
}

void Replica::on_control_connection(uv_stream_t* listener, int status) {
  if (status < 0) return;
  (new ControlConnection(*static_cast<Replica*>(listener->data)))->accept(listener);
}

void Replica::count_request(std::string_view target) {
  if (target.substr(0, target.find('?')) == options_.health_path) {
    ++counters_.health_requests;
    return;
  }
  ++counters_.requests;
  last_request_unix_ms_ = unix_ms();
  if (first_request_unix_ms_ == 0) first_request_unix_ms_ = last_request_unix_ms_;
}

Answer Replica::plan_answer(Framing framing, bool head_only, bool health) {
  Answer answer{Outcome::kOk, framing, head_only, 0};
  if (random_.chance(settings_.reset)) {
    answer.outcome = Outcome::kReset;
  } else if (random_.chance(settings_.fail)) {
    answer.outcome = Outcome::kFail;
  }
  const uint64_t now = uv_hrtime();
  if (!health && (settings_.service_ms > 0 || settings_.capacity > 0)) {
    uint64_t service = settings_.service_ms * 1'000'000;
    if (options_.cold_ms > 0 && now - started_ns_ < options_.cold_ms * 1'000'000)
      service *= options_.cold_factor;
    uint64_t start = now;
    if (settings_.capacity > 0) {
      // The earliest free slot serves it: a server of `capacity` workers and one queue.
      auto later = std::greater<uint64_t>();
      if (slot_free_ns_.size() != settings_.capacity) slot_free_ns_.assign(settings_.capacity, 0);
      std::pop_heap(slot_free_ns_.begin(), slot_free_ns_.end(), later);
      start = std::max(now, slot_free_ns_.back());
      slot_free_ns_.back() = start + service;
      std::push_heap(slot_free_ns_.begin(), slot_free_ns_.end(), later);
    }
    answer.due_ns = start + service;
  }
  if (random_.chance(settings_.delay))
    answer.due_ns = std::max(answer.due_ns, now) + settings_.delay_ms * 1'000'000;
  if (answer.due_ns == now) answer.due_ns = 0;
  return answer;
}

uv_buf_t Replica::take_response(const Answer& answer) {
  const CannedResponse* response = &bad_request_;
  if (answer.outcome == Outcome::kOk || answer.outcome == Outcome::kFail) {
    bool ok = answer.outcome == Outcome::kOk;
    ++(ok ? counters_.responses_200 : counters_.responses_503);
    response = &responses_[ok ? 0 : 1][static_cast<size_t>(answer.framing)];
  }
  size_t size = answer.head_only ? response->head_size : response->bytes.size();
  // libuv only reads from the buffer; its type is not const.
  return uv_buf_init(const_cast<char*>(response->bytes.data()), static_cast<unsigned>(size));
}

ControlReply Replica::control(llhttp_method_t method, std::string_view target) {
  size_t question = target.find('?');
  std::string_view path = target.substr(0, question);
  std::string_view query = question == std::string_view::npos ? "" : target.substr(question + 1);
  const bool post = method == HTTP_POST;
  if (path == "/set") return post ? apply_settings(query) : ControlReply{405, "use POST\n", "POST"};
  if (path == "/stop" || path == "/start" || path == "/reset-stats") {
    if (!post) return {405, "use POST\n", "POST"};
    if (path == "/stop") {
      stop_listening();
    } else if (path == "/start") {
      if (auto error = start_listening()) {
        return {500,
                "cannot listen on " + format_address(options_.data_address) + ": " + *error + "\n"};
      }
    } else {
      counters_ = Counters{};
    }
    return {200, stats_text()};
  }
  if (path == "/stats")
    return method == HTTP_GET ? ControlReply{200, stats_text()}
                              : ControlReply{405, "use GET\n", "GET"};
  return {404, "not found: " + std::string(path) + "\n"};
}

// Checks every parameter before changing anything, so a bad request changes nothing.
ControlReply Replica::apply_settings(std::string_view query) {
  Settings next = settings_;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    bool ok = true;
    const char* expected = "a number in [0, 1]";
    if (key == "fail") {
      ok = parse_share(value, &next.fail);
    } else if (key == "delay") {
      ok = parse_share(value, &next.delay);
    } else if (key == "reset") {
      ok = parse_share(value, &next.reset);
    } else if (key == "delay_ms" || key == "service_ms" || key == "capacity") {
      ok = parse_uint(value, kMaxDelayMs,
                      key == "delay_ms"     ? &next.delay_ms
                      : key == "service_ms" ? &next.service_ms
                                            : &next.capacity);
      expected = "an integer in [0, 3600000]";
    } else {
      return {400, "unknown parameter " + std::string(key) +
                       " (expected fail, delay, delay_ms, reset, service_ms, capacity)\n"};
    }
    if (!ok) {
      return {400, "bad parameter " + std::string(key) + "=" + std::string(value) + ": expected " +
                       expected + "\n"};
    }
  }
  settings_ = next;
  return {200, settings_text()};
}

std::string Replica::settings_text() const {
  return "fail=" + format_share(settings_.fail) + "\ndelay=" + format_share(settings_.delay) +
         "\ndelay_ms=" + std::to_string(settings_.delay_ms) +
         "\nreset=" + format_share(settings_.reset) +
         "\nservice_ms=" + std::to_string(settings_.service_ms) +
         "\ncapacity=" + std::to_string(settings_.capacity) + "\n";
}

std::string Replica::stats_text() const {
  std::string text = "name=" + options_.name + "\n";
  auto line = [&text](const char* key, uint64_t value) {
    text += key;
    text += '=';
    text += std::to_string(value);
    text += '\n';
  };
  line("requests", counters_.requests);
  line("health_requests", counters_.health_requests);
  line("responses_200", counters_.responses_200);
  line("responses_503", counters_.responses_503);
  line("resets", counters_.resets);
  line("connections_accepted", counters_.connections_accepted);
  line("open_connections", connections_.size());
  line("listening", data_listener_ != nullptr ? 1 : 0);
  line("started_unix_ms", started_unix_ms_);
  line("first_request_unix_ms", first_request_unix_ms_);
  line("last_request_unix_ms", last_request_unix_ms_);
  return text;
}

void on_signal(uv_signal_t* signal, int) { uv_stop(signal->loop); }

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto error = parse_options(argc, argv, &options)) {
    std::fprintf(stderr, "replica: %s\n", error->c_str());
    usage(stderr);
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);

  uv_loop_t* loop = uv_default_loop();
  Replica replica(loop, std::move(options));
  if (auto error = replica.open()) {
    std::fprintf(stderr, "replica: %s\n", error->c_str());
    return 1;
  }
  uv_signal_t sigterm, sigint;
  uv_signal_init(loop, &sigterm);
  uv_signal_init(loop, &sigint);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_signal_start(&sigint, on_signal, SIGINT);

  std::printf("%s\n", replica.listening_line().c_str());
  std::fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  // Stopped by a signal. Connections still open die with the process.
  return 0;
}
