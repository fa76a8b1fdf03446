// How a client connection ends (issue 12, from the hostile review): a client that half-closes
// after pipelining is answered for every complete request it sent; a connection closed while the
// client may still be sending lingers, so the client reads its response instead of a reset; and
// empty lines before a request line neither stop the reader nor turn an idle connection into a
// half-read request.

#include <doctest/doctest.h>

#include "tests/integration/proxy_fixture.h"

namespace bulwark::test {
namespace {

using Clock = std::chrono::steady_clock;

// Answers every request with "METHOD TARGET\n", on one keep-alive connection.
TestUpstream::Handler echo_target() {
  return [](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (!conn.write_response(200, request->method + " " + request->target + "\n")) return;
    }
  };
}

// Every request answered 503 fault_abort by bulwark itself, before its body is read.
ProxyOptions abort_everything() {
  ProxyOptions options;
  options.route = "fault: {abort: {percent: 100, status: 503}}";
  return options;
}

// Nothing comes for `quiet` (no 408, no close), and then the connection still serves a request.
void check_idle_and_serving(ClientConn& client, Millis quiet) {
  auto nothing = client.read_response(false, quiet);
  CHECK_FALSE(nothing);
  CHECK(client.last_error() == ReadError::kTimeout);
  REQUIRE(client.send(make_request("GET", "/next")));
  auto next = client.read_response();
  REQUIRE_MESSAGE(next, client.last_error_text());
  CHECK(next->body == "GET /next\n");
}

TEST_CASE(
    "connection end: a client that half-closes after pipelining gets every answer, then the "
    "close") {
  ProxyFixture proxy(echo_target());
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  REQUIRE(client.send(make_request("GET", "/one") + make_request("GET", "/two") +
                      make_request("GET", "/three")));
  client.shutdown_write();
  for (const char* target : {"/one", "/two"}) {
    auto response = client.read_response();
    REQUIRE_MESSAGE(response, client.last_error_text());
    CHECK(response->body == std::string("GET ") + target + "\n");
    CHECK(response->get("connection") != "close");
  }
  auto last = client.read_response();
  REQUIRE_MESSAGE(last, client.last_error_text());
  CHECK(last->body == "GET /three\n");
  CHECK(last->get("connection") == "close");
  CHECK(client.is_closed(Millis{2000}));
}

TEST_CASE(
    "connection end: a half-close in the middle of a pipelined request closes after the complete "
    "one") {
  ProxyOptions options;
  options.listener = "request_headers_timeout: 20s";
  ProxyFixture proxy(echo_target(), options);
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  REQUIRE(client.send(make_request("GET", "/whole") + "GET /cut HTTP/1.1\r\nHo"));
  client.shutdown_write();
  auto started = Clock::now();
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->body == "GET /whole\n");
  // The unfinished request can never end: no wait for the headers timeout.
  CHECK(client.is_closed(Millis{5000}));
  CHECK(Clock::now() - started < Millis{5000});
}

TEST_CASE(
    "connection end: a client still uploading when it is answered can finish sending, then reads "
    "the answer") {
  // Every request is aborted with 503 before its body is read. An uploading client writes its
  // whole body before it reads anything (curl, most HTTP libraries). Closing with the body unread
  // makes the kernel answer the bytes that follow with a reset: the client's next write fails with
  // "connection reset" and it never reads the 503. Lingering (shut down writing, read and drop,
  // then close) lets the upload end and the answer be read.
  ProxyFixture proxy(echo_target(), abort_everything());
  const std::string piece(16 * 1024, 'b');
  const size_t pieces = 64;  // 1 MiB
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  REQUIRE(client.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: " +
                      std::to_string(piece.size() * pieces) + "\r\n\r\n"));
  for (size_t i = 0; i < pieces; ++i) {
    CAPTURE(i);
    REQUIRE_MESSAGE(client.send(piece), client.last_error_text());
  }
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  check_local_reply(response, 503, "fault_abort");
  CHECK(response->get("connection") == "close");
  CHECK(client.is_closed(Millis{5000}));
}

