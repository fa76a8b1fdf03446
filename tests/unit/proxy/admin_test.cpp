// The admin listener's connections (admin.h): requests answered one at a time and in order,
// keep-alive, HEAD, refusals, and the timers that close a client that says nothing.

#include "proxy/admin.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tests/unit/proxy/test_loop.h"

namespace bulwark {
namespace {

// Long enough never to fire in a test that is not about it.
constexpr uint64_t kNever = 600'000;

// An admin server on 127.0.0.1:0. Its handler answers "METHOD /path?query" at once, or keeps the
// answer for the test to give when `defer` says so.
struct Admin {
  explicit Admin(AdminLimits limits = {kNever, kNever}) {
    server = std::make_unique<AdminServer>(
        &loop.loop,
        [this](const AdminRequest& r, std::function<void(AdminResponse)> respond) {
          requests.push_back(r.method + " " + r.path + r.query);
          from_browser.push_back(r.from_browser);
          AdminResponse resp{200, "text/plain; charset=utf-8", r.method + " " + r.path + r.query};
          if (defer && defer(r)) {
            kept.push_back([respond, resp] { respond(resp); });
          } else {
            respond(resp);
          }
        },
        limits);
    std::string bound;
    REQUIRE(server->listen({"127.0.0.1", 0, true}, &bound) == 0);
    port = static_cast<uint16_t>(std::stoi(bound.substr(bound.rfind(':') + 1)));
  }
  ~Admin() {
    server->close();
    uv_run(&loop.loop, UV_RUN_DEFAULT);
  }

