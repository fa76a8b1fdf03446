// buffer ownership (issue 12, item 7): a queued write sends bytes straight out of the read buffer
// of the other side, so that buffer must live until the write is done, whatever its reader does.
//
// Each test reaches a state in which the reader lets go of its buffer while a write that points
// into it is still queued behind a peer that does not read: the upstream closes right after a
// complete response, the route timeout cuts the upstream off, a WebSocket upstream closes, a
// client half-closes after its upload. Other connections through the same (single) worker then
// move foreign bytes (the test pattern at another offset) through the worker's read buffers, and
// only then does the slow peer read: every byte it gets must be its own. Before read buffers were
// reference-counted, a block returned to the pool under a queued write was handed to the next
// connection, and the slow peer received that connection's bytes.
//
// A write stays queued only while the kernel buffers between bulwark and the slow peer are full.
// The slow peer's sockets advertise a small MSS and a small receive buffer before the handshake,
// which keeps bulwark's autotuned send buffer towards it small: a few hundred KiB fill the path.
// Whether a write is queued is read from the kernel (sock_diag: what bulwark's socket took from
// bulwark against what bulwark read on the other side) or from bulwark's gauges, not from time.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/kernel_view.h"
#include "tests/integration/proxy_fixture.h"

namespace bulwark::test {
namespace {

// The slow peer's segment size and receive buffer (the kernel doubles the latter).
constexpr int kSlowMss = 536;
constexpr int kSlowReceiveBuffer = 4096;

// Foreign bytes: the pattern from an offset no slow stream reaches, so a foreign byte in a slow
// stream is a mismatch (the pattern has no short period).
constexpr uint64_t kForeignOffset = (uint64_t{1} << 40) + 12345;
constexpr size_t kForeignSize = 48 * 1024;  // several read buffers (16 KiB) of it per request

constexpr uint64_t kMiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Sockets

void set_int_option(int fd, int level, int name, int value) {
  ::setsockopt(fd, level, name, &value, sizeof value);
}

// Small MSS and receive buffer: set before the handshake, so the peer learns them from it.
void make_slow(int fd) {
  set_int_option(fd, IPPROTO_TCP, TCP_MAXSEG, kSlowMss);
  set_int_option(fd, SOL_SOCKET, SO_RCVBUF, kSlowReceiveBuffer);
}

// A test-side connection (client or upstream end) over a socket made by this file.
class Peer : public ClientConn {
 public:
  explicit Peer(int fd) { fd_ = fd; }

  using HttpConn::read_chunked_body;
  using HttpConn::read_head;

  // Moves at most `n` bytes from the socket into the read buffer, where the message readers
  // find them later, waiting up to `timeout` for some. Returns how many arrived.
  size_t pull(size_t n, Millis timeout = kDefaultTimeout) {
    pollfd pfd{fd_, POLLIN, 0};
    if (eof_ || ::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return 0;
    size_t old_size = buf_.size();
    buf_.resize(old_size + n);
    ssize_t got = ::recv(fd_, buf_.data() + old_size, n, 0);
    buf_.resize(old_size + static_cast<size_t>(std::max<ssize_t>(got, 0)));
    if (got == 0) eof_ = true;
    return static_cast<size_t>(std::max<ssize_t>(got, 0));
  }

  uint16_t local_port() const { return port_of(fd_, false); }
  uint16_t remote_port() const { return port_of(fd_, true); }
};

// A slow client of bulwark (the test fails when it cannot connect).
std::unique_ptr<Peer> connect_slow(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  make_slow(fd);
  set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  sockaddr_in address = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    FAIL("connect to 127.0.0.1:" << port << " failed: " << std::strerror(errno));
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return std::make_unique<Peer>(fd);
}

// A listening socket whose connections are slow peers (an upstream that reads slowly).
class SlowListener {
 public:
  SlowListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    make_slow(fd_);
    sockaddr_in address = loopback(0);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
  }
  ~SlowListener() { ::close(fd_); }
  SlowListener(const SlowListener&) = delete;
  SlowListener& operator=(const SlowListener&) = delete;

  uint16_t port() const { return port_of(fd_, false); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port()); }

  // The next connection, or nullptr when none arrives within `timeout`.
  std::unique_ptr<Peer> accept(Millis timeout = kDefaultTimeout) {
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return nullptr;
    int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return nullptr;
    set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    return std::make_unique<Peer>(fd);
  }

