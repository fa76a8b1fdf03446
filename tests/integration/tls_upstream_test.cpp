// TLS origination (issue 14), the cluster side: bulwark speaking TLS to its upstreams. Each
// upstream is a TlsFrontDoor (tests/support/tls_kit.h) in front of a plaintext TestUpstream, or
// nginx with ssl; certificates are made at test time. What is checked is what a user sees: the
// reply and its x-bulwark-reason, the access log's tries, /metrics, /clusters, bulwark's log,
// and what the upstream recorded of each handshake (SNI, ALPN, resumption, client certificate).

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/tls_upstream_fixture.h"

namespace bulwark::test {
namespace {

using namespace tls_upstream;
using Clock = std::chrono::steady_clock;

// The reply to a GET of `path`, required to be there.
Response get(uint16_t port, const std::string& path, const HeaderList& headers = {}) {
  std::string error;
  auto response = http_get(port, path, headers, kDefaultTimeout, &error);
  REQUIRE_MESSAGE(response, "GET " << path << ": " << error);
  return *response;
}

// Checks that the request for `path` got 502 upstream_tls_failure after exactly one try, whose
// outcome in the access log is "ENDPOINT tls:REASON".
void check_tls_failure(const Response& response, const std::string& log, const std::string& path,
                       const std::string& endpoint, const std::string& reason) {
  INFO("GET " << path << ": " << describe(response));
  check_local_reply(response, 502, "upstream_tls_failure");
  auto line = access_line(log, path);
  REQUIRE_MESSAGE(line, "no access log line for " << path);
  INFO(*line);
  CHECK(contains(*line, "\"status\":502"));
  CHECK(contains(*line, json_member("reason", "upstream_tls_failure")));
  CHECK(contains(*line, json_member("flags", "UF")));
  CHECK(contains(*line, json_member("upstream", endpoint)));
  CHECK(tries_of(*line) == "[\"" + endpoint + " tls:" + reason + "\"]");
}

// Front door options offering `protocols` by ALPN (refusing others when `fatal`).
TlsServerOptions alpn(std::vector<std::string> protocols, bool fatal = false) {
  TlsServerOptions options;
  options.alpn = std::move(protocols);
  options.alpn_mismatch_fatal = fatal;
  return options;
}

TlsServerOptions max_version(TlsVersion version) {
  TlsServerOptions options;
  options.max_version = version;
  return options;
}

// A TestUpstream handler that answers each request with Connection: close and then closes, so
// that every request needs a new (TLS) connection.
TestUpstream::Handler closing_handler() {
  return [](UpstreamConn& conn) {
    if (auto request = conn.read_request()) {
      conn.write_response(200, request->method + " " + request->target + "\n",
                          {{"Connection", "close"}});
    }
  };
}

// The file OpenSSL (and so bulwark) loads as the system trust store.
std::string system_trust_store() {
  const char* env = std::getenv(X509_get_default_cert_file_env());
  return env != nullptr ? env : X509_get_default_cert_file();
}

// The log needles of a health state change of `endpoint` in `cluster` to `to`.
std::vector<std::string> health_change(const std::string& cluster, const std::string& endpoint,
                                       const std::string& to) {
  return {"\"msg\":\"endpoint health changed\"", json_member("cluster", cluster),
          json_member("endpoint", endpoint), json_member("new", to)};
}

// ---------------------------------------------------------------------------------------------
// Verification

TEST_CASE("tls upstream: verification is on by default and a trusted upstream answers") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  TlsFrontDoor door(serving(pki.server, alpn({"http/1.1"})), upstream.port());
  TlsFrontDoor chained(serving(pki.chained_server), upstream.port());
  CertSpec rsa_spec;
  rsa_spec.common_name = "localhost";
  rsa_spec.dns_sans = {"localhost"};
  rsa_spec.key = KeyType::kRsa2048;
  TlsFrontDoor rsa(serving(pki.ca.issue("rsa-server", rsa_spec)), upstream.port());
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.route = kLocalhostRetry;
  setup.clusters = {{"app", {localhost(door.port())}, trusting(pki.ca)},
                    {"chained", {localhost(chained.port())}, trusting(pki.ca)},
                    {"rsa", {localhost(rsa.port())}, trusting(pki.ca)}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  Response response = get(port, "/app/hello");
  INFO(describe(response));
  CHECK(response.status == 200);
  CHECK(response.body == "GET /app/hello\n");
  CHECK_FALSE(response.has("x-bulwark-reason"));
  REQUIRE(upstream.wait_for_requests(1));
  CHECK(upstream.last_request()->target == "/app/hello");

  // The upstream saw bulwark's hello: the endpoint's name as SNI, ALPN http/1.1, TLS 1.3, no
  // client certificate (none is configured).
  TlsConnectionRecord record = handshake_of(door, 1);
  CHECK(record.handshake_ok);
  CHECK(record.sni == "localhost");
  CHECK(record.alpn_offered == std::vector<std::string>{"http/1.1"});
  CHECK(record.alpn == "http/1.1");
  CHECK(record.version == "TLSv1.3");
  CHECK_FALSE(record.resumed);
  CHECK_FALSE(record.client_cert);

  CHECK(tls_handshakes(bulwark, "app", {{"version", "TLSv1.3"}, {"resumed", "false"}}) == 1);
  CHECK(tls_handshakes(bulwark, "app") == 1);
  CHECK(tls_handshakes(bulwark, "chained") == 0);
  CHECK_FALSE(scrape_metric(bulwark, "bulwark_tls_handshake_errors_total").has_value());

  auto line = access_line(setup.access_log, "/app/hello");
  REQUIRE(line);
  INFO(*line);
  CHECK(contains(*line, "\"status\":200"));
  CHECK(contains(tries_of(*line), "\"" + loopback_address(door.port()) + " 200\"]"));
  CHECK(contains(*line, json_member("flags", "-")));

  // A server sending its intermediate verifies against the root alone.
  Response via_chain = get(port, "/chained/x");
  INFO(describe(via_chain));
  CHECK(via_chain.status == 200);
  CHECK(handshake_of(chained, 1).handshake_ok);
  CHECK(tls_handshakes(bulwark, "chained") == 1);

  // An RSA certificate as well as ECDSA.
  Response via_rsa = get(port, "/rsa/x");
  INFO(describe(via_rsa));
  CHECK(via_rsa.status == 200);
  CHECK(handshake_of(rsa, 1).handshake_ok);
}

TEST_CASE("tls upstream: a certificate that does not verify gets 502 upstream_tls_failure") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  struct Case {
    std::string cluster;
    const IssuedCert* cert;
    std::string tls;
    std::string reason;
  };
  const std::string sni = "sni: localhost";
  std::vector<Case> cases = {
      {"untrusted", &pki.other_ca_server, trusting(pki.ca, sni), "certificate_untrusted"},
      {"wrong_host", &pki.wrong_host, trusting(pki.ca, sni), "hostname_mismatch"},
      {"expired", &pki.expired, trusting(pki.ca, sni), "certificate_expired"},
      {"not_yet_valid", &pki.not_yet_valid, trusting(pki.ca, sni), "certificate_expired"},
  };
  // No ca: the system trust store, which does not hold the test CA. bulwark cannot start
  // without one (the ca-certificates package), so that case needs it.
  if (::access(system_trust_store().c_str(), R_OK) == 0) {
    cases.push_back({"system_store", &pki.server, "{" + sni + "}", "certificate_untrusted"});
  } else {
    MESSAGE("system trust store case skipped: no " << system_trust_store());
  }
  std::vector<std::unique_ptr<TlsFrontDoor>> doors;
  Setup setup;
  setup.access_log = dir.file("access.log");
  for (const Case& c : cases) {
    doors.push_back(std::make_unique<TlsFrontDoor>(serving(*c.cert), upstream.port()));
    setup.clusters.push_back({c.cluster, {loopback_address(doors.back()->port())}, c.tls});
  }
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    CAPTURE(c.cluster);
    const std::string path = "/" + c.cluster + "/x";
    check_tls_failure(get(port, path), setup.access_log, path, loopback_address(doors[i]->port()),
                      c.reason);
    CHECK(tls_errors(bulwark, c.cluster, c.reason) == 1);
    CHECK(tls_handshakes(bulwark, c.cluster) == 0);
    // bulwark ended the handshake with an alert saying why, and never sent the request.
    TlsConnectionRecord record = handshake_of(*doors[i], 1);
    CHECK_FALSE(record.handshake_ok);
    CHECK(record.sni == "localhost");
    CHECK_FALSE(record.alert_received.empty());
    CHECK(doors[i]->accepted() == 1);
  }
  CHECK(upstream.requests() == 0);
  CHECK(scrape_metric(bulwark, "bulwark_local_replies_total",
                      {{"reason", "upstream_tls_failure"}}) == static_cast<double>(cases.size()));
}

