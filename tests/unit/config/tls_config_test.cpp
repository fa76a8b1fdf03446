// The TLS settings of issue 14: a listener's `tls` (termination), a cluster's `tls`
// (origination) and a health check's `tls`. Valid forms and defaults first, then every error with
// its exact line:column.
//
// Most error cases add lines at a known place of a small config, so the positions below can be
// read off the helpers:
//
//   listener_tls(lines)                    cluster_tls(lines)
//   1  listeners:                          1  listeners:
//   2    - name: in                        2    - name: in
//   3      address: 127.0.0.1:8443         3      address: 127.0.0.1:8080
//   4      tls:                            4      routes:
//   5        certificates:                 5        - name: all
//   6          - {cert: /a.crt, key: ...}  6          cluster: app
//   7        <- lines, 6 spaces            7  clusters:
//   .      routes: ...                     8    - name: app
//   .  clusters: ...                       9      endpoints: [app.internal:443]
//                                         10      tls:
//                                         11        <- lines, 6 spaces
//
// listener_tls_section(lines) is listener_tls without the certificates: its lines start at line 5.
// with_cluster(lines) is cluster_tls from line 9 on: the cluster's keys after its name.

#include <doctest/doctest.h>

#include <initializer_list>
#include <string>
#include <string_view>

#include "config/loader.h"
#include "config_test_support.h"

namespace bulwark::config {
namespace {

using testing::has_error;
using testing::load;

const std::string kRoutes = "    routes:\n      - name: all\n        cluster: app\n";
const std::string kClusters = "clusters:\n  - name: app\n    endpoints: [127.0.0.1:9000]\n";
const std::string kTlsListenerHead = "listeners:\n  - name: in\n    address: 127.0.0.1:8443\n";
const std::string kCertificates =
    "      certificates:\n        - {cert: /tls/a.crt, key: /tls/a.key}\n";

// `lines` right under "    tls:" (line 4) of the listener, from line 5 on.
std::string listener_tls_section(std::string_view lines) {
  return kTlsListenerHead + "    tls:\n" + std::string(lines) + kRoutes + kClusters;
}
// The same with one certificate (lines 5 and 6): `lines` start at line 7.
std::string listener_tls(std::string_view lines) {
  return listener_tls_section(kCertificates + std::string(lines));
}
// A listener whose `tls` key (line 4) is followed by `rest` on the same line.
std::string listener_tls_value(std::string_view rest) {
  return kTlsListenerHead + "    tls:" + std::string(rest) + "\n" + kRoutes + kClusters;
}
// The cluster "app" with `lines` after its name, from line 9 on.
std::string with_cluster(std::string_view lines) {
  return "listeners:\n  - name: in\n    address: 127.0.0.1:8080\n" + kRoutes +
         "clusters:\n  - name: app\n" + std::string(lines);
}
// `lines` right under "    tls:" (line 10) of the cluster, from line 11 on.
std::string cluster_tls(std::string_view lines) {
  return with_cluster("    endpoints: [app.internal:443]\n    tls:\n" + std::string(lines));
}

struct Case {
  const char* what;
  std::string yaml;
  int line;
  int column;
  const char* message;
};

void check_only_errors(std::initializer_list<Case> cases) {
  for (const Case& c : cases) {
    CAPTURE(c.what);
    CAPTURE(c.yaml);
    CHECK_ONLY_ERROR(load(c.yaml), c.line, c.column, c.message);
  }
}

void check_loads(std::initializer_list<std::string> yamls) {
  for (const std::string& yaml : yamls) {
    CAPTURE(yaml);
    CHECK_LOADS(load(yaml));
  }
}

// ---- Valid configs ----

TEST_CASE("the base configs of these tests are valid") {
  check_loads({listener_tls(""), cluster_tls("      verify: true\n"),
               with_cluster("    endpoints: [app.internal:443]\n    tls: {}\n")});
}

TEST_CASE("listener tls: every key loads into the structs exactly") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 0.0.0.0:8443
    tls:
      certificates:
        - {cert: /tls/a.crt, key: /tls/a.key}
        - cert: /tls/b.crt
          key: /tls/b.key
      min_version: "1.3"
      ciphers: "ECDHE+AESGCM:ECDHE+CHACHA20"
      alpn: [http/1.0, http/1.1]
      client_ca: /tls/ca.crt
      require_client_certificate: false
      allowed_client_sans: ["spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/ops/*"]
      forward_client_cert: append_forward
    routes: [{name: all, cluster: app}]
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
)");
  CHECK_LOADS(result);
  const ListenerConfig& listener = result.config->listeners.at(0);
  REQUIRE(listener.tls.has_value());
  const ListenerTlsConfig& tls = *listener.tls;
  CHECK(tls.location.file == "test.yaml");
  CHECK(tls.location.line == 4);  // the `tls` key
  CHECK(tls.location.column == 5);
  REQUIRE(tls.certificates.size() == 2);
  CHECK(tls.certificates[0].cert == "/tls/a.crt");
  CHECK(tls.certificates[0].key == "/tls/a.key");
  CHECK(tls.certificates[0].location.file == "test.yaml");
  CHECK(tls.certificates[0].location.line == 6);  // the list item
  CHECK(tls.certificates[0].location.column == 11);
  CHECK(tls.certificates[1].cert == "/tls/b.crt");
  CHECK(tls.certificates[1].key == "/tls/b.key");
  CHECK(tls.certificates[1].location.line == 7);
  CHECK(tls.certificates[1].location.column == 11);
  CHECK(tls.min_version == TlsVersion::k1_3);
  CHECK(tls.ciphers == "ECDHE+AESGCM:ECDHE+CHACHA20");
  CHECK(tls.alpn == std::vector<std::string>{"http/1.0", "http/1.1"});
  CHECK(tls.client_ca == "/tls/ca.crt");
  CHECK_FALSE(tls.require_client_certificate);
  REQUIRE(tls.allowed_client_sans.size() == 2);
  CHECK(tls.allowed_client_sans[0].value == "spiffe://cluster.local/ns/shop/sa/web");
  CHECK_FALSE(tls.allowed_client_sans[0].prefix);
  CHECK(tls.allowed_client_sans[1].value == "spiffe://cluster.local/ns/ops/");
  CHECK(tls.allowed_client_sans[1].prefix);
  CHECK(tls.forward_client_cert == ForwardClientCert::kAppendForward);
}