 private:
  int fd_ = -1;
};

// ---------------------------------------------------------------------------------------------
// Bulwark, the foreign traffic and its upstream

// Listener "inbound" with two routes: /foreign/ to cluster "other" (foreign traffic), everything
// else to cluster "app" (the slow exchange). One worker, so every connection shares its pool of
// read buffers.
std::string two_cluster_config(const std::string& app, const std::string& other,
                               const std::string& app_route = "") {
  return "workers: 1\n"
         "drain_delay: 0s\n"
         "drain_timeout: 1s\n"
         "admin: {address: 127.0.0.1:0}\n"
         "listeners:\n"
         "  - name: inbound\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - name: foreign\n"
         "        match: {prefix: /foreign/}\n"
         "        cluster: other\n"
         "      - name: slow\n"
         "        match: {prefix: /}\n"
         "        cluster: app\n" +
         indent(app_route, 8) +
         "clusters:\n"
         "  - name: app\n"
         "    endpoints: [" +
         app +
         "]\n"
         "  - name: other\n"
         "    endpoints: [" +
         other + "]\n";
}

// Serves the foreign traffic: checks uploads against the foreign pattern, answers downloads
// with it.
void serve_foreign(UpstreamConn& conn) {
  const std::string foreign = pattern_string(kForeignOffset, kForeignSize);
  while (auto request = conn.read_request()) {
    if (request->method == "POST") {
      bool intact = request->body == foreign;
      conn.write_response(intact ? 200 : 500, intact ? "intact\n" : "corrupted\n");
    } else {
      conn.write_response(200, foreign);
    }
  }
}

// Moves foreign bytes through the worker's read buffers in both directions: uploads (read into
// the client side's buffer) and downloads (read into the upstream side's), each on a new
// connection, so every block the pool hands out meanwhile is overwritten with them. Returns how
// many of these exchanges went through intact.
int drive_foreign_traffic(uint16_t port, int rounds = 3) {
  const std::string foreign = pattern_string(kForeignOffset, kForeignSize);
  int intact = 0;
  for (int i = 0; i < rounds; ++i) {
    auto upload = http_request(port, "POST", "/foreign/upload", {}, foreign);
    if (upload && upload->status == 200) ++intact;
    auto download = http_get(port, "/foreign/download");
    if (download && download->status == 200 && download->body == foreign) ++intact;
  }
  return intact;
}

// Waits until the slow side's exchange has lost its upstream connection but stays open, on two
// scrapes in a row (a request between its head and its connection looks the same for a moment):
// it waits for the client to take what is queued for it.
bool exchange_outlives_its_upstream(const BulwarkProcess& bulwark) {
  auto orphaned = [&] {
    auto metrics = http_get(bulwark.admin_port(), "/metrics");
    if (!metrics || metrics->status != 200) return false;
    const std::string& text = metrics->body;
    return metric_value(text, "bulwark_upstream_active_requests", {{"cluster", "app"}}) == 1.0 &&
           metric_value(text, "bulwark_upstream_connections",
                        {{"cluster", "app"}, {"state", "active"}}) == 0.0 &&
           metric_value(text, "bulwark_upstream_connections",
                        {{"cluster", "app"}, {"state", "idle"}}) == 0.0;
  };
  bool before = false;
  return eventually([&] {
    bool now = orphaned();
    bool twice = before && now;
    before = now;
    return twice;
  });
}

// ---------------------------------------------------------------------------------------------
// An upload whose write to a slow upstream is queued.

// A chunked upload through bulwark to an upstream (a SlowListener's) that reads the request head
// and then nothing until the test says so. fill() sends the body piece by piece, each once
// bulwark has forwarded the previous one, until bulwark's socket to the upstream is all but
// full: a piece of kLast bytes sent then is read whole by bulwark (one read) and cannot be handed
// over whole, so its write is queued, pointing into the client's read buffer.
struct ChunkedUpload {
  static constexpr size_t kLast = 12 * 1024;     // one read, far more than the socket still takes
  static constexpr uint32_t kAlmostFull = 4096;  // send-queue memory left before the last piece

  ChunkedUpload(ClientConn& client, SlowListener& app, uint16_t inbound)
      : client(client), app(app), inbound(inbound) {
    const std::string head = make_request("POST", "/upload", {{"Transfer-Encoding", "chunked"}});
    REQUIRE(client.send(head));
    client_sent = head.size();
    upstream = app.accept();
    REQUIRE(upstream);
    std::string upstream_head, start_line;
    HeaderList headers;
    REQUIRE(upstream->read_head(upstream_head, start_line, headers, kDefaultTimeout));
    forwarded = upstream_head.size();  // bulwark frames each piece as the client did
    REQUIRE_MESSAGE(to_upstream(), "sock_diag (NETLINK_SOCK_DIAG) does not show bulwark's sockets");
  }

