// Tests of the TLS kit itself (tests/support/tls_kit.h), with no proxy involved:
// TlsClientConn <-> TlsFrontDoor <-> TestUpstream, and curl and openssl against the kit's
// certificates. If these fail, a TLS test failure of bulwark says nothing about bulwark.

#include "tests/support/tls_kit.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <string>
#include <vector>

using namespace bulwark::test;

namespace {

TlsServerOptions serving(const IssuedCert& cert) {
  TlsServerOptions options;
  options.cert_file = cert.cert_file;
  options.key_file = cert.key_file;
  return options;
}

TlsClientOptions trusting(const TestCa& ca, std::string sni = "localhost") {
  TlsClientOptions options;
  options.ca_file = ca.root_cert_file();
  options.sni = std::move(sni);
  return options;
}

TlsClientOptions with_cert(TlsClientOptions options, const IssuedCert& cert) {
  options.cert_file = cert.cert_file;
  options.key_file = cert.key_file;
  return options;
}

// One GET on `conn`: the response, or nullopt (conn.last_error_text() says why).
std::optional<Response> tls_get(TlsClientConn& conn, std::string_view target) {
  if (!conn.connected() || !conn.send(make_request("GET", target))) return std::nullopt;
  return conn.read_response();
}

// The record of connection `index` once its handshake has ended; fails the test on timeout.
TlsConnectionRecord handshake_of(const TlsFrontDoor& door, size_t index) {
  auto record = door.wait_for_handshake(index);
  REQUIRE_MESSAGE(record, "no handshake ended on connection " << index);
  return *record;
}

size_t count_of(const std::string& text, std::string_view needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
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

// Runs a program to its end (10 s at most); its exit code and its stdout and stderr joined.
std::pair<int, std::string> run(const std::vector<std::string>& argv) {
  Subprocess process;
  process.start(argv);
  auto code = process.wait_exit(Millis{10000});
  process.wait_streams_closed(Millis{2000});
  return {code.value_or(-1), process.text(Subprocess::Stream::kStdout) + "\n" +
                                 process.text(Subprocess::Stream::kStderr)};
}

}  // namespace

TEST_CASE("tls kit: certificates carry the names, usages, chains and hashes asked for") {
  TempDir dir;
  TestPki pki(dir.path());

  auto server = cert_info_from_file(pki.server.cert_file);
  CHECK(server.subject == "CN=localhost");
  CHECK(server.issuer == "CN=ca");
  CHECK(server.dns_sans == std::vector<std::string>{"localhost"});
  CHECK(server.ip_sans == std::vector<std::string>{"127.0.0.1"});
  CHECK(server.uri_sans.empty());
  CHECK(server.sha256 == pki.server.sha256);
  CHECK(pki.server.sha256.size() == 64);
  CHECK(pki.server.sha256.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(read_file(pki.server.cert_file) == pki.server.cert_pem);
  CHECK(read_file(pki.server.key_file).find("-----BEGIN PRIVATE KEY-----") == 0);

  auto web = cert_info_from_file(pki.client_web.cert_file);
  CHECK(web.uri_sans == std::vector<std::string>{TestPki::kSpiffeWeb});
  CHECK(cert_info_from_file(pki.client_dns_only.cert_file).uri_sans.empty());
  CHECK(cert_info_from_file(pki.wildcard.cert_file).dns_sans ==
        std::vector<std::string>{"*.example.test"});
  CHECK(cert_info_from_file(pki.other_ca_server.cert_file).issuer == "CN=other-ca");

  // A leaf from an intermediate carries the intermediate; a root's leaf carries only itself.
  CHECK(count_of(pki.chained_server.cert_pem, "BEGIN CERTIFICATE") == 2);
  CHECK(count_of(pki.server.cert_pem, "BEGIN CERTIFICATE") == 1);
  CHECK(pki.intermediate.root_cert_file() == pki.ca.cert_file());
  CHECK(cert_info_from_file(pki.chained_server.cert_file).issuer == "CN=intermediate");

  // Nothing is shared between CAs or runs: two PKIs made the same way differ.
  TempDir other_dir;
  TestPki again(other_dir.path());
  CHECK(again.server.sha256 != pki.server.sha256);
  CHECK(again.ca.cert_pem() != pki.ca.cert_pem());

  CertSpec rsa;
  rsa.common_name = "rsa.example.test";
  rsa.dns_sans = {"rsa.example.test"};
  rsa.key = KeyType::kRsa2048;
  auto issued = pki.ca.issue("rsa", rsa);
  CHECK(read_file(issued.key_file).find("-----BEGIN PRIVATE KEY-----") == 0);
  CHECK(issued.subject == "CN=rsa.example.test");
}

TEST_CASE("tls kit: a request goes through TlsClientConn, TlsFrontDoor and TestUpstream") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  auto options = serving(pki.server);
  options.alpn = {"http/1.1", "h2"};  // the server prefers http/1.1
  TlsFrontDoor door(options, upstream.port());

  auto client_options = trusting(pki.ca);
  client_options.alpn = {"h2", "http/1.1"};
  TlsClientConn conn(door.port(), client_options);
  REQUIRE_MESSAGE(conn.connected(), conn.last_error_text());
  CHECK(conn.handshake_ok());
  CHECK(conn.verify_result() == "ok");
  CHECK(conn.version() == "TLSv1.3");
  CHECK(!conn.cipher().empty());
  CHECK(conn.alpn() == "http/1.1");
  CHECK(!conn.resumed());
  REQUIRE(conn.server_cert());
  CHECK(conn.server_cert()->subject == "CN=localhost");
  CHECK(conn.server_cert()->dns_sans == std::vector<std::string>{"localhost"});
  CHECK(conn.server_cert()->sha256 == pki.server.sha256);

  for (int i = 0; i < 2; ++i) {
    auto response = tls_get(conn, "/item/" + std::to_string(i));
    REQUIRE_MESSAGE(response, conn.last_error_text());
    CHECK(response->status == 200);
    CHECK(response->body == "GET /item/" + std::to_string(i) + "\n");
    CHECK(response->get("x-upstream-connection") == "1");
  }

  auto record = door.wait_for_handshake(1);
  REQUIRE(record);
  CHECK(record->handshake_ok);
  CHECK(record->failure.empty());
  CHECK(record->sni == "localhost");
  CHECK(record->alpn_offered == std::vector<std::string>{"h2", "http/1.1"});
  CHECK(record->alpn == "http/1.1");
  CHECK(record->version == "TLSv1.3");
  CHECK(record->cipher == conn.cipher());
  CHECK(!record->resumed);
  CHECK(!record->client_cert);

  // A moved connection goes on where it was.
  TlsClientConn moved(std::move(conn));
  CHECK(!conn.connected());
  auto response = tls_get(moved, "/moved");
  REQUIRE_MESSAGE(response, moved.last_error_text());
  CHECK(response->body == "GET /moved\n");

  // The client's close_notify ends the backend connection; the backend's end closes ours.
  moved.shutdown_write();
  CHECK(moved.is_closed());
  CHECK(moved.close_notify_received());
  CHECK(door.wait_closed(1));

  // The one-request helper.
  std::string error;
  auto once = https_get(door.port(), client_options, "/once", {}, kDefaultTimeout, &error);
  REQUIRE_MESSAGE(once, error);
  CHECK(once->body == "GET /once\n");
  auto refused = https_get(door.port(), trusting(pki.other_ca), "/", {}, kDefaultTimeout, &error);
  CHECK(!refused);
  CHECK(error.find("certificate verify failed") != std::string::npos);
}

TEST_CASE("tls kit: the relay carries large bodies both ways") {
  TempDir dir;
  TestPki pki(dir.path());
  constexpr uint64_t kSize = 3 * 1024 * 1024 + 17;
  PatternVerifier upload;
  TestUpstream upstream([&](UpstreamConn& conn) {
    auto request = conn.read_request(kDefaultTimeout, upload.sink());
    if (!request) return;
    conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n");
    conn.write_pattern(0, kSize);
  });
  TlsFrontDoor door(serving(pki.server), upstream.port());
  TlsClientConn conn(door.port(), trusting(pki.ca));
  REQUIRE_MESSAGE(conn.connected(), conn.last_error_text());
  REQUIRE(conn.send(make_request("POST", "/upload", {{"Content-Length", std::to_string(kSize)}})));
  REQUIRE(conn.write_pattern(0, kSize));
  PatternVerifier download;
  auto response = conn.read_response(false, kDefaultTimeout, download.sink());
  REQUIRE_MESSAGE(response, conn.last_error_text());
  CHECK(download.received() == kSize);
  CHECK(download.ok());
  REQUIRE(upstream.wait_for_requests(1));
  CHECK(upload.received() == kSize);
  CHECK(upload.ok());
}

TEST_CASE("tls kit: SNI is recorded and selects the certificate, and names are verified") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  auto options = serving(pki.server);
  options.sni_certs = {
      {"api.example.test", pki.second_server.cert_file, pki.second_server.key_file},
      {"www.example.test", pki.wildcard.cert_file, pki.wildcard.key_file}};
  TlsFrontDoor door(options, upstream.port());