TEST_CASE("listener tls: with only certificates every other key takes its default") {
  LoadResult result = load(listener_tls(""));
  CHECK_LOADS(result);
  REQUIRE(result.config->listeners.at(0).tls.has_value());
  const ListenerTlsConfig& tls = *result.config->listeners.at(0).tls;
  REQUIRE(tls.certificates.size() == 1);
  CHECK(tls.certificates[0].cert == "/tls/a.crt");
  CHECK(tls.certificates[0].key == "/tls/a.key");
  CHECK(tls.min_version == TlsVersion::k1_2);
  CHECK(tls.ciphers.empty());
  CHECK(tls.alpn == std::vector<std::string>{"http/1.1"});
  CHECK(tls.client_ca.empty());
  CHECK(tls.require_client_certificate);
  CHECK(tls.allowed_client_sans.empty());
  CHECK(tls.forward_client_cert == ForwardClientCert::kSanitize);
  CHECK(tls.location.line == 4);
  CHECK(tls.location.column == 5);
}

TEST_CASE("without tls sections listeners, clusters and health checks are plain") {
  LoadResult result = load(with_cluster("    endpoints: [127.0.0.1:9000]\n    health_check: {}\n"));
  CHECK_LOADS(result);
  CHECK_FALSE(result.config->listeners.at(0).tls.has_value());
  const ClusterConfig& cluster = result.config->clusters.at(0);
  CHECK_FALSE(cluster.tls.has_value());
  REQUIRE(cluster.health_check.has_value());
  CHECK_FALSE(cluster.health_check->tls.has_value());
}

TEST_CASE("min_version is 1.2 or 1.3, quoted or plain") {
  struct Form {
    const char* yaml;
    TlsVersion version;
  };
  for (const Form& form : {Form{"\"1.2\"", TlsVersion::k1_2}, Form{"1.2", TlsVersion::k1_2},
                           Form{"'1.3'", TlsVersion::k1_3}, Form{"1.3", TlsVersion::k1_3}}) {
    CAPTURE(form.yaml);
    LoadResult listener = load(listener_tls("      min_version: " + std::string(form.yaml) + "\n"));
    CHECK_LOADS(listener);
    CHECK(listener.config->listeners.at(0).tls->min_version == form.version);
    LoadResult cluster = load(cluster_tls("      min_version: " + std::string(form.yaml) + "\n"));
    CHECK_LOADS(cluster);
    CHECK(cluster.config->clusters.at(0).tls->min_version == form.version);
  }
}

TEST_CASE("forward_client_cert takes each mode, with or without client_ca") {
  struct Form {
    const char* yaml;
    ForwardClientCert mode;
  };
  for (const Form& form : {Form{"sanitize", ForwardClientCert::kSanitize},
                           Form{"sanitize_set", ForwardClientCert::kSanitizeSet},
                           Form{"append_forward", ForwardClientCert::kAppendForward}}) {
    CAPTURE(form.yaml);
    const std::string line = "      forward_client_cert: " + std::string(form.yaml) + "\n";
    for (const std::string& yaml :
         {listener_tls(line), listener_tls("      client_ca: /tls/ca.crt\n" + line)}) {
      LoadResult result = load(yaml);
      CHECK_LOADS(result);
      CHECK(result.config->listeners.at(0).tls->forward_client_cert == form.mode);
    }
  }
}

TEST_CASE("listener tls: client certificates may be optional, and SANs exact or prefixes") {
  LoadResult result = load(listener_tls(
      "      client_ca: /tls/ca.crt\n"
      "      require_client_certificate: true\n"
      "      allowed_client_sans: [spiffe://a/b, 'spiffe://a/*', app.internal, x*]\n"));
  CHECK_LOADS(result);
  const ListenerTlsConfig& tls = *result.config->listeners.at(0).tls;
  CHECK(tls.require_client_certificate);
  REQUIRE(tls.allowed_client_sans.size() == 4);
  CHECK(tls.allowed_client_sans[0].value == "spiffe://a/b");
  CHECK_FALSE(tls.allowed_client_sans[0].prefix);
  CHECK(tls.allowed_client_sans[1].value == "spiffe://a/");
  CHECK(tls.allowed_client_sans[1].prefix);
  CHECK(tls.allowed_client_sans[2].value == "app.internal");
  CHECK_FALSE(tls.allowed_client_sans[2].prefix);
  CHECK(tls.allowed_client_sans[3].value == "x");
  CHECK(tls.allowed_client_sans[3].prefix);

  // The same name once exact and once as a prefix are two different matches.
  CHECK_LOADS(load(listener_tls("      client_ca: /ca\n      allowed_client_sans: [a, a*]\n")));
}

