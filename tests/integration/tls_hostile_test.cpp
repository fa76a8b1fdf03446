// Hostile review of TLS (issue 14): bulwark attacked by a hostile client, a hostile upstream and
// an operator who makes mistakes. Each test is one attack; what bulwark must do is what the
// issue promises ("never a crash, never a stalled worker", "a client can never forge it").

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/tls_listener_fixture.h"
#include "tests/integration/tls_upstream_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

Millis since(Clock::time_point start) {
  return std::chrono::duration_cast<Millis>(Clock::now() - start);
}

// CPU seconds (user + system) a process has used so far.
double cpu_seconds(pid_t pid) {
  std::string stat;
  try {
    stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  } catch (const std::exception&) {
    return -1;
  }
  const size_t paren = stat.rfind(')');
  std::istringstream in(stat.substr(paren + 2));
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(f);
  // Fields from "state" (field 3): utime is field 14, stime field 15.
  if (fields.size() < 13) return -1;
  return (std::stod(fields[11]) + std::stod(fields[12])) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

bool send_raw(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// A TLS application-data record header announcing `length` bytes, and `sent` of them.
std::string partial_record(size_t length, size_t sent) {
  std::string r = {'\x17', '\x03', '\x03', static_cast<char>(length >> 8),
                   static_cast<char>(length & 0xff)};
  return r + std::string(sent, '\x5a');
}

int listen_loopback(uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 512) != 0) {
    ::close(fd);
    return -1;
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Accepts on 127.0.0.1 and runs `serve(fd)` per connection on its own thread; stop() shuts every
// connection down (so blocked reads end) and joins.
class RawServer {
 public:
  using Serve = std::function<void(int fd, RawServer& self)>;
  explicit RawServer(Serve serve) : serve_(std::move(serve)) {
    listen_fd_ = listen_loopback(&port_);
    REQUIRE(listen_fd_ >= 0);
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~RawServer() { stop(); }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;

  uint16_t port() const { return port_; }
  size_t accepted() const { return accepted_.load(); }
  bool stopping() const { return stopping_.load(); }
  // Sleeps until stop(), at most `timeout`.
  void hold(Millis timeout = Millis{30000}) {
    const auto end = Clock::now() + timeout;
    while (!stopping_ && Clock::now() < end) std::this_thread::sleep_for(Millis{10});
  }
  void stop() {
    if (stopping_.exchange(true)) return;
    if (accept_thread_.joinable()) accept_thread_.join();
    {
      std::lock_guard lock(mutex_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (std::thread& t : threads_) t.join();
    for (int fd : fds_) ::close(fd);
    ::close(listen_fd_);
  }

 private:
  void accept_loop() {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++accepted_;
      std::lock_guard lock(mutex_);
      fds_.push_back(fd);
      threads_.emplace_back([this, fd] { serve_(fd, *this); });
    }
  }

  Serve serve_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> accepted_{0};
  std::mutex mutex_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

// A TLS server whose connections, once the handshake is done, are handed to `serve` with the SSL
// object and the socket underneath it (to write raw bytes under TLS's feet).
class HostileTlsServer {
 public:
  using Serve = std::function<void(SSL* ssl, int fd, RawServer& self)>;
  HostileTlsServer(const IssuedCert& cert, Serve serve) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    REQUIRE(SSL_CTX_use_certificate_chain_file(ctx_, cert.cert_file.c_str()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey_file(ctx_, cert.key_file.c_str(), SSL_FILETYPE_PEM) == 1);
    server_ = std::make_unique<RawServer>([this, serve](int fd, RawServer& self) {
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) == 1) {
        ++handshakes_;
        serve(ssl, fd, self);
      }
      ERR_clear_error();
      SSL_free(ssl);
    });
  }
  ~HostileTlsServer() {
    server_.reset();
    SSL_CTX_free(ctx_);
  }
  uint16_t port() const { return server_->port(); }
  size_t handshakes() const { return handshakes_.load(); }

 private:
  SSL_CTX* ctx_ = nullptr;
  std::atomic<size_t> handshakes_{0};
  std::unique_ptr<RawServer> server_;
};

// Reads a request head (up to CRLF CRLF) through TLS; nullopt when the peer goes first.
std::optional<std::string> ssl_read_head(SSL* ssl) {
  std::string got;
  char buf[4096];
  while (got.find("\r\n\r\n") == std::string::npos) {
    int n = SSL_read(ssl, buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

bool ssl_write_all(SSL* ssl, std::string_view data) {
  while (!data.empty()) {
    int n = SSL_write(ssl, data.data(), static_cast<int>(data.size()));
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// A TCP relay to 127.0.0.1:target that passes what the client sends in pieces of `piece` bytes,
// `pause` apart (a slow or lossy network), and what the server sends at once.
class SlowRelay {
 public:
  SlowRelay(uint16_t target, size_t piece, Millis pause)
      : server_([target, piece, pause](int client, RawServer& self) {
          int server = connect_loopback(target);
          if (server < 0) return;
          std::thread back([client, server] {
            char buf[65536];
            for (;;) {
              ssize_t n = ::recv(server, buf, sizeof buf, 0);
              if (n <= 0 || !send_raw(client, {buf, static_cast<size_t>(n)})) break;
            }
            ::shutdown(client, SHUT_WR);
          });
          std::vector<char> buf(piece);
          while (!self.stopping()) {
            ssize_t n = ::recv(client, buf.data(), buf.size(), 0);
            if (n <= 0 || !send_raw(server, {buf.data(), static_cast<size_t>(n)})) break;
            std::this_thread::sleep_for(pause);
          }
          ::shutdown(server, SHUT_WR);
          back.join();
          ::close(server);
        }) {}
  uint16_t port() const { return server_.port(); }

 private:
  RawServer server_;
};

// Plain GETs on `port` every 50 ms while `running`: the slowest answer's time.
class Bystander {
 public:
  explicit Bystander(uint16_t port) {
    thread_ = std::thread([this, port] {
      while (running_) {
        const auto start = Clock::now();
        auto response = http_get(port, "/bystander", {}, Millis{5000});
        const Millis took = since(start);
        worst_ = std::max<int64_t>(worst_.load(), took.count());
        if (!response || response->status != 200) ++failures_;
        std::this_thread::sleep_for(Millis{50});
      }
    });
  }
  ~Bystander() { stop(); }
  void stop() {
    running_ = false;
    if (thread_.joinable()) thread_.join();
  }
  int64_t worst_ms() const { return worst_.load(); }
  int failures() const { return failures_.load(); }

 private:
  std::atomic<bool> running_{true};
  std::atomic<int64_t> worst_{0};
  std::atomic<int> failures_{0};
  std::thread thread_;
};

std::optional<Response> post_reload(const BulwarkProcess& bulwark) {
  return http_request(bulwark.admin_port(), "POST", "/reload");
}

// Replaces the config file of a running bulwark as editors do (a new file renamed over it) and
// asks for a reload. (The config watch may have reloaded first: this one then answers 409.)
std::optional<Response> reload_config(const BulwarkProcess& bulwark, const std::string& yaml) {
  const std::string next = bulwark.config_path() + ".next";
  write_file(next, yaml);
  REQUIRE(std::rename(next.c_str(), bulwark.config_path().c_str()) == 0);
  return post_reload(bulwark);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Record boundaries and read-ahead

TEST_CASE("tls hostile: a client that stops inside a TLS record does not stall the worker") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.plain_listener = true;
  options.workers = 1;
  TlsListenerFixture proxy(options);

  TlsClientConn attacker(proxy.port(), trusting(pki));
  REQUIRE(tls_get(attacker, "/before"));
  // A record announced as 64 bytes, of which 10 come: OpenSSL reads them ahead and waits.
  REQUIRE(send_raw(attacker.fd(), partial_record(64, 10)));
  std::this_thread::sleep_for(Millis{300});

  const double cpu_before = cpu_seconds(proxy.bulwark.pid());
  std::string error;
  auto plain = http_get(proxy.plain_port(), "/bystander", {}, Millis{3000}, &error);
  CHECK_MESSAGE(plain, "the only worker does not answer: " << error);
  TlsClientConn other(proxy.port(), trusting(pki), Millis{3000});
  CHECK_MESSAGE(other.connected(), "no TLS handshake either: " << other.last_error_text());
  std::this_thread::sleep_for(Millis{1000});
  const double cpu = cpu_seconds(proxy.bulwark.pid()) - cpu_before;
  CHECK_MESSAGE(cpu < 0.5, "bulwark used " << cpu << " s of CPU while nothing happened");
}

// Handshakes with bulwark on 127.0.0.1:port from a client whose ClientHello arrives in two TCP
// segments: its first `split` bytes, then, `delay` later, the rest (a TLS stack writing its
// record header on its own, or a relay forwarding what it has); over `fd` when given (a connection
// already open). "" when the handshake succeeds, else why not.
std::string handshake_with_split_hello(uint16_t port, size_t split, Millis delay, int fd = -1) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  SSL_set_tlsext_host_name(ssl, "localhost");
  if (fd < 0) fd = connect_loopback(port);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string result = "timed out";
  bool first = true;
  const auto deadline = Clock::now() + Millis{5000};
  while (Clock::now() < deadline) {
    const int rc = SSL_do_handshake(ssl);
    char buf[16384];
    std::string pending;
    for (int n; (n = BIO_read(out, buf, sizeof buf)) > 0;) pending.append(buf, static_cast<size_t>(n));
    if (first && !pending.empty()) {
      first = false;
      if (!send_raw(fd, pending.substr(0, split))) return "cannot send";
      std::this_thread::sleep_for(delay);
      pending.erase(0, split);
    }
    if (!pending.empty() && !send_raw(fd, pending)) {
      result = "cannot send";
      break;
    }
    if (rc == 1) {
      result = "";
      break;
    }
    if (SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ) {
      result = "handshake failed";
      break;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      result = "closed by bulwark";
      break;
    }
    BIO_write(in, buf, static_cast<int>(n));
  }
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  return result;
}

TEST_CASE("tls hostile: a ClientHello whose first segment is under nine bytes is served") {
  // From a hostile review: the hello-length check refused a hello whose first nine bytes did
  // not come at once (decode_error), as some stacks and relays send it.
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.workers = 1;
  TlsListenerFixture proxy(options);
  for (size_t split : {1, 5, 8, 9}) {
    CAPTURE(split);
    CHECK(handshake_with_split_hello(proxy.port(), split, Millis{30}) == "");
  }
  CHECK_MESSAGE(tls_errors(proxy.bulwark) == 0, tls_error_summary(proxy.bulwark));
  // Waiting for the ninth byte costs nothing: five bytes and silence use no CPU until the
  // headers timeout closes the connection.
  const int idle = connect_loopback(proxy.port());
  REQUIRE(send_raw(idle, std::string("\x16\x03\x01\x02\x00", 5)));
  std::this_thread::sleep_for(Millis{200});
  const double cpu_before = cpu_seconds(proxy.bulwark.pid());
  std::this_thread::sleep_for(Millis{1000});
  const double cpu = cpu_seconds(proxy.bulwark.pid()) - cpu_before;
  CHECK_MESSAGE(cpu < 0.3, "bulwark used " << cpu << " s of CPU waiting for a hello");
  ::close(idle);
}

TEST_CASE("tls hostile: a client certificate announced larger than 32 KiB is refused at once") {
  // OpenSSL allocates what a Certificate message's header announces (up to 100 KiB by default)
  // and held it for the handshake timeout: nine bytes per connection pinned 100 KiB.
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file();
  options.listener = "request_headers_timeout: 20s";
  TlsListenerFixture proxy(options);

  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);  // its Certificate goes in the clear
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  (void)SSL_do_handshake(ssl);
  std::string hello(static_cast<size_t>(BIO_pending(out)), '\0');
  BIO_read(out, hello.data(), static_cast<int>(hello.size()));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  const int fd = connect_loopback(proxy.port());
  REQUIRE(send_raw(fd, hello));
  // The server's flight ends with ServerHelloDone (type 14, length 0).
  std::string flight;
  const auto start = Clock::now();
  while (flight.size() < 4 || flight.compare(flight.size() - 4, 4, "\x0e\x00\x00\x00", 4) != 0) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 3000) == 1);
    char buf[16384];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    REQUIRE(n > 0);
    flight.append(buf, static_cast<size_t>(n));
    REQUIRE(since(start) < Millis{3000});
  }
  // A Certificate message header announcing 102,396 bytes, and nothing more.
  REQUIRE(send_raw(fd, std::string("\x16\x03\x03\x00\x04\x0b\x01\x8f\xfc", 9)));
  const auto sent = Clock::now();
  bool closed = false;
  while (!closed && since(sent) < Millis{5000}) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) break;
    char buf[256];
    closed = ::recv(fd, buf, sizeof buf, 0) <= 0;  // an alert, then the close
  }
  ::close(fd);
  CHECK_MESSAGE(closed, "the connection waits with the announced certificate's memory held");
  CHECK(since(sent) < Millis{2000});
}

TEST_CASE("tls hostile: a KeyUpdate flood ends its connection, the worker serves on") {
  // Each KeyUpdate that asks for one back costs a write; OpenSSL answered a whole flood inside
  // one read, for as long as the socket had more (seconds of a worker for 300,000).
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "min_version: \"1.3\"";
  options.workers = 1;
  TlsListenerFixture proxy(options);

  TlsClientConn attacker(proxy.port(), trusting(pki));
  REQUIRE_MESSAGE(attacker.connected(), attacker.last_error_text());
  REQUIRE(tls_get(attacker, "/before"));
  TlsClientConn bystander(proxy.port(), trusting(pki));
  REQUIRE(tls_get(bystander, "/bystander"));
  // A few are fine (a long connection updates its keys now and then)...
  CHECK(attacker.send_key_updates(3, true) == 3);
  auto after_few = tls_get(attacker, "/after-a-few");
  REQUIRE_MESSAGE(after_few, attacker.last_error_text());
  CHECK(after_few->status == 200);
  // ...a flood is not.
  const size_t sent = attacker.send_key_updates(20000, true, Millis{5000});
  INFO("KeyUpdates sent: " << sent);
  const auto start = Clock::now();
  auto answer = tls_get(bystander, "/during");
  REQUIRE_MESSAGE(answer, bystander.last_error_text());
  CHECK(answer->status == 200);
  CHECK(since(start) < Millis{1000});
  CHECK_MESSAGE(attacker.is_closed(Millis{3000}), "the flooding connection stays open");
  CHECK(wait_tls_errors(proxy.bulwark, "protocol_error", 1) >= 1);
}

TEST_CASE("tls hostile: records that arrive in pieces do not make the worker spin") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.plain_listener = true;
  options.workers = 1;
  TlsListenerFixture proxy(options);
  // A legitimate client on a slow link: its 16 KiB records come 1000 bytes at a time.
  SlowRelay relay(proxy.port(), 1000, Millis{25});
  TlsClientConn conn(relay.port(), trusting(pki));
  REQUIRE_MESSAGE(conn.connected(), conn.last_error_text());
  REQUIRE(tls_get(conn, "/warm"));

  Bystander bystander(proxy.plain_port());
  const double cpu_before = cpu_seconds(proxy.bulwark.pid());
  const auto start = Clock::now();
  REQUIRE(conn.send(make_request("POST", "/upload", {}, std::string(64 * 1024, 'u'))));
  auto response = conn.read_response();
  const Millis took = since(start);
  const double cpu = cpu_seconds(proxy.bulwark.pid()) - cpu_before;
  bystander.stop();
  REQUIRE_MESSAGE(response, conn.last_error_text());
  CHECK(response->status == 200);
  INFO("upload took " << took.count() << " ms, bulwark used " << cpu << " s of CPU");
  // Waiting for bytes costs nothing; a busy loop costs the whole upload.
  CHECK(cpu < 0.25 * static_cast<double>(took.count()) / 1000.0);
  CHECK_MESSAGE(bystander.worst_ms() < 300,
                "a plaintext GET on the same worker waited " << bystander.worst_ms() << " ms");
  CHECK(bystander.failures() == 0);
}

