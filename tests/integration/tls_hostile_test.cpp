// Hostile review of TLS (issue 14): bulwark attacked by a hostile client, a hostile upstream and
// an operator who makes mistakes. Each test is one attack; what bulwark must do is what the
// issue promises ("never a crash, never a stalled worker", "a client can never forge it").

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/tls_listener_fixture.h"
#include "tests/integration/tls_upstream_fixture.h"

using namespace bulwark::test;

namespace {

bool send_raw(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Record boundaries and read-ahead

TEST_CASE("tls hostile: heads around the 16 KiB buffer size, with a body and a pipelined request") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.workers = 1;
  TlsListenerFixture proxy(options);

  TlsClientConn conn(proxy.port(), trusting(pki));
  REQUIRE(conn.connected());
  size_t sent = 0;
  for (size_t head = 16384 - 40; head <= 16384 + 40; head += 4) {
    // Pad the head to exactly `head` bytes with one header.
    std::string base = make_request("POST", "/h", {{"x-pad", ""}}, "0123456789");
    const size_t head_now = base.find("\r\n\r\n") + 4;
    if (head_now > head) continue;
    std::string pad(head - head_now, 'p');
    std::string request = make_request("POST", "/h", {{"x-pad", pad}}, "0123456789");
    REQUIRE(request.find("\r\n\r\n") + 4 == head);
    // Two requests in one write: OpenSSL holds what the first read did not take.
    REQUIRE(conn.send(request + make_request("GET", "/second")));
    CAPTURE(head);
    auto first = conn.read_response(false, Millis{3000});
    REQUIRE_MESSAGE(first, conn.last_error_text());
    CHECK(first->status == 200);
    auto second = conn.read_response(false, Millis{3000});
    REQUIRE_MESSAGE(second, conn.last_error_text());
    CHECK(second->status == 200);
    sent += 2;
  }
  CHECK(proxy.upstream.requests() == sent);
}

TEST_CASE("tls hostile: a head in one-byte TLS records is served") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.workers = 1;
  TlsListenerFixture proxy(options);

  TlsClientConn conn(proxy.port(), trusting(pki));
  REQUIRE(conn.connected());
  const std::string request =
      make_request("POST", "/tiny", {{"x-long", std::string(3000, 'a')}}, "body!");
  for (char c : request) REQUIRE(conn.write(std::string_view(&c, 1)));  // a record per byte
  auto response = conn.read_response();
  REQUIRE_MESSAGE(response, conn.last_error_text());
  CHECK(response->status == 200);
  auto last = proxy.upstream.last_request();
  REQUIRE(last);
  CHECK(last->body == "body!");
}

// ---------------------------------------------------------------------------------------------
// Client certificates and X-Forwarded-Client-Cert

TEST_CASE("tls hostile: XFCC and X-Forwarded-Proto forged on a plaintext listener are replaced") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "require_client_certificate: false\n"
                "forward_client_cert: append_forward";
  options.plain_listener = true;
  TlsListenerFixture proxy(options);
  const HeaderList forged = {{"X-Forwarded-Client-Cert", "Hash=1;URI=spiffe://forged"},
                             {"x-forwarded-client-cert", "By=x;URI=spiffe://forged2"},
                             {"X-Forwarded-Proto", "https"},
                             {"X-FORWARDED-CLIENT-CERT", "URI=spiffe://forged3"}};
  auto plain = http_get(proxy.plain_port(), "/plain", forged);
  REQUIRE(plain);
  auto last = proxy.upstream.last_request();
  REQUIRE(last);
  CHECK_FALSE(last->has("x-forwarded-client-cert"));
  CHECK(last->get_all("x-forwarded-proto") == std::vector<std::string>{"http"});

  // Over TLS without a client certificate (append_forward): the forged ones are dropped too.
  auto tls = https_get(proxy.port(), trusting(pki), "/tls", forged);
  REQUIRE(tls);
  last = proxy.upstream.last_request();
  REQUIRE(last);
  CHECK_FALSE(last->has("x-forwarded-client-cert"));
  CHECK(last->get_all("x-forwarded-proto") == std::vector<std::string>{"https"});
}

TEST_CASE("tls hostile: an odd SNI is served and logged as data") {
  TempDir dir;
  TestPki pki(dir.path());
  const std::string log = dir.path() + "/access.log";
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server), cert_entry(pki.second_server)};
  options.top = "access_log: {path: " + log + ", format: json}";
  TlsListenerFixture proxy(options);
  for (std::string sni : {std::string("a\r\nb\"c\\d\te"), std::string(255, 'x'),
                          std::string("API.EXAMPLE.TEST"), std::string("*.example.test"),
                          std::string("..")}) {
    TlsClientOptions client;  // trusts anything
    client.sni = sni;
    auto response = https_get(proxy.port(), client, "/sni");
    CHECK_MESSAGE(response, "SNI of " << sni.size() << " bytes");
  }
  auto response = https_get(proxy.port(), trusting(pki), "/after");
  REQUIRE(response);
  CHECK(response->status == 200);
}