TEST_CASE("alpn replaces the default, in order") {
  LoadResult result = load(listener_tls("      alpn: [http/1.0, http/1.1]\n"));
  CHECK_LOADS(result);
  CHECK(result.config->listeners.at(0).tls->alpn ==
        std::vector<std::string>{"http/1.0", "http/1.1"});
  LoadResult cluster = load(cluster_tls("      alpn: [http/1.0]\n"));
  CHECK_LOADS(cluster);
  CHECK(cluster.config->clusters.at(0).tls->alpn == std::vector<std::string>{"http/1.0"});
}

TEST_CASE("cluster tls: {} is TLS to every endpoint with the defaults") {
  LoadResult result = load(with_cluster("    endpoints: [app.internal:443]\n    tls: {}\n"));
  CHECK_LOADS(result);
  const ClusterConfig& cluster = result.config->clusters.at(0);
  REQUIRE(cluster.tls.has_value());
  const ClusterTlsConfig& tls = *cluster.tls;
  CHECK(tls.sni.empty());
  CHECK(tls.ca.empty());
  CHECK(tls.verify);
  CHECK(tls.verify_hostname);
  CHECK(tls.allowed_server_sans.empty());
  CHECK(tls.cert.empty());
  CHECK(tls.key.empty());
  CHECK(tls.min_version == TlsVersion::k1_2);
  CHECK(tls.alpn == std::vector<std::string>{"http/1.1"});
  CHECK(tls.location.file == "test.yaml");
  CHECK(tls.location.line == 10);  // the `tls` key
  CHECK(tls.location.column == 5);
}

TEST_CASE("cluster tls: every key loads into the structs exactly") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes: [{name: all, cluster: app}]
clusters:
  - name: app
    endpoints: [10.0.0.5:443, payments.internal:443]
    health_check: {path: /healthz, tls: false}
    tls:
      sni: Payments-1.internal
      ca: /tls/ca.crt
      verify: true
      verify_hostname: false
      allowed_server_sans: ["spiffe://cluster.local/ns/pay/sa/api", "spiffe://cluster.local/ns/pay/*"]
      cert: /tls/client.crt
      key: /tls/client.key
      min_version: 1.3
      alpn: [http/1.1]
  - name: checked
    endpoints: [payments.internal:443]
    health_check: {tls: true}
    tls: {verify: false}
)");
  CHECK_LOADS(result);
  const ClusterConfig& app = result.config->clusters.at(0);
  REQUIRE(app.tls.has_value());
  const ClusterTlsConfig& tls = *app.tls;
  CHECK(tls.sni == "Payments-1.internal");  // as written: names compare case-insensitively
  CHECK(tls.ca == "/tls/ca.crt");
  CHECK(tls.verify);
  CHECK_FALSE(tls.verify_hostname);
  REQUIRE(tls.allowed_server_sans.size() == 2);
  CHECK(tls.allowed_server_sans[0].value == "spiffe://cluster.local/ns/pay/sa/api");
  CHECK_FALSE(tls.allowed_server_sans[0].prefix);
  CHECK(tls.allowed_server_sans[1].value == "spiffe://cluster.local/ns/pay/");
  CHECK(tls.allowed_server_sans[1].prefix);
  CHECK(tls.cert == "/tls/client.crt");
  CHECK(tls.key == "/tls/client.key");
  CHECK(tls.min_version == TlsVersion::k1_3);
  CHECK(tls.alpn == std::vector<std::string>{"http/1.1"});
  CHECK(tls.location.line == 9);
  CHECK(tls.location.column == 5);
  REQUIRE(app.health_check.has_value());
  CHECK(app.health_check->tls == false);

  // health_check.tls: true may come before the cluster's tls section in the file.
  const ClusterConfig& checked = result.config->clusters.at(1);
  REQUIRE(checked.tls.has_value());
  CHECK_FALSE(checked.tls->verify);
  REQUIRE(checked.health_check.has_value());
  CHECK(checked.health_check->tls == true);
}

TEST_CASE("health_check tls: false is allowed without a cluster tls section") {
  LoadResult result =
      load(with_cluster("    endpoints: [127.0.0.1:9000]\n    health_check: {tls: false}\n"));
  CHECK_LOADS(result);
  CHECK(result.config->clusters.at(0).health_check->tls == false);
}

TEST_CASE("an IP endpoint is fine over TLS once something names or skips the server name") {
  const std::string endpoints = "    endpoints: [10.0.0.5:443, '[::1]:443', app.internal:443]\n";
  check_loads({
      with_cluster(endpoints + "    tls: {sni: app.internal}\n"),
      with_cluster(endpoints + "    tls: {allowed_server_sans: [spiffe://cluster.local/ns/a/*]}\n"),
      with_cluster(endpoints + "    tls: {verify_hostname: false}\n"),
      with_cluster(endpoints + "    tls: {verify: false}\n"),
      with_cluster(endpoints + "    tls: {verify: false, verify_hostname: true}\n"),
      // Without tls there is no name to check.
      with_cluster(endpoints),
  });
}

TEST_CASE("sni is a DNS name up to 253 bytes") {
  std::string longest;
  while (longest.size() < 253) longest += longest.empty() ? "a" : ".a";  // 127 labels, 253 bytes
  REQUIRE(longest.size() == 253);
  for (const std::string& name : {std::string("payments.internal"), std::string("localhost"),
                                  std::string("API-2.Example.COM"), std::string("123"), longest}) {
    CAPTURE(name);
    LoadResult result = load(cluster_tls("      sni: " + name + "\n"));
    CHECK_LOADS(result);
    CHECK(result.config->clusters.at(0).tls->sni == name);
  }
}