TEST_CASE("tls hostile: an upstream that stops inside a TLS record does not stall the worker") {
  TempDir dir;
  TestPki pki(dir.path());
  HostileTlsServer evil(pki.server, [](SSL* ssl, int fd, RawServer& self) {
    if (!ssl_read_head(ssl)) return;
    send_raw(fd, partial_record(200, 20));  // the response's first record, cut short
    self.hold();
  });
  TestUpstream good;
  tls_upstream::Setup setup;
  setup.clusters.emplace_back("good", std::vector<std::string>{good.address()}, "");
  setup.clusters.emplace_back("evil",
                              std::vector<std::string>{tls_upstream::loopback_address(evil.port())},
                              tls_upstream::trusting(pki.ca, "sni: localhost"));
  setup.route = "timeout: 2s\nretry: {attempts: 1}";
  BulwarkProcess bulwark;
  tls_upstream::start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  std::thread victim([port] { http_get(port, "/evil/x", {}, Millis{5000}); });
  REQUIRE(eventually([&] { return evil.handshakes() >= 1; }));
  std::this_thread::sleep_for(Millis{300});
  std::string error;
  auto response = http_get(port, "/good/x", {}, Millis{3000}, &error);
  CHECK_MESSAGE(response, "a request to another cluster on the same worker: " << error);
  auto metrics = http_get(bulwark.admin_port(), "/metrics", {}, Millis{3000});
  CHECK(metrics);
  victim.join();
}