TEST_CASE("tls upstream: verify false accepts any certificate and bulwark warns of it") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  TlsFrontDoor stranger(serving(pki.other_ca_server), upstream.port());
  TlsFrontDoor expired(serving(pki.expired), upstream.port());
  Setup setup;
  setup.clusters = {
      {"app", {loopback_address(stranger.port())}, "{verify: false}"},
      {"expired", {loopback_address(expired.port())}, "{verify: false}"},
      {"checked", {loopback_address(expired.port())}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  // Said at start, once per cluster without verification, as a warning.
  CHECK(wait_for_log_lines(
      bulwark, {"\"level\":\"warn\"", "TLS verification is off", json_member("cluster", "app")}));
  CHECK(wait_for_log_lines(bulwark, {"\"level\":\"warn\"", "TLS verification is off",
                                     json_member("cluster", "expired")}));
  size_t warnings = 0;
  for (const std::string& line : bulwark.logs()) {
    if (contains(line, "TLS verification is off")) ++warnings;
  }
  CHECK(warnings == 2);  // not for cluster "checked"
  auto config = http_get(bulwark.admin_port(), "/config");
  REQUIRE(config);
  CHECK(contains(config->body, "TLS verification is off"));

  Response response = get(port, "/app/x");
  INFO(describe(response));
  CHECK(response.status == 200);
  CHECK(response.body == "GET /app/x\n");
  CHECK(handshake_of(stranger, 1).sni == "");  // an IP endpoint without sni: no SNI

  Response old = get(port, "/expired/x");
  INFO(describe(old));
  CHECK(old.status == 200);
  CHECK(handshake_of(expired, 1).handshake_ok);
  // The same server, verified, is refused.
  check_local_reply(get(port, "/checked/x"), 502, "upstream_tls_failure");
  CHECK(tls_errors(bulwark, "checked", "certificate_expired") == 1);
}

TEST_CASE("tls upstream: sni names the server to an IP endpoint and is the name checked") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  // By SNI: localhost and api.example.test get their certificates, any other name wrong_host's.
  TlsServerOptions options = serving(pki.wrong_host);
  options.sni_certs = {
      {"localhost", pki.server.cert_file, pki.server.key_file},
      {"api.example.test", pki.second_server.cert_file, pki.second_server.key_file}};
  TlsFrontDoor door(options, upstream.port());
  TlsFrontDoor wildcard(serving(pki.wildcard), upstream.port());
  const std::string ip = loopback_address(door.port());
  const std::string wildcard_ip = loopback_address(wildcard.port());
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {
      {"wildcard", {wildcard_ip}, trusting(pki.ca, "sni: www.example.test")},
      {"wildcard_deep", {wildcard_ip}, trusting(pki.ca, "sni: a.b.example.test")},
      {"wildcard_bare", {wildcard_ip}, trusting(pki.ca, "sni: example.test")},
      {"by_localhost", {ip}, trusting(pki.ca, "sni: localhost")},
      {"by_api", {ip}, trusting(pki.ca, "sni: api.example.test")},
      // sni wins over the endpoint's own name.
      {"overridden", {localhost(door.port())}, trusting(pki.ca, "sni: api.example.test")},
      // The name checked is the sni: this one gets wrong_host's certificate, not for it.
      {"unknown_name", {ip}, trusting(pki.ca, "sni: other.example.test")},
      // No name at all: the chain is checked, not the name.
      {"no_hostname", {ip}, trusting(pki.ca, "verify_hostname: false")},
  };
  for (ClusterSpec& c : setup.clusters) {
    if (c.name == "overridden") c.route = kLocalhostRetry;
  }
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  struct Expect {
    std::string cluster, sni;
    int status;
  };
  size_t index = 0;
  for (const Expect& e :
       {Expect{"by_localhost", "localhost", 200}, Expect{"by_api", "api.example.test", 200},
        Expect{"overridden", "api.example.test", 200},
        Expect{"unknown_name", "other.example.test", 502}, Expect{"no_hostname", "", 200}}) {
    CAPTURE(e.cluster);
    const std::string path = "/" + e.cluster + "/x";
    Response response = get(port, path);
    INFO(describe(response));
    CHECK(response.status == e.status);
    TlsConnectionRecord record = handshake_of(door, ++index);
    CHECK(record.sni == e.sni);
    CHECK(record.handshake_ok == (e.status == 200));
  }
  CHECK(tls_errors(bulwark, "unknown_name", "hostname_mismatch") == 1);

  // A wildcard certificate covers one label of the name sent, no more and no less.
  for (const Expect& e : {Expect{"wildcard", "www.example.test", 200},
                          Expect{"wildcard_deep", "a.b.example.test", 502},
                          Expect{"wildcard_bare", "example.test", 502}}) {
    CAPTURE(e.cluster);
    Response response = get(port, "/" + e.cluster + "/x");
    INFO(describe(response));
    CHECK(response.status == e.status);
    CHECK(response.get("x-bulwark-reason") == (e.status == 200 ? "" : "upstream_tls_failure"));
  }
  CHECK(tls_errors(bulwark, "wildcard_deep", "hostname_mismatch") == 1);
  CHECK(tls_errors(bulwark, "wildcard_bare", "hostname_mismatch") == 1);
  CHECK(wildcard.accepted() == 3);

  auto line = access_line(setup.access_log, "/unknown_name/x");
  REQUIRE(line);
  CHECK(tries_of(*line) == "[\"" + ip + " tls:hostname_mismatch\"]");

  // Without sni an IP endpoint has no name to check: the config says so.
  Setup nameless;
  nameless.clusters = {{"app", {ip}, trusting(pki.ca)}};
  CheckResult check = run_check(tls_config(nameless));
  CHECK(check.exit_code != 0);
  CHECK_MESSAGE(contains(check.err + check.out, "an IP endpoint needs tls.sni"),
                (check.err + check.out));
}

