#pragma once
// Shared pieces of the TLS termination tests (tls_listener_test.cpp, tls_rotation_test.cpp): a
// config with a TLS listener "secure" (and, when asked, a plaintext listener "plain") in front of
// one TestUpstream, TLS client options made from the kit's PKI, and the TLS metrics.

#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/tls_kit.h"

namespace bulwark::test {

// A `certificates` entry of a listener's tls section.
inline std::string cert_entry(const std::string& cert_file, const std::string& key_file) {
  return "{cert: " + cert_file + ", key: " + key_file + "}";
}
inline std::string cert_entry(const IssuedCert& cert) {
  return cert_entry(cert.cert_file, cert.key_file);
}

// What tls_listener_config() puts around the listener "secure".
struct TlsListenerOptions {
  std::vector<std::string> certificates;  // entries (cert_entry); at least one
  std::string tls;                        // further keys of the tls section
  std::string listener;                   // further keys of listener "secure"
  bool plain_listener = false;            // also listener "plain", plaintext, same route
  std::string plain;                      // further keys of listener "plain"
  std::string top;                        // other top-level keys (access_log, ...)
  int workers = 2;
};

// Listener "secure" on 127.0.0.1:0 with TLS (and "plain" without), each with one route to
// cluster "app" whose single endpoint is `endpoint`; admin on 127.0.0.1:0.
inline std::string tls_listener_config(const std::string& endpoint,
                                       const TlsListenerOptions& options) {
  std::string yaml = "workers: " + std::to_string(options.workers) +
                     "\n"
                     "drain_delay: 0s\n"
                     "drain_timeout: 2s\n"
                     "admin: {address: 127.0.0.1:0}\n";
  yaml += indent(options.top, 0);
  yaml +=
      "listeners:\n"
      "  - name: secure\n"
      "    address: 127.0.0.1:0\n";
  yaml += indent(options.listener, 4);
  yaml +=
      "    tls:\n"
      "      certificates:\n";
  for (const std::string& entry : options.certificates) yaml += "        - " + entry + "\n";
  yaml += indent(options.tls, 6);
  yaml +=
      "    routes:\n"
      "      - name: api\n"
      "        match: {prefix: /}\n"
      "        cluster: app\n";
  if (options.plain_listener) {
    yaml +=
        "  - name: plain\n"
        "    address: 127.0.0.1:0\n";
    yaml += indent(options.plain, 4);
    yaml +=
        "    routes:\n"
        "      - name: api\n"
        "        match: {prefix: /}\n"
        "        cluster: app\n";
  }
  yaml +=
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [" +
      endpoint + "]\n";
  return yaml;
}

// One TestUpstream behind one bulwark terminating TLS on "secure". Members are destroyed in
// reverse order: bulwark is killed before the upstream stops.
struct TlsListenerFixture {
  explicit TlsListenerFixture(const TlsListenerOptions& options, TestUpstream::Handler handler = {})
      : upstream(std::move(handler)) {
    bulwark.start(tls_listener_config(upstream.address(), options));
  }
  uint16_t port() const { return bulwark.port("secure"); }
  uint16_t plain_port() const { return bulwark.port("plain"); }

  TestUpstream upstream;
  BulwarkProcess bulwark;
};

// Client options that verify the server against the kit's CA and send `sni` ("" for none; the
// name verified is then 127.0.0.1).
inline TlsClientOptions trusting(const TestPki& pki, std::string sni = "localhost") {
  TlsClientOptions options;
  options.ca_file = pki.ca.cert_file();
  options.sni = std::move(sni);
  if (options.sni.empty()) options.verify_name = "127.0.0.1";
  return options;
}

inline TlsClientOptions with_cert(TlsClientOptions options, const IssuedCert& cert) {
  options.cert_file = cert.cert_file;
  options.key_file = cert.key_file;
  return options;
}

// One GET on an open connection: the response, or nullopt (conn.last_error_text() says why).
inline std::optional<Response> tls_get(TlsClientConn& conn, std::string_view target,
                                       const HeaderList& headers = {}) {
  if (!conn.connected() || !conn.send(make_request("GET", target, headers))) return std::nullopt;
  return conn.read_response();
}

// The status of one GET on a new TLS connection, -1 when there is no response.
inline int must_get_status(uint16_t port, const TlsClientOptions& options,
                           std::string_view target = "/") {
  auto response = https_get(port, options, target);
  return response ? response->status : -1;
}

// bulwark_tls_handshakes_total of a listener ("TLSv1.3" / "TLSv1.2", resumed or not).
inline double tls_handshakes(const BulwarkProcess& bulwark, const std::string& version,
                             bool resumed, const std::string& listener = "secure") {
  return scrape_metric(bulwark, "bulwark_tls_handshakes_total",
                       {{"side", "listener"},
                        {"name", listener},
                        {"version", version},
                        {"resumed", resumed ? "true" : "false"}})
      .value_or(-1);
}

// bulwark_tls_handshake_errors_total of a listener for one reason (0 when it has no series);
// all reasons together when `reason` is empty.
inline double tls_errors(const BulwarkProcess& bulwark, const std::string& reason = "",
                         const std::string& listener = "secure") {
  std::map<std::string, std::string> labels{{"side", "listener"}, {"name", listener}};
  if (!reason.empty()) labels["reason"] = reason;
  return scrape_metric(bulwark, "bulwark_tls_handshake_errors_total", labels).value_or(0);
}

// Waits until the listener's error count for `reason` reaches `count`, then returns it (so a
// CHECK against `count` also catches a double count).
inline double wait_tls_errors(const BulwarkProcess& bulwark, const std::string& reason,
                              double count, const std::string& listener = "secure",
                              Millis timeout = kDefaultTimeout) {
  double seen = 0;
  eventually([&] { return (seen = tls_errors(bulwark, reason, listener)) >= count; }, timeout);
  return seen;
}

// Every handshake error series of a listener as "reason=N" lines, for failure messages.
inline std::string tls_error_summary(const BulwarkProcess& bulwark,
                                     const std::string& listener = "secure") {
  auto metrics = http_get(bulwark.admin_port(), "/metrics");
  if (!metrics) return "(no /metrics)";
  std::string out;
  std::string_view text = metrics->body;
  const std::string needle = "bulwark_tls_handshake_errors_total{";
  for (size_t at = text.find(needle); at != std::string_view::npos;
       at = text.find(needle, at + 1)) {
    size_t eol = text.find('\n', at);
    std::string_view line = text.substr(at, eol - at);
    if (line.find("name=\"" + listener + "\"") != std::string_view::npos) {
      out += std::string(line) + "\n";
    }
  }
  return out.empty() ? "(no handshake errors)" : out;
}

}  // namespace bulwark::test