TEST_CASE("tls hostile: a health check that meets half a TLS record does not stall bulwark") {
  TempDir dir;
  TestPki pki(dir.path());
  HostileTlsServer evil(pki.server, [](SSL* ssl, int fd, RawServer& self) {
    if (!ssl_read_head(ssl)) return;
    send_raw(fd, partial_record(200, 20));
    self.hold();
  });
  tls_upstream::Setup setup;
  setup.clusters.emplace_back("evil",
                              std::vector<std::string>{tls_upstream::loopback_address(evil.port())},
                              tls_upstream::trusting(pki.ca, "sni: localhost"),
                              "health_check: {path: /healthz, interval: 200ms, timeout: 500ms}");
  BulwarkProcess bulwark;
  tls_upstream::start(bulwark, setup);

  REQUIRE(eventually([&] { return evil.handshakes() >= 1; }));
  std::this_thread::sleep_for(Millis{300});
  // The checks run on the main thread, with the admin API, reloads and signals.
  std::string error;
  auto metrics = http_get(bulwark.admin_port(), "/metrics", {}, Millis{3000}, &error);
  CHECK_MESSAGE(metrics, "the admin API does not answer: " << error);
  CHECK(eventually([&] { return evil.handshakes() >= 3; }, Millis{3000}));  // checks go on
}

