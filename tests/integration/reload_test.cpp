// Configuration reload as an operator uses it: SIGHUP, POST /reload and watch_config re-read the
// config file; an invalid file changes nothing (and says FILE:LINE:COL why); a valid one takes
// effect without failing a request: requests under way finish on the config they started with,
// kept-alive connections move to the new one at their next request, unchanged listeners keep
// their sockets, unchanged clusters keep their state and changed ones their endpoints' health,
// counters of names that stay go on. Keys that need a restart are warned about, and a draining
// proxy refuses to reload.

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kReloadedLog[] = "\"msg\":\"config reloaded\"";
constexpr char kReloadFailedLog[] = "\"msg\":\"config reload failed; the running config stays\"";
// How long an upstream makes a /slow/... request wait.
constexpr Millis kSlow{80};

int status_of(const std::optional<Response>& r) { return r ? r->status : -1; }

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

// An upstream that says who it is: 200, "x-upstream: NAME" and the body
// "NAME METHOD TARGET BODY_BYTES\n" (" corrupt" before the newline when a request body is not the
// test pattern). /slow/... answers after kSlow, /hold/... once `gate` lets it. A keep-alive
// connection waits a minute for its next request, so the upstream never closes a pooled
// connection under the proxy's feet.
struct Named {
  explicit Named(std::string n)
      : name(std::move(n)), upstream([this](UpstreamConn& conn) { serve(conn); }, name) {}
  ~Named() {
    gate.open();
    upstream.stop();
  }
  Named(const Named&) = delete;
  Named& operator=(const Named&) = delete;

  std::string address() const { return upstream.address(); }
  size_t requests() const { return upstream.requests(); }

  void serve(UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{60000})) {
      const bool slow = starts_with(request->target, "/slow");
      if (slow) {
        ++slow_in_flight;
        conn.pause(kSlow);
      }
      if (starts_with(request->target, "/hold") && !gate.pass(Millis{10000})) break;
      const bool intact = request->body == pattern_string(0, request->body.size());
      std::string body = name + " " + request->method + " " + request->target + " " +
                         std::to_string(request->body.size()) + (intact ? "" : " corrupt") + "\n";
      const bool written = conn.write_response(200, body, {{"x-upstream", name}});
      if (slow) --slow_in_flight;
      if (!written) break;
    }
    ++closed;
  }

  const std::string name;
  Gate gate;
  std::atomic<int> slow_in_flight{0};
  std::atomic<size_t> closed{0};  // connections whose handler has ended
  TestUpstream upstream;          // last: its threads use the members above
};

// Replaces the config file of a running bulwark the way editors and Kubernetes do: a new file
// renamed over the old one.
void write_config(const BulwarkProcess& bulwark, const std::string& yaml) {
  const std::string& path = bulwark.config_path();
  REQUIRE_FALSE(path.empty());
  const std::string next = path + ".next";
  write_file(next, yaml);
  if (std::rename(next.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot rename " + next + " over " + path);
  }
}

std::optional<Response> post_reload(const BulwarkProcess& bulwark) {
  return http_request(bulwark.admin_port(), "POST", "/reload");
}

size_t count_lines(const std::vector<std::string>& lines, const std::vector<std::string>& needles) {
  return static_cast<size_t>(std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
    return std::all_of(needles.begin(), needles.end(),
                       [&](const std::string& n) { return l.find(n) != std::string::npos; });
  }));
}

// Sends SIGHUP and waits for its outcome in the log: true for "config reloaded", false for
// "config reload failed", nullopt when neither comes within the timeout.
std::optional<bool> sighup_reload(BulwarkProcess& bulwark, Millis timeout = kDefaultTimeout) {
  const auto before = bulwark.logs();
  const size_t ok0 = count_lines(before, {kReloadedLog});
  const size_t failed0 = count_lines(before, {kReloadFailedLog});
  if (!bulwark.signal(SIGHUP)) return std::nullopt;
  std::optional<bool> outcome;
  bulwark.process().wait_for_lines(
      Subprocess::Stream::kStderr,
      [&](const std::vector<std::string>& lines) {
        if (count_lines(lines, {kReloadedLog}) > ok0) outcome = true;
        if (count_lines(lines, {kReloadFailedLog}) > failed0) outcome = false;
        return outcome.has_value();
      },
      timeout);
  return outcome;
}

double metric(const BulwarkProcess& bulwark, std::string_view name,
              const std::map<std::string, std::string>& labels = {}) {
  return scrape_metric(bulwark, name, labels).value_or(-1);
}

double generation(const BulwarkProcess& bulwark) {
  return metric(bulwark, "bulwark_config_generation");
}

double reloads(const BulwarkProcess& bulwark, const std::string& result) {
  return metric(bulwark, "bulwark_config_reloads_total", {{"result", result}});
}

// The port in the last "listening" log line of `listener` (a listener added by a reload is only
// announced there), and how many such lines there are.
std::optional<uint16_t> announced_port(const BulwarkProcess& bulwark, const std::string& listener,
                                       size_t* announcements = nullptr) {
  std::optional<uint16_t> port;
  size_t n = 0;
  const std::string needle = "\"listener\":\"" + listener + "\"";
  for (const std::string& line : bulwark.logs()) {
    if (line.find("\"msg\":\"listening\"") == std::string::npos) continue;
    if (line.find(needle) == std::string::npos) continue;
    const size_t at = line.find("\"address\":\"");
    if (at == std::string::npos) continue;
    const size_t end = line.find('"', at + 11);
    const std::string address = line.substr(at + 11, end - at - 11);
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) continue;
    port = static_cast<uint16_t>(std::stoi(address.substr(colon + 1)));
    ++n;
  }
  if (announcements != nullptr) *announcements = n;
  return port;
}

// The cluster that route `route` names in GET /config's JSON ("" when not found).
std::string route_cluster(const std::string& config_json, const std::string& route) {
  size_t at = config_json.find("{\"name\":\"" + route + "\",\"match\"");
  if (at == std::string::npos) return "";
  at = config_json.find("\"cluster\":\"", at);
  if (at == std::string::npos) return "";
  const size_t end = config_json.find('"', at + 11);
  return config_json.substr(at + 11, end - at - 11);
}

