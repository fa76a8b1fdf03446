// Errors the client sees: malformed requests, limits and timeouts on the client side, and every
// way an upstream can fail. Each local reply names its reason in x-bulwark-reason.

#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

TEST_CASE("malformed requests get 400 bad_request and the connection is closed") {
  ProxyFixture proxy;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bad request line", "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n"},
      {"bad version", "GET / HTTX/1.1\r\nHost: x\r\n\r\n"},
      // (A TLS record, which starts with 0x16, gets tls_on_plaintext_port: tls tests.)
      {"binary junk", std::string("\x17\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n", 12)},
      {"space in header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n"},
      {"header without colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"},
      {"Content-Length and Transfer-Encoding",
       "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n"},
      {"differing Content-Length",
       "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
      {"bad chunk size",
       "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"},
      {"obs-fold continuation", "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n"},
      {"negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"},
  };
  for (const auto& test_case : cases) {
    // Not a structured binding: CAPTURE refers to it from a lambda, which clang before 16 refuses.
    const std::string& what = test_case.first;
    const std::string& raw = test_case.second;
    CAPTURE(what);
    ClientConn client(proxy.port());
    REQUIRE(client.connected());
    REQUIRE(client.send(raw));
    auto response = client.read_response();
    check_local_reply(response, 400, "bad_request");
    CHECK(client.is_closed(Millis{2000}));
  }
  // None of the requests whose head was bad may have reached the upstream. (The bad chunk size
  // is in the body, after a head the proxy may already have forwarded.)
  CHECK(proxy.upstream.requests() <= 1);
}

TEST_CASE("request headers larger than max_request_headers_size get 431 headers_too_large") {
  ProxyOptions options;
  options.listener = "max_request_headers_size: 4KiB";
  ProxyFixture proxy({}, options);
  auto small = http_get(proxy.port(), "/", {{"X-Small", std::string(1000, 'a')}});
  REQUIRE(small);
  CHECK(small->status == 200);

  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/", {{"X-Big", std::string(8000, 'a')}})));
  check_local_reply(client.read_response(), 431, "headers_too_large");
  CHECK(proxy.upstream.requests() == 1);
}

TEST_CASE("a client that stops sending its headers gets 408 and a closed connection") {
  ProxyOptions options;
  options.listener = "request_headers_timeout: 300ms";
  ProxyFixture proxy({}, options);
  ClientConn client(proxy.port());
  auto started = Clock::now();
  REQUIRE(client.send("GET /slowloris HTTP/1.1\r\nHost: localhost\r\nX-Slow: a"));
  auto response = client.read_response(false, Millis{5000});
  auto elapsed = Clock::now() - started;
  check_local_reply(response, 408, "request_headers_timeout");
  CHECK(elapsed >= Millis{250});
  CHECK(elapsed < Millis{3000});
  CHECK(client.is_closed());
  CHECK(proxy.upstream.requests() == 0);
}

TEST_CASE("an upstream that refuses connections gets 503 upstream_connect_failure") {
  RefusingPort refused;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(refused.address()));
  check_local_reply(http_get(bulwark.port("inbound"), "/"), 503, "upstream_connect_failure");
}

TEST_CASE("a cluster whose endpoint name does not resolve gets 503 no_endpoints") {
  BulwarkProcess bulwark;
  bulwark.start(proxy_config("no-such-host.invalid:80"));
  check_local_reply(http_get(bulwark.port("inbound"), "/"), 503, "no_endpoints");
}

TEST_CASE("a cluster endpoint given by DNS name is resolved without blocking and serves") {
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config("localhost:" + std::to_string(upstream.port())));
  // Resolution runs in the background after start: wait until /clusters shows the address.
  REQUIRE(eventually([&] {
    auto clusters = http_get(bulwark.admin_port(), "/clusters");
    return clusters &&
           clusters->body.find("127.0.0.1:" + std::to_string(upstream.port())) != std::string::npos;
  }));
  // Where localhost also resolves to ::1 (on which the upstream does not listen), round robin
  // sends every other request there; one of two requests reaches the upstream either way.
  int ok = 0;
  for (int i = 0; i < 2; ++i) {
    auto response = http_get(bulwark.port("inbound"), "/by-name");
    REQUIRE(response);
    if (response->status == 200) ++ok;
  }
  CHECK(ok >= 1);
  CHECK(upstream.requests() == static_cast<size_t>(ok));
}

TEST_CASE("an upstream that closes or resets without answering gets 502 upstream_reset") {
  bool reset = false;
  SUBCASE("close") { reset = false; }
  SUBCASE("reset") { reset = true; }
  CAPTURE(reset);
  TestUpstream::Handler handler = [reset](UpstreamConn& conn) {
    if (conn.read_request()) conn.close(reset);
  };
  ProxyFixture proxy(handler);
  check_local_reply(http_get(proxy.port(), "/"), 502, "upstream_reset");
}

TEST_CASE("a malformed upstream response gets 502 upstream_protocol_error") {
  std::string garbage;
  SUBCASE("not HTTP") { garbage = "SSH-2.0-OpenSSH_9.2\r\n\r\n"; }
  SUBCASE("bad status code") { garbage = "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"; }
  SUBCASE("bad Content-Length") { garbage = "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"; }
  CAPTURE(garbage);
  TestUpstream::Handler handler = [garbage](UpstreamConn& conn) {
    if (conn.read_request()) {
      conn.write(garbage);
      conn.wait_peer_close(Millis{5000});
    }
  };
  ProxyFixture proxy(handler);
  check_local_reply(http_get(proxy.port(), "/"), 502, "upstream_protocol_error");
}

TEST_CASE("an upstream that never answers gets 504 upstream_timeout after the route timeout") {
  Event upstream_saw_close;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (conn.read_request() && conn.wait_peer_close(Millis{10000})) upstream_saw_close.set();
  };
  ProxyOptions options;
  options.route = "timeout: 300ms";
  ProxyFixture proxy(handler, options);
  auto started = Clock::now();
  auto response = http_get(proxy.port(), "/never");
  auto elapsed = Clock::now() - started;
  check_local_reply(response, 504, "upstream_timeout");
  CHECK(elapsed >= Millis{250});
  CHECK(elapsed < Millis{3000});
  // The abandoned upstream connection is closed, not returned to the pool.
  CHECK(upstream_saw_close.wait(Millis{2000}));
}

TEST_CASE("an upstream dying mid-response cuts the client connection instead of hanging") {
  bool chunked = false;
  SUBCASE("Content-Length") { chunked = false; }
  SUBCASE("chunked") { chunked = true; }
  CAPTURE(chunked);
  TestUpstream::Handler handler = [chunked](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    if (chunked) {
      conn.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                 chunk(pattern_string(0, 1000)));
    } else {
      conn.write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + pattern_string(0, 1000));
    }
    conn.close();
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/cut")));
  auto started = Clock::now();
  auto response = client.read_response(false, Millis{5000});
  INFO(client.last_error_text());
  CHECK_FALSE(response);
  CHECK((client.last_error() == ReadError::kClosed || client.last_error() == ReadError::kReset));
  CHECK(Clock::now() - started < Millis{3000});
  if (client.partial().status != 0) {
    // The response had started, so the client got the head and part of the body, never more.
    CHECK(client.partial().status == 200);
    CHECK(client.partial().body_size <= 1000);
  }
}
