// TLS termination on a listener as a client sees it: https with TlsClientConn and curl, versions,
// ALPN, the certificate SNI picks, session resumption, what a hostile or broken client gets (and
// that each is counted by reason while bulwark goes on serving), client certificates (mTLS) with
// SPIFFE identities, X-Forwarded-Client-Cert in each forward_client_cert mode, and the TLS fields
// of the access log.

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tests/integration/tls_listener_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

Millis since(Clock::time_point start) {
  return std::chrono::duration_cast<Millis>(Clock::now() - start);
}

// The full path of a program on $PATH, or "" when there is none.
std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string_view rest = path ? path : "/usr/bin:/bin";
  while (!rest.empty()) {
    size_t colon = rest.find(':');
    std::string candidate = std::string(rest.substr(0, colon)) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return {};
}

// Runs a program to its end (10 s at most); its exit code, stdout and stderr.
struct RunResult {
  int code = -1;
  std::string out, err;
};
RunResult run(const std::vector<std::string>& argv) {
  Subprocess process;
  process.start(argv);
  RunResult result;
  result.code = process.wait_exit(Millis{10000}).value_or(-1);
  process.wait_streams_closed(Millis{2000});
  result.out = process.text(Subprocess::Stream::kStdout);
  result.err = process.text(Subprocess::Stream::kStderr);
  return result;
}

// The first TLS record a TlsClientConn sends (its ClientHello), caught by a plain TCP server.
std::string capture_client_hello() {
  std::mutex mutex;
  std::string hello;
  Event caught;
  TestUpstream catcher([&](UpstreamConn& conn) {
    auto header = conn.read_exact(5, Millis{2000});
    if (!header) return;
    size_t length =
        (static_cast<unsigned char>((*header)[3]) << 8) | static_cast<unsigned char>((*header)[4]);
    auto body = conn.read_exact(length, Millis{2000});
    if (!body) return;
    {
      std::lock_guard lock(mutex);
      hello = *header + *body;
    }
    caught.set();
  });
  TlsClientConn client(catcher.port(), TlsClientOptions{}, Millis{2000});
  REQUIRE(caught.wait());
  std::lock_guard lock(mutex);
  return hello;
}

// A request over TLS that must succeed: the response (a failed REQUIRE otherwise).
Response must_get(uint16_t port, const TlsClientOptions& options, std::string_view target,
                  const HeaderList& headers = {}) {
  std::string error;
  auto response = https_get(port, options, target, headers, kDefaultTimeout, &error);
  REQUIRE_MESSAGE(response, error);
  return *response;
}

// The access log lines (complete) of a file once it has at least `count`.
std::vector<std::string> wait_for_file_lines(const std::string& path, size_t count) {
  std::vector<std::string> lines;
  eventually([&] {
    lines.clear();
    std::string text;
    try {
      text = read_file(path);
    } catch (const std::exception&) {
      return false;
    }
    size_t start = 0, newline;
    while ((newline = text.find('\n', start)) != std::string::npos) {
      lines.push_back(text.substr(start, newline - start));
      start = newline + 1;
    }
    return lines.size() >= count;
  });
  return lines;
}

// The line of `lines` that contains `needle`, or "".
std::string line_with(const std::vector<std::string>& lines, const std::string& needle) {
  for (const std::string& line : lines) {
    if (line.find(needle) != std::string::npos) return line;
  }
  return "";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Termination basics

TEST_CASE("tls listener: https is served over TLS 1.3 and 1.2 with X-Forwarded-Proto https") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.plain_listener = true;
  TlsListenerFixture proxy(options);

  // TLS 1.3 by default, two requests on one connection.
  TlsClientConn conn(proxy.port(), trusting(pki));
  REQUIRE_MESSAGE(conn.connected(), conn.last_error_text());
  CHECK(conn.verify_result() == "ok");
  CHECK(conn.version() == "TLSv1.3");
  CHECK(conn.alpn() == "");  // the client offered none
  REQUIRE(conn.server_cert());
  CHECK(conn.server_cert()->sha256 == pki.server.sha256);
  CHECK(conn.server_chain_length() == 1);
  for (int i = 0; i < 2; ++i) {
    auto response = tls_get(conn, "/one/" + std::to_string(i));
    REQUIRE_MESSAGE(response, conn.last_error_text());
    CHECK(response->status == 200);
    CHECK(response->body == "GET /one/" + std::to_string(i) + "\n");
    CHECK(response->get("x-upstream-connection") == "1");
  }
  REQUIRE(proxy.upstream.wait_for_requests(2));
  auto seen = proxy.upstream.last_request();
  REQUIRE(seen);
  CHECK(seen->get("x-forwarded-proto") == "https");
  CHECK(seen->get_all("x-forwarded-proto").size() == 1);

  // A client's own X-Forwarded-Proto is not believed (no trusted hops).
  must_get(proxy.port(), trusting(pki), "/claims-http", {{"X-Forwarded-Proto", "http"}});
  REQUIRE(proxy.upstream.wait_for_requests(3));
  CHECK(proxy.upstream.last_request()->get_all("x-forwarded-proto") ==
        std::vector<std::string>{"https"});

  // TLS 1.2 too.
  auto tls12 = trusting(pki);
  tls12.max_version = TlsVersion::kTls1_2;
  TlsClientConn old(proxy.port(), tls12);
  REQUIRE_MESSAGE(old.connected(), old.last_error_text());
  CHECK(old.version() == "TLSv1.2");
  auto response = tls_get(old, "/twelve");
  REQUIRE_MESSAGE(response, old.last_error_text());
  CHECK(response->status == 200);
  REQUIRE(proxy.upstream.wait_for_requests(4));
  CHECK(proxy.upstream.last_request()->get("x-forwarded-proto") == "https");

  // The plaintext listener says http.
  auto plain = http_get(proxy.plain_port(), "/plain");
  REQUIRE(plain);
  CHECK(plain->status == 200);
  REQUIRE(proxy.upstream.wait_for_requests(5));
  CHECK(proxy.upstream.last_request()->get("x-forwarded-proto") == "http");

  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", false) == 2);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.2", false) == 1);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", true) == 0);
  CHECK_MESSAGE(tls_errors(proxy.bulwark) == 0, tls_error_summary(proxy.bulwark));
  // The certificate's expiry is exported with its path.
  auto expiry =
      scrape_metric(proxy.bulwark, "bulwark_tls_certificate_expiry_timestamp_seconds",
                    {{"side", "listener"}, {"name", "secure"}, {"path", pki.server.cert_file}});
  REQUIRE(expiry);
  const double in_a_year = static_cast<double>(time(nullptr)) + 365 * 86400.0;
  CHECK(*expiry > in_a_year - 86400);
  CHECK(*expiry < in_a_year + 86400);
}

