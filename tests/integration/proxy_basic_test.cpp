// Forwarding basics: keep-alive, pipelining, connection reuse, headers added and removed,
// bodiless responses, 100-continue and upgrades.

#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/kernel_view.h"
#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

// All values of a header joined as one list, as a recipient must treat repeated fields.
std::string joined(const HeaderAccess& message, std::string_view name) {
  std::string out;
  for (const auto& value : message.get_all(name)) out += (out.empty() ? "" : ", ") + value;
  return out;
}

}  // namespace

TEST_CASE("proxy forwards a GET to the upstream and relays status, headers and body") {
  ProxyFixture proxy;
  auto response = http_get(proxy.port(), "/hello?name=world", {{"X-Custom", "kept"}});
  REQUIRE_MESSAGE(response, proxy.bulwark.logs_text());
  CHECK(response->status == 200);
  CHECK(response->body == "GET /hello?name=world\n");
  CHECK(response->get("x-upstream") == "upstream");

  auto seen = proxy.upstream.last_request();
  REQUIRE(seen);
  CHECK(seen->method == "GET");
  CHECK(seen->target == "/hello?name=world");
  CHECK(seen->version == "HTTP/1.1");
  CHECK(seen->get("host") == "localhost");
  CHECK(seen->get("x-custom") == "kept");
}

TEST_CASE("proxy keeps the client connection alive and answers pipelined requests in order") {
  // The first request is answered slowly, so a proxy that answered out of order would show it.
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (request->target == "/p0") conn.pause(Millis{100});
      if (!conn.write_response(200, request->method + " " + request->target + "\n")) return;
    }
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.connected());

  std::string pipeline;
  for (int i = 0; i < 5; ++i) pipeline += make_request("GET", "/p" + std::to_string(i));
  pipeline += make_request("POST", "/p5", {}, "with a body");
  REQUIRE(client.send(pipeline));
  for (int i = 0; i < 5; ++i) {
    auto response = client.read_response();
    REQUIRE_MESSAGE(response, client.last_error_text());
    CHECK(response->body == "GET /p" + std::to_string(i) + "\n");
  }
  auto last = client.read_response();
  REQUIRE(last);
  CHECK(last->body == "POST /p5\n");

  // And the connection is still usable afterwards.
  REQUIRE(client.send(make_request("GET", "/after")));
  auto after = client.read_response();
  REQUIRE(after);
  CHECK(after->body == "GET /after\n");
}

TEST_CASE("proxy reuses one upstream connection for 100 sequential requests") {
  ProxyFixture proxy;
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  for (int i = 0; i < 100; ++i) {
    REQUIRE(client.send(make_request("GET", "/r" + std::to_string(i))));
    auto response = client.read_response();
    REQUIRE_MESSAGE(response, "request " << i << ": " << client.last_error_text());
    REQUIRE(response->status == 200);
    CHECK(response->body == "GET /r" + std::to_string(i) + "\n");
  }
  CHECK(proxy.upstream.requests() == 100);
  CHECK(proxy.upstream.connections() == 1);
}

TEST_CASE("proxy uses a new upstream connection when the upstream closed the idle one") {
  // The upstream answers one request per connection with keep-alive framing and then closes, as
  // a server whose idle timeout is shorter than the proxy's does.
  Event first_closed;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    auto request = conn.read_request();
    if (!request) return;
    conn.write_response(200, "connection " + std::to_string(conn.index()) + "\n");
    conn.close();
    if (conn.index() == 1) first_closed.set();
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/one")));
  auto first = client.read_response();
  REQUIRE(first);
  CHECK(first->body == "connection 1\n");
  REQUIRE(first_closed.wait());

  for (int i = 2; i <= 3; ++i) {
    REQUIRE(client.send(make_request("GET", "/again")));
    auto response = client.read_response();
    REQUIRE_MESSAGE(response, client.last_error_text() << "\n" << proxy.bulwark.logs_text());
    CHECK(response->status == 200);
    CHECK(response->body == "connection " + std::to_string(i) + "\n");
    if (i == 2) REQUIRE(proxy.upstream.wait_for_connections(2));
  }
  CHECK(proxy.upstream.connections() == 3);
}

TEST_CASE("proxy answers an HTTP/1.0 client and closes the connection after the response") {
  ProxyFixture proxy;
  ClientConn client(proxy.port());
  REQUIRE(client.send("GET /old HTTP/1.0\r\nHost: localhost\r\n\r\n"));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == "GET /old\n");
  CHECK_FALSE(response->chunked);  // an HTTP/1.0 client cannot read chunked bodies
  CHECK(client.is_closed());
}

