// Tests of the test harness itself, against TestUpstream, demo-upstream and stand-in processes,
// with no proxy involved: if these fail, a proxy test failure says nothing about the proxy.

#include "tests/support/harness.h"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <string>
#include <thread>

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

// Writes `raw` one byte per send(), so the reader sees the worst possible segmentation.
bool write_bytewise(HttpConn& conn, std::string_view raw) {
  for (char c : raw) {
    if (!conn.write(std::string_view(&c, 1))) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("harness: TestUpstream default handler answers keep-alive requests on one connection") {
  TestUpstream upstream;
  ClientConn client(upstream.port());
  REQUIRE(client.connected());
  for (int i = 0; i < 3; ++i) {
    REQUIRE(client.send(make_request("GET", "/item/" + std::to_string(i))));
    auto response = client.read_response();
    REQUIRE_MESSAGE(response, client.last_error_text());
    CHECK(response->status == 200);
    CHECK(response->version == "HTTP/1.1");
    CHECK(response->reason == "OK");
    CHECK(response->body == "GET /item/" + std::to_string(i) + "\n");
    CHECK(response->get("X-UPSTREAM") == "upstream");
    CHECK(response->get("x-upstream-connection") == "1");
  }
  CHECK(upstream.connections() == 1);
  CHECK(upstream.requests() == 3);
  auto last = upstream.last_request();
  REQUIRE(last);
  CHECK(last->method == "GET");
  CHECK(last->target == "/item/2");
  CHECK(last->get("host") == "localhost");
}

TEST_CASE("harness: HEAD gets headers only and Connection: close ends the connection") {
  TestUpstream upstream;
  ClientConn client(upstream.port());
  REQUIRE(client.send(make_request("HEAD", "/x")));
  auto head = client.read_response(/*head_request=*/true);
  REQUIRE(head);
  CHECK(head->get("content-length") == "8");  // "HEAD /x\n"
  CHECK(head->body.empty());
  REQUIRE(client.send(make_request("GET", "/x", {{"Connection", "close"}})));
  auto response = client.read_response();
  REQUIRE(response);
  CHECK(response->body == "GET /x\n");
  CHECK(client.is_closed(Millis{2000}));
}

TEST_CASE("harness: client decodes bodies delivered one byte per segment") {
  TestUpstream upstream([](UpstreamConn& conn) {
    auto request = conn.read_request();
    if (!request) return;
    write_bytewise(conn, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    write_bytewise(conn,
                   "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n");
    write_bytewise(conn, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n");
    write_bytewise(conn, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
    write_bytewise(conn, "HTTP/1.1 200 OK\r\nX-Empty:\r\n\r\nuntil close");
  });
  ClientConn client(upstream.port());
  REQUIRE(client.send(make_request("GET", "/")));

  auto fixed = client.read_response();
  REQUIRE_MESSAGE(fixed, client.last_error_text());
  CHECK(fixed->body == "hello");
  CHECK_FALSE(fixed->chunked);

  auto chunked = client.read_response();
  REQUIRE_MESSAGE(chunked, client.last_error_text());
  CHECK(chunked->status == 201);
  CHECK(chunked->reason == "Created");
  CHECK(chunked->chunked);
  CHECK(chunked->body == "abc0123456789abcdef");
  CHECK(chunked->body_size == 19);

  auto no_content = client.read_response();
  REQUIRE(no_content);
  CHECK(no_content->status == 204);
  CHECK(no_content->get("x-a") == "1");
  CHECK(no_content->body.empty());

  auto not_modified = client.read_response();
  REQUIRE(not_modified);
  CHECK(not_modified->status == 304);
  CHECK(not_modified->body.empty());

  auto close_delimited = client.read_response();
  REQUIRE_MESSAGE(close_delimited, client.last_error_text());
  CHECK(close_delimited->close_delimited);
  CHECK(close_delimited->has("x-empty"));
  CHECK(close_delimited->get("x-empty").empty());
  CHECK(close_delimited->body == "until close");
}

TEST_CASE("harness: upstream decodes chunked and Content-Length request bodies") {
  TestUpstream upstream([](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      conn.write_response(200, request->body, {{"x-chunked", request->chunked ? "1" : "0"}});
    }
  });
  ClientConn client(upstream.port());
  REQUIRE(write_bytewise(client, make_request("POST", "/a", {}, "payload")));
  auto plain = client.read_response();
  REQUIRE(plain);
  CHECK(plain->body == "payload");
  CHECK(plain->get("x-chunked") == "0");

  REQUIRE(write_bytewise(client, make_request("POST", "/b", {{"Transfer-Encoding", "chunked"}}) +
                                     chunk("first ") + chunk("second") + chunk("")));
  auto chunked = client.read_response();
  REQUIRE(chunked);
  CHECK(chunked->body == "first second");
  CHECK(chunked->get("x-chunked") == "1");

  auto received = upstream.received();
  REQUIRE(received.size() == 2);
  CHECK(received[0].body == "payload");
  CHECK(received[1].body == "first second");
  CHECK(received[1].chunked);
}

TEST_CASE("harness: a 100 Continue is read as its own response") {
  TestUpstream upstream([](UpstreamConn& conn) {
    auto request = conn.read_request_head();
    if (!request) return;
    if (iequals(request->get("expect"), "100-continue")) {
      conn.write("HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (!conn.read_request_body(*request)) return;
    conn.write_response(200, "got " + request->body);
  });
  ClientConn client(upstream.port());
  REQUIRE(client.send(
      make_request("PUT", "/up", {{"Expect", "100-continue"}, {"Content-Length", "4"}})));
  auto interim = client.read_response();
  REQUIRE(interim);
  CHECK(interim->status == 100);
  REQUIRE(client.send("data"));
  auto final_response = client.read_response();
  REQUIRE(final_response);
  CHECK(final_response->status == 200);
  CHECK(final_response->body == "got data");
}

TEST_CASE("harness: a read with no data fails after its timeout instead of hanging") {
  TestUpstream upstream([](UpstreamConn& conn) {
    if (conn.read_request()) conn.wait_peer_close(Millis{10000});
  });
  ClientConn client(upstream.port());
  REQUIRE(client.send(make_request("GET", "/silent")));
  auto started = Clock::now();
  auto response = client.read_response(false, Millis{200});
  auto elapsed = Clock::now() - started;
  CHECK_FALSE(response);
  CHECK(client.last_error() == ReadError::kTimeout);
  CHECK(elapsed >= Millis{190});
  CHECK(elapsed < Millis{2000});
  CHECK_FALSE(client.is_closed(Millis{50}));
}

TEST_CASE("harness: a response cut short is reported as closed with the partial body") {
  TestUpstream upstream([](UpstreamConn& conn) {
    if (conn.read_request()) conn.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
  });
  ClientConn client(upstream.port());
  REQUIRE(client.send(make_request("GET", "/cut")));
  auto response = client.read_response();
  CHECK_FALSE(response);
  CHECK(client.last_error() == ReadError::kClosed);
  CHECK(client.partial().status == 200);
  CHECK(client.partial().body == "0123456789");
}

TEST_CASE("harness: is_closed sees a close and a reset, and a malformed head is reported") {
  SUBCASE("close") {
    TestUpstream upstream([](UpstreamConn& conn) { conn.close(); });
    ClientConn client(upstream.port());
    CHECK(client.is_closed());
  }
  SUBCASE("reset") {
    TestUpstream upstream([](UpstreamConn& conn) {
      conn.read_some();
      conn.close(/*reset=*/true);
    });
    ClientConn client(upstream.port());
    REQUIRE(client.send("x"));
    CHECK(client.is_closed());
  }
  SUBCASE("malformed") {
    TestUpstream upstream([](UpstreamConn& conn) {
      conn.write("HTTP/1.1 2x0 Nope\r\n\r\n");
      conn.wait_peer_close();
    });
    ClientConn client(upstream.port());
    CHECK_FALSE(client.read_response());
    CHECK(client.last_error() == ReadError::kMalformed);
  }
}

TEST_CASE("harness: TestUpstream shuts down promptly while handlers are blocked in reads") {
  auto started = Clock::now();
  {
    TestUpstream upstream([](UpstreamConn& conn) { conn.read_request(Millis{30000}); });
    ClientConn a(upstream.port());
    ClientConn b(upstream.port());
    REQUIRE(upstream.wait_for_connections(2));
  }
  CHECK(Clock::now() - started < Millis{2000});
}

TEST_CASE("harness: pattern bodies stream through sockets and corruption is detected") {
  constexpr uint64_t kSize = 8 * 1024 * 1024 + 12345;
  PatternVerifier upstream_verifier;
  TestUpstream upstream([&](UpstreamConn& conn) {
    auto request = conn.read_request(kDefaultTimeout, upstream_verifier.sink());
    if (!request) return;
    conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n");
    conn.write_pattern(0, kSize);
  });
  ClientConn client(upstream.port());
  REQUIRE(client.send(make_request("POST", "/big", {{"Content-Length", std::to_string(kSize)}})));
  REQUIRE(client.write_pattern(0, kSize));
  PatternVerifier verifier;
  auto response = client.read_response(false, kDefaultTimeout, verifier.sink());
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->body.empty());
  CHECK(response->body_size == kSize);
  CHECK(verifier.received() == kSize);
  CHECK(verifier.ok());
  CHECK(upstream_verifier.received() == kSize);
  CHECK(upstream_verifier.ok());

  PatternVerifier shifted;
  shifted.feed(pattern_string(1, 1000));
  CHECK_FALSE(shifted.ok());
  PatternVerifier dropped_block;
  dropped_block.feed(pattern_string(0, 65536));
  dropped_block.feed(pattern_string(2 * 65536, 100));
  REQUIRE_FALSE(dropped_block.ok());
  CHECK(*dropped_block.first_mismatch() >= 65536);
}

TEST_CASE("harness: Subprocess captures output, exit status and signals") {
  Subprocess shell;
  shell.start({"/bin/sh", "-c", "echo one; echo two >&2; printf partial; exit 3"});
  CHECK(shell.wait_exit() == 3);
  CHECK(shell.wait_streams_closed());
  CHECK(shell.lines(Subprocess::Stream::kStdout) == std::vector<std::string>{"one", "partial"});
  CHECK(shell.wait_for_line(Subprocess::Stream::kStderr, "two").value_or("") == "two");

  Subprocess sleeper;
  sleeper.start({"/bin/sleep", "30"});
  CHECK_FALSE(sleeper.wait_exit(Millis{50}));
  CHECK(sleeper.rss_kib() > 0);
  CHECK(sleeper.signal(SIGTERM));
  CHECK(sleeper.wait_exit() == 128 + SIGTERM);
}

TEST_CASE("harness: BulwarkProcess learns ports from listening lines and reports failures") {
  TempDir dir;
  std::string fake = dir.file("fake-bulwark");
  write_file(fake,
             "#!/bin/sh\n"
             "echo '{\"level\":\"info\",\"msg\":\"listening\",\"listener\":\"inbound\","
             "\"address\":\"127.0.0.1:4321\"}' >&2\n"
             "echo '{\"msg\": \"listening\", \"listener\": \"admin\", "
             "\"address\": \"127.0.0.1:4322\"}' >&2\n"
             "echo '{\"msg\":\"started\"}' >&2\n"
             "exec sleep 30\n");
  REQUIRE(::chmod(fake.c_str(), 0755) == 0);
  {
    BulwarkProcess process(fake);
    process.start("workers: 1\n");
    CHECK(process.port("inbound") == 4321);
    CHECK(process.admin_port() == 4322);
    CHECK_THROWS(process.port("missing"));
    CHECK(read_file(process.config_path()) == "workers: 1\n");
    CHECK(process.signal(SIGTERM));
    CHECK(process.wait_exit() == 128 + SIGTERM);
  }

  std::string failing = dir.file("failing-bulwark");
  write_file(failing, "#!/bin/sh\necho 'config.yaml:3:7: bad thing' >&2\nexit 1\n");
  REQUIRE(::chmod(failing.c_str(), 0755) == 0);
  BulwarkProcess process(failing);
  auto started = Clock::now();
  try {
    process.start("workers: 1\n");
    FAIL("start() should have thrown");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("bad thing") != std::string::npos);
  }
  CHECK(Clock::now() - started < Millis{5000});
}

TEST_CASE("harness: demo-upstream greets, keeps alive, echoes bodies and survives bad input") {
  DemoUpstreamProcess demo;
  demo.start("alpha");

  ClientConn client(demo.port());
  REQUIRE(client.connected());
  // Two pipelined requests on one connection, then a body echo.
  REQUIRE(client.send(make_request("GET", "/hello?x=1") + make_request("HEAD", "/h")));
  auto hello = client.read_response();
  REQUIRE(hello);
  CHECK(hello->status == 200);
  CHECK(hello->body == "hello from alpha: GET /hello?x=1\n");
  auto head = client.read_response(/*head_request=*/true);
  REQUIRE(head);
  CHECK(head->get("content-length") == "26");

  REQUIRE(client.send(make_request("POST", "/echo", {}, "echo me")));
  auto echoed = client.read_response();
  REQUIRE(echoed);
  CHECK(echoed->body == "echo me");

  REQUIRE(client.send(make_request("POST", "/echo", {{"Transfer-Encoding", "chunked"}}) +
                      chunk("in ") + chunk("chunks") + chunk("")));
  auto echoed_chunked = client.read_response();
  REQUIRE(echoed_chunked);
  CHECK(echoed_chunked->chunked);
  CHECK(echoed_chunked->body == "in chunks");

  REQUIRE(client.send(
      make_request("POST", "/echo", {{"Expect", "100-continue"}, {"Content-Length", "2"}})));
  auto interim = client.read_response();
  REQUIRE(interim);
  CHECK(interim->status == 100);
  REQUIRE(client.send("ok"));
  auto after_continue = client.read_response();
  REQUIRE(after_continue);
  CHECK(after_continue->body == "ok");

  // A big streamed echo.
  constexpr uint64_t kSize = 4 * 1024 * 1024;
  REQUIRE(client.send(make_request("POST", "/echo", {{"Content-Length", std::to_string(kSize)}})));
  std::thread writer([&] { client.write_pattern(0, kSize); });
  PatternVerifier verifier;
  auto big = client.read_response(false, kDefaultTimeout, verifier.sink());
  writer.join();
  REQUIRE(big);
  CHECK(verifier.received() == kSize);
  CHECK(verifier.ok());

  // Malformed requests get 400 and a closed connection.
  for (std::string bad :
       std::vector<std::string>{"GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\n continued\r\n\r\n",
                                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                                "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                std::string("\x00\xff\r\n\r\n", 6)}) {
    CAPTURE(bad);
    ClientConn conn(demo.port());
    REQUIRE(conn.send(bad));
    auto response = conn.read_response();
    if (response) CHECK(response->status == 400);
    CHECK(conn.is_closed());
  }

  // HTTP/1.0 without keep-alive closes after the response.
  ClientConn old(demo.port());
  REQUIRE(old.send("GET /old HTTP/1.0\r\n\r\n"));
  auto old_response = old.read_response();
  REQUIRE(old_response);
  CHECK(old_response->body == "hello from alpha: GET /old\n");
  CHECK(old.is_closed());

  // Still serving after all that.
  auto again = http_get(demo.port(), "/again");
  REQUIRE(again);
  CHECK(again->body == "hello from alpha: GET /again\n");
  CHECK(demo.process().running());
}