TEST_CASE("tls listener: curl fetches over https with --cacert and fails on the plaintext port") {
  std::string curl = find_program("curl");
  if (curl.empty()) {
    MESSAGE("skipped: curl is not installed");
    return;
  }
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.plain_listener = true;
  TlsListenerFixture proxy(options);
  const std::string port = std::to_string(proxy.port());
  auto ok = run({curl, "-sS", "--max-time", "5", "--cacert", pki.ca.cert_file(), "--resolve",
                 "localhost:" + port + ":127.0.0.1", "-D", "-",
                 "https://localhost:" + port + "/via-curl"});
  CHECK_MESSAGE(ok.code == 0, ok.err);
  CHECK_MESSAGE(ok.out.find("HTTP/1.1 200") == 0, ok.out);
  CHECK(ok.out.find("GET /via-curl\n") != std::string::npos);
  REQUIRE(proxy.upstream.wait_for_requests(1));
  CHECK(proxy.upstream.last_request()->get("x-forwarded-proto") == "https");

  // By IP address: the certificate's IP SAN verifies, and no SNI is sent.
  auto by_ip = run({curl, "-sS", "--max-time", "5", "--cacert", pki.ca.cert_file(),
                    "https://127.0.0.1:" + port + "/by-ip"});
  CHECK_MESSAGE(by_ip.code == 0, by_ip.err);
  CHECK(by_ip.out == "GET /by-ip\n");

  // curl speaking plain HTTP to the TLS port reads why it failed.
  auto plain_to_tls =
      run({curl, "-sS", "--max-time", "5", "-D", "-", "http://127.0.0.1:" + port + "/oops"});
  CHECK(plain_to_tls.out.find("HTTP/1.1 400") == 0);
  CHECK(plain_to_tls.out.find("x-bulwark-reason: http_request_on_tls_port") != std::string::npos);
  CHECK(plain_to_tls.out.find("use https://") != std::string::npos);

  // https to the plaintext port: curl's handshake fails (CURLE_SSL_CONNECT_ERROR).
  const std::string plain_port = std::to_string(proxy.plain_port());
  auto tls_to_plain = run({curl, "-sS", "--max-time", "5", "--cacert", pki.ca.cert_file(),
                           "https://127.0.0.1:" + plain_port + "/"});
  CHECK_MESSAGE(tls_to_plain.code == 35, tls_to_plain.err);
  CHECK(proxy.upstream.requests() == 2);
}

TEST_CASE("tls listener: min_version 1.3 refuses a client that speaks at most TLS 1.2") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "min_version: \"1.3\"";
  TlsListenerFixture proxy(options);

  auto tls12 = trusting(pki);
  tls12.max_version = TlsVersion::kTls1_2;
  TlsClientConn old(proxy.port(), tls12);
  CHECK(!old.connected());
  CHECK(old.alert_received() == "protocol version");
  CHECK_MESSAGE(wait_tls_errors(proxy.bulwark, "version_mismatch", 1) == 1,
                tls_error_summary(proxy.bulwark));
  CHECK(tls_errors(proxy.bulwark) == 1);

  auto response = must_get(proxy.port(), trusting(pki), "/modern");
  CHECK(response.status == 200);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", false) == 1);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.2", false) == 0);
}

TEST_CASE("tls listener: ALPN picks http/1.1 and a client offering only h2 is refused") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options);

  auto both = trusting(pki);
  both.alpn = {"h2", "http/1.1"};
  TlsClientConn conn(proxy.port(), both);
  REQUIRE_MESSAGE(conn.connected(), conn.last_error_text());
  CHECK(conn.alpn() == "http/1.1");
  auto response = tls_get(conn, "/alpn");
  REQUIRE_MESSAGE(response, conn.last_error_text());
  CHECK(response->status == 200);

  auto h2_only = trusting(pki);
  h2_only.alpn = {"h2"};
  TlsClientConn h2(proxy.port(), h2_only);
  CHECK(!h2.connected());
  CHECK(h2.alert_received() == "no application protocol");
  CHECK_MESSAGE(wait_tls_errors(proxy.bulwark, "protocol_error", 1) == 1,
                tls_error_summary(proxy.bulwark));

  // A client of HTTP/1.0 only (curl --http1.0 offers "http/1.0") is served, in HTTP/1.0.
  auto http10 = trusting(pki);
  http10.alpn = {"http/1.0"};
  TlsClientConn old(proxy.port(), http10);
  REQUIRE_MESSAGE(old.connected(), old.last_error_text());
  CHECK(old.alpn() == "http/1.0");
  REQUIRE(old.send("GET /ten HTTP/1.0\r\nHost: localhost\r\n\r\n"));
  auto ten = old.read_response();
  REQUIRE_MESSAGE(ten, old.last_error_text());
  CHECK(ten->status == 200);
  CHECK(ten->version == "HTTP/1.1");  // bulwark's answers are HTTP/1.1, as on plaintext

  // Still serving.
  CHECK(must_get(proxy.port(), both, "/after").status == 200);
}

// ---------------------------------------------------------------------------------------------
// SNI