TEST_CASE("tls hostile: heads around the 16 KiB buffer size, with a body and a pipelined request") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.workers = 1;
  TlsListenerFixture proxy(options);

  TlsClientConn conn(proxy.port(), trusting(pki));
  REQUIRE(conn.connected());
  size_t sent = 0;
  for (size_t head = 16384 - 40; head <= 16384 + 40; head += 4) {
    // Pad the head to exactly `head` bytes with one header.
    std::string base = make_request("POST", "/h", {{"x-pad", ""}}, "0123456789");
    const size_t head_now = base.find("\r\n\r\n") + 4;
    if (head_now > head) continue;
    std::string pad(head - head_now, 'p');
    std::string request = make_request("POST", "/h", {{"x-pad", pad}}, "0123456789");
    REQUIRE(request.find("\r\n\r\n") + 4 == head);
    // Two requests in one write: OpenSSL holds what the first read did not take.
    REQUIRE(conn.send(request + make_request("GET", "/second")));
    CAPTURE(head);
    auto first = conn.read_response(false, Millis{3000});
    REQUIRE_MESSAGE(first, conn.last_error_text());
    CHECK(first->status == 200);
    auto second = conn.read_response(false, Millis{3000});
    REQUIRE_MESSAGE(second, conn.last_error_text());
    CHECK(second->status == 200);
    sent += 2;
  }
  CHECK(proxy.upstream.requests() == sent);
}

TEST_CASE("tls hostile: a head in one-byte TLS records is served") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.workers = 1;
  TlsListenerFixture proxy(options);

  TlsClientConn conn(proxy.port(), trusting(pki));
  REQUIRE(conn.connected());
  const std::string request =
      make_request("POST", "/tiny", {{"x-long", std::string(3000, 'a')}}, "body!");
  for (char c : request) REQUIRE(conn.write(std::string_view(&c, 1)));  // a record per byte
  auto response = conn.read_response();
  REQUIRE_MESSAGE(response, conn.last_error_text());
  CHECK(response->status == 200);
  auto last = proxy.upstream.last_request();
  REQUIRE(last);
  CHECK(last->body == "body!");
}

// ---------------------------------------------------------------------------------------------
// Handshakes

TEST_CASE("tls hostile: a handshake stalled after a hello header costs bounded memory") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.listener = "request_headers_timeout: 30s";
  options.workers = 1;
  TlsListenerFixture proxy(options);
  REQUIRE(must_get_status(proxy.port(), trusting(pki)) == 200);

  // A handshake record of 4 bytes: a ClientHello header announcing 128 KiB, which never come.
  const std::string hello_header = std::string("\x16\x03\x01\x00\x04\x01\x02\x00\x00", 9);
  constexpr int kConnections = 1000;
  std::this_thread::sleep_for(Millis{200});
  const long rss_before = proxy.bulwark.rss_kib();
  std::vector<int> fds;
  for (int i = 0; i < kConnections; ++i) {
    int fd = connect_loopback(proxy.port());
    REQUIRE(fd >= 0);
    REQUIRE(send_raw(fd, hello_header));
    fds.push_back(fd);
  }
  // bulwark refuses a hello longer than a record before OpenSSL allocates for it: each is
  // closed and counted as a protocol error.
  CHECK(eventually(
      [&] {
        return scrape_metric(proxy.bulwark, "bulwark_tls_handshake_errors_total",
                             {{"name", "secure"}, {"reason", "protocol_error"}})
                   .value_or(0) >= kConnections;
      },
      Millis{20000}));
  const long rss_after = proxy.bulwark.rss_kib();
  const double per_connection = static_cast<double>(rss_after - rss_before) / kConnections;
  MESSAGE("RSS " << rss_before << " KiB -> " << rss_after << " KiB: " << per_connection
                 << " KiB per refused hello (9 bytes sent each)");
  CHECK(per_connection < 48);
  for (int fd : fds) ::close(fd);
}