TEST_CASE("file paths are taken as written and never opened by the loader") {
  LoadResult result =
      load(listener_tls_section("      certificates:\n"
                                "        - {cert: /no/such/file.crt, key: relative/key.pem}\n"
                                "      client_ca: \"/path with spaces/ca.crt\"\n"));
  CHECK_LOADS(result);
  const ListenerTlsConfig& tls = *result.config->listeners.at(0).tls;
  CHECK(tls.certificates.at(0).cert == "/no/such/file.crt");
  CHECK(tls.certificates.at(0).key == "relative/key.pem");
  CHECK(tls.client_ca == "/path with spaces/ca.crt");
}

TEST_CASE("to_string gives the YAML spelling of the TLS enums") {
  CHECK(std::string(to_string(TlsVersion::k1_2)) == "1.2");
  CHECK(std::string(to_string(TlsVersion::k1_3)) == "1.3");
  CHECK(std::string(to_string(ForwardClientCert::kSanitize)) == "sanitize");
  CHECK(std::string(to_string(ForwardClientCert::kSanitizeSet)) == "sanitize_set");
  CHECK(std::string(to_string(ForwardClientCert::kAppendForward)) == "append_forward");
}

// ---- Errors ----

TEST_CASE("tls: unknown keys, listing the keys allowed there") {
  check_only_errors({
      {"listener tls", listener_tls("      cipher: HIGH\n"), 7, 7,
       "listeners[0].tls: unknown key 'cipher' in listener tls (did you mean 'ciphers'?); "
       "expected one of: certificates, min_version, ciphers, alpn, client_ca, "
       "require_client_certificate, allowed_client_sans, forward_client_cert"},
      {"certificate",
       listener_tls_section("      certificates:\n        - {cert: /a, key: /b, chain: /c}\n"), 6,
       31,
       "listeners[0].tls.certificates[0]: unknown key 'chain' in certificate; expected one of: "
       "cert, key"},
      {"cluster tls", cluster_tls("      snii: app.internal\n"), 11, 7,
       "clusters[0].tls: unknown key 'snii' in cluster tls (did you mean 'sni'?); expected one "
       "of: sni, ca, verify, verify_hostname, allowed_server_sans, cert, key, min_version, alpn"},
      {"health check",
       with_cluster("    endpoints: [127.0.0.1:1]\n    health_check: {ssl: true}\n"), 10, 20,
       "clusters[0].health_check: unknown key 'ssl' in health check; expected one of: path, tcp, "
       "host, interval, interval_jitter, timeout, healthy_threshold, unhealthy_threshold, "
       "unhealthy_interval, expected_statuses, tls"},
      {"listener lists tls",
       listener_tls_value(" {certificates: [{cert: /a, key: /b}]}\n    tsl: {}"), 5, 5,
       "listeners[0]: unknown key 'tsl' in listener (did you mean 'tls'?)"},
      {"cluster lists tls", with_cluster("    endpoints: [127.0.0.1:1]\n    tsl: {}\n"), 10, 5,
       "clusters[0]: unknown key 'tsl' in cluster (did you mean 'tls'?); expected one of: name, "
       "type, endpoints, dns_refresh, lb, connect_timeout, pool, circuit_breaker, health_check, "
       "outlier_detection, panic_threshold, max_response_headers, tls"},
      {"duplicate", listener_tls("      alpn: [http/1.1]\n      alpn: [http/1.0]\n"), 8, 7,
       "listeners[0].tls: duplicate key 'alpn' in listener tls (first set on line 7)"},
  });
}

TEST_CASE("tls sections must be maps") {
  check_only_errors({
      {"listener: a boolean", listener_tls_value(" true"), 4, 10,
       "listeners[0].tls: expected a map (listener tls), got a string"},
      {"listener: empty points at the key", listener_tls_value(""), 4, 5,
       "listeners[0].tls: expected a map (listener tls), got nothing"},
      {"listener: a list", listener_tls_value(" []"), 4, 10,
       "listeners[0].tls: expected a map (listener tls), got a list"},
      {"cluster: empty points at the key",
       with_cluster("    endpoints: [app.internal:443]\n    tls:\n"), 10, 5,
       "clusters[0].tls: expected a map (cluster tls), got nothing (tls: {} is TLS with the "
       "defaults; leave the key out for plain TCP)"},
      {"cluster: a boolean", with_cluster("    endpoints: [app.internal:443]\n    tls: true\n"), 10,
       10,
       "clusters[0].tls: expected a map (cluster tls), got a string (tls: {} is TLS with the "
       "defaults"},
      {"cluster: a list", with_cluster("    endpoints: [app.internal:443]\n    tls: [a]\n"), 10, 10,
       "clusters[0].tls: expected a map (cluster tls), got a list"},
  });
}