TEST_CASE("tls upstream: allowed_server_sans replaces the hostname check") {
  TempDir dir;
  TestPki pki(dir.path());
  const std::string kPayments = "spiffe://cluster.local/ns/payments/sa/api";
  CertSpec spec;
  spec.common_name = "payments";
  spec.dns_sans = {"payments.internal"};
  spec.uri_sans = {kPayments};
  IssuedCert payments = pki.ca.issue("payments", spec);
  IssuedCert impostor = pki.other_ca.issue("impostor", spec);  // the same names, another CA
  TestUpstream upstream;
  TlsFrontDoor spiffe(serving(payments), upstream.port());
  TlsFrontDoor api(serving(pki.second_server), upstream.port());
  TlsFrontDoor local(serving(pki.server), upstream.port());
  TlsFrontDoor fake(serving(impostor), upstream.port());
  auto allowing = [&](const std::string& sans, const std::string& sni = {}) {
    return trusting(pki.ca, "allowed_server_sans: [" + sans + "]" +
                                (sni.empty() ? std::string() : ", sni: " + sni));
  };
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {
      {"exact_uri", {loopback_address(spiffe.port())}, allowing("\"" + kPayments + "\"")},
      {"uri_prefix",
       {loopback_address(spiffe.port())},
       allowing("\"spiffe://cluster.local/ns/payments/*\"")},
      // A DNS SAN other than the endpoint's name: allowed, though the hostname would not match.
      {"dns_san", {loopback_address(api.port())}, allowing("api.example.test", "localhost")},
      // The hostname would match (localhost) but the SAN is not allowed.
      {"refused", {loopback_address(local.port())}, allowing("\"" + kPayments + "\"", "localhost")},
      {"refused_prefix",
       {loopback_address(spiffe.port())},
       allowing("\"spiffe://cluster.local/ns/shop/*\"")},
      // An allowed SAN does not stand in for the chain.
      {"impostor", {loopback_address(fake.port())}, allowing("\"" + kPayments + "\"")},
  };
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  for (const char* cluster : {"exact_uri", "uri_prefix", "dns_san"}) {
    CAPTURE(cluster);
    Response response = get(port, std::string("/") + cluster + "/x");
    INFO(describe(response));
    CHECK(response.status == 200);
    CHECK(tls_handshakes(bulwark, cluster) == 1);
  }
  struct Refused {
    std::string cluster, endpoint, reason;
  };
  for (const Refused& r :
       {Refused{"refused", loopback_address(local.port()), "san_not_allowed"},
        Refused{"refused_prefix", loopback_address(spiffe.port()), "san_not_allowed"},
        Refused{"impostor", loopback_address(fake.port()), "certificate_untrusted"}}) {
    CAPTURE(r.cluster);
    const std::string path = "/" + r.cluster + "/x";
    check_tls_failure(get(port, path), setup.access_log, path, r.endpoint, r.reason);
    CHECK(tls_errors(bulwark, r.cluster, r.reason) == 1);
  }
  TlsConnectionRecord refused = handshake_of(local, 1);
  CHECK_FALSE(refused.handshake_ok);
  CHECK(refused.sni == "localhost");
  CHECK_FALSE(handshake_of(fake, 1).handshake_ok);
}

TEST_CASE("tls upstream: protocol versions and ALPN that the upstream refuses") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  TlsFrontDoor tls12(serving(pki.server, max_version(TlsVersion::kTls1_2)), upstream.port());
  TlsFrontDoor h2_only(serving(pki.server, alpn({"h2"}, true)), upstream.port());
  const std::string sni = "sni: localhost";
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {
      {"tls12", {loopback_address(tls12.port())}, trusting(pki.ca, sni)},
      {"only13",
       {loopback_address(tls12.port())},
       trusting(pki.ca, sni + ", min_version: \"1.3\"")},
      {"h2", {loopback_address(h2_only.port())}, trusting(pki.ca, sni)},
  };
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  Response twelve = get(port, "/tls12/x");
  INFO(describe(twelve));
  CHECK(twelve.status == 200);
  CHECK(handshake_of(tls12, 1).version == "TLSv1.2");
  CHECK(tls_handshakes(bulwark, "tls12", {{"version", "TLSv1.2"}, {"resumed", "false"}}) == 1);

  check_tls_failure(get(port, "/only13/x"), setup.access_log, "/only13/x",
                    loopback_address(tls12.port()), "version_mismatch");
  CHECK(tls_errors(bulwark, "only13", "version_mismatch") == 1);
  CHECK(contains(handshake_of(tls12, 2).failure, "unsupported protocol"));

  // An upstream that speaks only h2 refuses bulwark's http/1.1 with an alert.
  check_tls_failure(get(port, "/h2/x"), setup.access_log, "/h2/x", loopback_address(h2_only.port()),
                    "peer_alert");
  CHECK(tls_errors(bulwark, "h2", "peer_alert") == 1);
  TlsConnectionRecord record = handshake_of(h2_only, 1);
  CHECK(record.alpn_offered == std::vector<std::string>{"http/1.1"});
  CHECK(record.alert_sent == "no application protocol");
}

// ---------------------------------------------------------------------------------------------
// Retries and outlier detection

TEST_CASE("tls upstream: a failed handshake is retried on another endpoint and ejects its own") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream good_backend(TestUpstream::echo_handler("good"), "good");
  TestUpstream bad_backend(TestUpstream::echo_handler("bad"), "bad");
  TlsFrontDoor bad(serving(pki.other_ca_server), bad_backend.port());
  TlsFrontDoor good(serving(pki.server), good_backend.port());
  const std::string bad_address = loopback_address(bad.port());
  const std::string good_address = loopback_address(good.port());
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.route = "retry: {attempts: 2, backoff: {base: 1ms, max: 2ms}}";
  // The implicit outlier detection: 3 consecutive local-origin failures eject.
  setup.clusters = {{"app", {bad_address, good_address}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  // One worker, one client connection: round robin sends every other request to `bad` first,
  // and each of those is retried on `good`.
  ClientConn client(port);
  REQUIRE(client.connected());
  int retried = 0;
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    REQUIRE(client.send(make_request("GET", "/app/" + std::to_string(i))));
    auto response = client.read_response();
    REQUIRE_MESSAGE(response, client.last_error_text());
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "good");
    if (response->get("x-bulwark-attempts") == "2") ++retried;
  }
  CHECK(retried == 3);
  CHECK(bad_backend.requests() == 0);
  CHECK(bad.accepted() == 3);

  // The failed try is in the access log, then the one that answered.
  std::string retried_line;
  for (int i = 0; i < 6 && retried_line.empty(); ++i) {
    auto line = access_line(setup.access_log, "/app/" + std::to_string(i));
    REQUIRE(line);
    if (contains(*line, "tls:")) retried_line = *line;
  }
  INFO(retried_line);
  CHECK(tries_of(retried_line) ==
        "[\"" + bad_address + " tls:certificate_untrusted\",\"" + good_address + " 200\"]");
  CHECK(contains(retried_line, "\"status\":200"));

  // Counted as connect failures, and ejected as an endpoint that cannot be reached.
  auto ejected =
      std::vector<std::string>{"\"msg\":\"endpoint ejected\"", json_member("cluster", "app"),
                               json_member("endpoint", bad_address),
                               json_member("cause", "3 consecutive local-origin failures")};
  REQUIRE_MESSAGE(wait_for_log_lines(bulwark, ejected), bulwark.logs_text());
  CHECK(scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}}) ==
        3);
  CHECK(tls_errors(bulwark, "app", "certificate_untrusted") == 3);
  std::string json = endpoint_json(bulwark, bad_address);
  INFO(json);
  CHECK(contains(json, "\"outlier\":{\"ejected\":true"));
  CHECK(scrape_metric(bulwark, "bulwark_endpoint_ejected",
                      {{"cluster", "app"}, {"endpoint", bad_address}}) == 1);

  // Ejected: no more handshakes with it, no more retries.
  for (int i = 0; i < 6; ++i) {
    REQUIRE(client.send(make_request("GET", "/app/after")));
    auto response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK_FALSE(response->has("x-bulwark-attempts"));
  }
  CHECK(bad.accepted() == 3);
  CHECK(tls_errors(bulwark, "app", "certificate_untrusted") == 3);
}