  TlsClientConn api(door.port(), trusting(pki.ca, "api.example.test"));
  REQUIRE_MESSAGE(api.connected(), api.last_error_text());
  CHECK(api.server_cert()->subject == "CN=api.example.test");
  CHECK(handshake_of(door, 1).sni == "api.example.test");

  TlsClientConn wildcard(door.port(), trusting(pki.ca, "www.example.test"));
  REQUIRE_MESSAGE(wildcard.connected(), wildcard.last_error_text());
  CHECK(wildcard.server_cert()->subject == "CN=*.example.test");

  // No SNI: the default certificate, verified against the IP address it names.
  auto by_ip = trusting(pki.ca, "");
  by_ip.verify_name = "127.0.0.1";
  TlsClientConn no_sni(door.port(), by_ip);
  REQUIRE_MESSAGE(no_sni.connected(), no_sni.last_error_text());
  CHECK(no_sni.server_cert()->subject == "CN=localhost");
  CHECK(handshake_of(door, 3).sni == "");

  // A name the certificate does not carry fails verification.
  TlsClientConn mismatch(door.port(), trusting(pki.ca, "other.example.test"));
  CHECK(!mismatch.connected());
  CHECK(mismatch.verify_result() == "hostname mismatch");
  CHECK(mismatch.handshake_error().find("certificate verify failed") != std::string::npos);
}

