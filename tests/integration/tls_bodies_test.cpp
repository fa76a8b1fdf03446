// Bodies through TLS on both sides of one bulwark: a TLS client, a TLS listener, a cluster that
// originates TLS to a TLS upstream. Large bodies cross many records, partial writes and read-ahead
// in both directions, and a slow reader must hold the other side back (no buffering in bulwark).

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/tls_kit.h"

using namespace bulwark::test;

namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// The most bulwark may hold while 64 MiB stream through. Under AddressSanitizer, freed memory is
// quarantined (256 MiB by default) instead of reused, and OpenSSL frees and allocates a record
// buffer per read (SSL_MODE_RELEASE_BUFFERS), so the peak says nothing there.
constexpr long kMaxPeakRssKib = 100 * 1024;

TlsServerOptions serving(const TestPki& pki) {
  TlsServerOptions options;
  options.cert_file = pki.server.cert_file;
  options.key_file = pki.server.key_file;
  return options;
}

// client --TLS--> bulwark "inbound" --TLS--> TlsFrontDoor --> TestUpstream(handler).
struct TlsChain {
  explicit TlsChain(TestUpstream::Handler handler)
      : pki(certs.path()),
        upstream(std::move(handler)),
        front(serving(pki), upstream.port()) {
    ProxyOptions options;
    options.listener = "tls: {certificates: [{cert: " + pki.server.cert_file +
                       ", key: " + pki.server.key_file + "}]}";
    options.cluster = "tls: {ca: " + pki.ca.cert_file() + ", sni: localhost}";
    bulwark.start(proxy_config(front.address(), options));
  }
  TlsClientOptions client_options() const {
    TlsClientOptions o;
    o.ca_file = pki.ca.cert_file();
    return o;
  }
  uint16_t port() const { return bulwark.port("inbound"); }

  TempDir certs;
  TestPki pki;
  TestUpstream upstream;
  TlsFrontDoor front;
  BulwarkProcess bulwark;
};

}  // namespace

TEST_CASE("tls bodies: 0 B to 1 MiB round-trip over TLS on both sides, both framings") {
  TlsChain chain([](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (!conn.write_response(200, request->body)) return;
    }
  });
  TlsClientConn client(chain.port(), chain.client_options());
  REQUIRE_MESSAGE(client.handshake_ok(), client.handshake_error());
  for (bool chunked : {false, true}) {
    for (uint64_t size : {uint64_t{0}, uint64_t{1}, uint64_t{16383}, uint64_t{16385}, kMiB}) {
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
        REQUIRE(client.send(make_request("POST", "/echo", {}, body, true)));
      }
      auto response = client.read_response();
      REQUIRE_MESSAGE(response, client.last_error_text());
      CHECK(response->status == 200);
      CHECK(response->body == body);
    }
  }
  // One client connection and one upstream TLS connection carried all ten.
  CHECK(chain.front.accepted() == 1);
}

TEST_CASE(
    "tls bodies: a 64 MiB upload and a 64 MiB download stream through while memory stays small") {
  constexpr uint64_t kSize = 64 * kMiB;
  PatternVerifier upstream_verifier;
  TlsChain chain([&](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000}, upstream_verifier.sink())) {
      if (request->method == "POST") {
        if (!conn.write_response(200, "received " + std::to_string(upstream_verifier.received()) +
                                          (upstream_verifier.ok() ? " ok" : " corrupted"))) {
          return;
        }
        continue;
      }
      if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n") ||
          !conn.write_pattern(0, kSize)) {
        return;
      }
    }
  });
  TlsClientConn client(chain.port(), chain.client_options());
  REQUIRE_MESSAGE(client.handshake_ok(), client.handshake_error());

  REQUIRE(
      client.send(make_request("POST", "/upload", {{"Content-Length", std::to_string(kSize)}})));
  REQUIRE_MESSAGE(client.write_pattern(0, kSize), client.last_error_text());
  auto uploaded = client.read_response(false, Millis{20000});
  REQUIRE_MESSAGE(uploaded, client.last_error_text());
  CHECK(uploaded->status == 200);
  CHECK(uploaded->body == "received " + std::to_string(kSize) + " ok");

  REQUIRE(client.send(make_request("GET", "/download")));
  PatternVerifier verifier;
  auto downloaded = client.read_response(false, Millis{20000}, verifier.sink());
  REQUIRE_MESSAGE(downloaded, client.last_error_text());
  CHECK(downloaded->status == 200);
  CHECK(verifier.received() == kSize);
  CHECK(verifier.ok());
  if (!sanitized_binaries()) CHECK(chain.bulwark.peak_rss_kib() < kMaxPeakRssKib);
}

TEST_CASE("tls bodies: a client that stops reading holds the upstream back, then gets every byte") {
  constexpr uint64_t kSize = 64 * kMiB;
  std::atomic<uint64_t> written{0};
  TlsChain chain([&](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n")) {
      return;
    }
    constexpr uint64_t kStep = 256 * 1024;
    for (uint64_t at = 0; at < kSize; at += kStep) {
      if (!conn.write_pattern(at, kStep, Millis{20000})) return;
      written += kStep;
    }
  });
  TlsClientConn client(chain.port(), chain.client_options());
  REQUIRE_MESSAGE(client.handshake_ok(), client.handshake_error());
  REQUIRE(client.send(make_request("GET", "/large")));
  auto head = client.read_response_head();
  REQUIRE(head);
  CHECK(head->status == 200);

  // Not reading: what the upstream can write is bounded by socket buffers and bulwark's few
  // read buffers on the way, far below the body.
  uint64_t seen = 0;
  bool settled = eventually(
      [&] {
        uint64_t now = written.load();
        bool same = now == seen;
        seen = now;
        return same && now > 0;
      },
      Millis{5000}, Millis{300});
  CHECK(settled);
  CHECK(written.load() < 24 * kMiB);

  // read_some() hands over what is buffered first, then what arrives.
  PatternVerifier verifier;
  while (verifier.received() < kSize) {
    std::string part = client.read_some(1, Millis{20000});
    if (part.empty()) break;
    verifier.feed(part);
  }
  CHECK(verifier.received() == kSize);
  CHECK(verifier.ok());
}