TEST_CASE("listener tls: certificates are required, each with a cert and a key") {
  check_only_errors({
      {"missing, at the tls map", listener_tls_section("      min_version: \"1.2\"\n"), 5, 7,
       "listeners[0].tls: missing required key 'certificates' in listener tls"},
      {"missing from an empty map", listener_tls_value(" {}"), 4, 10,
       "listeners[0].tls: missing required key 'certificates' in listener tls"},
      {"an empty list", listener_tls_section("      certificates: []\n"), 5, 21,
       "listeners[0].tls.certificates: must list at least one certificate"},
      {"not a list", listener_tls_section("      certificates: {cert: /a, key: /b}\n"), 5, 21,
       "listeners[0].tls.certificates: expected a list of certificates, got a map"},
      {"an item that is not a map", listener_tls_section("      certificates: [/tls/a.crt]\n"), 5,
       22, "listeners[0].tls.certificates[0]: expected a map (certificate), got a string"},
      {"no key", listener_tls_section("      certificates:\n        - cert: /tls/a.crt\n"), 6, 11,
       "listeners[0].tls.certificates[0]: missing required key 'key' in certificate"},
      {"no cert", listener_tls_section("      certificates:\n        - key: /tls/a.key\n"), 6, 11,
       "listeners[0].tls.certificates[0]: missing required key 'cert' in certificate"},
      {"the second item",
       listener_tls_section(
           "      certificates:\n        - {cert: /a, key: /b}\n        - {cert: /c}\n"),
       7, 11, "listeners[0].tls.certificates[1]: missing required key 'key' in certificate"},
      {"an empty cert",
       listener_tls_section("      certificates:\n        - {cert: \"\", key: /k}\n"), 6, 18,
       "listeners[0].tls.certificates[0].cert: must not be empty (expected a file path)"},
      {"an empty key", listener_tls_section("      certificates:\n        - {cert: /c, key: ''}\n"),
       6, 27, "listeners[0].tls.certificates[0].key: must not be empty (expected a file path)"},
      {"a key that is a list",
       listener_tls_section("      certificates:\n        - {cert: /c, key: [a]}\n"), 6, 27,
       "listeners[0].tls.certificates[0].key: expected a file path, got a list"},
      {"a null cert points at its key",
       listener_tls_section("      certificates:\n        - cert:\n          key: /k\n"), 6, 11,
       "listeners[0].tls.certificates[0].cert: expected a file path, got nothing"},
  });
}

TEST_CASE("min_version accepts only 1.2 and 1.3, and says so") {
  const auto listener = [](std::string_view value) {
    return listener_tls("      min_version: " + std::string(value) + "\n");
  };
  check_only_errors({
      {"1.0", listener("1.0"), 7, 20,
       "listeners[0].tls.min_version: unsupported TLS version '1.0' (TLS 1.0 and 1.1 are "
       "deprecated, RFC 8996); expected one of: 1.2, 1.3"},
      {"1.1", listener("\"1.1\""), 7, 20,
       "listeners[0].tls.min_version: unsupported TLS version '1.1' (TLS 1.0 and 1.1 are "
       "deprecated, RFC 8996); expected one of: 1.2, 1.3"},
      {"TLSv1.2", listener("\"TLSv1.2\""), 7, 20,
       "listeners[0].tls.min_version: unsupported TLS version 'TLSv1.2' (write just '1.2'); "
       "expected one of: 1.2, 1.3"},
      {"tls1.3", listener("tls1.3"), 7, 20,
       "unsupported TLS version 'tls1.3' (write just '1.3'); expected one of: 1.2, 1.3"},
      {"TLSv1", listener("TLSv1"), 7, 20,
       "unsupported TLS version 'TLSv1' (TLS 1.0 and 1.1 are deprecated, RFC 8996)"},
      {"1.4", listener("1.4"), 7, 20,
       "listeners[0].tls.min_version: unsupported TLS version '1.4'; expected one of: 1.2, 1.3"},
      {"1.20 is not 1.2", listener("1.20"), 7, 20,
       "unsupported TLS version '1.20'; expected one of: 1.2, 1.3"},
      {"empty", listener("''"), 7, 20, "unsupported TLS version ''; expected one of: 1.2, 1.3"},
      {"a list", listener("[1.2]"), 7, 20,
       "listeners[0].tls.min_version: expected a TLS version, \"1.2\" or \"1.3\", got a list"},
      {"cluster", cluster_tls("      min_version: 1.1\n"), 11, 20,
       "clusters[0].tls.min_version: unsupported TLS version '1.1' (TLS 1.0 and 1.1 are "
       "deprecated, RFC 8996); expected one of: 1.2, 1.3"},
  });
}

TEST_CASE("ciphers is a non-empty string") {
  check_only_errors({
      {"empty", listener_tls("      ciphers: \"\"\n"), 7, 16,
       "listeners[0].tls.ciphers: must not be empty (leave it out for OpenSSL's default ciphers)"},
      {"a list", listener_tls("      ciphers: [HIGH]\n"), 7, 16,
       "listeners[0].tls.ciphers: expected an OpenSSL cipher list such as ECDHE+AESGCM, got a "
       "list"},
  });
}

TEST_CASE("alpn lists distinct protocols bulwark speaks") {
  check_only_errors({
      {"an empty list", listener_tls("      alpn: []\n"), 7, 13,
       "listeners[0].tls.alpn: must list at least one ALPN protocol"},
      {"not a list", listener_tls("      alpn: http/1.1\n"), 7, 13,
       "listeners[0].tls.alpn: expected a list of ALPN protocols, got a string"},
      {"an empty name", listener_tls("      alpn: [\"\"]\n"), 7, 14,
       "listeners[0].tls.alpn[0]: must not be empty (expected an ALPN protocol name such as "
       "http/1.1)"},
      {"a name that is a map", listener_tls("      alpn: [{a: b}]\n"), 7, 14,
       "listeners[0].tls.alpn[0]: expected an ALPN protocol name such as http/1.1, got a map"},
      {"h2", listener_tls("      alpn: [h2, http/1.1]\n"), 7, 14,
       "listeners[0].tls.alpn[0]: bulwark speaks HTTP/1.1 and HTTP/1.0 only: expected http/1.1 "
       "or http/1.0, got 'h2'"},
      {"any other", listener_tls("      alpn: [" + std::string(256, 'p') + "]\n"), 7, 14,
       "listeners[0].tls.alpn[0]: bulwark speaks HTTP/1.1 and HTTP/1.0 only: expected http/1.1 "
       "or http/1.0, got 'ppp"},
      {"a duplicate", listener_tls("      alpn: [http/1.1, http/1.1]\n"), 7, 24,
       "listeners[0].tls.alpn[1]: duplicate ALPN protocol 'http/1.1'"},
      {"cluster", cluster_tls("      alpn: []\n"), 11, 13,
       "clusters[0].tls.alpn: must list at least one ALPN protocol"},
      {"cluster duplicate", cluster_tls("      alpn: [http/1.0, http/1.1, http/1.0]\n"), 11, 34,
       "clusters[0].tls.alpn[2]: duplicate ALPN protocol 'http/1.0'"},
  });
}

