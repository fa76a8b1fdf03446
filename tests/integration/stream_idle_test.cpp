// stream_idle_timeout (issue 12 item 6): every state of an exchange has a timer. A client that
// stalls its body, an upstream that stalls before or after its response head, and a client that
// stops reading a response all end after the listener's stream_idle_timeout, even with the route
// timeout off, and the upstream connection they held is closed.

#include <doctest/doctest.h>

#include "tests/integration/proxy_fixture.h"

namespace bulwark::test {
namespace {

using Clock = std::chrono::steady_clock;

// Route timeout off: only the stream idle timeout can end these exchanges.
ProxyOptions idle_options() {
  ProxyOptions options;
  options.listener = "stream_idle_timeout: 300ms";
  options.route = "timeout: 0s";
  options.workers = 1;
  return options;
}

TEST_CASE("stream idle: a client that stalls its request body gets 408 stream_idle_timeout") {
  Event upstream_saw_close;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (conn.read_request_head() && conn.wait_peer_close(Millis{10000})) upstream_saw_close.set();
  };
  ProxyFixture proxy(handler, idle_options());
  ClientConn client(proxy.port());
  REQUIRE(client.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"));
  auto started = Clock::now();
  auto response = client.read_response(false, Millis{5000});
  REQUIRE(response);
  CHECK(response->status == 408);
  CHECK(response->get("x-bulwark-reason") == "stream_idle_timeout");
  CHECK(Clock::now() - started >= Millis{250});
  CHECK(client.is_closed(Millis{2000}));
  CHECK(upstream_saw_close.wait(Millis{2000}));
}

TEST_CASE(
    "stream idle: an upstream that never answers gets 504 stream_idle_timeout with no route "
    "timeout") {
  Event upstream_saw_close;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (conn.read_request() && conn.wait_peer_close(Millis{10000})) upstream_saw_close.set();
  };
  ProxyFixture proxy(handler, idle_options());
  auto response = http_get(proxy.port(), "/never");
  REQUIRE(response);
  CHECK(response->status == 504);
  CHECK(response->get("x-bulwark-reason") == "stream_idle_timeout");
  CHECK(upstream_saw_close.wait(Millis{2000}));
}

TEST_CASE("stream idle: a response that stalls midway is cut, not left open") {
  Event upstream_saw_close;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    conn.write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + pattern_string(0, 1000));
    if (conn.wait_peer_close(Millis{10000})) upstream_saw_close.set();
  };
  ProxyFixture proxy(handler, idle_options());
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/stall")));
  auto response = client.read_response(false, Millis{5000});
  CHECK_FALSE(response);
  CHECK((client.last_error() == ReadError::kClosed || client.last_error() == ReadError::kReset));
  CHECK(client.partial().status == 200);
  CHECK(upstream_saw_close.wait(Millis{2000}));
}

TEST_CASE("stream idle: a client that stops reading frees the upstream connection") {
  // The response is far larger than the socket buffers, so bulwark's write to the client stays
  // pending while the client reads nothing. Without a timer that write, and the upstream
  // connection behind it, would be held for ever.
  Event upstream_saw_close;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    const uint64_t size = 64ull << 20;
    conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n");
    conn.write_pattern(0, size, Millis{10000});  // fails once bulwark closes the connection
    if (conn.wait_peer_close(Millis{10000})) upstream_saw_close.set();
  };
  ProxyFixture proxy(handler, idle_options());
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/big")));
  // Read nothing; bulwark must give up on this client and let the upstream go.
  CHECK(upstream_saw_close.wait(Millis{5000}));
  CHECK(client.is_closed(Millis{5000}));
}

TEST_CASE("stream idle: an exchange that keeps moving is not cut however long it takes") {
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    conn.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    for (char c : std::string("hello")) {
      conn.pause(Millis{150});  // each gap under the 300 ms idle timeout, 750 ms in all
      conn.write(std::string(1, c));
    }
    conn.wait_peer_close(Millis{5000});
  };
  ProxyFixture proxy(handler, idle_options());
  auto response = http_get(proxy.port(), "/slow");
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->body == "hello");
}

}  // namespace
}  // namespace bulwark::test

namespace bulwark::test {
namespace {

TEST_CASE(
    "a client that stalls its body past the route timeout gets 408 and the upstream is not "
    "blamed") {
  // Six stalled uploads would open a circuit breaker that counted them as upstream failures.
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    while (auto request = conn.read_request_head()) {
      if (!conn.wait_peer_close(Millis{10000})) return;
    }
  };
  ProxyOptions options;
  options.route = "timeout: 300ms\nretry: {attempts: 1}";
  options.cluster =
      "circuit_breaker: {failure_rate_percent: 50, window: 30s, minimum_calls: 5, open_duration: "
      "30s}";
  ProxyFixture proxy(handler, options);
  for (int i = 0; i < 6; ++i) {
    ClientConn client(proxy.port());
    REQUIRE(
        client.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nonly-a-few"));
    auto response = client.read_response(false, Millis{5000});
    REQUIRE(response);
    CHECK(response->status == 408);
    CHECK(response->get("x-bulwark-reason") == "request_timeout");
  }
  auto opened = scrape_metric(proxy.bulwark, "bulwark_circuit_transitions_total",
                              {{"cluster", "app"}, {"to", "open"}});
  CHECK(opened.value_or(0) == 0);
}

TEST_CASE("a chunked request with large trailers is forwarded, not stalled") {
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (!conn.write_response(200, request->body)) return;
    }
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(
      client.send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\n0\r\nX-Trailer: " +
                  std::string(40000, 'v') + "\r\n\r\n"));
  auto response = client.read_response(false, Millis{5000});
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == "hello");
}

}  // namespace
}  // namespace bulwark::test