TEST_CASE("proxy removes hop-by-hop headers in both directions and keeps end-to-end ones") {
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      conn.write_response(200, "ok",
                          {{"Connection", "X-Upstream-Private"},
                           {"X-Upstream-Private", "secret"},
                           {"Keep-Alive", "timeout=10"},
                           {"Proxy-Connection", "keep-alive"},
                           {"Upgrade", "foo/2"},
                           {"X-End-To-End", "response"}});
    }
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/hop",
                                   {{"Connection", "keep-alive, X-Client-Private"},
                                    {"X-Client-Private", "secret"},
                                    {"Keep-Alive", "timeout=5"},
                                    {"TE", "trailers"},
                                    {"Trailer", "X-Checksum"},
                                    {"Proxy-Connection", "keep-alive"},
                                    {"Upgrade", "foo/2"},
                                    {"X-End-To-End", "request"}})));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == "ok");
  CHECK(response->get("x-end-to-end") == "response");
  for (const char* name : {"x-upstream-private", "keep-alive", "proxy-connection", "upgrade"}) {
    CAPTURE(name);
    CHECK_FALSE(response->has(name));
  }
  CHECK(to_lower(joined(*response, "connection")).find("x-upstream-private") == std::string::npos);

  auto seen = proxy.upstream.last_request();
  REQUIRE(seen);
  CHECK(seen->get("x-end-to-end") == "request");
  for (const char* name :
       {"x-client-private", "keep-alive", "te", "trailer", "proxy-connection", "upgrade"}) {
    CAPTURE(name);
    CHECK_FALSE(seen->has(name));
  }
  CHECK(to_lower(joined(*seen, "connection")).find("x-client-private") == std::string::npos);
}

TEST_CASE("proxy appends the client address to X-Forwarded-For and sets X-Forwarded-Proto") {
  ProxyFixture proxy;
  auto fresh = http_get(proxy.port(), "/a");
  REQUIRE(fresh);
  auto first = proxy.upstream.last_request();
  REQUIRE(first);
  CHECK(joined(*first, "x-forwarded-for") == "127.0.0.1");
  CHECK(first->get("x-forwarded-proto") == "http");

  // Without trusted hops (the default), what the client claims is replaced.
  auto chained =
      http_get(proxy.port(), "/b",
               {{"X-Forwarded-For", "198.51.100.1, 203.0.113.7"}, {"X-Forwarded-Proto", "https"}});
  REQUIRE(chained);
  auto second = proxy.upstream.last_request();
  REQUIRE(second);
  CHECK(joined(*second, "x-forwarded-for") == "127.0.0.1");
  CHECK(second->get_all("x-forwarded-proto") == std::vector<std::string>{"http"});
}

TEST_CASE("trusted_hops keeps the last N X-Forwarded-For addresses and the X-Forwarded-Proto") {
  ProxyOptions options;
  options.listener = "trusted_hops: 1";
  ProxyFixture proxy({}, options);
  auto chained =
      http_get(proxy.port(), "/b",
               {{"X-Forwarded-For", "198.51.100.1, 203.0.113.7"}, {"X-Forwarded-Proto", "https"}});
  REQUIRE(chained);
  auto request = proxy.upstream.last_request();
  REQUIRE(request);
  CHECK(joined(*request, "x-forwarded-for") == "203.0.113.7, 127.0.0.1");
  CHECK(request->get_all("x-forwarded-proto") == std::vector<std::string>{"https"});
}

TEST_CASE("proxy keeps a client's X-Request-Id or generates one, and returns it") {
  ProxyFixture proxy;
  auto given = http_get(proxy.port(), "/given", {{"X-Request-Id", "req-abc-123"}});
  REQUIRE(given);
  CHECK(given->get("x-request-id") == "req-abc-123");
  auto seen = proxy.upstream.last_request();
  REQUIRE(seen);
  CHECK(seen->get_all("x-request-id") == std::vector<std::string>{"req-abc-123"});

  std::set<std::string> generated;
  for (int i = 0; i < 3; ++i) {
    auto response = http_get(proxy.port(), "/generated");
    REQUIRE(response);
    std::string id = response->get("x-request-id");
    CHECK_FALSE(id.empty());
    auto upstream_saw = proxy.upstream.last_request();
    REQUIRE(upstream_saw);
    CHECK(upstream_saw->get("x-request-id") == id);
    generated.insert(id);
  }
  CHECK(generated.size() == 3);
}