// ---------------------------------------------------------------------------------------------
// Client certificates

TEST_CASE("tls upstream: a client certificate is presented to an upstream that requires one") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  TlsServerOptions mtls = serving(pki.server);
  mtls.client_ca_file = pki.ca.cert_file();
  mtls.require_client_cert = true;
  TlsFrontDoor door(mtls, upstream.port());
  // Over TLS 1.2 the server judges the client's certificate within the handshake.
  TlsServerOptions mtls12 = mtls;
  mtls12.max_version = TlsVersion::kTls1_2;
  TlsFrontDoor door12(mtls12, upstream.port());
  auto with_cert = [&](const IssuedCert& cert) {
    return trusting(pki.ca, "sni: localhost, cert: " + cert.cert_file + ", key: " + cert.key_file);
  };
  CertSpec chained_spec;
  chained_spec.common_name = "chained-web";
  chained_spec.uri_sans = {TestPki::kSpiffeWeb};
  chained_spec.usage = CertUsage::kClient;
  IssuedCert chained_client = pki.intermediate.issue("chained-client", chained_spec);
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {
      {"web", {loopback_address(door.port())}, with_cert(pki.client_web)},
      // Issued by the intermediate: bulwark sends the chain in the .crt file.
      {"chained", {loopback_address(door.port())}, with_cert(chained_client)},
      {"web12", {loopback_address(door12.port())}, with_cert(pki.client_web)},
      {"none12", {loopback_address(door12.port())}, trusting(pki.ca, "sni: localhost")},
      {"stranger12", {loopback_address(door12.port())}, with_cert(pki.other_ca_client)},
  };
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  Response response = get(port, "/web/x");
  INFO(describe(response));
  CHECK(response.status == 200);
  TlsConnectionRecord record = handshake_of(door, 1);
  CHECK(record.handshake_ok);
  REQUIRE(record.client_cert);
  CHECK(record.client_cert->uri_sans == std::vector<std::string>{TestPki::kSpiffeWeb});
  CHECK(record.client_cert->sha256 == pki.client_web.sha256);
  // Its expiry is published, by path.
  auto expiry =
      scrape_metric(bulwark, "bulwark_tls_certificate_expiry_timestamp_seconds",
                    {{"side", "cluster"}, {"name", "web"}, {"path", pki.client_web.cert_file}});
  REQUIRE(expiry);
  CHECK(*expiry > static_cast<double>(::time(nullptr)) + 300 * 86400.0);
  // And the CA file's, which verifies nothing once its last certificate expires.
  auto ca_expiry =
      scrape_metric(bulwark, "bulwark_tls_certificate_expiry_timestamp_seconds",
                    {{"side", "cluster"}, {"name", "web"}, {"path", pki.ca.root_cert_file()}});
  REQUIRE(ca_expiry);
  CHECK(*ca_expiry > static_cast<double>(::time(nullptr)) + 300 * 86400.0);

  Response via_chain = get(port, "/chained/x");
  INFO(describe(via_chain));
  CHECK(via_chain.status == 200);
  record = handshake_of(door, 2);
  REQUIRE(record.client_cert);
  CHECK(record.client_cert->issuer == "CN=intermediate");
  CHECK(record.verify_error == "");

  Response twelve = get(port, "/web12/x");
  INFO(describe(twelve));
  CHECK(twelve.status == 200);
  record = handshake_of(door12, 1);
  REQUIRE(record.client_cert);
  CHECK(record.client_cert->uri_sans == std::vector<std::string>{TestPki::kSpiffeWeb});

  // Without a certificate, or with one from a CA the upstream does not trust: its alert.
  check_tls_failure(get(port, "/none12/x"), setup.access_log, "/none12/x",
                    loopback_address(door12.port()), "peer_alert");
  CHECK(tls_errors(bulwark, "none12", "peer_alert") == 1);
  record = handshake_of(door12, 2);
  CHECK(record.failure == "peer did not return a certificate");
  CHECK_FALSE(record.client_cert);

  check_tls_failure(get(port, "/stranger12/x"), setup.access_log, "/stranger12/x",
                    loopback_address(door12.port()), "peer_alert");
  CHECK(tls_errors(bulwark, "stranger12", "peer_alert") == 1);
  record = handshake_of(door12, 3);
  REQUIRE(record.client_cert);
  CHECK(record.client_cert->issuer == "CN=other-ca");
  CHECK(upstream.requests() == 3);
}

// ---------------------------------------------------------------------------------------------
// Sessions and pooled connections