TEST_CASE("listener tls: the client certificate keys need client_ca") {
  check_only_errors({
      {"require_client_certificate", listener_tls("      require_client_certificate: true\n"), 7,
       35,
       "listeners[0].tls.require_client_certificate: only applies with client_ca (the CA that "
       "verifies client certificates), which this tls section does not set"},
      {"require_client_certificate: false",
       listener_tls("      require_client_certificate: false\n"), 7, 35,
       "listeners[0].tls.require_client_certificate: only applies with client_ca"},
      {"allowed_client_sans", listener_tls("      allowed_client_sans: [spiffe://a/b]\n"), 7, 28,
       "listeners[0].tls.allowed_client_sans: only applies with client_ca (the CA that verifies "
       "client certificates), which this tls section does not set"},
      {"an empty client_ca", listener_tls("      client_ca: \"\"\n"), 7, 18,
       "listeners[0].tls.client_ca: must not be empty (expected a file path)"},
      {"an empty client_ca is one error, not two",
       listener_tls("      client_ca: ''\n      require_client_certificate: false\n"), 7, 18,
       "listeners[0].tls.client_ca: must not be empty (expected a file path)"},
      {"client_ca a list", listener_tls("      client_ca: [/a]\n"), 7, 18,
       "listeners[0].tls.client_ca: expected a file path, got a list"},
      {"require_client_certificate not a boolean",
       listener_tls("      client_ca: /ca\n      require_client_certificate: yes\n"), 8, 35,
       "listeners[0].tls.require_client_certificate: must be true or false, got 'yes'"},
  });
}

TEST_CASE("SAN lists: a '*' only at the end, no empty names, no duplicates") {
  const auto client = [](std::string_view list) {
    return listener_tls("      client_ca: /ca\n      allowed_client_sans: " + std::string(list) +
                        "\n");
  };
  check_only_errors({
      {"a '*' inside", client("[\"spiffe://a/*/b\"]"), 8, 29,
       "listeners[0].tls.allowed_client_sans[0]: invalid SAN 'spiffe://a/*/b': '*' is only "
       "allowed as the last character, for a prefix match"},
      {"a leading '*'", client("[\"*.example.com\"]"), 8, 29,
       "listeners[0].tls.allowed_client_sans[0]: invalid SAN '*.example.com': '*' is only "
       "allowed as the last character"},
      {"two '*'", client("[\"a**\"]"), 8, 29, "invalid SAN 'a**': '*' is only allowed"},
      {"'*' alone", client("[\"*\"]"), 8, 29,
       "listeners[0].tls.allowed_client_sans[0]: '*' alone would match any name; leave "
       "allowed_client_sans out instead"},
      {"empty", client("[a, \"\"]"), 8, 32,
       "listeners[0].tls.allowed_client_sans[1]: must not be empty (expected a certificate name "
       "such as spiffe://cluster.local/ns/shop/sa/web, or a prefix ending in '*')"},
      {"a duplicate", client("[a, a]"), 8, 32,
       "listeners[0].tls.allowed_client_sans[1]: duplicate SAN 'a'"},
      {"a duplicate prefix", client("['a*', b, 'a*']"), 8, 38,
       "listeners[0].tls.allowed_client_sans[2]: duplicate SAN 'a*'"},
      {"an empty list", client("[]"), 8, 28,
       "listeners[0].tls.allowed_client_sans: must list at least one SAN"},
      {"not a list", client("spiffe://a/b"), 8, 28,
       "listeners[0].tls.allowed_client_sans: expected a list of SANs, got a string"},
      {"an item that is a list", client("[[a]]"), 8, 29,
       "listeners[0].tls.allowed_client_sans[0]: expected a certificate name such as "
       "spiffe://cluster.local/ns/shop/sa/web, or a prefix ending in '*', got a list"},
      {"cluster", cluster_tls("      allowed_server_sans: [\"spiffe://x/*y\"]\n"), 11, 29,
       "clusters[0].tls.allowed_server_sans[0]: invalid SAN 'spiffe://x/*y': '*' is only allowed "
       "as the last character, for a prefix match"},
      {"cluster '*' alone", cluster_tls("      allowed_server_sans: ['*']\n"), 11, 29,
       "clusters[0].tls.allowed_server_sans[0]: '*' alone would match any name; leave "
       "allowed_server_sans out instead"},
  });
}