TEST_CASE("HEAD, 204 and 304 responses reach the client without a body") {
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (request->target == "/head") {
        // The head of a 100-byte GET response, with no body, as RFC 9110 says.
        conn.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
      } else if (request->target == "/204") {
        conn.write("HTTP/1.1 204 No Content\r\nX-Status: 204\r\n\r\n");
      } else if (request->target == "/304") {
        conn.write("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n");
      } else {
        conn.write_response(200, "after\n");
      }
    }
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());

  REQUIRE(client.send(make_request("HEAD", "/head")));
  auto head = client.read_response(/*head_request=*/true);
  REQUIRE_MESSAGE(head, client.last_error_text());
  CHECK(head->status == 200);
  CHECK(head->get("content-length") == "100");

  REQUIRE(client.send(make_request("GET", "/204")));
  auto no_content = client.read_response();
  REQUIRE(no_content);
  CHECK(no_content->status == 204);
  CHECK(no_content->get("x-status") == "204");
  CHECK_FALSE(no_content->chunked);

  REQUIRE(client.send(make_request("GET", "/304", {{"If-None-Match", "\"v1\""}})));
  auto not_modified = client.read_response();
  REQUIRE(not_modified);
  CHECK(not_modified->status == 304);
  CHECK(not_modified->get("etag") == "\"v1\"");

  // Had the proxy sent a body after any of them, this response would be garbled.
  REQUIRE(client.send(make_request("GET", "/after")));
  auto after = client.read_response();
  REQUIRE_MESSAGE(after, client.last_error_text());
  CHECK(after->status == 200);
  CHECK(after->body == "after\n");
  CHECK(client.buffered().empty());
}

TEST_CASE("Expect: 100-continue relays the upstream's 100 Continue before the body") {
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    auto request = conn.read_request_head();
    if (!request) return;
    if (iequals(request->get("expect"), "100-continue")) {
      conn.write("HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (!conn.read_request_body(*request)) return;
    conn.write_response(200, "got " + request->body);
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(
      make_request("PUT", "/upload", {{"Expect", "100-continue"}, {"Content-Length", "11"}})));
  auto interim = client.read_response();
  REQUIRE_MESSAGE(interim, client.last_error_text());
  CHECK(interim->status == 100);
  REQUIRE(client.send("hello world"));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == "got hello world");
}

TEST_CASE("a WebSocket upgrade is tunnelled both ways after 101 Switching Protocols") {
  Event upstream_saw_close;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    auto request = conn.read_request();
    if (!request) return;
    if (!iequals(request->get("upgrade"), "websocket")) {
      conn.write_response(400, "no upgrade header arrived\n");
      return;
    }
    conn.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nserver-first");
    while (true) {
      std::string data = conn.read_some(1, Millis{10000});
      if (data.empty()) break;
      conn.write("echo:" + data);
    }
    if (conn.last_error() == ReadError::kClosed) upstream_saw_close.set();
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/ws",
                                   {{"Connection", "Upgrade"},
                                    {"Upgrade", "websocket"},
                                    {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                                    {"Sec-WebSocket-Version", "13"}})));
  auto switched = client.read_response();
  REQUIRE_MESSAGE(switched, client.last_error_text());
  CHECK(switched->status == 101);
  CHECK(iequals(switched->get("upgrade"), "websocket"));
  CHECK(switched->get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

  CHECK(client.read_exact(12).value_or("") == "server-first");
  // Bytes that are not HTTP at all must pass untouched in both directions.
  std::string frame("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\r\n\r\n\0", 15);
  REQUIRE(client.send(frame));
  CHECK(client.read_exact(5 + frame.size()).value_or("") == "echo:" + frame);
  REQUIRE(client.send("second"));
  CHECK(client.read_exact(11).value_or("") == "echo:second");

  client.close();
  CHECK(upstream_saw_close.wait());
}

TEST_CASE("a client half-closing a tunnel still gets the upstream's answer, then the close") {
  // The client sends its last bytes and shuts down its sending side. bulwark passes the end on
  // (the upstream reads end of stream after the bytes), and relays what the upstream sends
  // after that until the upstream closes.
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    auto request = conn.read_request();
    if (!request) return;
    conn.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    std::string got;
    while (true) {
      std::string data = conn.read_some(1, Millis{10000});
      if (data.empty()) break;
      got += data;
    }
    if (conn.last_error() != ReadError::kClosed) return;  // the client's end must arrive as one
    conn.write("after your end: " + got);
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(
      make_request("GET", "/ws", {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}})));
  auto switched = client.read_response();
  REQUIRE_MESSAGE(switched, client.last_error_text());
  REQUIRE(switched->status == 101);
  REQUIRE(client.send("last words"));
  client.shutdown_write();
  CHECK(client.read_until_close() == "after your end: last words");
}