TEST_CASE("tls kit: sessions resume, and do not when the server turns resumption off") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  for (auto version : {TlsVersion::kTls1_3, TlsVersion::kTls1_2}) {
    CAPTURE(static_cast<int>(version));
    auto options = serving(pki.server);
    options.max_version = version;
    TlsFrontDoor door(options, upstream.port());

    TlsClientConn first(door.port(), trusting(pki.ca));
    REQUIRE_MESSAGE(first.connected(), first.last_error_text());
    CHECK(!first.resumed());
    // TLS 1.3 tickets come after the handshake: get_session waits for one.
    TlsSession session = first.get_session(kDefaultTimeout);
    REQUIRE(session);
    REQUIRE(tls_get(first, "/first"));  // data read while waiting for the ticket is kept

    auto again = trusting(pki.ca);
    again.session = session;
    TlsClientConn second(door.port(), again);
    REQUIRE_MESSAGE(second.connected(), second.last_error_text());
    CHECK(second.resumed());
    CHECK(second.server_cert());  // the session remembers the server's certificate
    REQUIRE(tls_get(second, "/second"));
    auto record = door.wait_for_handshake(2);
    REQUIRE(record);
    CHECK(record->resumed);
  }

  auto options = serving(pki.server);
  options.session_tickets = false;
  options.session_cache = false;
  TlsFrontDoor door(options, upstream.port());
  TlsClientConn first(door.port(), trusting(pki.ca));
  REQUIRE(tls_get(first, "/first"));
  auto again = trusting(pki.ca);
  again.session = first.get_session();
  CHECK(!again.session);  // no ticket was offered
  TlsClientConn second(door.port(), again);
  REQUIRE(second.connected());
  CHECK(!second.resumed());
}

