// Reusing a pooled upstream connection (issue 12, from the hostile review): a response to HEAD
// (or a 304) announces a body it must not have. An upstream that sends it anyway, a moment
// later, has bytes on their way that answer nothing; on a reused connection they would be read as
// the answer to the next request, perhaps another client's. No check at reuse can tell such bytes
// from a response that is merely early, so such a connection is never reused.

#include <doctest/doctest.h>

#include <thread>
#include <vector>

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

// Answers each request `delay` after its head is in, before reading its body (as an upstream
// that rejects uploads does), then reads the body and goes on with the next request.
TestUpstream::Handler early_answer(Millis delay) {
  return [delay](UpstreamConn& conn) {
    while (auto request = conn.read_request_head(Millis{30000})) {
      conn.pause(delay);
      if (!conn.write_response(200, "early\n")) return;
      if (!conn.read_request_body(*request, Millis{30000})) return;
    }
  };
}

// The idle connections /clusters counts in the pools (the truth the gauge must match).
double pooled_idle(const BulwarkProcess& bulwark) {
  auto clusters = http_get(bulwark.admin_port(), "/clusters");
  if (!clusters || clusters->status != 200) return -1;
  double total = 0;
  const std::string key = "\"idle_connections\":";
  for (size_t at = clusters->body.find(key); at != std::string::npos;
       at = clusters->body.find(key, at + key.size())) {
    total += std::strtod(clusters->body.c_str() + at + key.size(), nullptr);
  }
  return total;
}

TEST_CASE("upstream reuse: a response that ends while the request is still being written") {
  // From the review of issue 13: the connection cannot go back to the pool then (a write is in
  // flight), and the idle gauge counted it as idle all the same, for good.
  ProxyOptions options;
  options.workers = 1;
  ProxyFixture proxy(early_answer(Millis{20}), options);
  // The last part of the body comes when the answer does: bulwark reads both in one turn of its
  // loop, and the answer is complete (and written to the client) while the request's end is
  // still being written upstream.
  const std::string head = make_request("PUT", "/upload", {{"Content-Length", "20000"}});
  for (int i = 0; i < 20; ++i) {
    CAPTURE(i);
    ClientConn client(proxy.port());
    REQUIRE(client.connected());
    REQUIRE(client.send(head + std::string(16000, 'q')));
    std::this_thread::sleep_for(Millis{20});  // racing the upstream's answer on purpose
    REQUIRE(client.send(std::string(4000, 'q')));
    auto r = client.read_response();
    REQUIRE_MESSAGE(r, client.last_error_text());
    CHECK(r->status == 200);
  }
  CHECK(eventually([&] {
    auto idle = scrape_metric(proxy.bulwark, "bulwark_upstream_connections",
                              {{"cluster", "app"}, {"state", "idle"}});
    return idle && *idle == pooled_idle(proxy.bulwark);
  }));
}

// Answers the first request of each connection, then closes it when the next one comes, as an
// upstream whose keep-alive timeout ran out at that moment does.
void one_request_per_connection(UpstreamConn& conn) {
  auto request = conn.read_request(Millis{30000});
  if (!request || !conn.write_response(200, request->target + "\n")) return;
  conn.read_request_head(Millis{30000});
}

TEST_CASE("upstream reuse: a request re-sent after a pooled connection closed finds its slot free") {
  // Noticed in issue 16: the closed connection's slot in max_connections was given back only
  // when its deferred deletion ran, after the re-send had been refused pool_exhausted.
  ProxyOptions options;
  options.workers = 1;
  options.cluster = "pool: {max_connections: 1, max_pending: 0}";
  ProxyFixture proxy(one_request_per_connection, options);
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    const std::string target = "/r" + std::to_string(i);
    REQUIRE(client.send(make_request("GET", target)));
    auto r = client.read_response();
    REQUIRE_MESSAGE(r, client.last_error_text());
    CHECK(r->status == 200);
    CHECK(r->body == target + "\n");
  }
}

}  // namespace
}  // namespace bulwark::test