TEST_CASE("tls listener: SNI picks the exact certificate, then a wildcard, else the first") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  // The wildcard is listed before the exact name it also covers: an exact match still wins.
  options.certificates = {cert_entry(pki.server), cert_entry(pki.wildcard),
                          cert_entry(pki.second_server)};
  TlsListenerFixture proxy(options);

  struct Case {
    const char* sni;
    const IssuedCert* expected;
  };
  for (const Case& c :
       {Case{"localhost", &pki.server}, Case{"api.example.test", &pki.second_server},
        Case{"API.Example.TEST", &pki.second_server}, Case{"x.example.test", &pki.wildcard},
        Case{"a.b.example.test", &pki.server},  // one label only
        Case{"unknown.test", &pki.server}, Case{"", &pki.server}}) {
    // Not a structured binding: clang 14 cannot capture one (CAPTURE is a lambda).
    const char* sni = c.sni;
    const IssuedCert* expected = c.expected;
    CAPTURE(sni);
    TlsClientOptions client;  // no verification: which certificate came is the point
    client.sni = sni;
    TlsClientConn conn(proxy.port(), client);
    REQUIRE_MESSAGE(conn.connected(), conn.last_error_text());
    REQUIRE(conn.server_cert());
    CHECK(conn.server_cert()->subject == expected->subject);
    CHECK(conn.server_cert()->sha256 == expected->sha256);
    auto response = tls_get(conn, "/sni");
    REQUIRE_MESSAGE(response, conn.last_error_text());
    CHECK(response->status == 200);
  }
  // And a verifying client accepts each.
  CHECK(must_get(proxy.port(), trusting(pki, "api.example.test"), "/").status == 200);
  CHECK(must_get(proxy.port(), trusting(pki, "www.example.test"), "/").status == 200);
  CHECK(must_get(proxy.port(), trusting(pki, ""), "/").status == 200);
  CHECK(tls_errors(proxy.bulwark) == 0);
}

TEST_CASE("tls listener: client certificates are checked whichever certificate SNI picked") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server), cert_entry(pki.second_server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "allowed_client_sans: [\"" +
                std::string(TestPki::kSpiffeWeb) + "\"]";
  TlsListenerFixture proxy(options);

  auto api = trusting(pki, "api.example.test");
  TlsClientConn web(proxy.port(), with_cert(api, pki.client_web));
  auto response = tls_get(web, "/web");
  REQUIRE_MESSAGE(response, web.last_error_text());
  CHECK(response->status == 200);
  CHECK(web.server_cert()->sha256 == pki.second_server.sha256);

  for (const IssuedCert* refused : {&pki.client_intruder, &pki.other_ca_client}) {
    CAPTURE(refused->name);
    TlsClientConn conn(proxy.port(), with_cert(api, *refused));
    CHECK(!tls_get(conn, "/refused"));
  }
  TlsClientConn none(proxy.port(), api);
  CHECK(!tls_get(none, "/refused"));
  CHECK(none.alert_received() == "certificate required");
  CHECK_MESSAGE(wait_tls_errors(proxy.bulwark, "", 3) == 3, tls_error_summary(proxy.bulwark));
  CHECK(tls_errors(proxy.bulwark, "san_not_allowed") == 1);
  CHECK(tls_errors(proxy.bulwark, "certificate_untrusted") == 1);
  CHECK(tls_errors(proxy.bulwark, "no_client_certificate") == 1);
  CHECK(proxy.upstream.requests() == 1);
}

TEST_CASE("tls listener: ciphers limits the TLS 1.2 suites and leaves TLS 1.3 alone") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "ciphers: ECDHE-ECDSA-CHACHA20-POLY1305";
  TlsListenerFixture proxy(options);

  auto tls12 = trusting(pki);
  tls12.max_version = TlsVersion::kTls1_2;
  TlsClientConn old(proxy.port(), tls12);
  REQUIRE_MESSAGE(old.connected(), old.last_error_text());
  CHECK(old.cipher() == "ECDHE-ECDSA-CHACHA20-POLY1305");
  REQUIRE(tls_get(old, "/twelve"));
  TlsClientConn modern(proxy.port(), trusting(pki));
  REQUIRE_MESSAGE(modern.connected(), modern.last_error_text());
  CHECK(modern.version() == "TLSv1.3");
  CHECK(modern.cipher().rfind("TLS_", 0) == 0);
  REQUIRE(tls_get(modern, "/thirteen"));
}

// ---------------------------------------------------------------------------------------------
// Session resumption

TEST_CASE("tls listener: sessions resume with TLS 1.3 and TLS 1.2 tickets on any worker") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options);  // two workers: a ticket from one must work on the other

  // TLS 1.3: a client uses a ticket once (RFC 8446 C.4), so each pair is a full handshake and
  // a resumption with its ticket; several pairs, so that both workers most likely see both.
  const auto tls13 = trusting(pki);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    TlsClientConn full(proxy.port(), tls13);
    REQUIRE_MESSAGE(full.connected(), full.last_error_text());
    CHECK(!full.resumed());
    TlsSession session = full.get_session(kDefaultTimeout);  // tickets follow the handshake
    REQUIRE(session);
    REQUIRE(tls_get(full, "/full"));
    auto again = tls13;
    again.session = session;
    TlsClientConn resumed(proxy.port(), again);
    REQUIRE_MESSAGE(resumed.connected(), resumed.last_error_text());
    CHECK(resumed.resumed());
    CHECK(resumed.version() == "TLSv1.3");
    auto response = tls_get(resumed, "/resumed");
    REQUIRE_MESSAGE(response, resumed.last_error_text());
    CHECK(response->status == 200);
  }
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", false) == 3);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", true) == 3);

  // TLS 1.2: the session (with its ticket) of one full handshake resumes again and again.
  auto tls12 = trusting(pki);
  tls12.max_version = TlsVersion::kTls1_2;
  TlsClientConn first(proxy.port(), tls12);
  REQUIRE_MESSAGE(first.connected(), first.last_error_text());
  TlsSession session = first.get_session();
  REQUIRE(session);
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    auto again = tls12;
    again.session = session;
    TlsClientConn next(proxy.port(), again);
    REQUIRE_MESSAGE(next.connected(), next.last_error_text());
    CHECK(next.resumed());
    CHECK(next.version() == "TLSv1.2");
    REQUIRE(tls_get(next, "/resumed12"));
  }
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.2", false) == 1);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.2", true) == 4);
  CHECK(tls_errors(proxy.bulwark) == 0);
}

// ---------------------------------------------------------------------------------------------
// Hostile and broken clients