TEST_CASE("tls kit: a required client certificate is verified and its URI SAN recorded") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  auto options = serving(pki.server);
  options.client_ca_file = pki.ca.cert_file();
  options.require_client_cert = true;
  TlsFrontDoor door(options, upstream.port());

  TlsClientConn web(door.port(), with_cert(trusting(pki.ca), pki.client_web));
  auto response = tls_get(web, "/");
  REQUIRE_MESSAGE(response, web.last_error_text());
  CHECK(response->status == 200);
  auto record = door.wait_for_handshake(1);
  REQUIRE(record);
  REQUIRE(record->client_cert);
  CHECK(record->client_cert->uri_sans == std::vector<std::string>{TestPki::kSpiffeWeb});
  CHECK(record->client_cert->subject == "CN=web");
  CHECK(record->client_cert->sha256 == pki.client_web.sha256);

  TlsClientConn dns_only(door.port(), with_cert(trusting(pki.ca), pki.client_dns_only));
  REQUIRE(tls_get(dns_only, "/"));
  record = door.wait_for_handshake(2);
  REQUIRE(record->client_cert);
  CHECK(record->client_cert->uri_sans.empty());
  CHECK(record->client_cert->dns_sans == std::vector<std::string>{"client.example.test"});

  SUBCASE("no certificate: TLS 1.3 reports certificate required after the handshake") {
    TlsClientConn none(door.port(), trusting(pki.ca));
    CHECK(none.connected());  // the client's side of a TLS 1.3 handshake completed
    CHECK(!tls_get(none, "/"));
    CHECK(none.alert_received() == "certificate required");
    CHECK(none.last_error_text().find("certificate required") != std::string::npos);
    record = door.wait_for_handshake(3);
    REQUIRE(record);
    CHECK(!record->handshake_ok);
    CHECK(record->failure == "peer did not return a certificate");
    CHECK(record->alert_sent == "certificate required");
    CHECK(!record->client_cert);
  }
  SUBCASE("no certificate over TLS 1.2: the handshake itself fails") {
    auto client = trusting(pki.ca);
    client.max_version = TlsVersion::kTls1_2;
    TlsClientConn none(door.port(), client);
    CHECK(!none.connected());
    CHECK(none.alert_received() == "handshake failure");
    CHECK(none.handshake_error().find("alert handshake failure") != std::string::npos);
  }
  SUBCASE("a certificate from another CA is refused with unknown CA") {
    TlsClientConn stranger(door.port(), with_cert(trusting(pki.ca), pki.other_ca_client));
    CHECK(!tls_get(stranger, "/"));
    CHECK(stranger.alert_received() == "unknown CA");
    CHECK(stranger.last_error_text().find("tlsv1 alert unknown ca") != std::string::npos);
    record = door.wait_for_handshake(3);
    REQUIRE(record);
    CHECK(!record->handshake_ok);
    CHECK(record->failure.find("certificate verify failed") != std::string::npos);
    CHECK(record->verify_error == "unable to get local issuer certificate");
    REQUIRE(record->client_cert);  // recorded even though it was refused
    CHECK(record->client_cert->issuer == "CN=other-ca");
  }
}

TEST_CASE("tls kit: the client refuses a server certificate from another CA or out of date") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  struct Case {
    const IssuedCert* cert;
    const char* verify_result;
  };
  for (const Case& c : {Case{&pki.other_ca_server, "unable to get local issuer certificate"},
                        Case{&pki.expired, "certificate has expired"},
                        Case{&pki.not_yet_valid, "certificate is not yet valid"},
                        Case{&pki.wrong_host, "hostname mismatch"}}) {
    const IssuedCert* cert = c.cert;
    const char* verify_result = c.verify_result;
    CAPTURE(cert->name);
    TlsFrontDoor door(serving(*cert), upstream.port());
    TlsClientConn conn(door.port(), trusting(pki.ca));
    CHECK(!conn.connected());
    CHECK(!conn.handshake_ok());
    CHECK(conn.verify_result() == verify_result);
    CHECK(conn.handshake_error().find("certificate verify failed") != std::string::npos);
    CHECK(conn.last_error_text().find("certificate verify failed") != std::string::npos);
    auto record = door.wait_for_handshake(1);
    REQUIRE(record);
    CHECK(!record->handshake_ok);
    CHECK(!record->alert_received.empty());  // the client said why, e.g. "unknown CA"
    CHECK(record->failure.find("alert") != std::string::npos);

    // Without verification the same server is accepted, and the check's outcome still shown.
    TlsClientOptions unverified;
    TlsClientConn anyway(door.port(), unverified);
    CHECK(anyway.connected());
    CHECK(anyway.verify_result() != "ok");
  }
  // The intermediate's chain makes the chained certificate verify against the root alone.
  TlsFrontDoor door(serving(pki.chained_server), upstream.port());
  TlsClientConn chained(door.port(), trusting(pki.ca));
  REQUIRE_MESSAGE(chained.connected(), chained.last_error_text());
  CHECK(chained.server_chain_length() == 2);
}