TEST_CASE("tls upstream: pooled TLS connections are reused and an upstream close is noticed") {
  TempDir dir;
  TestPki pki(dir.path());
  Gate gate;
  TestUpstream upstream([&](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (!conn.write_response(200, request->target + "\n")) return;
      if (request->target == "/app/last") {
        gate.pass(Millis{10000});
        return;  // closes the idle connection, which the front door ends with close_notify
      }
    }
  });
  TlsFrontDoor door(serving(pki.server), upstream.port());
  const std::string address = loopback_address(door.port());
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {{"app", {address}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  Gate::Opener open_gate(gate);
  const uint16_t port = bulwark.port("inbound");
  auto idle = [&] { return json_number(endpoint_json(bulwark, address), "idle_connections"); };

  for (int i = 0; i < 5; ++i) {
    Response response = get(port, "/app/" + std::to_string(i));
    CHECK(response.status == 200);
  }
  Response last = get(port, "/app/last");
  CHECK(last.status == 200);
  // Six requests, from six client connections, on one TLS connection.
  CHECK(door.accepted() == 1);
  CHECK(upstream.connections() == 1);
  CHECK(tls_handshakes(bulwark, "app") == 1);
  REQUIRE(eventually([&] { return idle() == 1.0; }));

  // The upstream closes the idle connection: bulwark sees it go without a request on it.
  gate.release();
  REQUIRE(door.wait_closed(1));
  CHECK(eventually([&] { return idle() == 0.0; }));
  CHECK(eventually([&] {
    return scrape_metric(bulwark, "bulwark_upstream_connections",
                         {{"cluster", "app"}, {"state", "idle"}}) == 0.0;
  }));

  // The next request gets a new connection at its first try.
  Response after = get(port, "/app/after");
  INFO(describe(after));
  CHECK(after.status == 200);
  CHECK_FALSE(after.has("x-bulwark-attempts"));
  CHECK(door.accepted() == 2);
  CHECK(handshake_of(door, 2).handshake_ok);
  auto line = access_line(setup.access_log, "/app/after");
  REQUIRE(line);
  CHECK(tries_of(*line) == "[\"" + address + " 200\"]");
  CHECK_FALSE(scrape_metric(bulwark, "bulwark_tls_handshake_errors_total").has_value());
}

TEST_CASE("tls upstream: many requests at once open many TLS connections and all succeed") {
  constexpr size_t kClients = 16;
  TempDir dir;
  TestPki pki(dir.path());
  Gate gate;
  TestUpstream upstream([&](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (!gate.pass(Millis{10000})) return;
      if (!conn.write_response(200, request->target + "\n")) return;
    }
  });
  TlsFrontDoor door(serving(pki.server), upstream.port());
  Setup setup;
  setup.workers = 2;
  setup.clusters = {{"app", {loopback_address(door.port())}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  Gate::Opener open_gate(gate);

  // Every request is held upstream until all have arrived: each needs a connection of its own.
  std::vector<std::unique_ptr<ClientConn>> clients;
  for (size_t i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<ClientConn>(bulwark.port("inbound")));
    REQUIRE(clients.back()->connected());
    REQUIRE(clients.back()->send(make_request("GET", "/app/" + std::to_string(i))));
  }
  REQUIRE(upstream.wait_for_requests(kClients));
  gate.open();
  for (size_t i = 0; i < kClients; ++i) {
    CAPTURE(i);
    auto response = clients[i]->read_response();
    REQUIRE_MESSAGE(response, clients[i]->last_error_text());
    CHECK(response->status == 200);
    CHECK(response->body == "/app/" + std::to_string(i) + "\n");
  }
  CHECK(door.accepted() == kClients);
  CHECK(tls_handshakes(bulwark, "app") == static_cast<double>(kClients));
  for (const TlsConnectionRecord& record : door.connections()) CHECK(record.handshake_ok);
}

TEST_CASE("tls upstream: a response that ends while the request is still being written") {
  // The answer comes after the request's head, before its body (as an upstream refusing an
  // upload does): the TLS connection is busy writing when the exchange is over, so it cannot go
  // back to the pool, and the idle count must still match the pools.
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream([](UpstreamConn& conn) {
    while (auto request = conn.read_request_head(Millis{30000})) {
      conn.pause(Millis{20});
      if (!conn.write_response(200, "early\n")) return;
      if (!conn.read_request_body(*request, Millis{30000})) return;
    }
  });
  TlsFrontDoor door(serving(pki.server), upstream.port());
  const std::string address = loopback_address(door.port());
  Setup setup;
  setup.clusters = {{"app", {address}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const std::string head = make_request("PUT", "/app/upload", {{"Content-Length", "20000"}});
  for (int i = 0; i < 10; ++i) {
    CAPTURE(i);
    ClientConn client(bulwark.port("inbound"));
    REQUIRE(client.connected());
    REQUIRE(client.send(head + std::string(16000, 'q')));
    std::this_thread::sleep_for(Millis{20});  // racing the upstream's answer on purpose
    REQUIRE(client.send(std::string(4000, 'q')));
    auto response = client.read_response();
    REQUIRE_MESSAGE(response, client.last_error_text());
    CHECK(response->status == 200);
    CHECK(response->body == "early\n");
  }
  CHECK(eventually([&] {
    auto idle = scrape_metric(bulwark, "bulwark_upstream_connections",
                              {{"cluster", "app"}, {"state", "idle"}});
    return idle && *idle == json_number(endpoint_json(bulwark, address), "idle_connections");
  }));
  Response after = get(bulwark.port("inbound"), "/app/after");
  CHECK(after.status == 200);
}

TEST_CASE("tls upstream: large bodies cross a pooled TLS connection intact both ways") {
  constexpr uint64_t kSize = 8 * 1024 * 1024;
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream([](UpstreamConn& conn) {
    while (true) {
      PatternVerifier upload;
      auto request = conn.read_request(Millis{30000}, upload.sink());
      if (!request) return;
      if (request->target == "/app/download") {
        if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kSize) +
                        "\r\n\r\n") ||
            !conn.write_pattern(0, kSize)) {
          return;
        }
        continue;
      }
      if (!conn.write_response(200, "received " + std::to_string(upload.received()) +
                                        (upload.ok() ? " ok" : " corrupted"))) {
        return;
      }
    }
  });
  TlsFrontDoor door(serving(pki.server), upstream.port());
  Setup setup;
  setup.clusters = {{"app", {loopback_address(door.port())}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);

  ClientConn client(bulwark.port("inbound"));
  REQUIRE(client.connected());
  REQUIRE(client.send(
      make_request("POST", "/app/upload", {{"Content-Length", std::to_string(kSize)}})));
  REQUIRE_MESSAGE(client.write_pattern(0, kSize), client.last_error_text());
  auto uploaded = client.read_response(false, Millis{10000});
  REQUIRE_MESSAGE(uploaded, client.last_error_text());
  CHECK(uploaded->status == 200);
  CHECK(uploaded->body == "received " + std::to_string(kSize) + " ok");

  REQUIRE(client.send(make_request("GET", "/app/download")));
  PatternVerifier download;
  auto downloaded = client.read_response(false, Millis{10000}, download.sink());
  REQUIRE_MESSAGE(downloaded, client.last_error_text());
  CHECK(downloaded->status == 200);
  CHECK(download.received() == kSize);
  CHECK(download.ok());

  // The connection is still in step: a small request on it gets its own answer.
  REQUIRE(client.send(make_request("POST", "/app/small", {}, pattern_string(0, 4))));
  auto small = client.read_response();
  REQUIRE_MESSAGE(small, client.last_error_text());
  CHECK(small->body == "received 4 ok");
  CHECK(door.accepted() == 1);
}

TEST_CASE("tls upstream: a WebSocket tunnel over a TLS upstream carries bytes and half-closes") {
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
      if (data.find("ping") != std::string::npos) conn.write("pong");
      got += data;
    }
    if (conn.last_error() != ReadError::kClosed) return;  // the client's end must arrive as one
    conn.write("after your end: " + got);
  });
  TlsFrontDoor door(serving(pki.server), upstream.port());
  Setup setup;
  setup.clusters = {{"app", {loopback_address(door.port())}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);

  ClientConn client(bulwark.port("inbound"));
  REQUIRE(client.send(
      make_request("GET", "/app/ws", {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}})));
  auto switched = client.read_response();
  REQUIRE_MESSAGE(switched, client.last_error_text());
  REQUIRE(switched->status == 101);
  REQUIRE(client.send("ping"));
  CHECK(client.read_exact(4).value_or("") == "pong");
  // The client's end goes upstream as close_notify (the front door passes it on as a FIN), and
  // what the upstream says after it still comes back.
  REQUIRE(client.send(" last words"));
  client.shutdown_write();
  CHECK(client.read_until_close() == "after your end: ping last words");
  CHECK(door.wait_closed(1));
}