TEST_CASE("forward_client_cert is one of its three modes") {
  check_only_errors({
      {"a near miss", listener_tls("      forward_client_cert: sanitise\n"), 7, 28,
       "listeners[0].tls.forward_client_cert: unknown mode 'sanitise' (did you mean "
       "'sanitize'?); expected one of: sanitize, sanitize_set, append_forward"},
      {"Envoy's enum spelling", listener_tls("      forward_client_cert: SANITIZE_SET\n"), 7, 28,
       "listeners[0].tls.forward_client_cert: unknown mode 'SANITIZE_SET'; expected one of: "
       "sanitize, sanitize_set, append_forward"},
      {"a list", listener_tls("      forward_client_cert: [sanitize]\n"), 7, 28,
       "listeners[0].tls.forward_client_cert: expected sanitize, sanitize_set or append_forward, "
       "got a list"},
  });
}

TEST_CASE("cluster tls: sni is a DNS name, not an IP address") {
  const auto sni = [](std::string_view value) {
    return cluster_tls("      sni: " + std::string(value) + "\n");
  };
  constexpr const char* kInvalid =
      "(expected a DNS name of letters, digits, '-' and '.', such as payments.internal, at most "
      "253 bytes)";
  check_only_errors({
      {"empty", sni("\"\""), 11, 12,
       "clusters[0].tls.sni: must not be empty (leave it out to use each endpoint's DNS name)"},
      {"IPv4", sni("10.0.0.5"), 11, 12,
       "clusters[0].tls.sni: must be a DNS name, not an IP address: '10.0.0.5' (SNI carries only "
       "host names, RFC 6066)"},
      {"IPv6", sni("\"::1\""), 11, 12,
       "clusters[0].tls.sni: must be a DNS name, not an IP address: '::1'"},
      {"IPv6 in brackets", sni("\"[2001:db8::1]\""), 11, 12,
       "clusters[0].tls.sni: must be a DNS name, not an IP address: '[2001:db8::1]'"},
      {"an underscore", sni("pay_ments.internal"), 11, 12,
       "clusters[0].tls.sni: invalid server name 'pay_ments.internal'"},
      {"a space", sni("\"pay ments\""), 11, 12, "invalid server name 'pay ments'"},
      {"a port", sni("payments.internal:443"), 11, 12,
       "invalid server name 'payments.internal:443'"},
      {"a wildcard", sni("\"*.internal\""), 11, 12, "invalid server name '*.internal'"},
      {"a trailing dot", sni("payments.internal."), 11, 12,
       "invalid server name 'payments.internal.'"},
      {"a leading dot", sni(".internal"), 11, 12, "invalid server name '.internal'"},
      {"an empty label", sni("payments..internal"), 11, 12,
       "invalid server name 'payments..internal'"},
      {"254 bytes", sni(std::string(254, 'a')), 11, 12, kInvalid},
      {"a list", sni("[a]"), 11, 12,
       "clusters[0].tls.sni: expected a DNS name such as payments.internal, got a list"},
  });
}

TEST_CASE("cluster tls: paths, booleans and a client certificate with its key") {
  check_only_errors({
      {"an empty ca", cluster_tls("      ca: ''\n"), 11, 11,
       "clusters[0].tls.ca: must not be empty (expected a file path)"},
      {"verify not a boolean", cluster_tls("      verify: maybe\n"), 11, 15,
       "clusters[0].tls.verify: must be true or false, got 'maybe'"},
      {"verify_hostname not a boolean", cluster_tls("      verify_hostname: 1\n"), 11, 24,
       "clusters[0].tls.verify_hostname: must be true or false, got '1'"},
      {"cert without key", cluster_tls("      cert: /tls/client.crt\n"), 11, 13,
       "clusters[0].tls.cert: the client certificate needs its private key: 'key' is missing"},
      {"key without cert", cluster_tls("      key: /tls/client.key\n"), 11, 12,
       "clusters[0].tls.key: the private key needs its client certificate: 'cert' is missing"},
      {"an empty cert with its key", cluster_tls("      cert: ''\n      key: /k\n"), 11, 13,
       "clusters[0].tls.cert: must not be empty (expected a file path)"},
  });
  // An empty key without its cert: both mistakes, each once.
  LoadResult both = load(cluster_tls("      key: ''\n"));
  INFO(testing::describe(both));
  CHECK(both.config == nullptr);
  CHECK(both.errors.size() == 2);
  CHECK(has_error(both, 11, 12, "clusters[0].tls.key: must not be empty"));
  CHECK(has_error(both, 11, 12, "clusters[0].tls.key: the private key needs its client"));
}

TEST_CASE("cluster tls: verify false refuses the keys it would ignore") {
  check_only_errors({
      {"ca", cluster_tls("      verify: false\n      ca: /tls/ca.crt\n"), 12, 11,
       "clusters[0].tls.ca: would be ignored: verify: false accepts any server certificate; "
       "remove it or set verify: true"},
      {"ca before verify", cluster_tls("      ca: /tls/ca.crt\n      verify: false\n"), 11, 11,
       "clusters[0].tls.ca: would be ignored: verify: false"},
      {"allowed_server_sans",
       cluster_tls("      verify: false\n      allowed_server_sans: [spiffe://a/b]\n"), 12, 28,
       "clusters[0].tls.allowed_server_sans: would be ignored: verify: false accepts any server "
       "certificate; remove it or set verify: true"},
  });
  LoadResult both = load(
      cluster_tls("      ca: /tls/ca.crt\n      verify: false\n      allowed_server_sans: [a]\n"));
  INFO(testing::describe(both));
  CHECK(both.config == nullptr);
  CHECK(both.errors.size() == 2);
  CHECK(has_error(both, 11, 11, "clusters[0].tls.ca: would be ignored"));
  CHECK(has_error(both, 13, 28, "clusters[0].tls.allowed_server_sans: would be ignored"));
}