// ---------------------------------------------------------------------------------------------
// Writes cut short, connections ended at every step (run against the sanitizer build too)

TEST_CASE("tls hostile: clients that vanish at every step of a large TLS response") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options, [](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      const size_t size = request->target == "/big" ? 4 * 1024 * 1024 : 10;
      if (!conn.write_response(200, std::string(size, 'r'))) return;
    }
  });

  for (int round = 0; round < 6; ++round) {
    CAPTURE(round);
    // Reset during the handshake.
    {
      int fd = connect_loopback(proxy.port());
      REQUIRE(fd >= 0);
      send_raw(fd, std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11));
      linger l{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      ::close(fd);
    }
    // A small receive window, a big response, a few bytes read, then a reset: bulwark has a
    // TLS write under way (OpenSSL holding a record the socket did not take).
    {
      TlsClientConn conn(proxy.port(), trusting(pki));
      REQUIRE(conn.connected());
      conn.set_receive_buffer(4096);
      REQUIRE(conn.send(make_request("GET", "/big")));
      conn.read_some(1000 * static_cast<size_t>(round + 1), Millis{2000});
      std::this_thread::sleep_for(Millis{50});
      conn.close(/*reset=*/true);
    }
    // A FIN (no close_notify) in the middle of the response.
    {
      TlsClientConn conn(proxy.port(), trusting(pki));
      REQUIRE(conn.send(make_request("GET", "/big")));
      conn.read_some(200000, Millis{2000});
      ::shutdown(conn.fd(), SHUT_RDWR);
    }
    // close_notify and FIN right after a pipelined pair, without reading.
    {
      TlsClientConn conn(proxy.port(), trusting(pki));
      REQUIRE(conn.send(make_request("GET", "/big") + make_request("GET", "/small")));
      conn.shutdown_write();
      conn.read_some(1, Millis{500});
      conn.close();
    }
  }
  auto response = https_get(proxy.port(), trusting(pki), "/small");
  REQUIRE(response);
  CHECK(response->status == 200);
  std::this_thread::sleep_for(Millis{300});
  CHECK(proxy.bulwark.process().running());
}

// ---------------------------------------------------------------------------------------------
// Hostile upstreams (and whoever sits between bulwark and them)

TEST_CASE("tls hostile: a WebSocket tunnel with TLS on both sides half-closes both ways") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream([](UpstreamConn& conn) {
    auto request = conn.read_request();
    if (!request) return;
    conn.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    std::string got;
    while (true) {
      std::string data = conn.read_some(1, Millis{10000});
      if (data.empty()) break;
      if (data.find("ping") != std::string::npos) conn.write(std::string(100000, 'p'));
      got += data;
    }
    if (conn.last_error() != ReadError::kClosed) return;
    conn.write("after your end: " + got);
  });
  TlsFrontDoor door(tls_upstream::serving(pki.server), upstream.port());
  const std::string yaml =
      "workers: 1\n"
      "drain_delay: 0s\n"
      "drain_timeout: 1s\n"
      "admin: {address: 127.0.0.1:0}\n"
      "listeners:\n"
      "  - name: secure\n"
      "    address: 127.0.0.1:0\n"
      "    tls:\n"
      "      certificates: [" +
      cert_entry(pki.server) +
      "]\n"
      "    routes:\n"
      "      - name: ws\n"
      "        match: {prefix: /}\n"
      "        cluster: app\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [" +
      tls_upstream::loopback_address(door.port()) +
      "]\n"
      "    tls: {ca: " +
      pki.ca.cert_file() + ", sni: localhost}\n";
  BulwarkProcess bulwark;
  bulwark.start(yaml);

  TlsClientConn client(bulwark.port("secure"), trusting(pki));
  REQUIRE(client.connected());
  REQUIRE(client.send(
      make_request("GET", "/ws", {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}})));
  auto switched = client.read_response();
  REQUIRE_MESSAGE(switched, client.last_error_text());
  REQUIRE(switched->status == 101);
  REQUIRE(client.send("ping"));
  auto pongs = client.read_exact(100000);
  CHECK(pongs.value_or("").size() == 100000);
  REQUIRE(client.send(" last words"));
  client.shutdown_write();  // close_notify and FIN
  CHECK(client.read_until_close() == "after your end: ping last words");
  CHECK(door.wait_closed(1));
}