TEST_CASE(
    "tls upstream: once the cluster's CA changes no session verified under the old one resumes") {
  // Passes today only because bulwark never resumes a session to an upstream (the test "a new
  // connection to an endpoint resumes its TLS session" shows it): with resumption working, a
  // session kept from before the change resumes and skips the new CA's verification (seen with
  // SSL_free shimmed to mark the session shut down first). Fixing resumption must also stop
  // sessions made under an older context from being offered.
  TempDir dir;
  TestPki pki(dir.path());
  TempDir trust;  // a directory of its own: bulwark watches the CA file's directory
  const std::string ca_file = trust.file("ca.crt");
  write_file(ca_file, pki.ca.cert_pem());
  TestUpstream upstream(closing_handler());
  TlsFrontDoor door(serving(pki.server), upstream.port());
  const std::string address = loopback_address(door.port());
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {{"app", {address}, "{ca: " + ca_file + ", sni: localhost}"}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  Response before = get(port, "/app/before");
  INFO(describe(before));
  CHECK(before.status == 200);
  REQUIRE(door.wait_closed(1));

  // The upstream's CA is no longer trusted: the new file holds only another one.
  write_file(trust.file("ca.crt.new"), pki.other_ca.cert_pem());
  REQUIRE(::rename(trust.file("ca.crt.new").c_str(), ca_file.c_str()) == 0);
  REQUIRE_MESSAGE(wait_for_log_lines(bulwark, {"TLS certificates reloaded"}), bulwark.logs_text());

  check_tls_failure(get(port, "/app/after"), setup.access_log, "/app/after", address,
                    "certificate_untrusted");
  CHECK_FALSE(handshake_of(door, 2).resumed);
}

// ---------------------------------------------------------------------------------------------
// Upstreams that do not speak TLS

TEST_CASE("tls upstream: an upstream that answers without TLS fails the try and bulwark goes on") {
  TempDir dir;
  TestPki pki(dir.path());
  // A plaintext HTTP server, as nginx on a plain port: a 400 to the bytes of a ClientHello.
  TestUpstream plain([](UpstreamConn& conn) {
    if (conn.read_some(1).empty()) return;
    conn.write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  });
  TlsServerOptions binary;
  binary.mode = TlsServerOptions::Mode::kGarbage;
  binary.garbage = std::string("\x16\x03\x03\x00\x04\xff\xff\xff\xff", 9);  // no such message
  TlsFrontDoor garbage(binary, 0);
  TestUpstream upstream;
  TlsFrontDoor good(serving(pki.server), upstream.port());
  Setup setup;
  setup.access_log = dir.file("access.log");
  const std::string tls = trusting(pki.ca, "sni: localhost");
  setup.clusters = {{"plain", {plain.address()}, tls},
                    {"garbage", {loopback_address(garbage.port())}, tls},
                    {"good", {loopback_address(good.port())}, tls}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  check_tls_failure(get(port, "/plain/x"), setup.access_log, "/plain/x", plain.address(),
                    "peer_not_tls");
  CHECK(tls_errors(bulwark, "plain", "peer_not_tls") == 1);

  for (int i = 0; i < 3; ++i) {
    const std::string path = "/garbage/" + std::to_string(i);
    check_tls_failure(get(port, path), setup.access_log, path, loopback_address(garbage.port()),
                      "protocol_error");
    // bulwark let go of the connection: the front door holds it until then.
    CHECK(garbage.wait_closed(static_cast<size_t>(i + 1)));
  }
  CHECK(tls_errors(bulwark, "garbage", "protocol_error") == 3);

  Response response = get(port, "/good/x");
  INFO(describe(response));
  CHECK(response.status == 200);
  CHECK(response.body == "GET /good/x\n");
  auto health = http_get(bulwark.admin_port(), "/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
}

TEST_CASE("tls upstream: an upstream that never answers the handshake times out at connect") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsServerOptions mute;
  mute.mode = TlsServerOptions::Mode::kSilent;
  TlsFrontDoor silent(mute, 0);
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {{"app",
                     {loopback_address(silent.port())},
                     trusting(pki.ca, "sni: localhost"),
                     "connect_timeout: 300ms"}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  const auto began = Clock::now();
  Response response = get(port, "/app/x");
  const auto took = std::chrono::duration_cast<Millis>(Clock::now() - began);
  INFO(describe(response));
  CAPTURE(took.count());
  CHECK(took >= Millis{250});
  CHECK(took < Millis{2000});  // the connect timeout, not a hang
  CHECK(response.status >= 500);
  CHECK(response.status <= 504);
  CHECK(silent.wait_closed(1));  // bulwark closed the connection it gave up on
  CHECK(tls_errors(bulwark, "app", "handshake_timeout") == 1);
  CHECK(scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}}) ==
        1);
  auto line = access_line(setup.access_log, "/app/x");
  REQUIRE(line);
  CHECK(contains(*line, json_member("flags", "UF")));
}

// ---------------------------------------------------------------------------------------------
// Health checks

TEST_CASE("tls upstream: health checks go over TLS by default and in plaintext with tls false") {
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream good_backend;
  TestUpstream plain_backend;  // a plaintext server: only the checks can reach it
  TlsFrontDoor good(serving(pki.server), good_backend.port());
  TlsFrontDoor bad(serving(pki.other_ca_server), good_backend.port());
  const std::string good_address = loopback_address(good.port());
  const std::string bad_address = loopback_address(bad.port());
  const std::string plain_address = plain_backend.address();
  const std::string tls = trusting(pki.ca, "sni: localhost");
  const std::string checks =
      "health_check: {path: /healthz, interval: 100ms, interval_jitter: 0%, timeout: 500ms, "
      "healthy_threshold: 1, unhealthy_threshold: 1";
  Setup setup;
  setup.clusters = {
      {"good", {good_address}, tls, checks + "}"},
      {"bad", {bad_address}, tls, checks + "}"},
      {"plain", {plain_address}, tls, checks + ", tls: false}"},
  };
  BulwarkProcess bulwark;
  start(bulwark, setup);

  CHECK(wait_for_log_lines(bulwark, health_change("good", good_address, "healthy")));
  auto bad_change = health_change("bad", bad_address, "unhealthy");
  bad_change.push_back("TLS handshake failed: certificate_untrusted");
  CHECK_MESSAGE(wait_for_log_lines(bulwark, bad_change), bulwark.logs_text());
  CHECK(wait_for_log_lines(bulwark, health_change("plain", plain_address, "healthy")));

  // The good upstream's checks came over TLS, with SNI.
  REQUIRE(good_backend.wait_for_requests(1));
  CHECK(good_backend.received()[0].target == "/healthz");
  TlsConnectionRecord first = handshake_of(good, 1);
  CHECK(first.handshake_ok);
  CHECK(first.sni == "localhost");
  CHECK(contains(endpoint_json(bulwark, good_address), "\"state\":\"healthy\""));

  // The bad one: refused, and why, in /clusters and the handshake errors.
  std::string json = endpoint_json(bulwark, bad_address);
  INFO(json);
  CHECK(contains(json, "\"state\":\"unhealthy\""));
  CHECK(contains(json, "\"routable\":false"));
  CHECK(contains(json, "\"last_detail\":\"TLS handshake failed: certificate_untrusted\""));
  CHECK(tls_errors(bulwark, "bad", "certificate_untrusted") >= 1);
  CHECK_FALSE(handshake_of(bad, 1).handshake_ok);

  // tls: false: the plaintext server parsed the checks as HTTP.
  REQUIRE(plain_backend.wait_for_requests(1));
  CHECK(plain_backend.received()[0].target == "/healthz");
  CHECK(contains(endpoint_json(bulwark, plain_address), "\"state\":\"healthy\""));

  // Traffic to the healthy TLS endpoint flows as usual.
  Response response = get(bulwark.port("inbound"), "/good/x");
  CHECK(response.status == 200);
}

// ---------------------------------------------------------------------------------------------
// The config check