TEST_CASE("tls kit: versions are bounded on both sides") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  auto options = serving(pki.server);
  options.max_version = TlsVersion::kTls1_2;
  TlsFrontDoor door(options, upstream.port());

  TlsClientConn twelve(door.port(), trusting(pki.ca));
  REQUIRE_MESSAGE(twelve.connected(), twelve.last_error_text());
  CHECK(twelve.version() == "TLSv1.2");
  CHECK(handshake_of(door, 1).version == "TLSv1.2");

  auto only_13 = trusting(pki.ca);
  only_13.min_version = TlsVersion::kTls1_3;
  TlsClientConn refused(door.port(), only_13);
  CHECK(!refused.connected());
  CHECK(refused.alert_received() == "protocol version");
  auto record = door.wait_for_handshake(2);
  REQUIRE(record);
  CHECK(record->failure.find("unsupported protocol") != std::string::npos);

  auto old = trusting(pki.ca);
  old.max_version = TlsVersion::kTls1_1;
  TlsClientConn too_old(door.port(), old);
  CHECK(!too_old.connected());
  record = door.wait_for_handshake(3);
  REQUIRE(record);
  CHECK(record->failure.find("unsupported protocol") != std::string::npos);
}

TEST_CASE("tls kit: a front door that sends garbage or never answers fails the handshake") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsServerOptions garbage;
  garbage.mode = TlsServerOptions::Mode::kGarbage;
  TlsFrontDoor talker(garbage, 0);
  TlsClientConn conn(talker.port(), trusting(pki.ca));
  CHECK(!conn.connected());
  CHECK(conn.handshake_error() == "wrong version number");
  CHECK(talker.wait_for_accepted(1));

  TlsServerOptions silent;
  silent.mode = TlsServerOptions::Mode::kSilent;
  TlsFrontDoor mute(silent, 0);
  TlsClientConn waiting(mute.port(), trusting(pki.ca), Millis{200});
  CHECK(!waiting.connected());
  CHECK(waiting.handshake_error() == "timed out");
  CHECK(mute.wait_closed(1));  // our close reached it
}

TEST_CASE("tls kit: stopping the front door ends open connections and joins their threads") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  TlsFrontDoor door(serving(pki.server), upstream.port());
  TlsClientConn idle(door.port(), trusting(pki.ca));
  REQUIRE(idle.connected());
  ClientConn raw(door.port());  // connects but never says hello
  REQUIRE(raw.connected());
  REQUIRE(door.wait_for_accepted(2));
  door.stop();
  CHECK(idle.is_closed());
  CHECK(raw.is_closed());
  auto records = door.connections();
  REQUIRE(records.size() == 2);
  CHECK(records[0].closed);
  CHECK(records[1].failure == "the front door stopped");
}