TEST_CASE("cluster tls: an IP endpoint needs a name to check the certificate against") {
  constexpr const char* kNeeds =
      "an IP endpoint needs tls.sni, tls.allowed_server_sans or tls.verify_hostname: false "
      "(there is no host name to check its certificate against)";
  check_only_errors({
      {"IPv4 in a flow list", with_cluster("    endpoints: [127.0.0.1:443]\n    tls: {}\n"), 9, 17,
       "clusters[0].endpoints[0]: an IP endpoint needs tls.sni, tls.allowed_server_sans or "
       "tls.verify_hostname: false"},
      {"IPv6", with_cluster("    endpoints: [app.internal:443, '[::1]:443']\n    tls: {}\n"), 9, 35,
       "clusters[0].endpoints[1]: an IP endpoint needs tls.sni"},
      {"verify_hostname: true said outright",
       with_cluster(
           "    endpoints: [10.0.0.5:443]\n    tls: {verify: true, verify_hostname: true}\n"),
       9, 17, kNeeds},
      {"the tls section before the endpoints",
       with_cluster("    tls: {min_version: 1.3}\n    endpoints: [10.0.0.5:443]\n"), 10, 17,
       "clusters[0].endpoints[0]: an IP endpoint needs"},
  });

  // Each IP endpoint, at its address; a DNS endpoint is fine.
  LoadResult result =
      load(with_cluster("    endpoints:\n"
                        "      - app.internal:443\n"
                        "      - 10.0.0.5:443\n"
                        "      - {address: \"[::1]:443\", weight: 2}\n"
                        "      - address: 10.0.0.6:443\n"
                        "    tls:\n"
                        "      ca: /tls/ca.crt\n"));
  INFO(testing::describe(result));
  CHECK(result.config == nullptr);
  CHECK(result.errors.size() == 3);
  CHECK(has_error(result, 11, 9, "clusters[0].endpoints[1]: an IP endpoint needs tls.sni"));
  CHECK(
      has_error(result, 12, 19, "clusters[0].endpoints[2].address: an IP endpoint needs tls.sni"));
  CHECK(
      has_error(result, 13, 18, "clusters[0].endpoints[3].address: an IP endpoint needs tls.sni"));
}

TEST_CASE("cluster tls: a mistake elsewhere does not also make IP endpoints an error") {
  check_only_errors({
      // A misspelt sni may be the key meant to name the server.
      {"a misspelt key", with_cluster("    endpoints: [127.0.0.1:443]\n    tls: {snii: a.b}\n"), 10,
       11, "clusters[0].tls: unknown key 'snii' in cluster tls (did you mean 'sni'?)"},
      {"a bad sni", with_cluster("    endpoints: [127.0.0.1:443]\n    tls: {sni: a_b}\n"), 10, 16,
       "clusters[0].tls.sni: invalid server name 'a_b'"},
      {"a bad endpoint", with_cluster("    endpoints: [127.0.0.1:0]\n    tls: {}\n"), 9, 17,
       "clusters[0].endpoints[0]: port must be 1..65535"},
      {"a tls section that is not a map",
       with_cluster("    endpoints: [127.0.0.1:443]\n    tls: true\n"), 10, 10,
       "clusters[0].tls: expected a map (cluster tls), got a string"},
  });
}

TEST_CASE("health_check tls: true needs the cluster's tls section") {
  check_only_errors({
      {"no tls section",
       with_cluster(
           "    endpoints: [127.0.0.1:9000]\n    health_check: {path: /healthz, tls: true}\n"),
       10, 41,
       "clusters[0].health_check.tls: the cluster has no tls section, so there are no TLS "
       "settings to check with; add tls to the cluster or remove this key"},
      {"not a boolean",
       with_cluster(
           "    endpoints: [127.0.0.1:9000]\n    health_check: {path: /healthz, tls: yes}\n"),
       10, 41, "clusters[0].health_check.tls: must be true or false, got 'yes'"},
      {"a tls section that is not a map is one error",
       with_cluster(
           "    endpoints: [app.internal:443]\n    tls: true\n    health_check: {tls: true}\n"),
       10, 10, "clusters[0].tls: expected a map (cluster tls), got a string"},
  });
}

TEST_CASE("every TLS mistake is reported, each at its place") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 127.0.0.1:8443
    tls:
      certificates: [{cert: /a}]
      min_version: 1.1
      alpn: [http/1.1, http/1.1]
      require_client_certificate: false
    routes: [{name: all, cluster: app}]
clusters:
  - name: app
    endpoints: [127.0.0.1:443]
    tls: {verify: false, ca: /ca, cert: /c}
    health_check: {tls: maybe}
)");
  INFO(testing::describe(result));
  CHECK(result.config == nullptr);
  CHECK(result.errors.size() == 7);
  CHECK(has_error(result, 5, 22, "listeners[0].tls.certificates[0]: missing required key 'key'"));
  CHECK(has_error(result, 6, 20, "listeners[0].tls.min_version: unsupported TLS version '1.1'"));
  CHECK(has_error(result, 7, 24, "listeners[0].tls.alpn[1]: duplicate ALPN protocol 'http/1.1'"));
  CHECK(has_error(result, 8, 35, "listeners[0].tls.require_client_certificate: only applies"));
  CHECK(has_error(result, 13, 30, "clusters[0].tls.ca: would be ignored"));
  CHECK(has_error(result, 13, 41, "clusters[0].tls.cert: the client certificate needs its"));
  CHECK(has_error(result, 14, 25, "clusters[0].health_check.tls: must be true or false"));
}

}  // namespace
}  // namespace bulwark::config
