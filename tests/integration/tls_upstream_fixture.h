#pragma once
// Helpers of the TLS origination tests (tls_upstream_test.cpp): bulwark originating TLS to
// TlsFrontDoor upstreams (tests/support/tls_kit.h), seen through what a user sees: the reply,
// the access log, /metrics, /clusters and what the front door recorded.
//
// Everything is in namespace bulwark::test::tls_upstream so that these names never clash with
// the listener-side helpers (tls_fixture.h).

#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/tls_kit.h"

namespace bulwark::test::tls_upstream {

// Front door options serving `cert` (its .crt may carry a chain), starting from `options`.
inline TlsServerOptions serving(const IssuedCert& cert, TlsServerOptions options = {}) {
  options.cert_file = cert.cert_file;
  options.key_file = cert.key_file;
  return options;
}

// "localhost:PORT": an endpoint by DNS name, so that bulwark's default SNI and hostname check
// use "localhost". TlsFrontDoor listens on 127.0.0.1 only, and where localhost also resolves to
// ::1 bulwark gets a second endpoint [::1]:PORT that refuses connections: routes to such a
// cluster retry (kLocalhostRetry), and tests look for the 127.0.0.1 try, not for the only one.
// Tests where the name is not the point use "127.0.0.1:PORT" with `sni: localhost`.
inline std::string localhost(uint16_t port) { return "localhost:" + std::to_string(port); }
inline constexpr const char* kLocalhostRetry =
    "retry: {attempts: 2, backoff: {base: 1ms, max: 2ms}}";
inline std::string loopback_address(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

// One cluster of tls_config(). Its route, named after it, matches the prefix "/NAME/".
struct ClusterSpec {
  ClusterSpec(std::string name, std::vector<std::string> endpoints, std::string tls,
              std::string keys = {})
      : name(std::move(name)),
        endpoints(std::move(endpoints)),
        tls(std::move(tls)),
        keys(std::move(keys)) {}
  std::string name;
  std::vector<std::string> endpoints;  // "localhost:PORT", "127.0.0.1:PORT"
  std::string tls;                     // the value of `tls:` in flow style; "" = no tls key
  std::string keys;                    // more keys of the cluster, one per line
  std::string route;                   // keys of its route, instead of Setup::route
};

struct Setup {
  std::vector<ClusterSpec> clusters;
  std::string route = "retry: {attempts: 1}";  // keys of every route, one per line
  std::string access_log;                      // a path: a JSON access log there
  std::string top;                             // more top-level keys
  int workers = 1;                             // one worker: one pool per endpoint
};

// A config with listener "inbound" on 127.0.0.1:0, admin on 127.0.0.1:0, and for each cluster a
// route "/NAME/" to it (the first cluster also takes everything else, by a last route "/").
inline std::string tls_config(const Setup& setup) {
  std::string yaml = "workers: " + std::to_string(setup.workers) +
                     "\n"
                     "drain_delay: 0s\n"
                     "drain_timeout: 1s\n"
                     "admin: {address: 127.0.0.1:0}\n";
  if (!setup.access_log.empty()) {
    yaml += "access_log: {path: " + setup.access_log + ", format: json}\n";
  }
  yaml += indent(setup.top, 0);
  yaml +=
      "listeners:\n"
      "  - name: inbound\n"
      "    address: 127.0.0.1:0\n"
      "    routes:\n";
  auto route = [&](const std::string& name, const std::string& prefix, const ClusterSpec& c) {
    yaml += "      - name: " + name + "\n        match: {prefix: " + prefix +
            "}\n        cluster: " + c.name + "\n";
    yaml += indent(c.route.empty() ? setup.route : c.route, 8);
  };
  for (const ClusterSpec& c : setup.clusters) route(c.name, "/" + c.name + "/", c);
  if (!setup.clusters.empty()) route("fallback", "/", setup.clusters.front());
  yaml += "clusters:\n";
  for (const ClusterSpec& c : setup.clusters) {
    yaml += "  - name: " + c.name + "\n    endpoints: [";
    for (size_t i = 0; i < c.endpoints.size(); ++i) {
      yaml += (i > 0 ? ", " : "") + c.endpoints[i];
    }
    yaml += "]\n";
    if (!c.tls.empty()) yaml += "    tls: " + c.tls + "\n";
    yaml += indent(c.keys, 4);
  }
  return yaml;
}

// Starts `bulwark` on tls_config(setup) and waits until every endpoint is in /clusters: bulwark
// says "started" before its DNS endpoints ("localhost:PORT") are resolved, and a request before
// then gets 503 no_endpoints.
inline void start(BulwarkProcess& bulwark, const Setup& setup) {
  bulwark.start(tls_config(setup));
  std::vector<std::string> addresses;
  for (const ClusterSpec& c : setup.clusters) {
    for (const std::string& e : c.endpoints) {
      addresses.push_back("\"address\":\"127.0.0.1:" + e.substr(e.rfind(':') + 1) + "\"");
    }
  }
  std::string body;
  bool published = eventually([&] {
    auto clusters = http_get(bulwark.admin_port(), "/clusters");
    body = clusters && clusters->status == 200 ? clusters->body : std::string();
    for (const std::string& a : addresses) {
      if (body.find(a) == std::string::npos) return false;
    }
    return true;
  });
  REQUIRE_MESSAGE(published, "endpoints not all in /clusters: " << body);
}

// The value of a cluster's `tls:` that trusts `ca` (flow style), with `more` keys after it.
inline std::string trusting(const TestCa& ca, const std::string& more = {}) {
  return "{ca: " + ca.root_cert_file() + (more.empty() ? std::string() : ", " + more) + "}";
}

// ---------------------------------------------------------------------------------------------
// What the user sees

// The access log line (JSON) of the request for `path` (exactly: "path":"PATH"), once written;
// nullopt when none appears within `timeout`. With several, the nth.
inline std::optional<std::string> access_line(const std::string& file, const std::string& path,
                                              size_t nth = 1, Millis timeout = kDefaultTimeout) {
  const std::string needle = "\"path\":\"" + path + "\"";
  std::optional<std::string> found;
  eventually(
      [&] {
        std::string text;
        try {
          text = read_file(file);
        } catch (const std::exception&) {
          return false;  // not created yet
        }
        size_t n = 0;
        size_t start = 0;
        while (start < text.size()) {
          size_t end = text.find('\n', start);
          if (end == std::string::npos) break;  // a line still being written
          std::string line = text.substr(start, end - start);
          start = end + 1;
          if (line.find(needle) != std::string::npos && ++n == nth) {
            found = line;
            return true;
          }
        }
        return false;
      },
      timeout);
  return found;
}

// The "tries" array of an access log line as written, e.g. ["127.0.0.1:1 tls:x","127.0.0.1:2 200"].
inline std::string tries_of(const std::string& line) {
  size_t at = line.find("\"tries\":[");
  if (at == std::string::npos) return {};
  at += 8;  // the '['
  if (line.compare(at, 2, "[]") == 0) return "[]";
  size_t end = line.find("\"]", at);  // not the ']' of an IPv6 address inside a try
  return end == std::string::npos ? std::string() : line.substr(at, end + 2 - at);
}

// A JSON string member as an access log line writes it: "key":"value".
inline std::string json_member(const std::string& key, const std::string& value) {
  return "\"" + key + "\":\"" + value + "\"";
}

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// bulwark_tls_handshake_errors_total of cluster `name` for `reason`; 0 when there is no series.
inline double tls_errors(const BulwarkProcess& bulwark, const std::string& name,
                         const std::string& reason) {
  return scrape_metric(bulwark, "bulwark_tls_handshake_errors_total",
                       {{"side", "cluster"}, {"name", name}, {"reason", reason}})
      .value_or(0);
}

// bulwark_tls_handshakes_total of cluster `name` (all versions, resumed or not, unless given).
inline double tls_handshakes(const BulwarkProcess& bulwark, const std::string& name,
                             std::map<std::string, std::string> labels = {}) {
  labels["side"] = "cluster";
  labels["name"] = name;
  return scrape_metric(bulwark, "bulwark_tls_handshakes_total", labels).value_or(0);
}

// The JSON object of the endpoint with resolved `address` in /clusters (from its '{' to its
// matching '}'), or "" when there is none.
inline std::string endpoint_json(const BulwarkProcess& bulwark, const std::string& address) {
  auto clusters = http_get(bulwark.admin_port(), "/clusters");
  if (!clusters || clusters->status != 200) return {};
  const std::string& body = clusters->body;
  size_t at = body.find("\"address\":\"" + address + "\"");
  if (at == std::string::npos) return {};
  size_t start = body.rfind('{', at);  // the endpoint's own: "name" before it holds no brace
  if (start == std::string::npos) return {};
  int depth = 0;
  bool in_string = false;
  for (size_t i = start; i < body.size(); ++i) {
    char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{') {
      ++depth;
    } else if (c == '}' && --depth == 0) {
      return body.substr(start, i - start + 1);
    }
  }
  return {};
}

// The number after "KEY": in `json` (the first occurrence), or nullopt.
inline std::optional<double> json_number(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return std::nullopt;
  const char* start = json.c_str() + at + key.size() + 3;
  char* end = nullptr;
  double value = std::strtod(start, &end);
  if (end == start) return std::nullopt;
  return value;
}

// The record of front door connection `index` once its handshake has ended; fails the test on
// timeout.
inline TlsConnectionRecord handshake_of(const TlsFrontDoor& door, size_t index) {
  auto record = door.wait_for_handshake(index);
  REQUIRE_MESSAGE(record, "no handshake ended on front door connection " << index);
  return *record;
}

// The full path of a program on $PATH or in the sbin directories, or "" when there is none.
inline std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = std::string(path ? path : "/usr/bin:/bin") + ":/usr/sbin:/sbin";
  std::string_view rest = dirs;
  while (!rest.empty()) {
    size_t colon = rest.find(':');
    std::string candidate = std::string(rest.substr(0, colon)) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return {};
}

}  // namespace bulwark::test::tls_upstream