TEST_CASE("tls listener: plaintext HTTP on the TLS port gets a plaintext 400 and is counted") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options);

  double counted = 0;
  for (const char* method : {"GET", "POST", "HEAD", "PUT"}) {
    CAPTURE(method);
    ClientConn conn(proxy.port());
    REQUIRE(conn.connected());
    REQUIRE(conn.send(make_request(method, "/plain", {}, "")));
    auto response = conn.read_response(std::string_view(method) == "HEAD");
    REQUIRE_MESSAGE(response, conn.last_error_text());
    CHECK(response->status == 400);
    CHECK(response->get("x-bulwark-reason") == "http_request_on_tls_port");
    CHECK(response->get("connection") == "close");
    if (std::string_view(method) != "HEAD") {
      CHECK(response->body == "This port speaks TLS: use https:// here\n");
    }
    CHECK(conn.is_closed());
    ++counted;
    CHECK(wait_tls_errors(proxy.bulwark, "http_request_on_tls_port", counted) == counted);
  }
  CHECK(proxy.upstream.requests() == 0);
  CHECK(must_get(proxy.port(), trusting(pki), "/still-fine").status == 200);
}

TEST_CASE(
    "tls listener: a TLS ClientHello on a plaintext listener gets 400 tls_on_plaintext_port") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.plain_listener = true;
  TlsListenerFixture proxy(options);
  const std::string hello = capture_client_hello();
  REQUIRE(hello.size() > 5);
  REQUIRE(hello[0] == 0x16);

  ClientConn raw(proxy.plain_port());
  REQUIRE(raw.connected());
  REQUIRE(raw.send(hello));
  auto response = raw.read_response();
  check_local_reply(response, 400, "tls_on_plaintext_port");
  CHECK(raw.is_closed());

  // A TLS client sees a failed handshake (the reply is no ServerHello).
  TlsClientConn tls(proxy.plain_port(), trusting(pki));
  CHECK(!tls.connected());
  CHECK(tls.handshake_error() == "wrong version number");

  eventually([&] {
    return scrape_metric(proxy.bulwark, "bulwark_local_replies_total",
                         {{"reason", "tls_on_plaintext_port"}}) == 2;
  });
  CHECK(scrape_metric(proxy.bulwark, "bulwark_local_replies_total",
                      {{"reason", "tls_on_plaintext_port"}}) == 2);
  CHECK(proxy.upstream.requests() == 0);
  CHECK(http_get(proxy.plain_port(), "/still-fine")->status == 200);
  CHECK(tls_errors(proxy.bulwark) == 0);  // the TLS listener saw none of it
}

TEST_CASE("tls listener: silent clients are closed after request_headers_timeout") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.listener = "request_headers_timeout: 300ms\nidle_timeout: 30s";
  TlsListenerFixture proxy(options);

  const auto start = Clock::now();
  std::vector<ClientConn> silent(20);
  for (ClientConn& conn : silent) REQUIRE(conn.connect(proxy.port()));
  // Handshakes that never start stall no worker: a client that does speak is served meanwhile.
  TlsClientConn meanwhile(proxy.port(), trusting(pki), Millis{1000});
  REQUIRE_MESSAGE(meanwhile.connected(), meanwhile.last_error_text());
  REQUIRE(tls_get(meanwhile, "/meanwhile"));
  CHECK(since(start) < Millis{300});  // before any silent one timed out
  for (ClientConn& conn : silent) {
    CHECK(conn.is_closed(Millis{3000}));
    CHECK(conn.buffered().empty());  // no bytes: neither TLS nor an HTTP reply
  }
  const Millis took = since(start);
  CHECK(took >= Millis{250});
  CHECK(took < Millis{2000});
  CHECK(wait_tls_errors(proxy.bulwark, "handshake_timeout", 20) == 20);
  CHECK_MESSAGE(tls_errors(proxy.bulwark) == 20, tls_error_summary(proxy.bulwark));
  // The client that spoke is idle now, with idle_timeout: still open.
  auto response = tls_get(meanwhile, "/again");
  REQUIRE_MESSAGE(response, meanwhile.last_error_text());
  CHECK(response->status == 200);
}

TEST_CASE("tls listener: a client that stops within its hello is closed and counted") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.listener = "request_headers_timeout: 300ms\nidle_timeout: 30s";
  TlsListenerFixture proxy(options);
  const std::string hello = capture_client_hello();

  SUBCASE("half a ClientHello, then FIN") {
    ClientConn conn(proxy.port());
    REQUIRE(conn.connected());
    REQUIRE(conn.send(hello.substr(0, hello.size() / 2)));
    conn.shutdown_write();
    CHECK(conn.is_closed(Millis{2000}));
    CHECK(conn.buffered().empty());
    CHECK(wait_tls_errors(proxy.bulwark, "closed_during_handshake", 1) == 1);
  }
  SUBCASE("half a ClientHello, then waiting: the handshake times out") {
    ClientConn conn(proxy.port());
    REQUIRE(conn.connected());
    REQUIRE(conn.send(hello.substr(0, hello.size() / 2)));
    CHECK(conn.is_closed(Millis{3000}));
    CHECK(wait_tls_errors(proxy.bulwark, "handshake_timeout", 1) == 1);
  }
  SUBCASE("a reset in the middle of the handshake") {
    ClientConn conn(proxy.port());
    REQUIRE(conn.connected());
    REQUIRE(conn.send(hello.substr(0, 20)));
    conn.close(/*reset=*/true);
    CHECK_MESSAGE(wait_tls_errors(proxy.bulwark, "closed_during_handshake", 1) == 1,
                  tls_error_summary(proxy.bulwark));
  }
  CHECK_MESSAGE(tls_errors(proxy.bulwark) == 1, tls_error_summary(proxy.bulwark));
  CHECK(must_get(proxy.port(), trusting(pki), "/still-fine").status == 200);
}