// The part of GET /clusters' JSON that describes the endpoint named `address` ("" when absent).
std::string endpoint_json(const std::string& clusters_json, const std::string& address) {
  const size_t at = clusters_json.find("{\"name\":\"" + address + "\"");
  if (at == std::string::npos) return "";
  const size_t end = clusters_json.find("{\"name\":", at + 1);
  return clusters_json.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

std::string admin_get(const BulwarkProcess& bulwark, const std::string& path) {
  auto r = http_get(bulwark.admin_port(), path);
  return r && r->status == 200 ? r->body : std::string();
}

// The 1-based line of the first line of `yaml` that contains `needle` (0 when none does).
int line_of(const std::string& yaml, const std::string& needle) {
  int line = 1;
  size_t start = 0;
  while (start < yaml.size()) {
    size_t eol = yaml.find('\n', start);
    if (eol == std::string::npos) eol = yaml.size();
    if (yaml.substr(start, eol - start).find(needle) != std::string::npos) return line;
    start = eol + 1;
    ++line;
  }
  return 0;
}

// Inserts `text` (whole lines) after the first line that contains `after`.
std::string insert_after(std::string yaml, const std::string& after, const std::string& text) {
  size_t at = yaml.find(after);
  REQUIRE(at != std::string::npos);
  at = yaml.find('\n', at);
  yaml.insert(at + 1, text);
  return yaml;
}

std::string header(const std::string& top = "") {
  return "workers: 2\n"
         "drain_delay: 0s\n"
         "drain_timeout: 5s\n"
         "admin: {address: 127.0.0.1:0}\n" +
         top;
}

// Config A of the two-upstream tests: listener "inbound" with route "api" (everything) to
// cluster "blue"; cluster "green" exists but takes no traffic.
std::string config_blue(const Named& blue, const Named& green, const std::string& top = "") {
  return header(top) +
         "listeners:\n"
         "  - name: inbound\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - name: api\n"
         "        match: {prefix: /}\n"
         "        cluster: blue\n"
         "clusters:\n"
         "  - name: blue\n"
         "    endpoints: [" +
         blue.address() +
         "]\n"
         "  - name: green\n"
         "    endpoints: [" +
         green.address() + "]\n";
}

// Config B: route "api" goes to "green" (with other retry settings), a route "special" is
// inserted before it, a listener "extra" is added, the clusters are listed the other way round
// and "green" has another connect_timeout.
std::string config_green(const Named& blue, const Named& green, const std::string& top = "") {
  return header(top) +
         "listeners:\n"
         "  - name: inbound\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - name: special\n"
         "        match: {path: /special}\n"
         "        cluster: blue\n"
         "      - name: api\n"
         "        match: {prefix: /}\n"
         "        cluster: green\n"
         "        retry: {attempts: 3}\n"
         "  - name: extra\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - name: extra\n"
         "        match: {prefix: /}\n"
         "        cluster: green\n"
         "clusters:\n"
         "  - name: green\n"
         "    endpoints: [" +
         green.address() +
         "]\n"
         "    connect_timeout: 750ms\n"
         "  - name: blue\n"
         "    endpoints: [" +
         blue.address() + "]\n";
}

// An invalid config: a misspelt key in cluster "blue", at a known line and column 5.
struct Invalid {
  std::string yaml;
  int line = 0;
  int column = 5;
};
Invalid config_invalid(const Named& blue, const Named& green) {
  Invalid invalid;
  invalid.yaml =
      insert_after(config_blue(blue, green), "  - name: blue\n", "    conect_timeout: 2s\n");
  invalid.line = line_of(invalid.yaml, "conect_timeout");
  return invalid;
}

// The upstream that a new connection's GET reaches ("" when it fails).
std::string served_by(uint16_t port, const std::string& target = "/which") {
  auto r = http_get(port, target);
  return r && r->status == 200 ? r->get("x-upstream") : std::string();
}

// ---------------------------------------------------------------------------------------------
// The load generator of the reload storm.

class Load {
 public:
  Load(uint16_t port, size_t mixed_threads) : port_(port) {
    for (size_t t = 0; t < mixed_threads; ++t) threads_.emplace_back([this, t] { mixed(t); });
    threads_.emplace_back([this] { slow(); });
  }
  ~Load() { stop(); }

  void stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  size_t answered() const { return answered_.load(); }
  size_t keep_alive_closed() const { return keep_alive_closed_.load(); }
  size_t slow_answered() const { return slow_answered_.load(); }
  size_t posts() const { return posts_.load(); }
  size_t fresh_count() const { return fresh_.load(); }
  size_t failure_count() const {
    std::lock_guard lock(mutex_);
    return failure_count_;
  }
  std::string failures() const {
    std::lock_guard lock(mutex_);
    std::string out;
    for (const auto& f : failures_) out += f + "\n";
    return out;
  }

 private:
  void fail(std::string what) {
    std::lock_guard lock(mutex_);
    ++failure_count_;
    if (failures_.size() < 20) failures_.push_back(std::move(what));
  }

  // Checks one exchange; counts it when bulwark answered at all (for the request counters).
  void check(const std::optional<Response>& r, const std::string& how, const std::string& method,
             const std::string& target, size_t body_size, const std::string& error) {
    if (!r) {
      fail(how + " " + method + " " + target + ": no response: " + error);
      return;
    }
    ++answered_;
    const std::string upstream = r->get("x-upstream");
    const std::string expected =
        upstream + " " + method + " " + target + " " + std::to_string(body_size) + "\n";
    if (r->status != 200 || (upstream != "blue" && upstream != "green") || r->body != expected) {
      fail(how + " " + method + " " + target + ": " + describe(r));
    }
  }

  // One request on the kept-alive connection; reconnects when it is gone.
  void keep_alive(ClientConn& conn, const std::string& method, const std::string& target,
                  const std::string& body) {
    if (!conn.connected() && !conn.connect(port_)) {
      fail("cannot connect: " + conn.last_error_text());
      return;
    }
    std::optional<Response> r;
    if (conn.send(make_request(method, target, {}, body))) r = conn.read_response();
    check(r, "keep-alive", method, target, body.size(),
          std::string(to_string(conn.last_error())) + " " + conn.last_error_text());
    if (!r || iequals(r->get("connection"), "close")) {
      if (r) ++keep_alive_closed_;
      conn.close();
    }
  }

  void fresh(const std::string& method, const std::string& target, const std::string& body) {
    std::string error;
    auto r = http_request(port_, method, target, {}, body, kDefaultTimeout, &error);
    ++fresh_;
    check(r, "fresh", method, target, body.size(), error);
  }

  void mixed(size_t t) {
    ClientConn conn;
    for (uint64_t n = 0; !stop_; ++n) {
      const std::string target = "/t" + std::to_string(t) + "/" + std::to_string(n);
      const std::string body = pattern_string(0, 100 + (n * 997) % 6000);
      switch (n % 8) {
        case 0:
        case 1:
        case 2:
          keep_alive(conn, "GET", target, "");
          break;
        case 3:
          ++posts_;
          keep_alive(conn, "POST", target, body);
          break;
        case 4:
          fresh("GET", target, "");
          break;
        case 5:
          ++posts_;
          fresh("POST", target, body);
          break;
        case 6:
          keep_alive(conn, "GET", target, "");
          break;
        default:
          ++posts_;
          keep_alive(conn, "POST", "/slow" + target, body);
          break;
      }
    }
  }

  // Slow requests back to back on one kept-alive connection: one is nearly always in flight.
  void slow() {
    ClientConn conn;
    for (uint64_t n = 0; !stop_; ++n) {
      size_t before = answered_.load();
      keep_alive(conn, "GET", "/slow/s/" + std::to_string(n), "");
      if (answered_.load() > before) ++slow_answered_;
    }
  }

  const uint16_t port_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> answered_{0}, keep_alive_closed_{0}, slow_answered_{0}, posts_{0}, fresh_{0};
  mutable std::mutex mutex_;
  size_t failure_count_ = 0;
  std::vector<std::string> failures_;
  std::vector<std::thread> threads_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE(
    "reload storm: 50 reloads of two valid configs and an invalid one under load fail no request") {
  Named blue("blue"), green("green");
  const std::string a = config_blue(blue, green);
  const std::string b = config_green(blue, green);
  const Invalid c = config_invalid(blue, green);
  BulwarkProcess bulwark;
  bulwark.start(a);
  const uint16_t port = bulwark.port("inbound");
  REQUIRE(served_by(port) == "blue");
  const double fds_at_start = metric(bulwark, "process_open_fds");
  const long rss_at_start = bulwark.rss_kib();

  Load load(port, 3);
  // Warm up: every thread has its connections and the pools have theirs.
  REQUIRE(eventually([&] { return load.answered() >= 40; }, Millis{5000}, Millis{1}));

  size_t valid = 0, invalid = 0, probes = 0, late_switches = 0, spanning_slow = 0;
  std::string expected = "blue";
  for (int k = 0; k < 50; ++k) {
    CAPTURE(k);
    const int kind = k % 3;  // 0: B, 1: the invalid one, 2: A
    write_config(bulwark, kind == 0 ? b : kind == 1 ? c.yaml : a);
    // Traffic flows between reloads.
    const size_t before = load.answered();
    REQUIRE_MESSAGE(
        eventually([&] { return load.answered() >= before + 4; }, Millis{5000}, Millis{1}),
        load.failures());
    if (blue.slow_in_flight.load() + green.slow_in_flight.load() > 0) ++spanning_slow;
    const bool ok = kind != 1;
    if (k % 2 == 0) {
      auto r = post_reload(bulwark);
      REQUIRE(r);
      INFO(describe(r));
      if (ok) {
        CHECK(r->status == 200);
        CHECK(r->body == "reloaded: generation " + std::to_string(valid + 2) + "\n");
      } else {
        CHECK(r->status == 400);
        CHECK(r->body.find(":" + std::to_string(c.line) + ":" + std::to_string(c.column) + ": ") !=
              std::string::npos);
        CHECK(r->body.find("unknown key 'conect_timeout'") != std::string::npos);
      }
    } else {
      auto outcome = sighup_reload(bulwark);
      REQUIRE_MESSAGE(outcome.has_value(), bulwark.logs_text());
      CHECK(*outcome == ok);
    }
    if (ok) {
      ++valid;
      expected = kind == 0 ? "green" : "blue";
    } else {
      ++invalid;
    }
    // New connections get the config in force (at once, or very soon: workers take it up).
    bool first = true;
    CHECK(eventually([&] {
      std::string who = served_by(port, "/probe");
      if (!who.empty()) ++probes;
      if (who != expected && first) ++late_switches;
      first = false;
      return who == expected;
    }));
  }
  // Some more traffic on the final config, then stop.
  const size_t before_end = load.answered();
  CHECK(eventually([&] { return load.answered() >= before_end + 20; }, Millis{5000}, Millis{1}));
  load.stop();

  INFO("answered: " << load.answered() << " (posts " << load.posts() << ", fresh "
                    << load.fresh_count() << ", slow " << load.slow_answered()
                    << "), reloads with a slow request in "
                    << "flight: " << spanning_slow << ", probes late to switch: " << late_switches);
  CHECK_MESSAGE(load.failure_count() == 0, load.failures());
  CHECK(load.keep_alive_closed() == 0);
  CHECK(load.posts() > 20);
  CHECK(load.fresh_count() > 20);
  CHECK(spanning_slow >= 5);
  // Workers take a new generation up by a message posted to their loops, so a new connection
  // right after the reload's answer could in theory still see the old one; it has not been seen.
  WARN(late_switches == 0);
  MESSAGE("storm: " << load.answered() << " requests, " << spanning_slow
                    << " reloads with a slow request in flight, " << late_switches
                    << " probes late to switch");

  // The right outcome: 33 valid reloads, 17 invalid ones, config B in force.
  REQUIRE(valid == 33);
  REQUIRE(invalid == 17);
  CHECK(generation(bulwark) == 34);
  CHECK(reloads(bulwark, "success") == 33);
  CHECK(reloads(bulwark, "failure") == 17);
  const std::string config_json = admin_get(bulwark, "/config");
  CHECK(route_cluster(config_json, "api") == "green");
  CHECK(route_cluster(config_json, "special") == "blue");
  CHECK(config_json.find("{\"name\":\"extra\",\"address\"") != std::string::npos);
  CHECK(config_json.find("\"connect_timeout\":\"750ms\"") != std::string::npos);

  // Counters went on through every reload: each request counted once, on the right cluster.
  // Every answered request: the load, the probes, the one before the storm and the one below.
  const double total = static_cast<double>(load.answered() + probes + 2);
  CHECK(served_by(port, "/final") == "green");
  CHECK(eventually([&] {
    return metric(bulwark, "bulwark_requests_total", {{"listener", "inbound"}}) == total;
  }));
  CHECK(metric(bulwark, "bulwark_requests_total", {{"listener", "inbound"}}) == total);
  CHECK(static_cast<double>(blue.requests() + green.requests()) == total);
  CHECK(metric(bulwark, "bulwark_upstream_requests_total", {{"cluster", "blue"}}) ==
        static_cast<double>(blue.requests()));
  CHECK(metric(bulwark, "bulwark_upstream_requests_total", {{"cluster", "green"}}) ==
        static_cast<double>(green.requests()));

  // The listener B added answers.
  auto extra = announced_port(bulwark, "extra");
  REQUIRE(extra);
  CHECK(served_by(*extra) == "green");

  // Old listening sockets and pools were closed: the descriptors are back to those at the start,
  // plus B's listener on each worker and the upstream connections bulwark reports as open.
  double fds_now = 0, upstream_now = 0;
  CHECK_MESSAGE(eventually(
                    [&] {
                      upstream_now = metric(bulwark, "bulwark_upstream_connections");
                      fds_now = metric(bulwark, "process_open_fds");
                      return fds_now >= 0 && fds_now <= fds_at_start + 2 + upstream_now + 2;
                    },
                    Millis{5000}, Millis{50}),
                "open fds at start " << fds_at_start << ", now " << fds_now
                                     << ", upstream connections " << upstream_now);
  MESSAGE("open fds: " << fds_at_start << " at start, " << fds_now << " after the storm with "
                       << upstream_now << " upstream connections; RSS " << rss_at_start
                       << " KiB at start, " << bulwark.rss_kib() << " KiB after");
  CHECK(bulwark.rss_kib() < rss_at_start + 64 * 1024);
  CHECK(bulwark.logs_text().find("\"level\":\"error\",\"msg\":\"listener failed\"") ==
        std::string::npos);
}

TEST_CASE("reload of an invalid config keeps everything and says FILE:LINE:COL") {
  Named blue("blue"), green("green");
  BulwarkProcess bulwark;
  bulwark.start(config_blue(blue, green));
  const uint16_t port = bulwark.port("inbound");
  const uint16_t admin = bulwark.admin_port();
  const std::string path = bulwark.config_path();
  REQUIRE(served_by(port) == "blue");
  const double loaded_at = metric(bulwark, "bulwark_config_last_reload_success_timestamp_seconds");
  CHECK(loaded_at > 0);
  ClientConn kept(port);
  REQUIRE(kept.send(make_request("GET", "/before")));
  REQUIRE(kept.read_response());

  // An unknown key, by POST /reload: 400 with the error.
  const Invalid unknown = config_invalid(blue, green);
  write_config(bulwark, unknown.yaml);
  const std::string where =
      path + ":" + std::to_string(unknown.line) + ":" + std::to_string(unknown.column) + ": ";
  auto r = post_reload(bulwark);
  REQUIRE(r);
  INFO(describe(r));
  CHECK(r->status == 400);
  CHECK(starts_with(r->body, where));
  CHECK(r->body.find("unknown key 'conect_timeout'") != std::string::npos);
  CHECK(wait_for_log_lines(bulwark,
                           {kReloadFailedLog, "\"level\":\"error\"", "\"trigger\":\"POST /reload\"",
                            "\"error\":\"" + where, "unknown key 'conect_timeout'"}));
  CHECK(reloads(bulwark, "failure") == 1);

  // A route naming a missing cluster, by SIGHUP: the log has the line.
  std::string missing = config_blue(blue, green);
  const std::string route_cluster_line = "        cluster: blue\n";
  REQUIRE(missing.find(route_cluster_line) != std::string::npos);
  missing.replace(missing.find(route_cluster_line), route_cluster_line.size(),
                  "        cluster: nowhere\n");
  write_config(bulwark, missing);
  auto outcome = sighup_reload(bulwark);
  REQUIRE(outcome.has_value());
  CHECK_FALSE(*outcome);
  const std::string missing_at = path + ":" + std::to_string(line_of(missing, "nowhere")) + ":";
  CHECK(wait_for_log_lines(bulwark, {kReloadFailedLog, "\"trigger\":\"SIGHUP\"",
                                     "\"error\":\"" + missing_at, "nowhere"}));
  CHECK(reloads(bulwark, "failure") == 2);

  // A YAML syntax error, by POST /reload.
  write_config(bulwark, header() + "listeners: [\n  {name: inbound\n");
  r = post_reload(bulwark);
  REQUIRE(r);
  CHECK(r->status == 400);
  CHECK(starts_with(r->body, path + ":"));
  // FILE:LINE:COL: — digits, a colon, digits, a colon.
  {
    const std::string rest = r->body.substr(std::min(r->body.size(), path.size() + 1));
    const size_t colon = rest.find(':');
    const size_t colon2 = rest.find(':', colon + 1);
    INFO(r->body);
    REQUIRE(colon != std::string::npos);
    REQUIRE(colon2 != std::string::npos);
    CHECK(colon > 0);
    CHECK(colon2 > colon + 1);
    CHECK(rest.substr(0, colon).find_first_not_of("0123456789") == std::string::npos);
    CHECK(rest.substr(colon + 1, colon2 - colon - 1).find_first_not_of("0123456789") ==
          std::string::npos);
  }
  CHECK(wait_for_log_lines(bulwark, {kReloadFailedLog}, 3));

  // A valid file whose new listener cannot be bound (blue's port is taken): refused too.
  std::string busy = config_blue(blue, green);
  busy = insert_after(busy, "        cluster: blue\n",
                      "  - name: busy\n"
                      "    address: " +
                          blue.address() +
                          "\n"
                          "    routes:\n"
                          "      - name: busy\n"
                          "        match: {prefix: /}\n"
                          "        cluster: green\n");
  write_config(bulwark, busy);
  r = post_reload(bulwark);
  REQUIRE(r);
  INFO(describe(r));
  CHECK(r->status == 400);
  CHECK(r->body.find("cannot listen") != std::string::npos);
  CHECK(wait_for_log_lines(bulwark, {kReloadFailedLog}, 4));
  CHECK(wait_for_log_lines(bulwark, {"\"listener\":\"busy\"", blue.address()}));

  // Nothing changed.
  CHECK(reloads(bulwark, "failure") == 4);
  CHECK(reloads(bulwark, "success") == 0);
  CHECK(generation(bulwark) == 1);
  CHECK(metric(bulwark, "bulwark_config_last_reload_success_timestamp_seconds") == loaded_at);
  auto ready = http_get(admin, "/ready");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  CHECK(served_by(port) == "blue");
  REQUIRE(kept.send(make_request("GET", "/after")));
  auto on_kept = kept.read_response();
  REQUIRE_MESSAGE(on_kept, kept.last_error_text());
  CHECK(on_kept->get("x-upstream") == "blue");
  const std::string config_json = admin_get(bulwark, "/config");
  CHECK(route_cluster(config_json, "api") == "blue");
  CHECK(config_json.find("\"source_file\":\"" + path + "\"") != std::string::npos);
  CHECK(bulwark.logs_text().find(kReloadedLog) == std::string::npos);

  // And the file, once fixed, loads.
  write_config(bulwark, config_green(blue, green));
  r = post_reload(bulwark);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "reloaded: generation 2\n");
  CHECK(eventually([&] { return served_by(port) == "green"; }));
  CHECK(metric(bulwark, "bulwark_config_last_reload_success_timestamp_seconds") >= loaded_at);
}

TEST_CASE(
    "reload: a request in flight finishes on its old config and its connection moves to the new "
    "one") {
  Named blue("blue"), green("green");
  Gate::Opener open_blue(blue.gate);
  BulwarkProcess bulwark;
  bulwark.start(config_blue(blue, green));
  const uint16_t port = bulwark.port("inbound");

  ClientConn client(port);
  REQUIRE(client.send(make_request("GET", "/warm")));
  auto warm = client.read_response();
  REQUIRE(warm);
  CHECK(warm->get("x-upstream") == "blue");

  // A request held by blue; a POST with a body held too, on another connection.
  REQUIRE(client.send(make_request("GET", "/hold/get")));
  ClientConn poster(port);
  const std::string body = pattern_string(0, 20000);
  REQUIRE(poster.send(make_request("POST", "/hold/post", {}, body)));
  REQUIRE(blue.upstream.wait_for_requests(3));

  // The new config has no cluster blue at all: api goes to green.
  std::string only_green = header() +
                           "listeners:\n"
                           "  - name: inbound\n"
                           "    address: 127.0.0.1:0\n"
                           "    routes:\n"
                           "      - name: api\n"
                           "        match: {prefix: /}\n"
                           "        cluster: green\n"
                           "clusters:\n"
                           "  - name: green\n"
                           "    endpoints: [" +
                           green.address() + "]\n";
  write_config(bulwark, only_green);
  auto r = post_reload(bulwark);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(eventually([&] { return served_by(port) == "green"; }));

  // The held requests finish on the old config, from blue.
  blue.gate.open();
  auto held = client.read_response();
  REQUIRE_MESSAGE(held, client.last_error_text() << "\n" << bulwark.logs_text());
  CHECK(held->status == 200);
  CHECK(held->body == "blue GET /hold/get 0\n");
  CHECK_FALSE(iequals(held->get("connection"), "close"));
  auto posted = poster.read_response();
  REQUIRE_MESSAGE(posted, poster.last_error_text());
  CHECK(posted->status == 200);
  CHECK(posted->body == "blue POST /hold/post 20000\n");

  // The next request on the same connections goes to the new config.
  REQUIRE(client.send(make_request("GET", "/next")));
  auto next = client.read_response();
  REQUIRE_MESSAGE(next, client.last_error_text());
  CHECK(next->status == 200);
  CHECK(next->body == "green GET /next 0\n");
  REQUIRE(poster.send(make_request("POST", "/next", {}, body)));
  auto next_post = poster.read_response();
  REQUIRE_MESSAGE(next_post, poster.last_error_text());
  CHECK(next_post->body == "green POST /next 20000\n");
  CHECK(blue.requests() == 3);

  // The removed cluster drains: its pooled connections close, and it is gone from /clusters.
  CHECK(eventually([&] { return blue.closed.load() == blue.upstream.connections(); }));
  CHECK(admin_get(bulwark, "/clusters").find("\"name\":\"blue\"") == std::string::npos);
}

TEST_CASE(
    "reload of listeners: added ones accept, removed ones refuse and close, unchanged ones keep "
    "their socket") {
  Named blue("blue"), green("green");
  Gate::Opener open_blue(blue.gate);
  auto listeners = [&](const std::vector<std::string>& names, const std::string& cluster) {
    std::string yaml = header() + "listeners:\n";
    for (const auto& name : names) {
      yaml += "  - name: " + name +
              "\n"
              "    address: 127.0.0.1:0\n"
              "    routes:\n"
              "      - name: " +
              name +
              "-route\n"
              "        match: {prefix: /}\n"
              "        cluster: " +
              cluster + "\n";
    }
    yaml += "clusters:\n  - name: blue\n    endpoints: [" + blue.address() +
            "]\n  - name: green\n    endpoints: [" + green.address() + "]\n";
    return yaml;
  };
  BulwarkProcess bulwark;
  bulwark.start(listeners({"inbound", "old"}, "blue"));
  const uint16_t inbound = bulwark.port("inbound");
  const uint16_t old = bulwark.port("old");

  // On "inbound": an idle kept-alive connection. On "old": an idle one and one in flight.
  ClientConn kept(inbound);
  REQUIRE(kept.send(make_request("GET", "/first")));
  REQUIRE(kept.read_response());
  ClientConn idle_on_old(old);
  REQUIRE(idle_on_old.send(make_request("GET", "/first")));
  auto first = idle_on_old.read_response();
  REQUIRE(first);
  CHECK(first->status == 200);
  ClientConn busy_on_old(old);
  REQUIRE(busy_on_old.send(make_request("GET", "/hold/old")));
  REQUIRE(blue.upstream.wait_for_requests(3));

  write_config(bulwark, listeners({"inbound", "added"}, "green"));
  auto r = post_reload(bulwark);
  REQUIRE(r);
  REQUIRE(r->status == 200);

  // The added listener accepts, announced by its own "listening" line.
  REQUIRE(wait_for_log_lines(bulwark, {"\"msg\":\"listening\"", "\"listener\":\"added\""}));
  auto added = announced_port(bulwark, "added");
  REQUIRE(added);
  CHECK(served_by(*added) == "green");

  // The removed listener stops accepting.
  CHECK(eventually([&] {
    ClientConn probe;
    return !probe.connect(old, Millis{1000});
  }));

  // Its idle connection is closed.
  const bool idle_closed = idle_on_old.is_closed(Millis{3000});
  CHECK_MESSAGE(idle_closed, "an idle kept-alive connection on a removed listener stays open");
  if (!idle_closed) {
    // What it does instead: the next request.
    std::optional<Response> late;
    if (idle_on_old.send(make_request("GET", "/late"))) late = idle_on_old.read_response();
    MESSAGE("a request on it afterwards: " << describe(late));
  }

  // Its request in flight completes, and then the connection closes.
  blue.gate.open();
  auto held = busy_on_old.read_response();
  REQUIRE_MESSAGE(held, busy_on_old.last_error_text() << "\n" << bulwark.logs_text());
  CHECK(held->status == 200);
  CHECK(held->body == "blue GET /hold/old 0\n");
  CHECK(iequals(held->get("connection"), "close"));
  CHECK(busy_on_old.is_closed(Millis{3000}));

  // The unchanged listener kept its socket (no new "listening" line, same port) and its idle
  // connection, which now follows the new config.
  size_t announcements = 0;
  CHECK(announced_port(bulwark, "inbound", &announcements) == inbound);
  CHECK(announcements == 1);
  REQUIRE(kept.send(make_request("GET", "/second")));
  auto second = kept.read_response();
  REQUIRE_MESSAGE(second, kept.last_error_text());
  CHECK(second->body == "green GET /second 0\n");
  CHECK(served_by(inbound) == "green");

  // Another reload that changes nothing about the listeners: both keep their sockets and
  // connections.
  ClientConn kept_on_added(*added);
  REQUIRE(kept_on_added.send(make_request("GET", "/first")));
  REQUIRE(kept_on_added.read_response());
  write_config(bulwark, listeners({"inbound", "added"}, "blue"));
  r = post_reload(bulwark);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  CHECK(eventually([&] { return served_by(inbound) == "blue"; }));
  for (ClientConn* conn : {&kept, &kept_on_added}) {
    REQUIRE(conn->send(make_request("GET", "/third")));
    auto third = conn->read_response();
    REQUIRE_MESSAGE(third, conn->last_error_text());
    CHECK(third->body == "blue GET /third 0\n");
  }
  CHECK(announced_port(bulwark, "added") == *added);
  CHECK(announced_port(bulwark, "inbound", &announcements) == inbound);
  CHECK(announcements == 1);
}

TEST_CASE(
    "reload keeps a circuit breaker whose settings stay and gives a changed breaker a new start") {
  TestUpstream upstream([](UpstreamConn& conn) {
    while (conn.read_request(Millis{60000})) {
      if (!conn.write_response(500, "broken\n")) return;
    }
  });
  ProxyOptions options;
  options.route = "retry: {attempts: 1}";
  options.cluster =
      "circuit_breaker: {failure_rate_percent: 50, minimum_calls: 4, window: 10s, "
      "open_duration: 30s}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address(), options));
  const uint16_t port = bulwark.port("inbound");
  for (int i = 0; i < 4; ++i) CHECK(status_of(http_get(port, "/broken")) == 500);
  check_local_reply(http_get(port, "/broken"), 503, "circuit_open");
  REQUIRE(upstream.requests() == 4);
  CHECK(metric(bulwark, "bulwark_circuit_state", {{"cluster", "app"}}) == 1);

  // A route changes, the cluster does not: the circuit stays open.
  ProxyOptions route_changed = options;
  route_changed.route += "\ntimeout: 10s";
  write_config(bulwark, proxy_config(upstream.address(), route_changed));
  auto r = post_reload(bulwark);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  REQUIRE(admin_get(bulwark, "/config").find("\"timeout\":\"10s\"") != std::string::npos);
  for (int i = 0; i < 3; ++i) check_local_reply(http_get(port, "/still-open"), 503, "circuit_open");
  CHECK(upstream.requests() == 4);
  CHECK(metric(bulwark, "bulwark_circuit_state", {{"cluster", "app"}}) == 1);
  CHECK(admin_get(bulwark, "/clusters").find("\"circuit\":{\"state\":\"open\"") !=
        std::string::npos);
  CHECK(metric(bulwark, "bulwark_circuit_transitions_total",
               {{"cluster", "app"}, {"to", "open"}}) == 1);

  // The cluster changes, its circuit breaker's settings do not: the breaker and its state stay.
  ProxyOptions cluster_changed = route_changed;
  cluster_changed.cluster += "\nconnect_timeout: 900ms";
  write_config(bulwark, proxy_config(upstream.address(), cluster_changed));
  r = post_reload(bulwark);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  REQUIRE(admin_get(bulwark, "/config").find("\"connect_timeout\":\"900ms\"") != std::string::npos);
  for (int i = 0; i < 3; ++i) check_local_reply(http_get(port, "/still-open"), 503, "circuit_open");
  CHECK(upstream.requests() == 4);
  CHECK(metric(bulwark, "bulwark_circuit_state", {{"cluster", "app"}}) == 1);
  CHECK(admin_get(bulwark, "/clusters").find("\"circuit\":{\"state\":\"open\"") !=
        std::string::npos);

  // The breaker's own settings change: a new breaker, closed; requests reach the upstream again.
  ProxyOptions breaker_changed = cluster_changed;
  const std::string old_breaker = "open_duration: 30s}";
  breaker_changed.cluster.replace(breaker_changed.cluster.find(old_breaker), old_breaker.size(),
                                  "open_duration: 20s}");
  write_config(bulwark, proxy_config(upstream.address(), breaker_changed));
  r = post_reload(bulwark);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  CHECK(eventually([&] { return status_of(http_get(port, "/closed-again")) == 500; }));
  CHECK(upstream.requests() == 5);
  CHECK(metric(bulwark, "bulwark_circuit_state", {{"cluster", "app"}}) == 0);
  CHECK(admin_get(bulwark, "/clusters").find("\"circuit\":{\"state\":\"closed\"") !=
        std::string::npos);
  // A counter of a cluster that kept its name goes on: the old breaker's transitions stay.
  CHECK(metric(bulwark, "bulwark_circuit_transitions_total",
               {{"cluster", "app"}, {"to", "open"}}) >= 1);
}

TEST_CASE("reload of a changed cluster keeps its endpoints' health") {
  struct Checked {
    explicit Checked(std::string n, int status)
        : name(std::move(n)),
          health_status(status),
          upstream([this](UpstreamConn& conn) { serve(conn); }, name) {}
    ~Checked() { upstream.stop(); }
    void serve(UpstreamConn& conn) {
      while (auto request = conn.read_request(Millis{60000})) {
        bool ok;
        if (request->target == "/healthz") {
          ++checks;
          ok = conn.write_response(health_status.load(), "health\n");
        } else {
          ++traffic;
          ok = conn.write_response(200, name + "\n", {{"x-upstream", name}});
        }
        if (!ok) return;
      }
    }
    std::string address() const { return upstream.address(); }
    const std::string name;
    std::atomic<int> health_status;
    std::atomic<size_t> checks{0}, traffic{0};
    TestUpstream upstream;
  };
  // "sick" fails its checks all along; "recovering" fails them until the reload, then passes.
  Checked good("good", 200), sick("sick", 503), recovering("recovering", 503);
  auto config = [&](const std::string& connect_timeout) {
    ProxyOptions options;
    options.route = "retry: {attempts: 1}";
    options.cluster =
        "connect_timeout: " + connect_timeout +
        "\n"
        "health_check: {path: /healthz, interval: 500ms, unhealthy_interval: 500ms,\n"
        "  interval_jitter: 0%, timeout: 3s, healthy_threshold: 3, unhealthy_threshold: 1}\n"
        "panic_threshold: 0%";
    return proxy_config(good.address() + ", " + sick.address() + ", " + recovering.address(),
                        options);
  };
  BulwarkProcess bulwark;
  bulwark.start(config("1s"));
  const uint16_t port = bulwark.port("inbound");
  auto json_of = [&](const Checked& c) {
    return endpoint_json(admin_get(bulwark, "/clusters"), c.address());
  };
  auto field = [](const std::string& json, const std::string& key) -> long {
    const size_t at = json.find("\"" + key + "\":");
    return at == std::string::npos ? -1
                                   : std::strtol(json.c_str() + at + key.size() + 3, nullptr, 10);
  };
  const std::string unhealthy = "\"health\":{\"state\":\"unhealthy\"";
  REQUIRE(eventually([&] {
    return json_of(sick).find(unhealthy) != std::string::npos &&
           json_of(recovering).find(unhealthy) != std::string::npos;
  }));
  for (int i = 0; i < 6; ++i) CHECK(served_by(port) == "good");
  CHECK(sick.traffic == 0);
  CHECK(recovering.traffic == 0);
  auto failed_checks = [&](const Checked& c) {
    return metric(bulwark, "bulwark_health_checks_total",
                  {{"cluster", "app"}, {"endpoint", c.address()}, {"result", "failure"}});
  };
  const double sick_failed_checks = failed_checks(sick);
  CHECK(sick_failed_checks >= 1);
  const std::vector<std::string> sick_changed = {"endpoint health changed",
                                                 "\"endpoint\":\"" + sick.address() + "\""};

  // "recovering" passes its checks from now on, just as the cluster changes.
  const std::string sick_before = json_of(sick);
  const long sick_failures_before = field(sick_before, "consecutive_failures");
  CHECK(sick_failures_before >= 1);
  const size_t sick_changes_before = count_lines(bulwark.logs(), sick_changed);
  CHECK(sick_changes_before == 1);
  const size_t sick_checks_before = sick.checks.load();
  recovering.health_status = 200;
  write_config(bulwark, config("800ms"));
  auto r = post_reload(bulwark);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  REQUIRE(admin_get(bulwark, "/config").find("\"connect_timeout\":\"800ms\"") != std::string::npos);

  // Right after the reload both stay out of the traffic.
  for (int i = 0; i < 6; ++i) CHECK(served_by(port) == "good");
  CHECK(sick.traffic == 0);
  CHECK(recovering.traffic == 0);

  // "sick" fails its next check: it stays unhealthy, one more failure in a row, and its health
  // did not change (no log line), its check counter went on.
  auto text_field = [](const std::string& json, const std::string& key) -> std::string {
    const size_t at = json.find("\"" + key + "\":\"");
    if (at == std::string::npos) return "";
    const size_t end = json.find('"', at + key.size() + 4);
    return json.substr(at + key.size() + 4, end - at - key.size() - 4);
  };
  const std::string sick_last_check = text_field(sick_before, "last_check");
  std::string now;
  CHECK(eventually([&] {
    now = json_of(sick);
    const std::string last_check = text_field(now, "last_check");
    return sick.checks.load() > sick_checks_before && !last_check.empty() &&
           last_check != sick_last_check;
  }));
  const std::string sick_after = now;
  INFO("sick before the reload: " << sick_before);
  INFO("sick after its next check: " << sick_after);
  INFO("bulwark log:\n" << bulwark.logs_text());
  CHECK(sick_after.find(unhealthy) != std::string::npos);
  CHECK(sick_after.find("\"routable\":false") != std::string::npos);
  CHECK(field(sick_after, "consecutive_failures") > sick_failures_before);
  CHECK(failed_checks(sick) > sick_failed_checks);
  CHECK(count_lines(bulwark.logs(), sick_changed) == sick_changes_before);

  // "recovering" passes its first check after the reload: with healthy_threshold 3 it is not
  // back yet.
  CHECK(eventually([&] {
    now = json_of(recovering);
    return now.find("\"last_result\":\"success\"") != std::string::npos;
  }));
  const std::string recovering_after = now;
  INFO("recovering after its first passing check: " << recovering_after);
  const long successes = field(recovering_after, "consecutive_successes");
  if (successes < 3) {
    CHECK(recovering_after.find(unhealthy) != std::string::npos);
    CHECK(recovering_after.find("\"routable\":false") != std::string::npos);
    CHECK(served_by(port) == "good");
    CHECK(recovering.traffic == 0);
  }
}

TEST_CASE("reload keeps the rate limit tokens and bulkhead slots of an unchanged route") {
  Named app("app");
  Gate::Opener open_app(app.gate);
  auto config = [&](const std::string& connect_timeout) {
    return header() +
           "listeners:\n"
           "  - name: inbound\n"
           "    address: 127.0.0.1:0\n"
           "    routes:\n"
           "      - name: held\n"
           "        match: {prefix: /hold}\n"
           "        cluster: app\n"
           "        retry: {attempts: 1}\n"
           "        bulkhead: {max_concurrent: 1, max_queued: 0}\n"
           "      - name: api\n"
           "        match: {prefix: /}\n"
           "        cluster: app\n"
           "        rate_limit: {requests_per_second: 0.05, burst: 3}\n"
           "clusters:\n"
           "  - name: app\n"
           "    endpoints: [" +
           app.address() +
           "]\n"
           "    connect_timeout: " +
           connect_timeout + "\n";
  };
  BulwarkProcess bulwark;
  bulwark.start(config("1s"));
  const uint16_t port = bulwark.port("inbound");

  // The bulkhead's one slot is taken; the bucket's tokens are spent.
  ClientConn holder(port);
  REQUIRE(holder.send(make_request("GET", "/hold/1")));
  REQUIRE(app.upstream.wait_for_requests(1));
  for (int i = 0; i < 3; ++i) CHECK(status_of(http_get(port, "/spend")) == 200);

  // The cluster changes, the routes do not.
  write_config(bulwark, config("800ms"));
  auto r = post_reload(bulwark);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  REQUIRE(admin_get(bulwark, "/config").find("\"connect_timeout\":\"800ms\"") != std::string::npos);
  check_local_reply(http_get(port, "/spent"), 429, "rate_limited");
  check_local_reply(http_get(port, "/hold/2"), 503, "bulkhead_full");

  // The request under way gives its slot back to the same bulkhead.
  app.gate.open();
  auto held = holder.read_response();
  REQUIRE_MESSAGE(held, holder.last_error_text());
  CHECK(held->body == "app GET /hold/1 0\n");
  auto again = http_get(port, "/hold/3");
  REQUIRE(again);
  CHECK(again->status == 200);
  CHECK(again->body == "app GET /hold/3 0\n");
}

TEST_CASE("reload: counters of routes and clusters that keep their names go on") {
  TestUpstream upstream(TestUpstream::echo_handler("app"));
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address()));
  const uint16_t port = bulwark.port("inbound");
  const std::map<std::string, std::string> route{{"listener", "inbound"}, {"route", "api"}};
  auto requests = [&] { return metric(bulwark, "bulwark_requests_total", route); };
  auto upstream_requests = [&] {
    return metric(bulwark, "bulwark_upstream_requests_total", {{"cluster", "app"}});
  };
  for (int i = 0; i < 5; ++i) REQUIRE(status_of(http_get(port, "/one")) == 200);
  REQUIRE(eventually([&] { return requests() == 5; }));
  CHECK(upstream_requests() == 5);

  // Route and cluster both change their settings, and keep their names.
  ProxyOptions changed;
  changed.route = "timeout: 7s";
  changed.cluster = "connect_timeout: 700ms";
  write_config(bulwark, proxy_config(upstream.address(), changed));
  auto r = post_reload(bulwark);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  CHECK(requests() == 5);
  for (int i = 0; i < 3; ++i) REQUIRE(status_of(http_get(port, "/two")) == 200);
  CHECK(eventually([&] { return requests() == 8; }));
  CHECK(requests() == 8);
  CHECK(upstream_requests() == 8);
  CHECK(metric(bulwark, "bulwark_request_duration_seconds_count", route) == 8);

  // A reload that changes nothing, by SIGHUP.
  auto outcome = sighup_reload(bulwark);
  REQUIRE(outcome.has_value());
  CHECK(*outcome);
  REQUIRE(status_of(http_get(port, "/three")) == 200);
  CHECK(eventually([&] { return requests() == 9; }));
  CHECK(upstream_requests() == 9);
  CHECK(upstream.requests() == 9);
  CHECK(generation(bulwark) == 3);
}

