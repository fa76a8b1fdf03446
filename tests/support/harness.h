#pragma once
// The integration-test harness: real processes on real sockets on 127.0.0.1, with a timeout on
// every wait so that a test can fail but never hang.
//
// - TempDir, write_file: scratch files that disappear with the test.
// - Subprocess: a child process whose stdout and stderr are captured line by line.
// - BulwarkProcess: starts build/bulwark on a YAML config and learns its ports from its logs.
// - DemoUpstreamProcess: starts build/demo-upstream on an ephemeral port.
// - TestUpstream / UpstreamConn: a scriptable blocking HTTP/1.1 server for the upstream side.
// - ClientConn, http_get, http_request: a strict HTTP/1.1 client for the downstream side.
// - PatternVerifier, pattern_fill: large bodies generated and checked on the fly, never held.
//
// Timeouts on reads are inactivity timeouts: a read fails when no byte arrives for that long, so a
// 256 MiB body may take longer than the timeout as long as it keeps flowing.

#include <netinet/in.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#ifndef BULWARK_BUILD_DIR
#error "BULWARK_BUILD_DIR must name the build tree of the executables under test"
#endif

namespace bulwark::test {

// The path of an executable under test, `relative` to the build tree: BULWARK_BUILD_DIR, the
// tree these tests were built in, unless the environment's BULWARK_TEST_BUILD_DIR names another.
// scripts/test.sh sets it to run these tests against the sanitizer tree's bulwark and tools
// without compiling the tests a second time.
std::string test_binary(const char* relative);
// Whether the bulwark under test was built with AddressSanitizer (it holds the ASan runtime),
// for the few checks whose numbers mean nothing there (peak memory). Read once.
bool sanitized_binaries();

}  // namespace bulwark::test

#define BULWARK_BINARY ::bulwark::test::test_binary("bulwark")
#define DEMO_UPSTREAM_BINARY ::bulwark::test::test_binary("demo-upstream")
#define LOADGEN_BINARY ::bulwark::test::test_binary("loadtest/loadgen")
#define REPLICA_BINARY ::bulwark::test::test_binary("loadtest/replica")
#define SLOWCLIENTS_BINARY ::bulwark::test::test_binary("loadtest/slowclients")