// ---------------------------------------------------------------------------------------------
// Client certificates and X-Forwarded-Client-Cert

TEST_CASE("tls hostile: a client certificate SAN with CR LF cannot inject headers upstream") {
  TempDir dir;
  TestPki pki(dir.path());
  // The CA issues SPIFFE IDs under a namespace prefix; the workload picked the rest.
  CertSpec spec;
  spec.common_name = "web";
  spec.usage = CertUsage::kClient;
  spec.uri_sans = {
      "spiffe://cluster.local/ns/shop/sa/web\r\nX-Injected: yes\r\nX-Forwarded-Client-"
      "Cert: Hash=0;URI=spiffe://cluster.local/ns/ops/sa/admin"};
  spec.dns_sans = {"client.example.test\r\nX-Injected-Dns: yes"};
  const IssuedCert crafted = pki.ca.issue("crafted", spec);

  for (const char* mode : {"sanitize_set", "append_forward"}) {
    CAPTURE(mode);
    TlsListenerOptions options;
    options.certificates = {cert_entry(pki.server)};
    options.tls = "client_ca: " + pki.ca.cert_file() +
                  "\n"
                  "allowed_client_sans: [\"spiffe://cluster.local/ns/shop/*\"]\n"
                  "forward_client_cert: " +
                  mode;
    TlsListenerFixture proxy(options);
    auto response = https_get(proxy.port(), with_cert(trusting(pki), crafted), "/whoami");
    if (response && response->status == 200) {
      auto last = proxy.upstream.last_request();
      REQUIRE(last);
      INFO(last->head);
      CHECK_FALSE(last->has("x-injected"));
      CHECK_FALSE(last->has("x-injected-dns"));
      CHECK(last->get_all("x-forwarded-client-cert").size() == 1);
      for (const std::string& v : last->get_all("x-forwarded-client-cert")) {
        CHECK(v.find_first_of("\r\n") == std::string::npos);
        const bool forged_identity =
            v.find("ns/ops/sa/admin") != std::string::npos &&
            v.find("\"spiffe://cluster.local/ns/shop/sa/web") == std::string::npos;
        CHECK_FALSE(forged_identity);
      }
    }
  }
}

TEST_CASE("tls hostile: XFCC and X-Forwarded-Proto forged on a plaintext listener are replaced") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "require_client_certificate: false\n"
                "forward_client_cert: append_forward";
  options.plain_listener = true;
  TlsListenerFixture proxy(options);
  const HeaderList forged = {{"X-Forwarded-Client-Cert", "Hash=1;URI=spiffe://forged"},
                             {"x-forwarded-client-cert", "By=x;URI=spiffe://forged2"},
                             {"X-Forwarded-Proto", "https"},
                             {"X-FORWARDED-CLIENT-CERT", "URI=spiffe://forged3"}};
  auto plain = http_get(proxy.plain_port(), "/plain", forged);
  REQUIRE(plain);
  auto last = proxy.upstream.last_request();
  REQUIRE(last);
  CHECK_FALSE(last->has("x-forwarded-client-cert"));
  CHECK(last->get_all("x-forwarded-proto") == std::vector<std::string>{"http"});

  // Over TLS without a client certificate (append_forward): the forged ones are dropped too.
  auto tls = https_get(proxy.port(), trusting(pki), "/tls", forged);
  REQUIRE(tls);
  last = proxy.upstream.last_request();
  REQUIRE(last);
  CHECK_FALSE(last->has("x-forwarded-client-cert"));
  CHECK(last->get_all("x-forwarded-proto") == std::vector<std::string>{"https"});
}

TEST_CASE("tls hostile: a reload that replaces the client CA cuts an open tunnel") {
  // A tunnel has no current request to finish (from the second review: one admitted by a
  // replaced CA went on for as long as it pleased).
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream([](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    conn.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    while (true) {
      std::string data = conn.read_some(1, Millis{10000});
      if (data.empty() || !conn.write(data)) return;
    }
  });
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file();
  BulwarkProcess bulwark;
  bulwark.start(tls_listener_config(upstream.address(), options));
  TlsClientConn client(bulwark.port("secure"), with_cert(trusting(pki), pki.client_web));
  REQUIRE(client.connected());
  REQUIRE(client.send(
      make_request("GET", "/ws", {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}})));
  auto switched = client.read_response();
  REQUIRE_MESSAGE(switched, client.last_error_text());
  REQUIRE(switched->status == 101);
  REQUIRE(client.send("echo"));
  CHECK(client.read_exact(4).value_or("") == "echo");

  TlsListenerOptions other_ca = options;
  other_ca.tls = "client_ca: " + pki.other_ca.cert_file();
  auto reloaded = reload_config(bulwark, tls_listener_config(upstream.address(), other_ca));
  REQUIRE(reloaded);
  REQUIRE((reloaded->status == 200 || reloaded->status == 409));
  CHECK_MESSAGE(client.is_closed(Millis{3000}), "the tunnel outlived the client CA that admitted it");
}

