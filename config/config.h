#pragma once
// The effective configuration as plain, immutable structs.
//
// The loader (loader.h) builds a Config from YAML, checking every field once; the rest of bulwark
// only ever reads these structs and never touches YAML. A Config is shared as
// std::shared_ptr<const Config> so a reload can swap it while in-flight requests keep the one they
// started with.
//
// What a Config from the loader guarantees, so runtime code need not check again: every name is
// non-empty and unique in its scope; listener and admin addresses are IP literals, and no two of
// them (admin included) share a port on the same or an unspecified host unless the port is 0;
// endpoint ports are 1..65535; RouteConfig::cluster_index is a valid index; every Duration is
// greater than zero except Config::drain_delay, Config::drain_timeout and RouteConfig::timeout,
// where 0 means "none"; a route without a path matcher has prefix "/".

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bulwark::config {

using Duration = std::chrono::milliseconds;

// Where a value came from, for error messages (1-based line and column).
struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;
};

// host:port as written. `host` has no brackets for IPv6 ("::1"). `is_ip` is true when host is a
// numeric IPv4/IPv6 literal; otherwise it is a DNS name resolved at run time, without blocking.
struct SocketAddress {
  std::string host;
  uint16_t port = 0;
  bool is_ip = false;
  std::string text() const;  // "127.0.0.1:80", "[::1]:80", "app.internal:9001"
};

struct AdminConfig {
  SocketAddress address{"127.0.0.1", 9901, true};
};

// How a route matches a request path. Exactly one of prefix / path / regex is set in YAML.
struct PathMatch {
  enum class Kind { kPrefix, kExact, kRegex };
  Kind kind = Kind::kPrefix;
  std::string value;                          // the prefix, exact path or regex source
  std::shared_ptr<const std::regex> regex;    // compiled once, when kind == kRegex
};

// Host match: exact ("api.example.com") or a leading wildcard ("*.example.com", which matches
// "a.example.com" and "a.b.example.com" but not "example.com"). Compared case-insensitively,
// without the port. Empty means any host.
struct HostMatch {
  std::string value;   // lowercased; for a wildcard, the suffix including the dot: ".example.com"
  bool wildcard = false;
  bool empty() const { return value.empty(); }
};

struct HeaderMatch {
  std::string name;   // lowercased
  std::string value;  // exact
};

struct RouteMatch {
  PathMatch path;                       // default: prefix "/"
  HostMatch host;
  std::vector<HeaderMatch> headers;     // all must match
  std::vector<std::string> methods;     // uppercased; empty = any
};

struct RouteConfig {
  std::string name;
  RouteMatch match;
  std::string cluster;          // name of the target cluster
  size_t cluster_index = 0;     // index into Config::clusters, resolved by the loader
  Duration timeout{15000};      // the whole request; 0 = none
  std::optional<std::string> prefix_rewrite;
  SourceLocation location;
};

struct ListenerConfig {
  std::string name;
  SocketAddress address{"0.0.0.0", 8080, true};
  Duration request_headers_timeout{10000};
  Duration idle_timeout{300000};
  size_t max_request_headers_size = 60 * 1024;
  std::vector<RouteConfig> routes;  // first match wins
  SourceLocation location;
};

struct EndpointConfig {
  SocketAddress address;
  uint32_t weight = 1;          // 1..10000
  SourceLocation location;
};

enum class LbPolicy { kRoundRobin, kLeastRequest, kRandom };

struct PoolConfig {
  uint32_t max_connections = 1024;       // upstream connections of the cluster, all workers together
  Duration idle_timeout{60000};          // an idle upstream connection is closed after this
  uint32_t max_requests_per_connection = 0;  // 0 = unlimited
  uint32_t max_pending = 1024;           // requests waiting for a connection, all workers together
  Duration pending_timeout{1000};        // how long a request may wait for a connection
};

struct ClusterConfig {
  std::string name;
  std::vector<EndpointConfig> endpoints;
  Duration dns_refresh{30000};
  LbPolicy lb = LbPolicy::kRoundRobin;
  Duration connect_timeout{1000};
  PoolConfig pool;
  SourceLocation location;
};

struct Config {
  std::string source_file;
  uint32_t workers = 0;  // 0 = number of CPUs
  AdminConfig admin;
  Duration drain_delay{5000};    // after SIGTERM: /ready is 503 at once, listeners close after this
  Duration drain_timeout{20000}; // in-flight requests get this long to finish, then we exit
  std::vector<ListenerConfig> listeners;
  std::vector<ClusterConfig> clusters;

  const ClusterConfig* find_cluster(std::string_view name) const;
};

const char* to_string(LbPolicy lb);

}  // namespace bulwark::config