  std::optional<KernelView> from_client() const {
    return kernel_view(inbound, port_of(client.fd(), false));
  }
  std::optional<KernelView> to_upstream() const {
    return kernel_view(upstream->remote_port(), app.port(), true);
  }
  // Bytes of the upload bulwark has read and not yet handed to its socket to the upstream.
  int64_t held() const {
    auto view = to_upstream();
    REQUIRE(view);
    return static_cast<int64_t>(forwarded) - static_cast<int64_t>(view->given());
  }
  // Sends `framed` (chunks carrying `body_bytes` of the body).
  void send(const std::string& framed, size_t body_bytes) {
    REQUIRE(client.send(framed));
    client_sent += framed.size();
    forwarded += framed.size();
    body += body_bytes;
  }

  void fill() {
    while (true) {
      REQUIRE(eventually([&] {
        auto view = from_client();
        return view && view->taken() == client_sent;
      }));
      auto view = settled([&] { return to_upstream(); });
      REQUIRE(view);
      int64_t queued = static_cast<int64_t>(forwarded) - static_cast<int64_t>(view->given());
      REQUIRE_MESSAGE(queued >= 0, "bulwark framed a piece in two chunks (read it in two parts)");
      if (queued > 0) {
        // The socket filled under a piece: let it through and fill again.
        REQUIRE(upstream->pull(8192) > 0);
        continue;
      }
      uint32_t room = view->send_buffer > view->queued ? view->send_buffer - view->queued : 0;
      if (room < kAlmostFull) return;
      REQUIRE_MESSAGE(body < 16 * kMiB, "the path to the upstream never filled");
      size_t size = std::clamp<size_t>(room / 4, 512, 12 * 1024);
      send(chunk(pattern_string(body, size)), size);
    }
  }

  ClientConn& client;
  SlowListener& app;
  uint16_t inbound;
  std::unique_ptr<Peer> upstream;
  uint64_t client_sent = 0;  // bytes the client sent
  uint64_t forwarded = 0;    // bytes bulwark is to write upstream for them
  uint64_t body = 0;         // body bytes sent
};

// ---------------------------------------------------------------------------------------------
// 1. The upstream closes right after a complete response.

TEST_CASE("buffer ownership: an upstream closing after its response while the client is slow") {
  // Pipelined GETs, each answered on its own upstream connection by a complete response
  // (Content-Length) and a close. The client reads nothing, so responses pile up until the path
  // to it is full: the response whose write is then queued is complete, so bulwark keeps reading
  // its upstream, sees the close and closes that connection, whose read buffer the queued write
  // points into.
  constexpr size_t kBody = 12 * 1024;  // head and body arrive in one read buffer
  constexpr size_t kRequests = 96;     // far more than fill the path to a slow client
  TestUpstream app(
      [&](UpstreamConn& conn) {
        auto request = conn.read_request();
        if (!request || request->target.rfind("/fin/", 0) != 0) return;
        uint64_t index = std::stoull(request->target.substr(5));
        conn.write_response(200, pattern_string(index * kBody, kBody), {{"Connection", "close"}});
        // Returning closes the connection.
      },
      "app");
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address()));

  auto client = connect_slow(bulwark.port("inbound"));
  std::string pipeline;
  for (size_t i = 0; i < kRequests; ++i)
    pipeline += make_request("GET", "/fin/" + std::to_string(i));
  REQUIRE(client->send(pipeline));

  // Some response's write is queued and its upstream connection is gone.
  REQUIRE(exchange_outlives_its_upstream(bulwark));
  const size_t answered = app.requests();
  MESSAGE("responses before the path filled: " << answered);
  CHECK(answered < kRequests);
  CHECK(drive_foreign_traffic(bulwark.port("inbound")) == 6);

  // Every response the client gets is complete and its own. The upstream closing after a
  // complete response costs the exchange nothing, so the pipeline goes on to its last request.
  PatternVerifier verifier;
  size_t received = 0;
  while (received < kRequests) {
    auto response = client->read_response(false, kDefaultTimeout, verifier.sink());
    if (!response) break;
    CHECK(response->status == 200);
    ++received;
    if (!verifier.ok()) break;
  }
  INFO("first foreign byte at stream offset " << verifier.first_mismatch().value_or(0));
  INFO(client->last_error_text());
  CHECK(verifier.ok());
  CHECK(received == kRequests);
  CHECK(verifier.received() == kRequests * kBody);
}

// ---------------------------------------------------------------------------------------------
// 2. The route timeout fires while a body streams to a slow client.