TEST_CASE("tls listener: garbage instead of a ClientHello is closed as a protocol error") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.listener = "request_headers_timeout: 2s";
  TlsListenerFixture proxy(options);

  std::string random_bytes;
  for (int i = 0; i < 64; ++i) random_bytes.push_back(static_cast<char>((i * 97 + 13) & 0xff));
  // A handshake record header announcing a ClientHello, then junk.
  std::string bad_hello = std::string("\x16\x03\x01\x00\x20", 5) + std::string(32, '\x7f');
  struct Case {
    std::string bytes;
    bool alert;  // answered with a TLS alert record (else closed without a byte)
  };
  double counted = 0;
  for (const Case& c : {Case{random_bytes, false}, Case{bad_hello, true}}) {
    CAPTURE(c.bytes.size());
    ClientConn conn(proxy.port());
    REQUIRE(conn.connected());
    REQUIRE(conn.send(c.bytes));
    const auto start = Clock::now();
    CHECK(conn.is_closed(Millis{1500}));  // at once, not at the 2 s headers timeout
    CHECK(since(start) < Millis{1500});
    if (c.alert) {
      // A fatal alert record: content type 21, 2 bytes of alert.
      REQUIRE(conn.buffered().size() == 7);
      CHECK(conn.buffered()[0] == '\x15');
      CHECK(conn.buffered()[5] == '\x02');  // fatal
    } else {
      CHECK(conn.buffered().empty());
    }
    ++counted;
    CHECK(wait_tls_errors(proxy.bulwark, "protocol_error", counted) == counted);
  }
  CHECK_MESSAGE(tls_errors(proxy.bulwark) == counted, tls_error_summary(proxy.bulwark));
  CHECK(must_get(proxy.port(), trusting(pki), "/still-fine").status == 200);
}

TEST_CASE("tls listener: a corrupt record after the handshake closes only that connection") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options);

  TlsClientConn bystander(proxy.port(), trusting(pki));
  REQUIRE(tls_get(bystander, "/before"));
  TlsClientConn conn(proxy.port(), trusting(pki));
  REQUIRE(tls_get(conn, "/before"));
  // An application data record whose bytes do not authenticate, written under TLS's feet.
  const std::string record = std::string("\x17\x03\x03\x00\x20", 5) + std::string(32, '\x5a');
  REQUIRE(::send(conn.fd(), record.data(), record.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(record.size()));
  // bulwark answers with a fatal alert and closes.
  CHECK(!tls_get(conn, "/after"));
  CHECK(conn.alert_received() == "bad record mac");
  auto response = tls_get(bystander, "/after");
  REQUIRE_MESSAGE(response, bystander.last_error_text());
  CHECK(response->status == 200);
  CHECK(proxy.upstream.requests() == 3);
  CHECK(tls_errors(proxy.bulwark) == 0);  // not a handshake failure
}

TEST_CASE(
    "tls listener: after the handshake an idle client has idle_timeout, not the headers one") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.listener = "request_headers_timeout: 200ms\nidle_timeout: 800ms";
  TlsListenerFixture proxy(options);

  const auto start = Clock::now();
  TlsClientConn idle(proxy.port(), trusting(pki));
  REQUIRE_MESSAGE(idle.connected(), idle.last_error_text());
  CHECK_FALSE(idle.is_closed(Millis{500}));  // well past request_headers_timeout: still open
  CHECK(idle.is_closed(Millis{3000}));
  const Millis took = since(start);
  CHECK(took >= Millis{750});
  CHECK(took < Millis{3000});
  CHECK(idle.buffered().empty());  // closed without a 408
  CHECK_MESSAGE(tls_errors(proxy.bulwark) == 0, tls_error_summary(proxy.bulwark));
  CHECK(must_get(proxy.port(), trusting(pki), "/still-fine").status == 200);
}

// ---------------------------------------------------------------------------------------------
// Client certificates

TEST_CASE("tls listener: mTLS admits the allowed SPIFFE identity and refuses the others") {
  TempDir dir;
  TestPki pki(dir.path());
  CertSpec expired_spec;
  expired_spec.common_name = "web";
  expired_spec.uri_sans = {TestPki::kSpiffeWeb};
  expired_spec.usage = CertUsage::kClient;
  expired_spec.not_before_days = -30;
  expired_spec.not_after_days = -1;
  IssuedCert expired_client = pki.ca.issue("expired_client", expired_spec);

  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "allowed_client_sans: [\"" +
                std::string(TestPki::kSpiffeWeb) + "\"]";
  TlsListenerFixture proxy(options);

  // The allowed identity.
  TlsClientConn web(proxy.port(), with_cert(trusting(pki), pki.client_web));
  auto response = tls_get(web, "/web");
  REQUIRE_MESSAGE(response, web.last_error_text());
  CHECK(response->status == 200);
  auto web12 = with_cert(trusting(pki), pki.client_web);
  web12.max_version = TlsVersion::kTls1_2;
  CHECK(must_get(proxy.port(), web12, "/web12").status == 200);

  // Each refusal: no HTTP response, an alert, a counted reason; bulwark serves on.
  struct Refusal {
    const char* what;
    const IssuedCert* cert;  // null: none
    TlsVersion max_version;
    const char* alert;  // the alert the client receives
    const char* reason;
  };
  for (const Refusal& r : {
           Refusal{"no certificate", nullptr, TlsVersion::kDefault, "certificate required",
                   "no_client_certificate"},
           Refusal{"no certificate over TLS 1.2", nullptr, TlsVersion::kTls1_2, "handshake failure",
                   "no_client_certificate"},
           Refusal{"another CA", &pki.other_ca_client, TlsVersion::kDefault, "unknown CA",
                   "certificate_untrusted"},
           Refusal{"an expired certificate", &expired_client, TlsVersion::kDefault,
                   "certificate expired", "certificate_expired"},
           Refusal{"the intruder", &pki.client_intruder, TlsVersion::kDefault, "handshake failure",
                   "san_not_allowed"},
           Refusal{"no URI SAN", &pki.client_dns_only, TlsVersion::kTls1_2, "handshake failure",
                   "san_not_allowed"},
       }) {
    CAPTURE(r.what);
    const double before = tls_errors(proxy.bulwark, r.reason);
    auto client = trusting(pki);
    if (r.cert != nullptr) client = with_cert(client, *r.cert);
    client.max_version = r.max_version;
    TlsClientConn conn(proxy.port(), client);
    // In TLS 1.3 the client's side of the handshake completes; the refusal comes as an alert
    // to its first read or write. In TLS 1.2 the handshake itself fails.
    if (conn.connected()) {
      CHECK(!tls_get(conn, "/refused"));
      CHECK(conn.partial().status == 0);  // no HTTP response at all
    }
    CHECK(conn.alert_received() == r.alert);
    CHECK_MESSAGE(wait_tls_errors(proxy.bulwark, r.reason, before + 1) == before + 1,
                  tls_error_summary(proxy.bulwark));
    CHECK(must_get(proxy.port(), with_cert(trusting(pki), pki.client_web), "/still").status == 200);
  }
  CHECK(proxy.upstream.requests() == 2 + 6);  // only the admitted clients' requests
}