TEST_CASE("tls hostile: a reload that changes the TLS policy ends open connections, others stay") {
  // From a hostile review: an open keep-alive connection went on being served after a reload
  // replaced the client CA or raised min_version, while new handshakes were refused.
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file();
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(tls_listener_config(upstream.address(), options));
  const uint16_t port = bulwark.port("secure");
  auto reload_to = [&](const TlsListenerOptions& next_options) {
    auto reloaded = reload_config(bulwark, tls_listener_config(upstream.address(), next_options));
    REQUIRE(reloaded);
    REQUIRE((reloaded->status == 200 || reloaded->status == 409));
  };

  // A reload that leaves the TLS policy alone (a new listener key) keeps the connection, and
  // one whose handshake has not begun yet (from the second review: every reload cut those).
  TlsClientConn kept(port, with_cert(trusting(pki), pki.client_web));
  REQUIRE(tls_get(kept, "/first"));
  const int early = connect_loopback(port);
  REQUIRE(early >= 0);
  std::this_thread::sleep_for(Millis{100});  // accepted before the reload
  TlsListenerOptions same = options;
  same.listener = "idle_timeout: 61s";
  reload_to(same);
  auto again = tls_get(kept, "/same-policy");
  REQUIRE_MESSAGE(again, kept.last_error_text());
  CHECK(again->status == 200);
  CHECK_MESSAGE(handshake_with_split_hello(port, 1000, Millis{0}, early) == "",
                "a handshake begun before an unchanged reload was cut");

  // Another client CA: the client, verified by the old one, is not carried over.
  TlsListenerOptions other_ca = same;
  other_ca.tls = "client_ca: " + pki.other_ca.cert_file();
  reload_to(other_ca);
  auto after_ca = tls_get(kept, "/other-ca");
  CHECK_MESSAGE(!after_ca, "served under a client CA that never verified it: " << describe(after_ca));

  // TLS 1.2 connections once the listener takes 1.3 only.
  TlsListenerOptions v12 = options;
  v12.tls = "";
  reload_to(v12);
  TlsClientOptions old_client = trusting(pki);
  old_client.max_version = TlsVersion::kTls1_2;
  TlsClientConn old_version(port, old_client);
  REQUIRE_MESSAGE(tls_get(old_version, "/tls12"), old_version.last_error_text());
  TlsListenerOptions v13 = v12;
  v13.tls = "min_version: \"1.3\"";
  reload_to(v13);
  auto after_min = tls_get(old_version, "/after-min-version");
  CHECK_MESSAGE(!after_min, "TLS 1.2 served after min_version 1.3: " << describe(after_min));
}

TEST_CASE("tls hostile: a reload that removes a client's identity ends its open connection") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "allowed_client_sans: [\"spiffe://cluster.local/ns/shop/*\"]";
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(tls_listener_config(upstream.address(), options));
  const uint16_t port = bulwark.port("secure");

  TlsClientConn conn(port, with_cert(trusting(pki), pki.client_web));
  REQUIRE(tls_get(conn, "/allowed"));

  TlsListenerOptions narrowed = options;
  narrowed.tls = "client_ca: " + pki.ca.cert_file() +
                 "\n"
                 "allowed_client_sans: [\"spiffe://cluster.local/ns/ops/*\"]";
  auto reloaded = reload_config(bulwark, tls_listener_config(upstream.address(), narrowed));
  REQUIRE(reloaded);
  // (The config watch may have reloaded first: then this reload changes nothing, and says so.)
  REQUIRE((reloaded->status == 200 || reloaded->status == 409 || reloaded->status == 400));
  // A new connection with the same certificate is refused...
  TlsClientConn fresh(port, with_cert(trusting(pki), pki.client_web));
  CHECK(!tls_get(fresh, "/new-connection"));
  // ...and the one already open must not go on being served under the old policy.
  auto after = tls_get(conn, "/still-served");
  CHECK_MESSAGE(!after, "served after its identity was removed: " << describe(after));
  CHECK(upstream.requests() == 1);
}

TEST_CASE("tls hostile: an odd SNI is served and logged as data") {
  TempDir dir;
  TestPki pki(dir.path());
  const std::string log = dir.path() + "/access.log";
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server), cert_entry(pki.second_server)};
  options.top = "access_log: {path: " + log + ", format: json}";
  TlsListenerFixture proxy(options);
  for (std::string sni :
       {std::string("a\r\nb\"c\\d\te"), std::string(255, 'x'), std::string("API.EXAMPLE.TEST"),
        std::string("*.example.test"), std::string("..")}) {
    TlsClientOptions client;  // trusts anything
    client.sni = sni;
    auto response = https_get(proxy.port(), client, "/sni");
    CHECK_MESSAGE(response, "SNI of " << sni.size() << " bytes");
  }
  auto response = https_get(proxy.port(), trusting(pki), "/after");
  REQUIRE(response);
  CHECK(response->status == 200);
}