TEST_CASE("buffer ownership: the route timeout firing while a body streams to a slow client") {
  // The upstream streams a body far larger than the path to the client holds; the client reads
  // nothing, so bulwark's write to it is queued, pointing into the upstream's read buffer, and
  // bulwark no longer reads the upstream. The route timeout then closes the upstream connection;
  // the client still gets what was queued, then the connection is cut.
  constexpr uint64_t kBody = 16 * kMiB;
  Event upstream_cut;
  TestUpstream app(
      [&](UpstreamConn& conn) {
        if (!conn.read_request()) return;
        if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kBody) +
                        "\r\n\r\n")) {
          return;
        }
        if (!conn.write_pattern(0, kBody)) upstream_cut.set();
      },
      "app");
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address(), "timeout: 500ms"));

  auto client = connect_slow(bulwark.port("inbound"));
  REQUIRE(client->send(make_request("GET", "/stream")));
  REQUIRE(upstream_cut.wait());
  REQUIRE(exchange_outlives_its_upstream(bulwark));
  CHECK(drive_foreign_traffic(bulwark.port("inbound")) == 6);

  PatternVerifier verifier;
  auto response = client->read_response(false, kDefaultTimeout, verifier.sink());
  CHECK_FALSE(response);
  CHECK(client->last_error() == ReadError::kClosed);
  CHECK(client->partial().status == 200);
  INFO("the client got " << verifier.received() << " body bytes; first foreign byte at offset "
                         << verifier.first_mismatch().value_or(0));
  CHECK(verifier.received() > 0);
  CHECK(verifier.ok());
}

// ---------------------------------------------------------------------------------------------
// 3. A WebSocket upstream closes while a write to the client is queued.

TEST_CASE(
    "buffer ownership: a WebSocket upstream closing while a write to the slow client is queued") {
  // After the 101 the upstream sends tunnel data piece by piece, each once bulwark has read the
  // previous one, until bulwark cannot hand a piece over to the client's socket (the client reads
  // nothing): that piece's write is queued, pointing into the upstream's read buffer. The
  // upstream then closes. bulwark stops reading a tunnel's upstream while a write to the client
  // is queued, so it sees the close only after the client has taken those bytes; the client
  // still gets every byte, then the connection closes.
  constexpr size_t kPiece = 4096;
  const std::string switching =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
  std::atomic<UpstreamConn*> tunnel{nullptr};
  Event upstream_ready;
  Gate test_over;
  TestUpstream app(
      [&](UpstreamConn& conn) {
        auto request = conn.read_request();
        if (!request || !iequals(request->get("upgrade"), "websocket")) return;
        if (!conn.write(switching)) return;
        tunnel = &conn;
        upstream_ready.set();
        test_over.pass(Millis{20000});  // the test drives this end of the tunnel meanwhile
      },
      "app");
  Gate::Opener open_at_end(test_over);
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address()));
  const uint16_t inbound = bulwark.port("inbound");

  auto client = connect_slow(inbound);
  REQUIRE(client->send(make_request("GET", "/ws",
                                    {{"Connection", "Upgrade"},
                                     {"Upgrade", "websocket"},
                                     {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                                     {"Sec-WebSocket-Version", "13"}})));
  auto switched = client->read_response_head();
  REQUIRE_MESSAGE(switched, client->last_error_text());
  REQUIRE(switched->status == 101);
  REQUIRE(upstream_ready.wait());
  UpstreamConn& upstream = *tunnel.load();

  auto from_upstream = [&] { return kernel_view(port_of(upstream.fd(), true), app.port(), true); };
  auto to_client = [&] { return kernel_view(inbound, client->local_port()); };
  REQUIRE_MESSAGE(to_client(), "sock_diag (NETLINK_SOCK_DIAG) does not show bulwark's sockets");
  const uint64_t head_to_client = switched->head.size();
  uint64_t sent = 0;
  int64_t held = 0;
  while (held <= 0) {
    REQUIRE_MESSAGE(sent < 16 * kMiB, "the path to the client never filled");
    REQUIRE(upstream.write(pattern_string(sent, kPiece)));
    sent += kPiece;
    REQUIRE(eventually([&] {
      auto view = from_upstream();
      return view && view->taken() == switching.size() + sent;
    }));
    auto view = settled(to_client);
    REQUIRE(view);
    held = static_cast<int64_t>(head_to_client + sent) - static_cast<int64_t>(view->given());
  }
  MESSAGE("tunnelled " << sent << " bytes; bulwark holds " << held << " of them in a queued write");

  // The upstream closes while the write is queued. bulwark does not read its socket while a
  // write to the client is queued (backpressure), so it learns of the close only once the client
  // has taken the bytes; meanwhile other connections run through the same worker.
  upstream.shutdown_write();
  CHECK(drive_foreign_traffic(inbound) == 6);

  PatternVerifier verifier;
  verifier.feed(client->read_until_close());
  INFO("first foreign byte at tunnel offset " << verifier.first_mismatch().value_or(0));
  CHECK(verifier.ok());
  CHECK(verifier.received() == sent);
}