TEST_CASE("tls listener: allowed_client_sans with a trailing * admits a prefix") {
  TempDir dir;
  TestPki pki(dir.path());
  CertSpec other_shop;
  other_shop.common_name = "cart";
  other_shop.uri_sans = {"spiffe://cluster.local/ns/shop/sa/cart"};
  other_shop.usage = CertUsage::kClient;
  IssuedCert cart = pki.ca.issue("client_cart", other_shop);
  CertSpec lookalike = other_shop;
  lookalike.uri_sans = {"spiffe://cluster.local/ns/shopping/sa/web"};
  IssuedCert shopping = pki.ca.issue("client_shopping", lookalike);

  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "allowed_client_sans: [\"spiffe://cluster.local/ns/shop/*\"]";
  TlsListenerFixture proxy(options);

  CHECK(must_get(proxy.port(), with_cert(trusting(pki), pki.client_web), "/web").status == 200);
  CHECK(must_get(proxy.port(), with_cert(trusting(pki), cart), "/cart").status == 200);
  for (const IssuedCert* refused : {&pki.client_intruder, &shopping}) {
    CAPTURE(refused->name);
    std::string error;
    CHECK(!https_get(proxy.port(), with_cert(trusting(pki), *refused), "/", {}, kDefaultTimeout,
                     &error));
  }
  CHECK_MESSAGE(wait_tls_errors(proxy.bulwark, "san_not_allowed", 2) == 2,
                tls_error_summary(proxy.bulwark));
  CHECK(proxy.upstream.requests() == 2);
}

TEST_CASE("tls listener: require_client_certificate false admits a client without one") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() + "\nrequire_client_certificate: false";
  TlsListenerFixture proxy(options);

  CHECK(must_get(proxy.port(), trusting(pki), "/anonymous").status == 200);
  auto tls12 = trusting(pki);
  tls12.max_version = TlsVersion::kTls1_2;
  CHECK(must_get(proxy.port(), tls12, "/anonymous12").status == 200);
  CHECK(must_get(proxy.port(), with_cert(trusting(pki), pki.client_web), "/web").status == 200);
  // A certificate that is sent is still verified.
  std::string error;
  CHECK(!https_get(proxy.port(), with_cert(trusting(pki), pki.other_ca_client), "/", {},
                   kDefaultTimeout, &error));
  CHECK(error.find("unknown ca") != std::string::npos);
  CHECK(wait_tls_errors(proxy.bulwark, "certificate_untrusted", 1) == 1);
  CHECK(proxy.upstream.requests() == 3);
}

// ---------------------------------------------------------------------------------------------
// X-Forwarded-Client-Cert

TEST_CASE("tls listener: forward_client_cert sanitize drops every incoming XFCC") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file();  // sanitize is the default
  TlsListenerFixture proxy(options);

  const HeaderList forged{
      {"X-Forwarded-Client-Cert", "Hash=0000;URI=spiffe://cluster.local/ns/admin/sa/root"},
      {"x-forwarded-client-cert", "By=spiffe://x;Hash=1111"}};
  CHECK(must_get(proxy.port(), with_cert(trusting(pki), pki.client_web), "/", forged).status ==
        200);
  REQUIRE(proxy.upstream.wait_for_requests(1));
  auto seen = proxy.upstream.last_request();
  CHECK_MESSAGE(!seen->has("x-forwarded-client-cert"), seen->head);
}

TEST_CASE("tls listener: forward_client_cert sanitize_set sends only bulwark's XFCC") {
  TempDir dir;
  TestPki pki(dir.path());
  CertSpec both_spec;
  both_spec.common_name = "web";
  both_spec.uri_sans = {TestPki::kSpiffeWeb};
  both_spec.dns_sans = {"web.shop.test"};
  both_spec.usage = CertUsage::kClient;
  IssuedCert both = pki.ca.issue("client_both", both_spec);

  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "require_client_certificate: false\n"
                "forward_client_cert: sanitize_set";
  options.plain_listener = true;
  TlsListenerFixture proxy(options);
  const HeaderList forged{
      {"X-Forwarded-Client-Cert", "Hash=0000;URI=spiffe://cluster.local/ns/admin/sa/root"}};

  struct Case {
    const IssuedCert* cert;
    std::string expected;  // "" = no header at all
  };
  const std::string web =
      std::string("Hash=") + pki.client_web.sha256 + ";URI=" + TestPki::kSpiffeWeb;
  for (const Case& c : {
           Case{&pki.client_web, web},
           Case{&pki.client_dns_only,
                "Hash=" + pki.client_dns_only.sha256 + ";DNS=client.example.test"},
           Case{&both,
                "Hash=" + both.sha256 + ";URI=" + TestPki::kSpiffeWeb + ";DNS=web.shop.test"},
           Case{nullptr, ""},
       }) {
    CAPTURE(c.expected);
    const size_t before = proxy.upstream.requests();
    auto client = c.cert != nullptr ? with_cert(trusting(pki), *c.cert) : trusting(pki);
    CHECK(must_get(proxy.port(), client, "/xfcc", forged).status == 200);
    REQUIRE(proxy.upstream.wait_for_requests(before + 1));
    auto seen = proxy.upstream.last_request();
    if (c.expected.empty()) {
      CHECK_MESSAGE(!seen->has("x-forwarded-client-cert"), seen->head);
    } else {
      CHECK_MESSAGE(
          seen->get_all("x-forwarded-client-cert") == std::vector<std::string>{c.expected},
          seen->head);
    }
  }
  // Every request of a kept-alive connection carries it.
  TlsClientConn conn(proxy.port(), with_cert(trusting(pki), pki.client_web));
  for (int i = 0; i < 2; ++i) {
    REQUIRE(tls_get(conn, "/again", forged));
    REQUIRE(proxy.upstream.wait_for_requests(5 + static_cast<size_t>(i)));
    CHECK(proxy.upstream.last_request()->get_all("x-forwarded-client-cert") ==
          std::vector<std::string>{web});
  }
  // The plaintext listener drops a client's XFCC.
  auto plain = http_get(proxy.plain_port(), "/plain", forged);
  REQUIRE(plain);
  REQUIRE(proxy.upstream.wait_for_requests(7));
  CHECK(!proxy.upstream.last_request()->has("x-forwarded-client-cert"));
}