TEST_CASE("tls hostile: a reload that requires client certificates refuses sessions made without") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "require_client_certificate: false";
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(tls_listener_config(upstream.address(), options));
  const uint16_t port = bulwark.port("secure");

  // Clients without a certificate, admitted while certificates are optional, keep a session.
  std::vector<TlsClientOptions> clients;
  for (auto version : {TlsVersion::kTls1_3, TlsVersion::kTls1_2}) {
    TlsClientOptions client = trusting(pki);
    client.max_version = version;
    TlsClientConn conn(port, client);
    REQUIRE(tls_get(conn, "/optional"));
    client.session = conn.get_session(kDefaultTimeout);
    REQUIRE(client.session);
    clients.push_back(client);
  }

  std::this_thread::sleep_for(Millis{2000});  // so that a renewed ticket's time shows
  TlsListenerOptions required = options;
  required.tls = "client_ca: " + pki.ca.cert_file() +
                 "\n"
                 "require_client_certificate: true";
  auto reloaded = reload_config(bulwark, tls_listener_config(upstream.address(), required));
  REQUIRE(reloaded);
  CHECK(reloaded->status == 200);

  // A full handshake without a certificate is refused now...
  TlsClientConn fresh(port, trusting(pki));
  CHECK(!tls_get(fresh, "/no-cert"));
  // ...and so must be a resumption of a session that never showed one.
  for (const TlsClientOptions& client : clients) {
    CAPTURE(static_cast<int>(client.max_version));
    TlsClientConn conn(port, client);
    auto response = tls_get(conn, "/resumed-without-cert");
    CHECK_MESSAGE(!response, "resumed: " << conn.resumed() << ", " << describe(response));
    if (response && client.max_version == TlsVersion::kTls1_3) {
      // The resumption came with a new ticket: is its clock restarted (a window that renews)?
      TlsSession renewed = conn.get_session(Millis{1000});
      if (renewed && client.session) {
        MESSAGE("ticket issued before the reload at " << SSL_SESSION_get_time(client.session.get())
                                                      << ", renewed one at "
                                                      << SSL_SESSION_get_time(renewed.get()));
      }
    }
  }
  CHECK(upstream.requests() == 2);
}

// ---------------------------------------------------------------------------------------------
// Writes cut short, connections ended at every step (run against the sanitizer build too)

TEST_CASE("tls hostile: clients that vanish at every step of a large TLS response") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options, [](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      const size_t size = request->target == "/big" ? 4 * 1024 * 1024 : 10;
      if (!conn.write_response(200, std::string(size, 'r'))) return;
    }
  });

  for (int round = 0; round < 6; ++round) {
    CAPTURE(round);
    // Reset during the handshake.
    {
      int fd = connect_loopback(proxy.port());
      REQUIRE(fd >= 0);
      send_raw(fd, std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11));
      linger l{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      ::close(fd);
    }
    // A small receive window, a big response, a few bytes read, then a reset: bulwark has a
    // TLS write under way (OpenSSL holding a record the socket did not take).
    {
      TlsClientConn conn(proxy.port(), trusting(pki));
      REQUIRE(conn.connected());
      conn.set_receive_buffer(4096);
      REQUIRE(conn.send(make_request("GET", "/big")));
      conn.read_some(1000 * static_cast<size_t>(round + 1), Millis{2000});
      std::this_thread::sleep_for(Millis{50});
      conn.close(/*reset=*/true);
    }
    // A FIN (no close_notify) in the middle of the response.
    {
      TlsClientConn conn(proxy.port(), trusting(pki));
      REQUIRE(conn.send(make_request("GET", "/big")));
      conn.read_some(200000, Millis{2000});
      ::shutdown(conn.fd(), SHUT_RDWR);
    }
    // close_notify and FIN right after a pipelined pair, without reading.
    {
      TlsClientConn conn(proxy.port(), trusting(pki));
      REQUIRE(conn.send(make_request("GET", "/big") + make_request("GET", "/small")));
      conn.shutdown_write();
      conn.read_some(1, Millis{500});
      conn.close();
    }
  }
  auto response = https_get(proxy.port(), trusting(pki), "/small");
  REQUIRE(response);
  CHECK(response->status == 200);
  std::this_thread::sleep_for(Millis{300});
  CHECK(proxy.bulwark.process().running());
}

// ---------------------------------------------------------------------------------------------
// Operator mistakes