  testing::Loop loop;
  std::unique_ptr<AdminServer> server;
  uint16_t port = 0;
  std::vector<std::string> requests;               // as the handler saw them
  std::vector<bool> from_browser;                  // AdminRequest::from_browser of each
  std::function<bool(const AdminRequest&)> defer;  // true: keep the answer in `kept`
  std::vector<std::function<void()>> kept;         // answers not given yet
};

// A client socket. It connects at once (the kernel completes the handshake from the listener's
// backlog); what it receives is read, without blocking, as the loop runs.
struct Client {
  explicit Client(uint16_t port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~Client() {
    if (fd >= 0) ::close(fd);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void send(const std::string& bytes) {
    REQUIRE(::send(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  }
  // Reads what has arrived; true once the server closed the connection.
  bool closed() {
    char buf[65536];
    while (!eof) {
      ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        received.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        eof = true;
      } else {
        break;
      }
    }
    return eof;
  }
  // Reads what has arrived; true once `count` responses did.
  bool has_responses(size_t count) {
    closed();
    return responses() >= count;
  }
  size_t responses() const {
    size_t n = 0;
    for (size_t at = received.find("HTTP/1.1 "); at != std::string::npos;
         at = received.find("HTTP/1.1 ", at + 1)) {
      ++n;
    }
    return n;
  }
  void hang_up() {
    ::close(fd);
    fd = -1;
  }

  int fd = -1;
  std::string received;
  bool eof = false;
};

std::string response(int status, const std::string& reason, const std::string& body,
                     bool close = false, bool head = false) {
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                  "\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: " +
                  std::to_string(body.size()) + "\r\ncache-control: no-store\r\n";
  if (close) r += "connection: close\r\n";
  r += "\r\n";
  if (!head) r += body;
  return r;
}

TEST_CASE("admin: pipelined requests are answered in order, HEAD without a body, kept alive") {
  Admin admin;
  Client client(admin.port);
  client.send(
      "GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
      "HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
      "GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return client.has_responses(3); });
  CHECK(client.received == response(200, "OK", "GET /a?x=1") +
                               response(200, "OK", "HEAD /b", false, true) +
                               response(200, "OK", "GET /c"));
  CHECK(admin.requests == std::vector<std::string>{"GET /a?x=1", "HEAD /b", "GET /c"});
  // The connection stays for the next request, sent in pieces.
  client.send("GET /d HT");
  client.send("TP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return client.has_responses(4); });
  CHECK_FALSE(client.eof);
  CHECK(admin.server->connections() == 1);
}

TEST_CASE("admin: a request waits, unparsed, until the handler answered the one before it") {
  Admin admin;
  admin.defer = [](const AdminRequest& r) { return r.path == "/slow"; };
  Client client(admin.port);
  client.send(
      "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"
      "GET /fast HTTP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return admin.kept.size() == 1; });
  for (int i = 0; i < 5; ++i) uv_run(&admin.loop.loop, UV_RUN_NOWAIT);
  CHECK(admin.requests == std::vector<std::string>{"GET /slow"});
  client.closed();
  CHECK(client.received.empty());
  admin.kept[0]();
  admin.loop.run_until([&] { return client.has_responses(2); });
  CHECK(client.received == response(200, "OK", "GET /slow") + response(200, "OK", "GET /fast"));
}

TEST_CASE("admin: Connection: close is answered, then the connection closes") {
  Admin admin;
  Client client(admin.port);
  client.send(
      "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
      "GET /never HTTP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return client.closed(); });
  CHECK(client.received == response(200, "OK", "GET /a", true));
  CHECK(admin.requests == std::vector<std::string>{"GET /a"});
}

TEST_CASE("admin: a malformed request gets 400, then the connection closes") {
  Admin admin;
  Client client(admin.port);
  client.send("GET /a HTTP/1.1\r\nHost h\r\n\r\n");
  admin.loop.run_until([&] { return client.closed(); });
  CHECK(client.received == response(400, "Bad Request", "bad request\n", true));
  CHECK(admin.requests.empty());
  CHECK(admin.server->connections() == 0);
}

TEST_CASE("admin: the 400 after a HEAD request has its body: HEAD was the request before") {
  Admin admin;
  Client client(admin.port);
  client.send(
      "HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n"
      "GET /b HTTP/1.1\r\nHost h\r\n\r\n");
  admin.loop.run_until([&] { return client.closed(); });
  CHECK(client.received == response(200, "OK", "HEAD /a", false, true) +
                               response(400, "Bad Request", "bad request\n", true));
}

TEST_CASE("admin: a head over the size limit gets 400, a request filling the buffer 431") {
  Admin admin;
  SUBCASE("a complete head over the limit") {
    Client client(admin.port);
    client.send("GET /a HTTP/1.1\r\nX: " + std::string(16300, 'a') + "\r\n\r\n");
    admin.loop.run_until([&] { return client.closed(); });
    CHECK(client.received == response(400, "Bad Request", "bad request\n", true));
  }
  SUBCASE("an unfinished head as large as the buffer") {
    Client client(admin.port);
    const std::string start = "GET /a HTTP/1.1\r\nX: ";
    client.send(start + std::string(16 * 1024 - start.size(), 'a'));
    admin.loop.run_until([&] { return client.closed(); });
    CHECK(client.received ==
          response(431, "Request Header Fields Too Large", "request too large\n", true));
  }
  CHECK(admin.requests.empty());
}

TEST_CASE("admin: a client that sends nothing is closed after the idle timeout") {
  Admin admin({/*idle_ms=*/30, /*request_ms=*/kNever});
  Client client(admin.port);
  admin.loop.run_until([&] { return client.closed(); });
  CHECK(client.received.empty());
  CHECK(admin.server->connections() == 0);
}

TEST_CASE("admin: a client that sends half a request is closed after the request timeout") {
  Admin admin({/*idle_ms=*/kNever, /*request_ms=*/30});
  Client client(admin.port);
  client.send("GET /a HTTP/1.1\r\nHo");
  admin.loop.run_until([&] { return client.closed(); });
  CHECK(client.received.empty());
  CHECK(admin.requests.empty());
  CHECK(admin.server->connections() == 0);
}

TEST_CASE("admin: a kept-alive connection with no next request is closed after the idle timeout") {
  Admin admin({/*idle_ms=*/30, /*request_ms=*/kNever});
  Client client(admin.port);
  client.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return client.closed(); });
  CHECK(client.received == response(200, "OK", "GET /a"));
}

TEST_CASE("admin: a client that leaves while the handler works is closed after the answer") {
  Admin admin;
  admin.defer = [](const AdminRequest&) { return true; };
  Client client(admin.port);
  client.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return admin.kept.size() == 1; });
  client.hang_up();
  admin.kept[0]();
  admin.loop.run_until([&] { return admin.server->connections() == 0; });
}

TEST_CASE("admin: an answer given after its connection closed is dropped") {
  Admin admin;
  admin.defer = [](const AdminRequest&) { return true; };
  Client client(admin.port);
  client.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return admin.kept.size() == 1; });
  admin.server->close();
  CHECK(admin.server->connections() == 0);
  admin.kept[0]();  // nothing to answer on: no write, no crash
  admin.loop.run_until([&] { return client.closed(); });
  CHECK(client.received.empty());
}

TEST_CASE("admin: close() closes every client connection") {
  Admin admin;
  Client a(admin.port), b(admin.port);
  a.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return a.has_responses(1) && admin.server->connections() == 2; });
  admin.server->close();
  admin.loop.run_until([&] { return a.closed() && b.closed(); });
  CHECK(admin.server->connections() == 0);
}

TEST_CASE("admin: at the connection limit a new client waits in the backlog until one leaves") {
  AdminLimits limits{kNever, kNever};
  limits.max_connections = 2;
  Admin admin(limits);
  // All three are connected (in the kernel's backlog) before the loop first runs.
  Client a(admin.port), b(admin.port), c(admin.port);
  a.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
  b.send("GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  c.send("GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
  admin.loop.run_until([&] { return a.has_responses(1) && b.has_responses(1); });
  CHECK(admin.server->connections() == 2);
  CHECK(c.responses() == 0);
  CHECK_FALSE(c.closed());
  a.hang_up();
  admin.loop.run_until([&] { return c.has_responses(1); });
  CHECK(c.received == response(200, "OK", "GET /c"));
  CHECK(admin.requests.size() == 3);
}

TEST_CASE("admin: a request with Origin or Sec-Fetch-Site is marked as a browser's") {
  Admin admin;
  Client client(admin.port);
  client.send(
      "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: h\r\nOrigin: https://evil.example\r\n"
      "Content-Length: 0\r\n\r\n"
      "POST /c HTTP/1.1\r\nHost: h\r\nSec-Fetch-Site: cross-site\r\n"
      "Content-Length: 0\r\n\r\n");
  admin.loop.run_until([&] { return client.has_responses(3); });
  CHECK(admin.from_browser == std::vector<bool>{false, true, true});
}

}  // namespace
}  // namespace bulwark