TEST_CASE("tls upstream: --check loads the cluster's CA and client certificate") {
  TempDir dir;
  TestPki pki(dir.path());
  CertSpec soon;
  soon.common_name = "soon";
  soon.uri_sans = {TestPki::kSpiffeWeb};
  soon.usage = CertUsage::kClient;
  soon.not_after_days = 10;
  IssuedCert expiring = pki.ca.issue("client-soon", soon);
  CertSpec old = soon;
  old.common_name = "old";
  old.not_after_days = -1;
  IssuedCert expired = pki.ca.issue("client-old", old);
  const std::string garbage_ca = dir.file("garbage-ca.crt");
  write_file(garbage_ca, "not a certificate\n");

  auto check = [&](const std::string& tls) {
    Setup setup;
    setup.clusters = {{"app", {"localhost:8443"}, tls}};
    return run_check(tls_config(setup));
  };
  auto with_client = [&](const std::string& cert, const std::string& key) {
    return trusting(pki.ca, "cert: " + cert + ", key: " + key);
  };

  CheckResult good = check(with_client(pki.client_web.cert_file, pki.client_web.key_file));
  CHECK(good.exit_code == 0);
  CHECK_FALSE(contains(good.out, "warning"));

  CheckResult warned = check(with_client(expiring.cert_file, expiring.key_file));
  CHECK(warned.exit_code == 0);
  CHECK_MESSAGE(contains(warned.out,
                         "warning: cluster app: certificate " + expiring.cert_file + " expires in"),
                warned.out);

  CheckResult old_cert = check(with_client(expired.cert_file, expired.key_file));
  CHECK(old_cert.exit_code == 1);
  CHECK_MESSAGE(contains(old_cert.out, "certificate " + expired.cert_file + " has expired"),
                old_cert.out);

  CheckResult mismatch = check(with_client(pki.client_web.cert_file, pki.client_intruder.key_file));
  CHECK(mismatch.exit_code == 1);
  CHECK_MESSAGE(contains(mismatch.out, "does not match"), mismatch.out);

  CheckResult bad_ca = check("{ca: " + garbage_ca + "}");
  CHECK(bad_ca.exit_code == 1);
  CHECK_MESSAGE(contains(bad_ca.out, "cannot load CA file " + garbage_ca), bad_ca.out);
}

// ---------------------------------------------------------------------------------------------
// nginx