// ---------------------------------------------------------------------------------------------
// 4. A client half-closes after an upload whose write to the upstream is queued.

TEST_CASE(
    "buffer ownership: a client half-closing after an upload whose write upstream is queued") {
  // The upstream reads the request head and then nothing. The client sends its chunked body piece
  // by piece, each once bulwark has forwarded the previous one, until bulwark's socket to the
  // upstream is all but full; then the last piece with the final chunk, and a half-close.
  // Bulwark reads the last piece into the client's read buffer and cannot hand it all over, so
  // its write is queued, pointing into that buffer; the request is complete, so bulwark reads
  // on, sees the half-close and lets go of the buffer. Only then does the upstream read the body.
  SlowListener app;
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address()));
  const uint16_t inbound = bulwark.port("inbound");
  ClientConn client(inbound);
  REQUIRE(client.connected());
  ChunkedUpload upload(client, app, inbound);
  upload.fill();

  upload.send(chunk(pattern_string(upload.body, ChunkedUpload::kLast)) + chunk(""),
              ChunkedUpload::kLast);
  client.shutdown_write();
  // Bulwark read the last piece and the end of the stream (which counts one)...
  REQUIRE(eventually([&] {
    auto view = upload.from_client();
    return view && view->taken() == upload.client_sent + 1;
  }));
  // ...while its write of the last piece is still queued.
  const int64_t held = upload.held();
  MESSAGE("uploaded " << upload.body << " bytes; bulwark holds " << held << " of the last piece");
  REQUIRE(held > 0);
  CHECK(drive_foreign_traffic(inbound) == 6);

  PatternVerifier verifier;
  std::string unused;
  uint64_t received = 0;
  CHECK_MESSAGE(
      upload.upstream->read_chunked_body(unused, received, verifier.sink(), kDefaultTimeout),
      upload.upstream->last_error_text());
  INFO("first foreign byte at body offset " << verifier.first_mismatch().value_or(0));
  CHECK(verifier.ok());
  CHECK(verifier.received() == upload.body);
  // The client only closed its sending side: it still gets the answer.
  REQUIRE(upload.upstream->write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
}

TEST_CASE(
    "buffer ownership: upstream tunnel bytes sent while a write to a slow client is queued all "
    "reach it") {
  // After the 101 the upstream sends tunnel data piece by piece, each once bulwark has read the
  // previous one, until bulwark cannot hand a piece over to the client's socket (the client reads
  // nothing): that piece's write is queued. Two more pieces follow, then the upstream closes.
  // bulwark used to read on while the write was queued and drop what it read when the write
  // completed; now it stops reading (backpressure), and the client gets every byte.
  constexpr size_t kPiece = 4096;
  const std::string switching =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
  std::atomic<UpstreamConn*> tunnel{nullptr};
  Event upstream_ready;
  Gate test_over;
  TestUpstream app(
      [&](UpstreamConn& conn) {
        auto request = conn.read_request();
        if (!request || !iequals(request->get("upgrade"), "websocket")) return;
        if (!conn.write(switching)) return;
        tunnel = &conn;
        upstream_ready.set();
        test_over.pass(Millis{20000});  // the test drives this end of the tunnel meanwhile
      },
      "app");
  Gate::Opener open_at_end(test_over);
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address()));
  const uint16_t inbound = bulwark.port("inbound");

  auto client = connect_slow(inbound);
  REQUIRE(client->send(make_request("GET", "/ws",
                                    {{"Connection", "Upgrade"},
                                     {"Upgrade", "websocket"},
                                     {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                                     {"Sec-WebSocket-Version", "13"}})));
  auto switched = client->read_response_head();
  REQUIRE_MESSAGE(switched, client->last_error_text());
  REQUIRE(switched->status == 101);
  REQUIRE(upstream_ready.wait());
  UpstreamConn& upstream = *tunnel.load();

  auto from_upstream = [&] { return kernel_view(port_of(upstream.fd(), true), app.port(), true); };
  auto to_client = [&] { return kernel_view(inbound, client->local_port()); };
  const uint64_t head_to_client = switched->head.size();
  uint64_t sent = 0;
  int64_t held = 0;
  while (held <= 0) {
    REQUIRE_MESSAGE(sent < 16 * kMiB, "the path to the client never filled");
    REQUIRE(upstream.write(pattern_string(sent, kPiece)));
    sent += kPiece;
    REQUIRE(eventually([&] {
      auto view = from_upstream();
      return view && view->taken() == switching.size() + sent;
    }));
    auto view = settled(to_client);
    REQUIRE(view);
    held = static_cast<int64_t>(head_to_client + sent) - static_cast<int64_t>(view->given());
  }
  MESSAGE("tunnelled " << sent << " bytes; bulwark holds " << held << " of them in a queued write");

  // Two more pieces while the write is queued: bulwark leaves them in its socket for now.
  for (int i = 0; i < 2; ++i) {
    REQUIRE(upstream.write(pattern_string(sent, kPiece)));
    sent += kPiece;
  }
  upstream.shutdown_write();

  PatternVerifier verifier;
  verifier.feed(client->read_until_close());
  INFO("first foreign byte at tunnel offset " << verifier.first_mismatch().value_or(0));
  CHECK(verifier.ok());
  CHECK(verifier.received() == sent);
  // The upstream only half-closed: the tunnel ends when the client ends its side too.
  client->shutdown_write();
  CHECK(upstream.wait_peer_close());
}

