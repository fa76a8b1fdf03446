// Bodies: every framing, sizes from 0 B to 256 MiB streamed in both directions, and backpressure
// towards a slow reader. Large bodies are generated and checked on the fly (PatternVerifier).

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// Writes a chunked body of `size` pattern bytes in chunks of `chunk_size`, then the last chunk.
bool write_chunked_pattern(HttpConn& conn, uint64_t size, size_t chunk_size) {
  uint64_t offset = 0;
  while (offset < size) {
    size_t take = static_cast<size_t>(std::min<uint64_t>(chunk_size, size - offset));
    char size_line[32];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", take);
    if (!conn.write(size_line) || !conn.write_pattern(offset, take) || !conn.write("\r\n")) {
      return false;
    }
    offset += take;
  }
  return conn.write("0\r\n\r\n");
}

// Echoes each request body with the request's framing: Content-Length in, Content-Length out;
// chunked in, chunked out.
void echo_body_handler(UpstreamConn& conn) {
  while (auto request = conn.read_request(Millis{30000})) {
    if (!request->chunked) {
      if (!conn.write_response(200, request->body)) return;
      continue;
    }
    std::string response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (size_t at = 0; at < request->body.size(); at += 100000) {
      response += chunk(std::string_view(request->body).substr(at, 100000));
    }
    if (!conn.write(response + "0\r\n\r\n")) return;
  }
}

}  // namespace

TEST_CASE("bodies of 0 B, 1 B and 1 MiB round-trip with Content-Length and chunked framing") {
  ProxyFixture proxy(echo_body_handler);
  ClientConn client(proxy.port());
  REQUIRE(client.connected());
  for (bool chunked : {false, true}) {
    for (uint64_t size : {uint64_t{0}, uint64_t{1}, kMiB}) {
      CAPTURE(chunked);
      CAPTURE(size);
      std::string body = pattern_string(0, size);
      if (chunked) {
        std::string request = make_request("POST", "/echo", {{"Transfer-Encoding", "chunked"}});
        for (size_t at = 0; at < body.size(); at += 65536) {
          request += chunk(std::string_view(body).substr(at, 65536));
        }
        REQUIRE(client.send(request + chunk("")));
      } else {
        REQUIRE(
            client.send(make_request("POST", "/echo", {}, body, /*force_content_length=*/true)));
      }
      auto response = client.read_response();
      REQUIRE_MESSAGE(response, client.last_error_text());
      CHECK(response->status == 200);
      CHECK(response->body.size() == size);
      CHECK(response->body == body);
      auto seen = proxy.upstream.last_request();
      REQUIRE(seen);
      CHECK(seen->body_size == size);
    }
  }
}

TEST_CASE("a close-delimited upstream response body reaches the client complete") {
  constexpr size_t kSize = 100 * 1024;
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    conn.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    conn.write_pattern(0, kSize);
    conn.close();
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/stream")));
  PatternVerifier verifier;
  auto response = client.read_response(false, kDefaultTimeout, verifier.sink());
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(verifier.received() == kSize);
  CHECK(verifier.ok());
}

TEST_CASE("a 256 MiB upload streams through to the upstream while proxy memory stays small") {
  constexpr uint64_t kSize = 256 * kMiB;
  PatternVerifier upstream_verifier;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    auto request = conn.read_request(kDefaultTimeout, upstream_verifier.sink());
    if (!request) return;
    conn.write_response(200, "received " + std::to_string(upstream_verifier.received()) +
                                 (upstream_verifier.ok() ? " ok" : " corrupted"));
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(
      client.send(make_request("POST", "/upload", {{"Content-Length", std::to_string(kSize)}})));
  REQUIRE_MESSAGE(client.write_pattern(0, kSize), client.last_error_text());
  auto response = client.read_response(false, Millis{10000});
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == "received " + std::to_string(kSize) + " ok");
  CHECK(proxy.bulwark.peak_rss_kib() < 100 * 1024);
}