TEST_CASE("tls upstream: nginx serving HTTPS answers through bulwark") {
  const std::string nginx = find_program("nginx");
  if (nginx.empty()) {
    MESSAGE("skipped: nginx is not installed");
    return;
  }
  TempDir dir;
  TestPki pki(dir.path());
  const uint16_t nginx_port = unused_port();
  const std::string conf = dir.file("nginx.conf");
  write_file(conf,
             "daemon off;\n"
             "master_process off;\n"
             "worker_processes 1;\n"
             "pid " +
                 dir.file("nginx.pid") +
                 ";\n"
                 "error_log stderr warn;\n"
                 "events { worker_connections 64; }\n"
                 "http {\n"
                 "  access_log off;\n"
                 "  client_body_temp_path " +
                 dir.file("body") +
                 ";\n"
                 "  proxy_temp_path " +
                 dir.file("proxy") +
                 ";\n"
                 "  fastcgi_temp_path " +
                 dir.file("fastcgi") +
                 ";\n"
                 "  uwsgi_temp_path " +
                 dir.file("uwsgi") +
                 ";\n"
                 "  scgi_temp_path " +
                 dir.file("scgi") +
                 ";\n"
                 "  server {\n"
                 "    listen 127.0.0.1:" +
                 std::to_string(nginx_port) +
                 " ssl;\n"
                 "    ssl_certificate " +
                 pki.server.cert_file +
                 ";\n"
                 "    ssl_certificate_key " +
                 pki.server.key_file +
                 ";\n"
                 "    ssl_protocols TLSv1.2 TLSv1.3;\n"
                 "    location / {\n"
                 "      default_type text/plain;\n"
                 "      return 200 \"nginx $ssl_protocol sni=$ssl_server_name $request_uri\\n\";\n"
                 "    }\n"
                 "  }\n"
                 "}\n");
  Subprocess server;
  server.start({nginx, "-p", dir.path(), "-c", conf, "-e", "stderr"});
  REQUIRE_MESSAGE(eventually([&] { return ClientConn(nginx_port, Millis{100}).connected(); }),
                  server.text(Subprocess::Stream::kStderr));

  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {
      {"nginx", {loopback_address(nginx_port)}, trusting(pki.ca, "sni: localhost")},
      {"distrusted", {loopback_address(nginx_port)}, trusting(pki.other_ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  for (int i = 0; i < 3; ++i) {
    const std::string path = "/nginx/" + std::to_string(i);
    Response response = get(port, path);
    INFO(describe(response));
    CHECK(response.status == 200);
    CHECK(response.body == "nginx TLSv1.3 sni=localhost " + path + "\n");
  }
  CHECK(tls_handshakes(bulwark, "nginx") == 1);  // one pooled connection
  check_tls_failure(get(port, "/distrusted/x"), setup.access_log, "/distrusted/x",
                    loopback_address(nginx_port), "certificate_untrusted");
}

// ---------------------------------------------------------------------------------------------
// Failing: bulwark bugs these tests show, each described in its test.

TEST_CASE("tls upstream: a rotated client certificate is presented on the next connection") {
  // The cluster's certificate files are watched as a listener's are. New connections present
  // the new certificate, and do not resume a session made with the old one (the upstream would
  // go on seeing the old certificate).
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream(closing_handler());  // a new connection for each request
  TlsServerOptions mtls = serving(pki.server);
  mtls.client_ca_file = pki.ca.cert_file();
  mtls.require_client_cert = true;
  TlsFrontDoor door(mtls, upstream.port());
  const std::string live = dir.file("client");
  std::filesystem::create_directory(live);
  write_file(live + "/tls.crt", pki.client_web.cert_pem);
  write_file(live + "/tls.key", pki.client_web.key_pem);
  Setup setup;
  setup.clusters = {{"web",
                     {loopback_address(door.port())},
                     trusting(pki.ca, "sni: localhost, cert: " + live + "/tls.crt, key: " + live +
                                          "/tls.key")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  for (int i = 1; i <= 2; ++i) {
    Response response = get(port, "/web/" + std::to_string(i));
    INFO(describe(response));
    CHECK(response.status == 200);
    REQUIRE(door.wait_closed(static_cast<size_t>(i)));
  }
  REQUIRE(handshake_of(door, 1).client_cert);
  CHECK(handshake_of(door, 1).client_cert->sha256 == pki.client_web.sha256);
  CHECK(handshake_of(door, 2).resumed);

  CertSpec spec;
  spec.common_name = "web-rotated";
  spec.uri_sans = {TestPki::kSpiffeWeb};
  spec.usage = CertUsage::kClient;
  const IssuedCert rotated = pki.ca.issue("web-rotated", spec);
  write_file(live + "/tls.key", rotated.key_pem);
  write_file(live + "/tls.crt", rotated.cert_pem);
  REQUIRE_MESSAGE(wait_for_log_lines(bulwark, {"\"msg\":\"TLS certificates reloaded\""}),
                  bulwark.logs_text());

  Response response = get(port, "/web/3");
  INFO(describe(response));
  CHECK(response.status == 200);
  const TlsConnectionRecord third = handshake_of(door, 3);
  CHECK_FALSE(third.resumed);
  REQUIRE(third.client_cert);
  CHECK(third.client_cert->sha256 == rotated.sha256);
  CHECK(third.client_cert->subject == "CN=web-rotated");
  auto expiry = scrape_metric(bulwark, "bulwark_tls_certificate_expiry_timestamp_seconds",
                              {{"side", "cluster"}, {"name", "web"}, {"path", live + "/tls.crt"}});
  REQUIRE(expiry);
  CHECK(*expiry > static_cast<double>(::time(nullptr)) + 300 * 86400.0);
}

TEST_CASE("tls upstream: a new connection to an endpoint resumes its TLS session") {
  // A connection that simply ends keeps its session resumable (freeing an SSL that never shut
  // down marks its session bad in OpenSSL: this test caught that once).
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream(closing_handler());
  TlsFrontDoor door13(serving(pki.server), upstream.port());
  TlsFrontDoor door12(serving(pki.server, max_version(TlsVersion::kTls1_2)), upstream.port());
  Setup setup;
  setup.clusters = {{"v13", {loopback_address(door13.port())}, trusting(pki.ca, "sni: localhost")},
                    {"v12", {loopback_address(door12.port())}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  const uint16_t port = bulwark.port("inbound");

  struct Version {
    std::string cluster, name;
    TlsFrontDoor* door;
  };
  for (const Version& v :
       {Version{"v13", "TLSv1.3", &door13}, Version{"v12", "TLSv1.2", &door12}}) {
    CAPTURE(v.cluster);
    for (int i = 1; i <= 3; ++i) {
      Response response = get(port, "/" + v.cluster + "/" + std::to_string(i));
      INFO(describe(response));
      CHECK(response.status == 200);
      // The upstream closed each connection: each request had a new one.
      CHECK(v.door->wait_closed(static_cast<size_t>(i)));
    }
    CHECK(v.door->accepted() == 3);
    CHECK_FALSE(handshake_of(*v.door, 1).resumed);
    CHECK(handshake_of(*v.door, 2).resumed);
    CHECK(handshake_of(*v.door, 3).resumed);
    CHECK(handshake_of(*v.door, 3).version == v.name);
    CHECK(tls_handshakes(bulwark, v.cluster, {{"version", v.name}, {"resumed", "false"}}) == 1);
    CHECK(tls_handshakes(bulwark, v.cluster, {{"version", v.name}, {"resumed", "true"}}) == 2);
  }
}

TEST_CASE("tls upstream: health checks over TLS resume the previous check's session") {
  // Fails for the same reason as the test above: each check's connection is closed without
  // close_notify, which makes the session it left in Target::tls_sessions unresumable.
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream backend;
  TlsFrontDoor door(serving(pki.server), backend.port());
  Setup setup;
  setup.clusters = {{"app",
                     {loopback_address(door.port())},
                     trusting(pki.ca, "sni: localhost"),
                     "health_check: {path: /healthz, interval: 100ms, interval_jitter: 0%, "
                     "timeout: 500ms}"}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  REQUIRE(door.wait_for_accepted(3));
  CHECK(handshake_of(door, 1).handshake_ok);
  CHECK_FALSE(handshake_of(door, 1).resumed);
  CHECK(handshake_of(door, 2).resumed);
  CHECK(handshake_of(door, 3).resumed);
}

TEST_CASE("tls upstream: a TLS 1.3 upstream that requires a client certificate is a TLS failure") {
  // In TLS 1.3 the server judges the client's certificate after the client's side of the
  // handshake has finished: bulwark writes the request, then meets the "certificate required"
  // alert in its first read, and answers upstream_tls_failure tls:peer_alert. The server closes
  // with that request unread, so its kernel may send a reset right behind the alert, and a reset
  // that arrives first discards the alert on our side: then all bulwark can see is a reset. Both
  // are accepted here; the alert is what most runs see.
  TempDir dir;
  TestPki pki(dir.path());
  TestUpstream upstream;
  TlsServerOptions mtls = serving(pki.server);
  mtls.client_ca_file = pki.ca.cert_file();
  mtls.require_client_cert = true;
  TlsFrontDoor door(mtls, upstream.port());
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {{"app", {loopback_address(door.port())}, trusting(pki.ca, "sni: localhost")}};
  BulwarkProcess bulwark;
  start(bulwark, setup);

  Response response = get(bulwark.port("inbound"), "/app/x");
  if (response.get("x-bulwark-reason") == "upstream_reset") {
    MESSAGE("the upstream's reset overtook its alert this time");
    CHECK(response.status == 502);
  } else {
    check_tls_failure(response, setup.access_log, "/app/x", loopback_address(door.port()),
                      "peer_alert");
    CHECK(tls_errors(bulwark, "app", "peer_alert") == 1);
  }
  TlsConnectionRecord record = handshake_of(door, 1);
  CHECK(record.failure == "peer did not return a certificate");
  CHECK(record.alert_sent == "certificate required");
  CHECK(upstream.requests() == 0);
}

TEST_CASE("tls upstream: an upstream that never answers the handshake is a TLS failure") {
  // The TCP connection opens but no ServerHello ever comes: at connect_timeout the try fails as
  // a TLS failure (502 upstream_tls_failure, tls:handshake_timeout), not a connect failure.
  TempDir dir;
  TestPki pki(dir.path());
  TlsServerOptions mute;
  mute.mode = TlsServerOptions::Mode::kSilent;
  TlsFrontDoor silent(mute, 0);
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {{"app",
                     {loopback_address(silent.port())},
                     trusting(pki.ca, "sni: localhost"),
                     "connect_timeout: 300ms"}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  check_tls_failure(get(bulwark.port("inbound"), "/app/x"), setup.access_log, "/app/x",
                    loopback_address(silent.port()), "handshake_timeout");
}

// A port on 127.0.0.1 whose listen queue is full: a connect to it neither completes nor fails
// (the kernel drops its SYNs), so only the connect timeout ends it.
class FullBacklog {
 public:
  FullBacklog() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = loopback(0);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listen_fd_, 0) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    // One connection fills the queue (never accepted); a second one then hangs.
    filler_ = std::make_unique<ClientConn>(port_, Millis{1000});
    REQUIRE(filler_->connected());
    REQUIRE_FALSE(ClientConn(port_, Millis{100}).connected());
  }
  ~FullBacklog() { ::close(listen_fd_); }
  FullBacklog(const FullBacklog&) = delete;
  FullBacklog& operator=(const FullBacklog&) = delete;
  uint16_t port() const { return port_; }

 private:
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::unique_ptr<ClientConn> filler_;
};

TEST_CASE("tls upstream: a TCP connect timeout is not counted as a TLS handshake timeout") {
  // An endpoint that never accepts the TCP connection is a connect timeout, not a TLS failure.
  TempDir dir;
  TestPki pki(dir.path());
  FullBacklog full;
  Setup setup;
  setup.access_log = dir.file("access.log");
  setup.clusters = {{"app",
                     {loopback_address(full.port())},
                     trusting(pki.ca, "sni: localhost"),
                     "connect_timeout: 300ms"}};
  BulwarkProcess bulwark;
  start(bulwark, setup);
  Response response = get(bulwark.port("inbound"), "/app/x");
  // No handshake ever began: a connect failure like any other.
  check_local_reply(response, 503, "upstream_connect_failure");
  auto line = access_line(setup.access_log, "/app/x");
  REQUIRE(line);
  CHECK(tries_of(*line) == "[\"" + loopback_address(full.port()) + " connect-failure\"]");
  CHECK(tls_errors(bulwark, "app", "handshake_timeout") == 0);
  CHECK_FALSE(scrape_metric(bulwark, "bulwark_tls_handshake_errors_total").has_value());
}

}  // namespace
}  // namespace bulwark::test