// ---------------------------------------------------------------------------------------------
// 5. A final response added while a long interim response is still being written.

TEST_CASE(
    "buffer ownership: a final response that comes while a 1xx is still being written follows it, "
    "in step") {
  // Try 1 answers with interim responses (103 with a large Link header) that fill the path to a
  // client that does not read, then stalls; its per-try timeout retries on a second connection,
  // whose final response is queued behind the interim write still in flight. It must be sent
  // after it, and the pipelined request behind it must get its own answer.
  constexpr int kInterims = 8;
  const std::string interim =
      "HTTP/1.1 103 Early Hints\r\nLink: <" + std::string(60000, 'l') + ">\r\n\r\n";
  std::atomic<int> tries{0};
  Event final_answered;
  TestUpstream app(
      [&](UpstreamConn& conn) {
        while (auto request = conn.read_request(Millis{30000})) {
          if (request->target == "/hints" && ++tries == 1) {
            for (int i = 0; i < kInterims; ++i) {
              if (!conn.write(interim, Millis{30000})) return;
            }
            conn.wait_peer_close(Millis{30000});
            return;
          }
          if (!conn.write_response(200, request->method + " " + request->target + "\n")) return;
          if (request->target == "/hints") final_answered.set();
        }
      },
      "app");
  BulwarkProcess bulwark;
  bulwark.start(
      "workers: 1\n"
      "drain_delay: 0s\n"
      "admin: {address: 127.0.0.1:0}\n"
      "listeners:\n"
      "  - name: inbound\n"
      "    address: 127.0.0.1:0\n"
      "    routes:\n"
      "      - name: api\n"
      "        match: {prefix: /}\n"
      "        cluster: app\n"
      "        retry: {attempts: 2, per_try_timeout: 300ms, retry_on: [per-try-timeout]}\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [" +
      app.address() + "]\n");
  auto client = connect_slow(bulwark.port("inbound"));
  REQUIRE(client->send(make_request("GET", "/hints") + make_request("GET", "/second")));
  REQUIRE(final_answered.wait(Millis{10000}));
  // What bulwark had handed to the kernel for the client when the final response came.
  auto view = settled([&] { return kernel_view(bulwark.port("inbound"), client->local_port()); });
  REQUIRE(view);

  // The interim responses that were relayed (try 1 was cut short), then the final one.
  size_t interims = 0;
  std::optional<Response> response;
  while ((response = client->read_response(false, Millis{10000})) && response->status == 103) {
    CHECK(response->get("link").size() == 60002);
    ++interims;
  }
  REQUIRE_MESSAGE(response, client->last_error_text());
  CHECK(interims >= 2);
  // The final response came while interim bytes were still queued in bulwark: it was added
  // behind a write in flight.
  CHECK(view->given() < interims * 60000);
  CHECK(response->status == 200);
  CHECK(response->body == "GET /hints\n");
  auto second = client->read_response(false, Millis{10000});
  REQUIRE_MESSAGE(second, client->last_error_text());
  CHECK(second->body == "GET /second\n");
}

// ---------------------------------------------------------------------------------------------
// 6. A client resets its connection while its upload's write to the upstream is queued.