TEST_CASE("tls hostile: verify_hostname false with no allowed_server_sans is warned about") {
  // What the loader suggests for an IP endpoint. With the system trust store (no `ca`), any
  // server holding any publicly trusted certificate, for any name, is then accepted.
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream unused;
  tls_upstream::Setup setup;
  setup.clusters.emplace_back("app", std::vector<std::string>{"127.0.0.1:1"},
                              "{verify_hostname: false}");
  BulwarkProcess bulwark;
  bulwark.start(tls_upstream::tls_config(setup));  // warnings come before "started"
  const std::string logs = bulwark.logs_text();
  INFO(logs);
  CHECK(logs.find("verify_hostname") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Hostile upstreams (and whoever sits between bulwark and them)

TEST_CASE("tls hostile: an upstream response cut by a FIN without close_notify is not complete") {
  // A close-delimited response: only TLS's close_notify tells its end from a FIN that someone on
  // the path injected (the truncation attack close_notify exists for).
  TempDir dir;
  TestPki pki(dir.path());
  HostileTlsServer upstream(pki.server, [](SSL* ssl, int fd, RawServer&) {
    auto head = ssl_read_head(ssl);
    if (!head) return;
    ssl_write_all(ssl, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + std::string(1000, 'a'));
    if (head->find(" /clean ") != std::string::npos) SSL_shutdown(ssl);
    ::shutdown(fd, SHUT_WR);
    char buf[256];
    while (::recv(fd, buf, sizeof buf, 0) > 0) {
    }
  });
  tls_upstream::Setup setup;
  setup.clusters.emplace_back(
      "app", std::vector<std::string>{tls_upstream::loopback_address(upstream.port())},
      tls_upstream::trusting(pki.ca, "sni: localhost"));
  BulwarkProcess bulwark;
  tls_upstream::start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  // With close_notify: the whole response.
  ClientConn clean(port);
  REQUIRE(clean.send(make_request("GET", "/clean")));
  auto complete = clean.read_response();
  REQUIRE_MESSAGE(complete, clean.last_error_text());
  CHECK(complete->body.size() == 1000);

  // Without: the same bytes must not reach the client as a complete response.
  ClientConn cut(port);
  REQUIRE(cut.send(make_request("GET", "/cut")));
  auto truncated = cut.read_response();
  CHECK_MESSAGE(!truncated, "passed on as complete: " << describe(truncated));
}

TEST_CASE("tls hostile: a DNS SAN spelled like an allowed SPIFFE ID is not that identity") {
  // allowed_client_sans lists SPIFFE IDs (URI SANs); a certificate whose DNS SAN carries the
  // same text was issued for a host name, not for that workload.
  TempDir dir;
  TestPki pki(dir.path());
  CertSpec spec;
  spec.common_name = "impostor";
  spec.usage = CertUsage::kClient;
  spec.dns_sans = {TestPki::kSpiffeWeb};
  const IssuedCert impostor = pki.ca.issue("impostor", spec);

  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "allowed_client_sans: [\"" +
                std::string(TestPki::kSpiffeWeb) +
                "\"]\n"
                "forward_client_cert: sanitize_set";
  TlsListenerFixture proxy(options);
  REQUIRE(must_get_status(proxy.port(), with_cert(trusting(pki), pki.client_web)) == 200);
  auto response = https_get(proxy.port(), with_cert(trusting(pki), impostor), "/impostor");
  CHECK_MESSAGE(!response, "admitted: " << describe(response));
}

TEST_CASE("tls hostile: rotating to a passphrase-protected key does not freeze the main thread") {
  // bulwark runs with a standard input that stays open (a terminal, `docker run -i`, a
  // supervisor's pipe). OpenSSL's default passphrase callback reads the passphrase from it.
  TempDir dir;
  TestPki pki(dir.path());
  const std::string fifo = dir.path() + "/stdin";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const int keep_open = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(keep_open >= 0);
  const std::string wrapper = dir.path() + "/bulwark-with-stdin";
  write_file(wrapper,
             "#!/bin/sh\nexec " + std::string(BULWARK_BINARY) + " \"$@\" < " + fifo + "\n");
  REQUIRE(::chmod(wrapper.c_str(), 0755) == 0);

  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TestUpstream upstream;
  BulwarkProcess bulwark(wrapper);
  bulwark.start(tls_listener_config(upstream.address(), options));
  REQUIRE(http_get(bulwark.admin_port(), "/metrics"));

  // The operator protects the key with a passphrase (same key, encrypted).
  {
    BIO* in =
        BIO_new_mem_buf(pki.server.key_pem.data(), static_cast<int>(pki.server.key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
    BIO_free(in);
    REQUIRE(key != nullptr);
    BIO* out = BIO_new(BIO_s_mem());
    char pass[] = "secret";
    REQUIRE(PEM_write_bio_PKCS8PrivateKey(out, key, EVP_aes_256_cbc(), pass, 6, nullptr, nullptr) ==
            1);
    char* data = nullptr;
    long len = BIO_get_mem_data(out, &data);
    const std::string next = pki.server.key_file + ".next";
    write_file(next, std::string(data, static_cast<size_t>(len)));
    REQUIRE(std::rename(next.c_str(), pki.server.key_file.c_str()) == 0);
    BIO_free(out);
    EVP_PKEY_free(key);
  }
  std::this_thread::sleep_for(Millis{1500});  // the file watch settles in 200 ms
  std::string error;
  auto metrics = http_get(bulwark.admin_port(), "/metrics", {}, Millis{3000}, &error);
  CHECK_MESSAGE(metrics, "the admin API does not answer: " << error << "\n" << bulwark.logs_text());
  CHECK(must_get_status(bulwark.port("secure"), trusting(pki)) == 200);  // the old key serves
  ::close(keep_open);
}

TEST_CASE("tls hostile: a WebSocket tunnel with TLS on both sides half-closes both ways") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream([](UpstreamConn& conn) {
    auto request = conn.read_request();
    if (!request) return;
    conn.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    std::string got;
    while (true) {
      std::string data = conn.read_some(1, Millis{10000});
      if (data.empty()) break;
      if (data.find("ping") != std::string::npos) conn.write(std::string(100000, 'p'));
      got += data;
    }
    if (conn.last_error() != ReadError::kClosed) return;
    conn.write("after your end: " + got);
  });
  TlsFrontDoor door(tls_upstream::serving(pki.server), upstream.port());
  const std::string yaml =
      "workers: 1\n"
      "drain_delay: 0s\n"
      "drain_timeout: 1s\n"
      "admin: {address: 127.0.0.1:0}\n"
      "listeners:\n"
      "  - name: secure\n"
      "    address: 127.0.0.1:0\n"
      "    tls:\n"
      "      certificates: [" +
      cert_entry(pki.server) +
      "]\n"
      "    routes:\n"
      "      - name: ws\n"
      "        match: {prefix: /}\n"
      "        cluster: app\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [" +
      tls_upstream::loopback_address(door.port()) +
      "]\n"
      "    tls: {ca: " +
      pki.ca.cert_file() + ", sni: localhost}\n";
  BulwarkProcess bulwark;
  bulwark.start(yaml);

  TlsClientConn client(bulwark.port("secure"), trusting(pki));
  REQUIRE(client.connected());
  REQUIRE(client.send(
      make_request("GET", "/ws", {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}})));
  auto switched = client.read_response();
  REQUIRE_MESSAGE(switched, client.last_error_text());
  REQUIRE(switched->status == 101);
  REQUIRE(client.send("ping"));
  auto pongs = client.read_exact(100000);
  CHECK(pongs.value_or("").size() == 100000);
  REQUIRE(client.send(" last words"));
  client.shutdown_write();  // close_notify and FIN
  CHECK(client.read_until_close() == "after your end: ping last words");
  // The end came as TLS says it (close_notify), not a bare FIN, though the client ended first.
  CHECK(client.close_notify_received());
  CHECK(door.wait_closed(1));
}