TEST_CASE(
    "reload on watch_config: a file renamed over the config reloads, an invalid one counts a "
    "failure") {
  Named blue("blue"), green("green");
  BulwarkProcess bulwark;
  bulwark.start(config_blue(blue, green, "watch_config: true\n"));
  const uint16_t port = bulwark.port("inbound");
  REQUIRE(served_by(port) == "blue");

  write_config(bulwark, config_green(blue, green, "watch_config: true\n"));
  CHECK(eventually([&] { return generation(bulwark) == 2; }, Millis{4000}, Millis{50}));
  CHECK(wait_for_log_lines(bulwark,
                           {kReloadedLog, "\"trigger\":\"watch_config\"", "\"generation\":2"}));
  CHECK(eventually([&] { return served_by(port) == "green"; }));
  CHECK(reloads(bulwark, "success") == 1);

  const Invalid invalid = config_invalid(blue, green);
  write_config(bulwark, invalid.yaml);
  CHECK(eventually([&] { return reloads(bulwark, "failure") == 1; }, Millis{4000}, Millis{50}));
  CHECK(wait_for_log_lines(
      bulwark, {kReloadFailedLog, "\"trigger\":\"watch_config\"",
                ":" + std::to_string(invalid.line) + ":5: ", "unknown key 'conect_timeout'"}));
  CHECK(generation(bulwark) == 2);
  CHECK(status_of(http_get(bulwark.admin_port(), "/ready")) == 200);
  CHECK(served_by(port) == "green");
  CHECK(reloads(bulwark, "success") == 1);
}