TEST_CASE("buffer ownership: a client resetting while its upload's write upstream is queued") {
  // As in 4, but the client sends the last piece without the final chunk and resets its
  // connection (RST). Whether bulwark sees the reset at once or only once the upstream drains
  // the queued write, the bytes the upstream gets must be the upload's own, and the upstream
  // connection must then be closed (the request can never be complete); meanwhile other
  // connections move foreign bytes through the worker's read buffers.
  SlowListener app;
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address()));
  const uint16_t inbound = bulwark.port("inbound");
  ClientConn client(inbound);
  REQUIRE(client.connected());
  ChunkedUpload upload(client, app, inbound);
  upload.fill();
  const uint64_t before_last = upload.body;
  upload.send(chunk(pattern_string(upload.body, ChunkedUpload::kLast)), ChunkedUpload::kLast);
  REQUIRE(eventually([&] {
    auto view = upload.from_client();
    return view && view->taken() == upload.client_sent;
  }));
  const int64_t held = upload.held();
  MESSAGE("uploaded " << upload.body << " bytes; bulwark holds " << held << " of the last piece");
  REQUIRE(held > 0);
  client.close(true);
  CHECK(drive_foreign_traffic(inbound) == 6);

  PatternVerifier verifier;
  std::string unused;
  uint64_t received = 0;
  CHECK_FALSE(
      upload.upstream->read_chunked_body(unused, received, verifier.sink(), kDefaultTimeout));
  const ReadError end = upload.upstream->last_error();
  CHECK_MESSAGE((end == ReadError::kClosed || end == ReadError::kReset),
                upload.upstream->last_error_text());
  INFO("first foreign byte at body offset " << verifier.first_mismatch().value_or(0));
  CHECK(verifier.ok());
  CHECK(verifier.received() >= before_last);
  CHECK(verifier.received() <= upload.body);
  // The worker goes on serving.
  CHECK(drive_foreign_traffic(inbound, 1) == 2);
}

// ---------------------------------------------------------------------------------------------
// 7. A head whose first part fills a read buffer exactly.

// A head's first part, exactly `size` bytes long (the read buffer's size), and what ends it.
// The parser has taken all of the first part, but the head's spans still point into it.
struct SplitHead {
  std::string first, rest, pad;
};
SplitHead split_head(const std::string& start, size_t size, const std::string& end) {
  const std::string prefix = start + "X-Pad: ";
  const std::string suffix = "\r\n";
  SplitHead h;
  h.pad = std::string(size - prefix.size() - suffix.size(), 'p');
  h.first = prefix + h.pad + suffix;
  h.rest = end;
  REQUIRE(h.first.size() == size);
  return h;
}

constexpr size_t kReadBuffer = 16 * 1024;  // a block of the worker's BufferPool

// A request head whose first part is `size` bytes, the rest sent once bulwark has read that
// part and other clients' bytes have gone through the worker's buffers.
void check_split_request_head(size_t size) {
  CAPTURE(size);
  std::mutex mutex;
  std::vector<Request> seen;
  TestUpstream app(
      [&](UpstreamConn& conn) {
        while (auto request = conn.read_request()) {
          {
            std::lock_guard<std::mutex> lock(mutex);
            seen.push_back(*request);
          }
          if (!conn.write_response(200, "ok\n")) return;
        }
      },
      "app");
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address()));
  const uint16_t inbound = bulwark.port("inbound");

  const std::string target = "/" + std::string(300, 'a');
  const SplitHead head =
      split_head("GET " + target + " HTTP/1.1\r\nHost: x\r\n", size, "X-Last: 1\r\n\r\n");
  ClientConn client(inbound);
  REQUIRE(client.connected());
  REQUIRE(client.send(head.first));
  REQUIRE(eventually([&] {
    auto view = kernel_view(inbound, port_of(client.fd(), false));
    return view && view->taken() == head.first.size();
  }));
  // Other clients' bytes through the worker's buffers, a header of theirs to look for.
  CHECK(drive_foreign_traffic(inbound) == 6);
  auto victim = http_request(inbound, "GET", "/victim", {{"Authorization", "Bearer SECRET"}});
  REQUIRE(victim);
  CHECK(victim->status == 200);
  REQUIRE(client.send(head.rest));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);

  std::lock_guard<std::mutex> lock(mutex);
  REQUIRE(seen.size() == 2);
  const Request& split = seen[0].target == target ? seen[0] : seen[1];
  CHECK(split.target == target);
  CHECK(split.get("x-pad") == head.pad);
  CHECK(split.get("x-last") == "1");
  CHECK(split.get("authorization").empty());
  CHECK(split.head.find("SECRET") == std::string::npos);
}