TEST_CASE("a 256 MiB chunked download streams to the client while proxy memory stays small") {
  constexpr uint64_t kSize = 256 * kMiB;
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    if (!conn.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")) return;
    write_chunked_pattern(conn, kSize, 256 * 1024 + 7);
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/download")));
  PatternVerifier verifier;
  auto response = client.read_response(false, kDefaultTimeout, verifier.sink());
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(verifier.received() == kSize);
  CHECK(verifier.ok());
  CHECK(proxy.bulwark.peak_rss_kib() < 100 * 1024);

  // The connection stays usable after a large streamed response.
  REQUIRE(client.send(make_request("GET", "/download")));
  auto again = client.read_response_head();
  REQUIRE(again);
  CHECK(again->status == 200);
}

TEST_CASE("a slow reader makes the proxy stop reading from the upstream instead of buffering") {
  constexpr uint64_t kSize = 64 * kMiB;
  constexpr uint64_t kStep = 256 * 1024;
  std::atomic<uint64_t> written{0};
  Event upstream_done;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    conn.set_send_buffer(64 * 1024);
    if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n")) {
      return;
    }
    for (uint64_t offset = 0; offset < kSize; offset += kStep) {
      if (!conn.write_pattern(offset, kStep, Millis{20000})) return;
      written += kStep;
    }
    upstream_done.set();
  };
  ProxyFixture proxy(handler);
  long rss_before = proxy.bulwark.rss_kib();

  ClientConn client;
  REQUIRE(client.connect(proxy.port(), kDefaultTimeout, /*receive_buffer=*/64 * 1024));
  REQUIRE(client.send(make_request("GET", "/big")));
  // The client reads nothing for a while. A proxy with bounded buffers leaves the upstream stuck
  // once the socket buffers and its own are full (the kernel's autotuned buffers can hold tens of
  // MiB on loopback, but not 64); one without would take all 64 MiB at once.
  REQUIRE(eventually([&] { return written.load() >= kStep; }));
  CHECK_FALSE(upstream_done.wait(Millis{1500}));
  long growth_kib = proxy.bulwark.rss_kib() - rss_before;
  INFO("upstream wrote " << written.load() / 1024 << " KiB; proxy RSS grew by " << growth_kib
                         << " KiB");
  CHECK(growth_kib < 60 * 1024);

  PatternVerifier verifier;
  auto response = client.read_response(false, kDefaultTimeout, verifier.sink());
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(verifier.received() == kSize);
  CHECK(verifier.ok());
  CHECK(upstream_done.wait());
}

TEST_CASE("a slow upstream reader makes the proxy stop reading the client's upload") {
  constexpr uint64_t kSize = 128 * kMiB;
  Event release;
  PatternVerifier upstream_verifier;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    conn.set_receive_buffer(64 * 1024);
    auto request = conn.read_request_head();
    if (!request) return;
    release.wait(Millis{10000});  // do not read the body until the test has looked
    if (!conn.read_request_body(*request, kDefaultTimeout, upstream_verifier.sink())) return;
    conn.write_response(200, upstream_verifier.ok() ? "ok" : "corrupted");
  };
  ProxyFixture proxy(handler);
  long rss_before = proxy.bulwark.rss_kib();
  ClientConn client(proxy.port());
  REQUIRE(
      client.send(make_request("POST", "/upload", {{"Content-Length", std::to_string(kSize)}})));
  std::atomic<uint64_t> sent{0};
  std::atomic<bool> send_ok{false};
  std::thread writer([&] {
    bool ok = true;
    for (uint64_t offset = 0; ok && offset < kSize; offset += kMiB) {
      ok = client.write_pattern(offset, kMiB, Millis{20000});
      if (ok) sent += kMiB;
    }
    send_ok = ok;
  });
  REQUIRE(proxy.upstream.wait_for_requests(1));
  // Nobody reads the body: the client's writes must stall long before 64 MiB.
  bool all_sent = eventually([&] { return sent.load() == kSize; }, Millis{1500});
  long growth_kib = proxy.bulwark.rss_kib() - rss_before;
  uint64_t sent_before_release = sent.load();
  release.set();
  writer.join();
  INFO("client sent " << sent_before_release / 1024
                      << " KiB before the upstream read; proxy RSS grew by " << growth_kib
                      << " KiB");
  CHECK_FALSE(all_sent);
  CHECK(growth_kib < 60 * 1024);
  CHECK(send_ok.load());
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->body == "ok");
  CHECK(upstream_verifier.received() == kSize);
}

TEST_CASE(
    "a response body is streamed: the client sees its start before the upstream sends the rest") {
  Event client_got_first_part;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    conn.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk("first part;"));
    // A proxy that waited for the whole response would never let the client see the first part.
    if (!client_got_first_part.wait(Millis{5000})) return;
    conn.write(chunk("second part") + chunk(""));
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/stream")));
  std::string body;
  auto response = client.read_response(false, kDefaultTimeout, [&](std::string_view data) {
    body += data;
    if (body.find("first part;") != std::string::npos) client_got_first_part.set();
  });
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(body == "first part;second part");
}

TEST_CASE(
    "a request body is streamed: the upstream sees its start before the client sends the rest") {
  Event upstream_got_first_part;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    auto request = conn.read_request_head();
    if (!request) return;
    std::string body;
    bool ok = conn.read_request_body(*request, kDefaultTimeout, [&](std::string_view data) {
      body += data;
      if (body.find("first part;") != std::string::npos) upstream_got_first_part.set();
    });
    if (ok) conn.write_response(200, body);
  };
  ProxyFixture proxy(handler);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("POST", "/upload", {{"Transfer-Encoding", "chunked"}}) +
                      chunk("first part;")));
  REQUIRE(upstream_got_first_part.wait());
  REQUIRE(client.send(chunk("second part") + chunk("")));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->body == "first part;second part");
}