TEST_CASE(
    "reload of keys that need a restart: workers, admin.address and access_log warn, the rest "
    "applies") {
  Named blue("blue"), green("green");
  TempDir dir;
  const std::string access_log = dir.file("access.log");
  BulwarkProcess bulwark;
  bulwark.start(config_blue(blue, green));
  const uint16_t port = bulwark.port("inbound");
  const uint16_t admin = bulwark.admin_port();

  std::string changed = config_green(blue, green, "access_log: {path: " + access_log + "}\n");
  const std::string workers = "workers: 2\n";
  const std::string admin_line = "admin: {address: 127.0.0.1:0}\n";
  REQUIRE(changed.find(workers) == 0);
  changed.replace(0, workers.size(), "workers: 3\n");
  changed.replace(changed.find(admin_line), admin_line.size(),
                  "admin: {address: 127.0.0.1:" + std::to_string(unused_port()) + "}\n");
  write_config(bulwark, changed);
  auto r = post_reload(bulwark);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "reloaded: generation 2\n");
  CHECK(wait_for_log_lines(bulwark, {"\"level\":\"warn\"", "workers", "restart"}));
  CHECK(wait_for_log_lines(bulwark, {"\"level\":\"warn\"", "admin.address", "restart"}));
  CHECK(wait_for_log_lines(bulwark, {"\"level\":\"warn\"", "access_log", "restart"}));

  // Everything else applied; the admin listener is where it was; /config shows what runs.
  CHECK(eventually([&] { return served_by(port) == "green"; }));
  auto extra = announced_port(bulwark, "extra");
  REQUIRE(extra);
  CHECK(served_by(*extra) == "green");
  const std::string config_json = admin_get(bulwark, "/config");
  CHECK(config_json.find("\"workers\":2,") != std::string::npos);
  CHECK(config_json.find("\"admin\":{\"address\":\"127.0.0.1:0\"}") != std::string::npos);
  CHECK(route_cluster(config_json, "api") == "green");
  CHECK(generation(bulwark) == 2);
  struct stat st {};
  CHECK(::stat(access_log.c_str(), &st) != 0);  // no access log opened
  CHECK(status_of(http_get(admin, "/healthz")) == 200);
}

TEST_CASE("reload after POST /drain is refused") {
  Named blue("blue"), green("green");
  BulwarkProcess bulwark;
  bulwark.start(config_blue(blue, green));
  const uint16_t admin = bulwark.admin_port();
  REQUIRE(status_of(http_request(admin, "POST", "/drain")) == 200);
  write_config(bulwark, config_green(blue, green));
  auto r = post_reload(bulwark);
  REQUIRE(r);
  CHECK(r->status == 400);
  CHECK(r->body.find("draining") != std::string::npos);
  // SIGHUP is refused too.
  REQUIRE(bulwark.signal(SIGHUP));
  r = post_reload(bulwark);
  REQUIRE(r);
  CHECK(r->status == 400);
  CHECK(generation(bulwark) == 1);
  CHECK(reloads(bulwark, "success") == 0);
  CHECK(route_cluster(admin_get(bulwark, "/config"), "api") == "blue");
  CHECK(bulwark.logs_text().find(kReloadedLog) == std::string::npos);
  CHECK(status_of(http_get(admin, "/healthz")) == 200);
}