TEST_CASE("tls kit: curl accepts the kit's certificates") {
  std::string curl = find_program("curl");
  if (curl.empty()) {
    MESSAGE("skipped: curl is not installed");
    return;
  }
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  auto options = serving(pki.server);
  options.client_ca_file = pki.ca.cert_file();
  options.require_client_cert = true;
  TlsFrontDoor door(options, upstream.port());
  std::string port = std::to_string(door.port());
  const auto run1 =
      run({curl, "-sS", "--max-time", "5", "--cacert", pki.ca.cert_file(), "--cert",
           pki.client_web.cert_file, "--key", pki.client_web.key_file, "--resolve",
           "localhost:" + port + ":127.0.0.1", "https://localhost:" + port + "/via-curl"});
  // Named, not a structured binding: clang 14 cannot capture one in a lambda (INFO).
  const int code = run1.first;
  const std::string& output = run1.second;
  CHECK_MESSAGE(code == 0, output);
  CHECK(output.find("GET /via-curl") != std::string::npos);
  auto record = door.wait_for_handshake(1);
  REQUIRE(record);
  CHECK(record->sni == "localhost");
  REQUIRE(record->client_cert);
  CHECK(record->client_cert->uri_sans == std::vector<std::string>{TestPki::kSpiffeWeb});

  // And curl refuses a certificate from the other CA.
  TlsFrontDoor stranger(serving(pki.other_ca_server), upstream.port());
  std::string stranger_port = std::to_string(stranger.port());
  const auto run2 = run({curl, "-sS", "--max-time", "5", "--cacert", pki.ca.cert_file(),
                         "--resolve", "localhost:" + stranger_port + ":127.0.0.1",
                         "https://localhost:" + stranger_port + "/"});
  INFO(run2.second);
  CHECK(run2.first == 60);  // CURLE_PEER_FAILED_VERIFICATION
}

TEST_CASE("tls kit: openssl s_client and verify accept the kit's certificates") {
  std::string openssl = find_program("openssl");
  if (openssl.empty()) {
    MESSAGE("skipped: openssl is not installed");
    return;
  }
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  auto options = serving(pki.chained_server);
  options.alpn = {"http/1.1"};
  TlsFrontDoor door(options, upstream.port());
  const auto run3 = run({openssl, "s_client", "-connect", door.address(), "-servername",
                         "localhost", "-CAfile", pki.ca.cert_file(), "-verify_return_error",
                         "-verify_hostname", "localhost", "-alpn", "http/1.1", "-brief"});
  const int code = run3.first;
  const std::string& output = run3.second;
  CHECK_MESSAGE(code == 0, output);
  CHECK_MESSAGE(output.find("Verification: OK") != std::string::npos, output);
  auto record = door.wait_for_handshake(1);
  REQUIRE(record);
  CHECK(record->handshake_ok);
  CHECK(record->sni == "localhost");
  CHECK(record->alpn == "http/1.1");

  auto verify = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv{openssl, "verify", "-CAfile", pki.ca.cert_file()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  const auto run4 = verify({"-purpose", "sslserver", pki.server.cert_file});
  const int server_code = run4.first;
  const std::string& server_out = run4.second;
  CHECK_MESSAGE(server_code == 0, server_out);
  const auto run5 = verify({"-purpose", "sslclient", pki.client_web.cert_file});
  const int client_code = run5.first;
  const std::string& client_out = run5.second;
  CHECK_MESSAGE(client_code == 0, client_out);
  const auto run6 = verify({"-untrusted", pki.intermediate.cert_file(), "-purpose", "sslserver",
                            pki.chained_server.cert_file});
  const int chain_code = run6.first;
  const std::string& chain_out = run6.second;
  CHECK_MESSAGE(chain_code == 0, chain_out);
  const auto run7 = verify({pki.expired.cert_file});
  const int expired_code = run7.first;
  const std::string& expired_out = run7.second;
  CHECK(expired_code != 0);
  CHECK(expired_out.find("certificate has expired") != std::string::npos);
  const auto run8 = verify({"-purpose", "sslserver", pki.client_web.cert_file});
  INFO(run8.second);
  CHECK(run8.first != 0);

  // Envoy's XFCC Hash= is the SHA-256 of the DER; openssl agrees with the kit's.
  const auto run9 =
      run({openssl, "x509", "-noout", "-fingerprint", "-sha256", "-in", pki.client_web.cert_file});
  const int fp_code = run9.first;
  const std::string& fingerprint = run9.second;
  REQUIRE(fp_code == 0);
  std::string hex;
  for (char c : fingerprint.substr(fingerprint.find('=') + 1)) {
    if (std::isxdigit(static_cast<unsigned char>(c))) hex += static_cast<char>(std::tolower(c));
  }
  CHECK(hex == pki.client_web.sha256);
}
