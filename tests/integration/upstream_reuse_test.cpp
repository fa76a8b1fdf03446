// Reusing a pooled upstream connection (issue 12, from the hostile review): a response to HEAD
// (or a 304) announces a body it must not have. An upstream that sends it anyway, a moment
// later, has bytes on their way that answer nothing; on a reused connection they would be read as
// the answer to the next request, perhaps another client's. No check at reuse can tell such bytes
// from a response that is merely early, so such a connection is never reused.

#include <doctest/doctest.h>

#include "tests/integration/proxy_fixture.h"

namespace bulwark::test {
namespace {

// Answers HEAD with "Content-Length: 50" and no body, then, `delay` later, sends a whole response
// nobody asked for; answers anything else with "METHOD TARGET\n".
TestUpstream::Handler late_head_body(Millis delay) {
  return [delay](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (request->method == "HEAD") {
        if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")) return;
        conn.pause(delay);
        if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nSMUGGLED!!!")) return;
        continue;
      }
      if (!conn.write_response(200, request->method + " " + request->target + "\n")) return;
    }
  };
}

TEST_CASE("upstream reuse: a late body after a HEAD response never answers another client") {
  ProxyOptions options;
  options.workers = 1;  // both clients on one worker, so one pool
  ProxyFixture proxy(late_head_body(Millis{20}), options);
  ClientConn b(proxy.port());
  REQUIRE(b.connected());
  for (int round = 0; round < 5; ++round) {
    CAPTURE(round);
    ClientConn a(proxy.port());
    REQUIRE(a.connected());
    REQUIRE(a.send(make_request("HEAD", "/h")));
    auto head = a.read_response(true);
    REQUIRE_MESSAGE(head, a.last_error_text());
    CHECK(head->status == 200);
    // At once, while the stray bytes are on their way.
    REQUIRE(b.send(make_request("GET", "/victim")));
    auto answer = b.read_response();
    REQUIRE_MESSAGE(answer, b.last_error_text());
    CHECK(answer->body == "GET /victim\n");
  }
}

TEST_CASE(
    "upstream reuse: a late body after a HEAD response never answers the pipelined request behind "
    "it") {
  ProxyFixture proxy(late_head_body(Millis{5}));
  for (int round = 0; round < 5; ++round) {
    CAPTURE(round);
    ClientConn client(proxy.port());
    REQUIRE(client.connected());
    REQUIRE(client.send(make_request("HEAD", "/h") + make_request("GET", "/second")));
    auto head = client.read_response(true);
    REQUIRE_MESSAGE(head, client.last_error_text());
    CHECK(head->status == 200);
    auto second = client.read_response();
    REQUIRE_MESSAGE(second, client.last_error_text());
    CHECK(second->body == "GET /second\n");
  }
}

}  // namespace
}  // namespace bulwark::test