TEST_CASE("a client half-close sent before the 101 reaches the upstream after it") {
  // The client sends its upgrade request, its first tunnel bytes and its FIN at once; bulwark
  // reads them all before the upstream agrees to switch. After the 101 the bytes and then the end
  // go on to the upstream, whose answer still comes back.
  Gate switch_now;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (!conn.read_request() || !switch_now.pass(Millis{10000})) return;
    conn.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    std::string got;
    while (true) {
      std::string data = conn.read_some(1, Millis{10000});
      if (data.empty()) break;
      got += data;
    }
    if (conn.last_error() != ReadError::kClosed) return;
    conn.write("after your end: " + got);
  };
  ProxyFixture proxy(handler);
  Gate::Opener open_at_end(switch_now);
  ClientConn client(proxy.port());
  const std::string request =
      make_request("GET", "/ws", {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}});
  REQUIRE(client.send(request + "early"));
  client.shutdown_write();
  // bulwark has read all of it, the end of the stream (which counts one) included.
  REQUIRE(eventually([&] {
    auto view = kernel_view(proxy.port(), port_of(client.fd(), false));
    return view && view->taken() == request.size() + 5 + 1;
  }));
  switch_now.open();
  auto switched = client.read_response();
  REQUIRE_MESSAGE(switched, client.last_error_text());
  REQUIRE(switched->status == 101);
  CHECK(client.read_until_close() == "after your end: early");
}

TEST_CASE("an upstream half-closing a tunnel still gets the client's bytes, then the end") {
  // The upstream sends its last bytes and shuts down its sending side. The client gets them and
  // the end of the stream, and what it sends after that still reaches the upstream.
  std::mutex mutex;
  std::string got;
  Event upstream_done;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    conn.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nbye");
    conn.shutdown_write();
    std::string data;
    while (true) {
      std::string piece = conn.read_some(1, Millis{10000});
      if (piece.empty()) break;
      data += piece;
    }
    if (conn.last_error() != ReadError::kClosed) return;
    std::lock_guard<std::mutex> lock(mutex);
    got = data;
    upstream_done.set();
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(
      make_request("GET", "/ws", {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}})));
  auto switched = client.read_response();
  REQUIRE_MESSAGE(switched, client.last_error_text());
  REQUIRE(switched->status == 101);
  CHECK(client.read_until_close() == "bye");
  REQUIRE(client.send("still here"));
  client.shutdown_write();
  REQUIRE(upstream_done.wait());
  std::lock_guard<std::mutex> lock(mutex);
  CHECK(got == "still here");
}

TEST_CASE("the README demo: bulwark in front of demo-upstream") {
  DemoUpstreamProcess demo;
  demo.start("demo");
  BulwarkProcess bulwark;
  bulwark.start(proxy_config("127.0.0.1:" + std::to_string(demo.port())));

  auto hello = http_get(bulwark.port("inbound"), "/hello");
  REQUIRE(hello);
  CHECK(hello->status == 200);
  CHECK(hello->body == "hello from demo: GET /hello\n");

  auto echoed = http_request(bulwark.port("inbound"), "POST", "/echo", {}, "round trip");
  REQUIRE(echoed);
  CHECK(echoed->body == "round trip");
}

TEST_CASE("an idle client connection is closed after the listener's idle_timeout") {
  ProxyOptions options;
  options.listener = "idle_timeout: 300ms";
  ProxyFixture proxy({}, options);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/once")));
  REQUIRE(client.read_response());
  CHECK(client.is_closed(Millis{3000}));
}

TEST_CASE("a client's Connection: close gets its response and then a closed connection") {
  ProxyFixture proxy;
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/bye", {{"Connection", "close"}})));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == "GET /bye\n");
  CHECK(client.is_closed());
}

TEST_CASE("concurrent clients on both workers each get their own responses") {
  constexpr int kClients = 32;
  constexpr int kRequestsEach = 20;
  ProxyFixture proxy;
  std::atomic<int> correct{0};
  std::vector<std::string> failures(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      ClientConn client(proxy.port());
      for (int r = 0; r < kRequestsEach; ++r) {
        std::string target = "/c" + std::to_string(c) + "/r" + std::to_string(r);
        auto response =
            client.send(make_request("GET", target)) ? client.read_response() : std::nullopt;
        if (!response || response->body != "GET " + target + "\n") {
          failures[c] = target + ": " + describe(response) + " " + client.last_error_text();
          return;
        }
        ++correct;
      }
    });
  }
  for (auto& thread : clients) thread.join();
  for (const auto& failure : failures) CHECK_MESSAGE(failure.empty(), failure);
  CHECK(correct.load() == kClients * kRequestsEach);
}