TEST_CASE("tls listener: forward_client_cert append_forward keeps theirs and appends ours") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() + "\nforward_client_cert: append_forward";
  options.plain_listener = true;
  TlsListenerFixture proxy(options);

  const std::string theirs = "By=spiffe://cluster.local/ns/shop/sa/web;Hash=abcd;URI=spiffe://a";
  CHECK(must_get(proxy.port(), with_cert(trusting(pki), pki.client_web), "/",
                 {{"X-Forwarded-Client-Cert", theirs}})
            .status == 200);
  REQUIRE(proxy.upstream.wait_for_requests(1));
  auto seen = proxy.upstream.last_request();
  const std::string ours =
      std::string("Hash=") + pki.client_web.sha256 + ";URI=" + TestPki::kSpiffeWeb;
  // Theirs first, ours last: as separate fields or joined with a comma, the same list.
  std::string joined;
  for (const std::string& v : seen->get_all("x-forwarded-client-cert")) {
    joined += (joined.empty() ? "" : ",") + v;
  }
  CHECK_MESSAGE(joined == theirs + "," + ours, seen->head);

  // Without one from the client: ours alone.
  CHECK(must_get(proxy.port(), with_cert(trusting(pki), pki.client_web), "/").status == 200);
  REQUIRE(proxy.upstream.wait_for_requests(2));
  CHECK(proxy.upstream.last_request()->get_all("x-forwarded-client-cert") ==
        std::vector<std::string>{ours});

  // The plaintext listener of the same proxy drops it.
  auto plain = http_get(proxy.plain_port(), "/plain", {{"X-Forwarded-Client-Cert", theirs}});
  REQUIRE(plain);
  REQUIRE(proxy.upstream.wait_for_requests(3));
  CHECK(!proxy.upstream.last_request()->has("x-forwarded-client-cert"));
}

// ---------------------------------------------------------------------------------------------
// The access log

TEST_CASE("tls listener: the JSON access log has the TLS version, cipher, SNI, resumption, peer") {
  TempDir dir;
  TestPki pki(dir.path());
  const std::string log_path = dir.file("access.log");
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() + "\nrequire_client_certificate: false";
  options.plain_listener = true;
  options.top = "access_log: {path: " + log_path + ", format: json}";
  TlsListenerFixture proxy(options);

  TlsClientConn web(proxy.port(), with_cert(trusting(pki), pki.client_web));
  REQUIRE(tls_get(web, "/web", {{"X-Request-Id", "tls-web"}}));
  TlsSession session = web.get_session(kDefaultTimeout);
  REQUIRE(session);
  auto resuming = with_cert(trusting(pki), pki.client_web);
  resuming.session = session;
  TlsClientConn resumed(proxy.port(), resuming);
  REQUIRE(resumed.resumed());
  REQUIRE(tls_get(resumed, "/resumed", {{"X-Request-Id", "tls-resumed"}}));
  auto no_sni = trusting(pki, "");
  no_sni.max_version = TlsVersion::kTls1_2;
  TlsClientConn anonymous(proxy.port(), no_sni);
  REQUIRE(tls_get(anonymous, "/anonymous", {{"X-Request-Id", "tls-anonymous"}}));
  REQUIRE(http_get(proxy.plain_port(), "/plain", {{"X-Request-Id", "plain"}}));

  auto lines = wait_for_file_lines(log_path, 4);
  REQUIRE(lines.size() == 4);
  const std::string web_line = line_with(lines, "\"request_id\":\"tls-web\"");
  CHECK(web_line.find("\"tls\":{\"version\":\"TLSv1.3\",\"cipher\":\"" + web.cipher() +
                      "\",\"sni\":\"localhost\",\"resumed\":false,\"peer\":\"" +
                      TestPki::kSpiffeWeb + "\"}") != std::string::npos);
  const std::string resumed_line = line_with(lines, "\"request_id\":\"tls-resumed\"");
  CHECK_MESSAGE(resumed_line.find("\"resumed\":true,\"peer\":\"" +
                                  std::string(TestPki::kSpiffeWeb) + "\"}") != std::string::npos,
                resumed_line);
  const std::string anonymous_line = line_with(lines, "\"request_id\":\"tls-anonymous\"");
  CHECK_MESSAGE(
      anonymous_line.find("\"tls\":{\"version\":\"TLSv1.2\",\"cipher\":\"" + anonymous.cipher() +
                          "\",\"sni\":null,\"resumed\":false,\"peer\":null}") != std::string::npos,
      anonymous_line);
  const std::string plain_line = line_with(lines, "\"request_id\":\"plain\"");
  REQUIRE(!plain_line.empty());
  CHECK_MESSAGE(plain_line.find("\"tls\"") == std::string::npos, plain_line);
}