TEST_CASE(
    "connection end: a client that never stops sending after its answer is closed after the "
    "linger") {
  ProxyFixture proxy(echo_target(), abort_everything());
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  REQUIRE(client.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n"));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 503);
  // Keep sending: bulwark drops the bytes, then closes within its linger time (2 s).
  auto started = Clock::now();
  const std::string piece(4096, 'x');
  bool write_failed = false;
  while (Clock::now() - started < Millis{8000}) {
    if (!client.send(piece, Millis{1000})) {
      write_failed = true;
      break;
    }
  }
  CHECK(write_failed);
  CHECK(Clock::now() - started < Millis{6000});
}

TEST_CASE(
    "connection end: empty lines before a request line do not fill the buffer and stop the "
    "reader") {
  ProxyFixture proxy(echo_target());
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  std::string empty_lines;
  for (int i = 0; i < 40 * 1024; ++i) empty_lines += "\r\n";  // 80 KiB: several read buffers
  REQUIRE(client.send(empty_lines));
  REQUIRE(client.send(make_request("GET", "/after-empty-lines")));
  auto response = client.read_response(false, Millis{5000});
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == "GET /after-empty-lines\n");
}

TEST_CASE("connection end: a CRLF after a request body leaves the connection idle, not half-read") {
  // Some clients add CRLF after a POST body (RFC 9112 2.2). Taken for the start of a request
  // head, it would end the idle keep-alive connection with 408 after request_headers_timeout.
  ProxyOptions options;
  options.listener = "request_headers_timeout: 300ms";
  ProxyFixture proxy(echo_target(), options);
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  REQUIRE(client.send(make_request("POST", "/form", {}, "a=1") + "\r\n"));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->body == "POST /form\n");
  check_idle_and_serving(client, Millis{900});  // three header timeouts
}

TEST_CASE(
    "connection end: a lone CRLF on an idle connection keeps it idle, without extending its idle "
    "time") {
  // A CRLF sent on its own after an exchange is not the start of a request: no 408 after
  // request_headers_timeout. Nor does it count as activity: a client sending empty lines is
  // closed when the idle timeout runs out, counted from the end of its last exchange.
  ProxyOptions options;
  options.listener = "request_headers_timeout: 200ms\nidle_timeout: 1500ms";
  ProxyFixture proxy(echo_target(), options);
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  REQUIRE(client.send(make_request("GET", "/first")));
  auto first = client.read_response();
  REQUIRE_MESSAGE(first, client.last_error_text());
  REQUIRE(client.send("\r\n"));
  check_idle_and_serving(client, Millis{600});  // three header timeouts

  // Now only empty lines, every 200 ms: the connection closes 1.5 s after /next was answered.
  auto idle_since = Clock::now();
  bool closed = false;
  while (Clock::now() - idle_since < Millis{5000}) {
    if (!client.send("\r\n") || client.is_closed(Millis{200})) {
      closed = true;
      break;
    }
  }
  CHECK(closed);
  CHECK(Clock::now() - idle_since >= Millis{1300});  // not a request_headers_timeout
  CHECK(Clock::now() - idle_since < Millis{3000});
}

TEST_CASE(
    "connection end: a client that resets with a pipelined body unread does not take bulwark "
    "down") {
  // The GET's answer comes after the client reset; its pipelined POST filled bulwark's read
  // buffer, so bulwark had stopped reading and learns of the reset only from the failed write of
  // that answer. That failure closed the connection under the response code, which went on to
  // the pipelined POST and connected upstream for a connection already freed: SIGSEGV.
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (request->target == "/slow") conn.pause(Millis{50});
      if (!conn.write_response(200, "ok")) return;
    }
  };
  ProxyFixture proxy(handler);
  for (int round = 0; round < 5; ++round) {
    CAPTURE(round);
    ClientConn client(proxy.port());
    REQUIRE(client.connected());
    REQUIRE(client.send(make_request("GET", "/slow") +
                        "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n" +
                        std::string(70000, 'q')));
    client.close(true);  // a reset, before the answer comes
    // The answer's write fails; bulwark lives on and serves.
    auto after = http_get(proxy.port(), "/after");
    REQUIRE(after);
    CHECK(after->status == 200);
  }
  CHECK_FALSE(proxy.bulwark.wait_exit(Millis{200}));
}

}  // namespace
}  // namespace bulwark::test