namespace bulwark::test {

using Millis = std::chrono::milliseconds;
using namespace std::chrono_literals;

// The default timeout for a single wait in the harness: generous for a loaded CI machine, short
// enough that a broken test fails quickly.
inline constexpr Millis kDefaultTimeout{5000};

// ---------------------------------------------------------------------------------------------
// Files

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` inside this directory (the file need not exist).
  std::string file(std::string_view name) const;

 private:
  std::string path_;
};

// Writes `content` to `path`, replacing it. Throws std::runtime_error on failure.
void write_file(const std::string& path, std::string_view content);
// Reads a whole file. Throws std::runtime_error on failure.
std::string read_file(const std::string& path);

// ---------------------------------------------------------------------------------------------
// Small synchronisation helpers

// A one-shot event: once set it stays set. Safe to use from any thread.
class Event {
 public:
  void set();
  bool is_set() const;
  // Returns true when the event is set within `timeout`.
  bool wait(Millis timeout = kDefaultTimeout) const;

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  bool set_ = false;
};

// Calls `condition` every `interval` until it returns true or `timeout` passes; returns the last
// result. For state that offers no event to wait on (a metric, a file, another process's memory).
bool eventually(const std::function<bool()>& condition, Millis timeout = kDefaultTimeout,
                Millis interval = Millis{10});

// ---------------------------------------------------------------------------------------------
// Processes

// A child process with stdout and stderr captured, each split into lines by a reader thread.
// The child is killed with SIGKILL (and reaped) when the Subprocess is destroyed, and also when
// the test process dies (PR_SET_PDEATHSIG).
class Subprocess {
 public:
  enum class Stream { kStdout, kStderr };

  Subprocess() = default;
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Starts argv[0] with the given arguments. Throws std::runtime_error if it cannot be started.
  // `env` entries ("NAME=VALUE") are added to the inherited environment, replacing same names.
  void start(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});

  pid_t pid() const { return pid_; }
  bool running() const;

  // Complete lines seen so far, without their newline.
  std::vector<std::string> lines(Stream stream) const;
  // Everything seen so far on a stream, lines joined with '\n' (including a partial last line).
  std::string text(Stream stream) const;
  // Returns the first line containing `needle` that appears within `timeout`, or nullopt when the
  // timeout passes or the stream ends first.
  std::optional<std::string> wait_for_line(Stream stream, std::string_view needle,
                                           Millis timeout = kDefaultTimeout) const;
  // Waits until the condition holds for the lines of `stream`, re-checked on each new line.
  bool wait_for_lines(Stream stream,
                      const std::function<bool(const std::vector<std::string>&)>& condition,
                      Millis timeout = kDefaultTimeout) const;
  // Waits until both streams have reached end-of-file.
  bool wait_streams_closed(Millis timeout = kDefaultTimeout) const;

  // Sends a signal; false if the process has already been reaped or kill() fails.
  bool signal(int signo);
  // Waits for the process to exit and reaps it. Returns the exit code, or 128 + the signal number
  // when it was killed by a signal, or nullopt when it is still running after `timeout`.
  std::optional<int> wait_exit(Millis timeout = kDefaultTimeout);
  // Resident set size and its high-water mark from /proc/PID/status, in KiB; 0 when unavailable.
  long rss_kib() const;
  long peak_rss_kib() const;

 private:
  void reader_loop(int out_fd, int err_fd);
  long status_field_kib(const char* field) const;

  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<int> exit_status_;
  std::thread reader_;
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<std::string> out_lines_, err_lines_;
  std::string out_partial_, err_partial_;
  bool out_open_ = false, err_open_ = false;
};

// A running bulwark (BULWARK_BINARY). Contract it relies on: for each bound listener bulwark logs
// a JSON line containing "msg":"listening", "listener":"NAME" and "address":"127.0.0.1:PORT" (the
// admin listener as "listener":"admin"), and a line containing "msg":"started" once everything is
// up. Configs in tests bind port 0 and the harness learns the real ports from those lines.
class BulwarkProcess {
 public:
  // `binary` is for testing the harness itself with a stand-in; tests of bulwark use the default.
  explicit BulwarkProcess(std::string binary = BULWARK_BINARY) : binary_(std::move(binary)) {}

  // Writes `yaml` to a temporary file and runs `bulwark --config FILE extra_args...`. Waits for
  // "started". Throws std::runtime_error, with the captured stderr, if that line does not appear
  // within `timeout`, if the process exits first, or if a listener reports two different ports.
  void start(const std::string& yaml, const std::vector<std::string>& extra_args = {},
             Millis timeout = Millis{10000});

  // Extra environment ("NAME=VALUE") for the process start() runs; call before start().
  void set_env(std::vector<std::string> env) { env_ = std::move(env); }
  // Runs bulwark as `uid` and `gid` (through setpriv; the test must be root), as a pod runs it
  // under its own user; its config directory is handed to that user. Call before start().
  void run_as(uid_t uid, gid_t gid);

  // The port of a listener by name; throws std::runtime_error if bulwark never announced it.
  uint16_t port(const std::string& listener) const;
  uint16_t admin_port() const { return port("admin"); }
  const std::string& config_path() const { return config_path_; }

  bool wait_for_log(std::string_view substring, Millis timeout = kDefaultTimeout) const;
  std::vector<std::string> logs() const;  // stderr lines so far
  std::string logs_text() const;          // stderr so far, for failure messages
  std::string stdout_text() const;

  pid_t pid() const { return process_.pid(); }
  bool signal(int signo) { return process_.signal(signo); }
  std::optional<int> wait_exit(Millis timeout = kDefaultTimeout) {
    return process_.wait_exit(timeout);
  }
  long rss_kib() const { return process_.rss_kib(); }
  long peak_rss_kib() const { return process_.peak_rss_kib(); }
  Subprocess& process() { return process_; }

 private:
  std::string binary_;
  TempDir dir_;
  std::string config_path_;
  std::vector<std::string> env_;
  std::vector<std::string> prefix_;  // run_as(): setpriv and its arguments
  std::map<std::string, uint16_t> ports_;
  Subprocess process_;
};

struct CheckResult {
  int exit_code = -1;       // 128 + signal when killed; -1 when it did not finish in time
  std::string out;          // stdout
  std::string err;          // stderr
  std::string config_path;  // the file that was checked
};

// Runs `bulwark --config FILE --check` on `yaml` and collects its output (10 s at most).
CheckResult run_check(const std::string& yaml);

// A running demo-upstream (DEMO_UPSTREAM_BINARY) on 127.0.0.1 and an ephemeral port, learned from
// its "listening on ADDR:PORT" line.
class DemoUpstreamProcess {
 public:
  void start(const std::string& name = "demo", Millis timeout = kDefaultTimeout);
  uint16_t port() const { return port_; }
  Subprocess& process() { return process_; }

 private:
  uint16_t port_ = 0;
  Subprocess process_;
};

// ---------------------------------------------------------------------------------------------
// HTTP messages

using HeaderList = std::vector<std::pair<std::string, std::string>>;

bool iequals(std::string_view a, std::string_view b);
std::string to_lower(std::string_view s);

// Headers as received, in order, with lookups that ignore case.
struct HeaderAccess {
  HeaderList headers;
  // The first value of `name`, or "" when absent.
  std::string get(std::string_view name) const;
  bool has(std::string_view name) const;
  std::vector<std::string> get_all(std::string_view name) const;
};

// Receives body bytes as they arrive instead of collecting them in `body`.
using BodySink = std::function<void(std::string_view)>;

struct Request : HeaderAccess {
  std::string method;
  std::string target;
  std::string version;     // "HTTP/1.1"
  std::string body;        // decoded; empty when a sink received it
  uint64_t body_size = 0;  // decoded bytes, also counted when a sink received them
  bool chunked = false;
  std::string head;  // the raw request line and headers, including the final CRLF CRLF
};

struct Response : HeaderAccess {
  int status = 0;
  std::string reason;
  std::string version;
  std::string body;
  uint64_t body_size = 0;
  bool chunked = false;
  bool close_delimited = false;  // the body had no framing and ended when the peer closed
  std::string head;
};

// Why the last read on a connection failed.
enum class ReadError { kNone, kTimeout, kClosed, kReset, kMalformed, kIo };
const char* to_string(ReadError error);

// A connected, non-blocking TCP socket with a read buffer, timeouts on every wait and HTTP/1.1
// message reading. Move-only; closes its descriptor when destroyed.
//
// Bytes move through transport_read() and transport_write(), plain send/recv on the socket here;
// a subclass may put another transport over the same socket (TlsClientConn in tls_kit.h runs TLS)
// and every reader and writer below works unchanged over it.
class HttpConn {
 public:
  HttpConn() = default;
  explicit HttpConn(int fd);
  virtual ~HttpConn();
  HttpConn(HttpConn&& other) noexcept;
  HttpConn& operator=(HttpConn&& other) noexcept;
  HttpConn(const HttpConn&) = delete;
  HttpConn& operator=(const HttpConn&) = delete;

  int fd() const { return fd_; }
  bool connected() const { return fd_ >= 0; }

  // Writes everything; false when the peer is gone or no progress is possible for `timeout`.
  bool write(std::string_view raw, Millis timeout = kDefaultTimeout);
  // Writes `size` bytes of the pattern (see pattern_fill) starting at pattern offset `offset`,
  // without holding them in memory. As write(), the timeout is one of inactivity.
  bool write_pattern(uint64_t offset, uint64_t size, Millis timeout = kDefaultTimeout);
  // Sends FIN: the peer reads end-of-stream, while this side can still read.
  virtual void shutdown_write();
  // Closes the socket. With `reset` the peer gets RST instead of FIN (SO_LINGER 0).
  virtual void close(bool reset = false);

  // Waits until the peer has closed (read returns 0) or reset the connection. Bytes that arrive
  // meanwhile are kept in the buffer. Returns false when the connection is still open after
  // `timeout`.
  bool is_closed(Millis timeout = kDefaultTimeout);

  // Reads whatever arrives within `timeout` until at least `min_bytes` are buffered, then returns
  // and consumes all buffered bytes (possibly more than min_bytes). Returns what it has on
  // timeout or close; last_error() tells which.
  std::string read_some(size_t min_bytes = 1, Millis timeout = kDefaultTimeout);
  // Reads exactly `n` bytes, or nullopt on timeout or close.
  std::optional<std::string> read_exact(size_t n, Millis timeout = kDefaultTimeout);
  // Reads until the peer closes; returns everything received. last_error() is kTimeout when the
  // peer did not close in time.
  std::string read_until_close(Millis timeout = kDefaultTimeout);
  // Bytes received but not consumed yet.
  std::string_view buffered() const { return std::string_view(buf_).substr(pos_); }

  ReadError last_error() const { return error_; }
  const std::string& last_error_text() const { return error_text_; }

  // Socket buffer sizes; call before traffic flows (for the receive buffer on a client, before
  // connecting, see ClientConn::connect).
  void set_send_buffer(int bytes);
  void set_receive_buffer(int bytes);

 protected:
  // The transport seam. Each call makes one non-blocking attempt on the socket:
  // - kDone: `moved` bytes (at least one) were read into `out` or written from `data`;
  // - kWantRead / kWantWrite: nothing moved; retry once the socket is readable / writable (a TLS
  //   read may need to write, and a TLS write may need to read);
  // - kClosed (reads only): the peer ended the stream cleanly;
  // - kFailed: the connection is broken; the call has recorded why with fail().
  enum class Io { kDone, kWantRead, kWantWrite, kClosed, kFailed };
  virtual Io transport_read(char* out, size_t size, size_t& moved);
  virtual Io transport_write(const char* data, size_t size, size_t& moved);

  // Waits for more bytes and appends them to the buffer. False on timeout, close or error.
  bool fill(Millis timeout);
  void consume(size_t n);
  bool fail(ReadError error, std::string text);
  // Reads a message head (up to and including CRLF CRLF) and splits the start line and headers.
  bool read_head(std::string& head, std::string& start_line, HeaderList& headers, Millis timeout);
  // Body readers. `out` collects bytes when `sink` is empty; `counter` counts them either way.
  bool read_fixed_body(uint64_t length, std::string& out, uint64_t& counter, const BodySink& sink,
                       Millis timeout);
  bool read_chunked_body(std::string& out, uint64_t& counter, const BodySink& sink, Millis timeout);
  bool read_close_delimited_body(std::string& out, uint64_t& counter, const BodySink& sink,
                                 Millis timeout);
  // Reads one CRLF-terminated line (without the CRLF).
  bool read_line(std::string& line, Millis timeout, size_t max_size = 64 * 1024);

  int fd_ = -1;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
  ReadError error_ = ReadError::kNone;
  std::string error_text_;
};

// The downstream side: a client connected to bulwark (or to any server).
class ClientConn : public HttpConn {
 public:
  ClientConn() = default;
  // Connects to 127.0.0.1:port; use connected() / last_error_text() to see whether it worked.
  explicit ClientConn(uint16_t port, Millis timeout = kDefaultTimeout);

  // Connects to 127.0.0.1:port. A receive buffer size > 0 is set before connecting, so that the
  // TCP window stays small (for tests of backpressure). False on failure or timeout.
  bool connect(uint16_t port, Millis timeout = kDefaultTimeout, int receive_buffer = 0);
  // Connects to `destination`, from `source` when given (a local address to bind first).
  bool connect(const sockaddr_in& destination, const sockaddr_in* source,
               Millis timeout = kDefaultTimeout, int receive_buffer = 0);

  bool send(std::string_view raw, Millis timeout = kDefaultTimeout) { return write(raw, timeout); }

  // Reads one response. A 1xx (100 Continue, 101 Switching Protocols) is returned on its own, with
  // no body. The body is decoded per RFC 9112: none for HEAD (`head_request`), 1xx, 204 and 304;
  // else chunked, Content-Length, or everything until the peer closes. Nullopt on timeout, close
  // before the end, or a malformed response; last_error() says which and partial() holds what
  // had been read.
  std::optional<Response> read_response(bool head_request = false, Millis timeout = kDefaultTimeout,
                                        const BodySink& sink = {});
  // Reads only the status line and headers; read_response_body() finishes the message.
  std::optional<Response> read_response_head(Millis timeout = kDefaultTimeout);
  bool read_response_body(Response& response, bool head_request = false,
                          Millis timeout = kDefaultTimeout, const BodySink& sink = {});
  const Response& partial() const { return partial_; }

 private:
  Response partial_;
};

// Builds a request: "METHOD TARGET HTTP/1.1", Host: localhost unless given, the extra headers,
// Content-Length when a body is given (unless the headers already frame it), then the body.
std::string make_request(std::string_view method, std::string_view target,
                         const HeaderList& headers = {}, std::string_view body = {},
                         bool force_content_length = false);

// Encodes `data` as one chunk (empty data makes the last chunk "0\r\n\r\n").
std::string chunk(std::string_view data);

// One request on a new connection; nullopt when it fails (see the returned error via `error`).
std::optional<Response> http_request(uint16_t port, std::string_view method,
                                     std::string_view target, const HeaderList& headers = {},
                                     std::string_view body = {}, Millis timeout = kDefaultTimeout,
                                     std::string* error = nullptr);
std::optional<Response> http_get(uint16_t port, std::string_view target,
                                 const HeaderList& headers = {}, Millis timeout = kDefaultTimeout,
                                 std::string* error = nullptr);

// Describes a response for failure messages: status line, headers and up to 200 bytes of body.
std::string describe(const std::optional<Response>& response);

// ---------------------------------------------------------------------------------------------
// The upstream side

class TestUpstream;

// One accepted connection, handed to the TestUpstream handler on its own thread.
class UpstreamConn : public HttpConn {
 public:
  UpstreamConn(int fd, TestUpstream& upstream, size_t index);
  ~UpstreamConn() override;
  void close(bool reset = false) override;

  // The 1-based number of this connection among those the upstream accepted.
  size_t index() const { return index_; }

  // Reads one request with its body (chunked or Content-Length; none otherwise). Nullopt when the
  // peer closes or times out first, or the request is malformed (see last_error()).
  std::optional<Request> read_request(Millis timeout = kDefaultTimeout, const BodySink& sink = {});
  // Reads only the head, so a handler can answer Expect: 100-continue before the body.
  std::optional<Request> read_request_head(Millis timeout = kDefaultTimeout);
  bool read_request_body(Request& request, Millis timeout = kDefaultTimeout,
                         const BodySink& sink = {});

  // Writes "HTTP/1.1 STATUS REASON", Content-Length framing, the extra headers and the body.
  // For a HEAD request pass head_request so the body is announced but not sent.
  bool write_response(int status, std::string_view body = {}, const HeaderList& headers = {},
                      bool head_request = false);

  // Blocks until the upstream is stopped or the peer closes, at most `timeout`. For handlers that
  // must not answer (the proxy is expected to give up). Returns true when the peer closed.
  bool wait_peer_close(Millis timeout = kDefaultTimeout);
  // Sleeps for `duration` unless the upstream is stopped first; returns false if it was stopped.
  bool pause(Millis duration);

 private:
  TestUpstream& upstream_;
  size_t index_;
  size_t recorded_ = 0;  // index of this connection's last request in TestUpstream::received_
};

// A blocking HTTP/1.1 server on 127.0.0.1 and an ephemeral port. Each accepted connection runs the
// handler on its own thread; when the handler returns the connection is closed. Destruction (or
// stop()) shuts down every connection, which makes pending reads fail, and joins all threads.
class TestUpstream {
 public:
  using Handler = std::function<void(UpstreamConn&)>;

  // The default handler answers every request on a keep-alive connection with 200, headers
  // "x-upstream: NAME" and "x-upstream-connection: N", and body "METHOD TARGET\n"; it honours
  // Connection: close and HEAD.
  explicit TestUpstream(Handler handler = {}, std::string name = "upstream");
  // Listening on IPv4 address `host` of this host instead of 127.0.0.1.
  TestUpstream(Handler handler, std::string name, const std::string& host);
  ~TestUpstream();
  TestUpstream(const TestUpstream&) = delete;
  TestUpstream& operator=(const TestUpstream&) = delete;

  static Handler echo_handler(std::string name = "upstream");

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT" (or its host's)
  const std::string& name() const { return name_; }

  size_t connections() const { return connections_.load(); }
  size_t requests() const { return requests_.load(); }
  bool wait_for_connections(size_t n, Millis timeout = kDefaultTimeout) const;
  bool wait_for_requests(size_t n, Millis timeout = kDefaultTimeout) const;
  // Copies of the requests read so far, in order (bodies included unless a sink took them).
  std::vector<Request> received() const;
  std::optional<Request> last_request() const;

  // Stops accepting, shuts every connection down and joins all threads. Idempotent.
  void stop();
  bool stopped() const { return stopping_.load(); }

 private:
  friend class UpstreamConn;
  void accept_loop();
  size_t record(const Request& request);  // returns the index in received_
  void record_body(size_t index, const Request& request);
  void serve(int fd, size_t index);

  Handler handler_;
  std::string name_;
  std::string host_ = "127.0.0.1";
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> connections_{0};
  std::atomic<size_t> requests_{0};
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<Request> received_;
  std::set<int> open_fds_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

// The address 127.0.0.1:port (port 0: any free one, when bound).
sockaddr_in loopback(uint16_t port);

// Returns a port on 127.0.0.1 on which nothing listens now (bound once, then closed), for a
// listener a test starts later. For an endpoint that must refuse connections, use RefusingPort:
// under a parallel ctest another test's listener may take a port this returned.
uint16_t unused_port();

// An IPv4 address of this host's that is not loopback (an interface that is up), if it has one:
// a client bound to it reaches a listener on 0.0.0.0 as a peer from another host would.
std::optional<std::string> non_loopback_ipv4();

// A port on 127.0.0.1 that refuses connections for as long as this object lives: a socket bound
// to it that never listens, so no other socket can take the port meanwhile (another test's
// listener, or a connect's ephemeral port that would connect to itself).
class RefusingPort {
 public:
  RefusingPort();
  ~RefusingPort();
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Large bodies

// Fills `out[0..n)` with the deterministic test pattern starting at stream offset `offset`. The
// pattern does not repeat with any short period, so a lost, repeated or reordered block shows.
void pattern_fill(uint64_t offset, char* out, size_t n);
std::string pattern_string(uint64_t offset, size_t n);

// Checks a stream against the pattern as it arrives. Thread-compatible (one writer).
class PatternVerifier {
 public:
  void feed(std::string_view data);
  uint64_t received() const { return received_; }
  bool ok() const { return !mismatch_.has_value(); }
  // The stream offset of the first wrong byte, if any.
  std::optional<uint64_t> first_mismatch() const { return mismatch_; }
  BodySink sink() {
    return [this](std::string_view data) { feed(data); };
  }

 private:
  uint64_t received_ = 0;
  std::optional<uint64_t> mismatch_;
  std::string scratch_;
};

}  // namespace bulwark::test