TEST_CASE("tls listener: the text access log has tls= fields on TLS requests only") {
  TempDir dir;
  TestPki pki(dir.path());
  const std::string log_path = dir.file("access.log");
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() + "\nrequire_client_certificate: false";
  options.plain_listener = true;
  options.top = "access_log: {path: " + log_path + ", format: text}";
  TlsListenerFixture proxy(options);

  TlsClientConn web(proxy.port(), with_cert(trusting(pki), pki.client_web));
  REQUIRE(tls_get(web, "/web"));
  TlsClientConn anonymous(proxy.port(), trusting(pki, ""));
  REQUIRE(tls_get(anonymous, "/anonymous"));
  REQUIRE(http_get(proxy.plain_port(), "/plain"));

  auto lines = wait_for_file_lines(log_path, 3);
  REQUIRE(lines.size() == 3);
  const std::string web_line = line_with(lines, "\"GET /web HTTP/1.1\"");
  CHECK_MESSAGE(web_line.find(" tls=\"TLSv1.3\" tls_cipher=\"" + web.cipher() +
                              "\" tls_sni=\"localhost\" tls_resumed=\"false\" tls_peer=\"" +
                              TestPki::kSpiffeWeb + "\"") != std::string::npos,
                web_line);
  const std::string anonymous_line = line_with(lines, "\"GET /anonymous HTTP/1.1\"");
  CHECK_MESSAGE(anonymous_line.find(" tls_sni=\"-\" tls_resumed=\"false\" tls_peer=\"-\"") !=
                    std::string::npos,
                anonymous_line);
  const std::string plain_line = line_with(lines, "\"GET /plain HTTP/1.1\"");
  REQUIRE(!plain_line.empty());
  CHECK_MESSAGE(plain_line.find("tls") == std::string::npos, plain_line);
}

// ---------------------------------------------------------------------------------------------
// Bugs these tests found once (each failed before its fix; the commit adding them says how).

namespace {

// Lines of s_client's output that say whether the session was new or reused.
std::string session_lines(const std::string& out) {
  std::string lines;
  size_t start = 0;
  while (start < out.size()) {
    size_t eol = out.find('\n', start);
    if (eol == std::string::npos) eol = out.size();
    std::string line = out.substr(start, eol - start);
    if (line.rfind("New, ", 0) == 0 || line.rfind("Reused, ", 0) == 0) lines += line + "\n";
    start = eol + 1;
  }
  return lines;
}

}  // namespace

TEST_CASE("tls listener: a TLS 1.2 session resumes from the session cache without tickets") {
  std::string openssl = find_program("openssl");
  if (openssl.empty()) {
    MESSAGE("skipped: openssl is not installed");
    return;
  }
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options);
  const std::string session_file = dir.file("session.pem");
  // -no_ticket: the client asks for no ticket, so the session can only resume by its id, from
  // bulwark's session cache. Each s_client sends close_notify and closes after the handshake.
  auto s_client = [&](const std::string& session_arg) {
    return run({openssl, "s_client", "-connect", "127.0.0.1:" + std::to_string(proxy.port()),
                "-servername", "localhost", "-CAfile", pki.ca.cert_file(), "-verify_return_error",
                "-tls1_2", "-no_ticket", session_arg, session_file});
  };
  auto first = s_client("-sess_out");
  REQUIRE_MESSAGE(first.code == 0, first.err);
  CHECK_MESSAGE(session_lines(first.out).rfind("New, TLSv1.2, ", 0) == 0, first.out);
  CHECK(first.out.find("TLS session ticket:") == std::string::npos);
  auto second = s_client("-sess_in");
  REQUIRE_MESSAGE(second.code == 0, second.err);
  CHECK_MESSAGE(session_lines(second.out).rfind("Reused, TLSv1.2, ", 0) == 0,
                session_lines(second.out));
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.2", false) == 1);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.2", true) == 1);
}

TEST_CASE("tls listener: a resumed TLS 1.3 connection gets a new ticket so the next one resumes") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options);

  // A client that uses each ticket once (RFC 8446 C.4; OpenSSL's, curl's and browsers' way)
  // resumes its next connection with the ticket its last connection received.
  auto client = trusting(pki);
  TlsClientConn first(proxy.port(), client);
  REQUIRE_MESSAGE(first.connected(), first.last_error_text());
  client.session = first.get_session(kDefaultTimeout);
  REQUIRE(client.session);
  REQUIRE(tls_get(first, "/first"));
  for (int i = 1; i <= 3; ++i) {
    CAPTURE(i);
    TlsClientConn next(proxy.port(), client);
    REQUIRE_MESSAGE(next.connected(), next.last_error_text());
    CHECK(next.resumed());
    REQUIRE(tls_get(next, "/next"));
    client.session = next.get_session(Millis{1000});
    REQUIRE_MESSAGE(client.session, "no new ticket after a resumed TLS 1.3 handshake");
  }
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", false) == 1);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", true) == 3);
}

TEST_CASE("tls listener: a plaintext request with any method on the TLS port gets the 400") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TlsListenerFixture proxy(options);

  for (const char* method : {"DELETE", "OPTIONS", "PATCH", "CONNECT"}) {
    CAPTURE(method);
    const bool connect = std::string_view(method) == "CONNECT";
    ClientConn conn(proxy.port());
    REQUIRE(conn.connected());
    REQUIRE(conn.send(make_request(method, connect ? "example.com:443" : "/plain")));
    auto response = conn.read_response();
    CHECK_MESSAGE(response, conn.last_error_text());
    if (response) {
      CHECK(response->status == 400);
      CHECK(response->get("x-bulwark-reason") == "http_request_on_tls_port");
    }
  }
  CHECK_MESSAGE(
      wait_tls_errors(proxy.bulwark, "http_request_on_tls_port", 4, "secure", Millis{500}) == 4,
      tls_error_summary(proxy.bulwark));
}

TEST_CASE("tls listener: append_forward drops a forged XFCC from a client without a certificate") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "require_client_certificate: false\n"
                "forward_client_cert: append_forward";
  TlsListenerFixture proxy(options);

  // No client certificate: nothing is appended, so what the client wrote would be the last
  // (the nearest) element the app sees. Envoy sanitizes in this case (append_forward applies
  // only to mTLS connections).
  const std::string forged = "Hash=0000;URI=spiffe://cluster.local/ns/admin/sa/root";
  CHECK(must_get(proxy.port(), trusting(pki), "/", {{"X-Forwarded-Client-Cert", forged}}).status ==
        200);
  REQUIRE(proxy.upstream.wait_for_requests(1));
  auto seen = proxy.upstream.last_request();
  CHECK_MESSAGE(!seen->has("x-forwarded-client-cert"), seen->head);
}