TEST_CASE(
    "buffer ownership: a request head whose first part fills the read buffer keeps its bytes") {
  // The client sends the first 16 KiB of a head and stops. bulwark reads them (the buffer is
  // full, all of it parsed, the head unfinished), finds nothing more to read, and must keep the
  // buffer: it once gave it back to the pool there, the rest of the head landed in a block other
  // connections had used, and the head's spans pointed at their bytes (another client's headers
  // inside this request line, or a crash reading past a block).
  // At the first block's end, and at the end of the doubled buffer the head then moves to.
  check_split_request_head(kReadBuffer);
  check_split_request_head(2 * kReadBuffer);
}

TEST_CASE(
    "buffer ownership: a response head whose first part fills the read buffer keeps its bytes") {
  // The same on the upstream side: the upstream sends the first 16 KiB of its response head,
  // waits until bulwark has read them and other connections have used the worker's buffers,
  // then sends the rest.
  const SplitHead head =
      split_head("HTTP/1.1 200 OK\r\n", kReadBuffer, "Content-Length: 3\r\n\r\nok\n");
  std::atomic<UpstreamConn*> upstream{nullptr};
  Event first_sent;
  Gate send_rest;
  TestUpstream app(
      [&](UpstreamConn& conn) {
        if (!conn.read_request() || !conn.write(head.first)) return;
        upstream = &conn;
        first_sent.set();
        if (!send_rest.pass(Millis{20000})) return;
        conn.write(head.rest);
        conn.wait_peer_close(Millis{5000});
      },
      "app");
  Gate::Opener open_at_end(send_rest);
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address()));
  const uint16_t inbound = bulwark.port("inbound");

  ClientConn client(inbound);
  REQUIRE(client.connected());
  REQUIRE(client.send(make_request("GET", "/split")));
  REQUIRE(first_sent.wait());
  REQUIRE(eventually([&] {
    auto view = kernel_view(port_of(upstream.load()->fd(), true), app.port(), true);
    return view && view->taken() == head.first.size();
  }));
  CHECK(drive_foreign_traffic(inbound) == 6);
  send_rest.open();
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->get("x-pad") == head.pad);
  CHECK(response->body == "ok\n");
}

// ---------------------------------------------------------------------------------------------
// 8. A request body while its request waits for an upstream connection.

TEST_CASE("buffer ownership: a body arriving while its request waits is held back, not buffered") {
  // The route delays every request (fault injection); meanwhile the client uploads as fast as
  // the sockets take it. bulwark reads only a bounded part of the body (64 KiB unsent, plus one
  // read) and leaves the rest in the kernel: one client once made it hold gigabytes this way
  // (every read was kept, as no write was in flight). After the delay, all of it goes through.
  constexpr uint64_t kBody = 8 * kMiB;
  PatternVerifier verifier;
  TestUpstream app(
      [&](UpstreamConn& conn) {
        auto request = conn.read_request(Millis{20000}, verifier.sink());
        if (!request) return;
        conn.write_response(200, std::to_string(request->body_size) + "\n");
      },
      "app");
  TestUpstream other(serve_foreign, "other");
  BulwarkProcess bulwark;
  bulwark.start(two_cluster_config(app.address(), other.address(),
                                   "fault: {delay: {percent: 100, duration: 1s}}\n"));
  const uint16_t inbound = bulwark.port("inbound");
  ClientConn client(inbound);
  REQUIRE(client.connected());
  const std::string head =
      make_request("POST", "/upload", {{"Content-Length", std::to_string(kBody)}});
  REQUIRE(client.send(head));
  // As much as the sockets take, without blocking.
  const std::string body = pattern_string(0, kBody);
  size_t sent = 0;
  while (sent < body.size()) {
    ssize_t n = ::send(client.fd(), body.data() + sent, body.size() - sent, MSG_DONTWAIT);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  auto view = settled([&] { return kernel_view(inbound, port_of(client.fd(), false)); });
  REQUIRE(view);
  MESSAGE("the client got " << sent << " bytes into the sockets; bulwark took "
                            << view->taken() - head.size() << " of them");
  CHECK(sent > 512 * 1024);
  CHECK(view->taken() <= head.size() + 64 * 1024 + kReadBuffer);
  REQUIRE(client.send(std::string_view(body).substr(sent)));
  auto response = client.read_response(false, Millis{20000});
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == std::to_string(kBody) + "\n");
  CHECK(verifier.ok());
}

}  // namespace
}  // namespace bulwark::test
