#pragma once
// Shared pieces of the proxy integration tests: a config builder and a fixture that runs one
// TestUpstream behind one bulwark.

#include <doctest/doctest.h>

#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/harness.h"

namespace bulwark::test {

// Prefixes every line of `text` with `spaces` spaces (and ends it with a newline).
inline std::string indent(std::string_view text, int spaces) {
  std::string out;
  std::string pad(static_cast<size_t>(spaces), ' ');
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    if (!line.empty()) out += pad + std::string(line);
    out += "\n";
    if (eol == std::string_view::npos) break;
    text.remove_prefix(eol + 1);
  }
  return out;
}

// Extra YAML for the one-listener, one-route, one-cluster config of proxy_config().
struct ProxyOptions {
  std::string drain_timeout = "5s";
  std::string top;                    // other top-level keys
  std::string listener;               // keys of listener "inbound"
  std::string match = "{prefix: /}";  // the match of route "api"
  std::string route;                  // keys of route "api", e.g. "timeout: 300ms"
  std::string cluster;                // keys of cluster "app", e.g. "connect_timeout: 250ms"
  int workers = 2;
};

// Listener "inbound" on 127.0.0.1:0 with route "api" (everything, by default) to cluster "app"
// whose single endpoint is `endpoint`; admin on 127.0.0.1:0; no drain delay.
inline std::string proxy_config(const std::string& endpoint, const ProxyOptions& options = {}) {
  std::string yaml = "workers: " + std::to_string(options.workers) +
                     "\n"
                     "drain_delay: 0s\n"
                     "drain_timeout: " +
                     options.drain_timeout +
                     "\n"
                     "admin: {address: 127.0.0.1:0}\n";
  yaml += indent(options.top, 0);
  yaml +=
      "listeners:\n"
      "  - name: inbound\n"
      "    address: 127.0.0.1:0\n";
  yaml += indent(options.listener, 4);
  yaml +=
      "    routes:\n"
      "      - name: api\n"
      "        match: " +
      options.match +
      "\n"
      "        cluster: app\n";
  yaml += indent(options.route, 8);
  yaml +=
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [" +
      endpoint + "]\n";
  yaml += indent(options.cluster, 4);
  return yaml;
}

// Checks a local reply: status, reason token and a short body saying why.
inline void check_local_reply(const std::optional<Response>& response, int status,
                              std::string_view reason) {
  REQUIRE_MESSAGE(response, "expected a local reply " << status << " " << reason);
  INFO(describe(response));
  CHECK(response->status == status);
  CHECK(response->get("x-bulwark-reason") == reason);
  CHECK_FALSE(response->body.empty());
  CHECK(response->body.size() < 1024);
}

// One TestUpstream behind one running bulwark. Members are destroyed in reverse order, so bulwark
// is killed before the upstream stops. Objects a handler captures must outlive the fixture.
struct ProxyFixture {
  explicit ProxyFixture(TestUpstream::Handler handler = {}, const ProxyOptions& options = {})
      : upstream(std::move(handler)) {
    bulwark.start(proxy_config(upstream.address(), options));
  }
  uint16_t port() const { return bulwark.port("inbound"); }

  TestUpstream upstream;
  BulwarkProcess bulwark;
};

// The value of a sample in Prometheus text format whose labels include all of `labels` (in any
// order, other labels allowed); the sum when several samples match; nullopt when none does.
inline std::optional<double> metric_value(std::string_view text, std::string_view name,
                                          const std::map<std::string, std::string>& labels) {
  std::optional<double> total;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (line.substr(0, name.size()) != name || line.size() == name.size()) continue;
    std::string_view rest = line.substr(name.size());
    std::map<std::string, std::string> found;
    if (rest.front() == '{') {
      size_t close = rest.find('}');
      if (close == std::string_view::npos) continue;
      std::string_view list = rest.substr(1, close - 1);
      rest.remove_prefix(close + 1);
      while (!list.empty()) {
        size_t eq = list.find("=\"");
        if (eq == std::string_view::npos) break;
        size_t end = list.find('"', eq + 2);
        if (end == std::string_view::npos) break;
        found[std::string(list.substr(0, eq))] = std::string(list.substr(eq + 2, end - eq - 2));
        list.remove_prefix(end + 1);
        if (!list.empty() && list.front() == ',') list.remove_prefix(1);
      }
    } else if (rest.front() != ' ') {
      continue;  // a longer metric name with this one as prefix
    }
    bool matches = true;
    for (const auto& [key, value] : labels) {
      auto it = found.find(key);
      if (it == found.end() || it->second != value) matches = false;
    }
    if (!matches) continue;
    total = total.value_or(0) + std::strtod(std::string(rest).c_str(), nullptr);
  }
  return total;
}

// The value of a sample on the admin /metrics of `bulwark` (see metric_value); nullopt when the
// scrape fails or no sample matches.
inline std::optional<double> scrape_metric(const BulwarkProcess& bulwark, std::string_view name,
                                           const std::map<std::string, std::string>& labels = {}) {
  auto metrics = http_get(bulwark.admin_port(), "/metrics");
  if (!metrics || metrics->status != 200) return std::nullopt;
  return metric_value(metrics->body, name, labels);
}

// Waits until at least `count` stderr lines of `bulwark` contain every one of `needles`.
inline bool wait_for_log_lines(BulwarkProcess& bulwark, const std::vector<std::string>& needles,
                               size_t count = 1, Millis timeout = kDefaultTimeout) {
  return bulwark.process().wait_for_lines(
      Subprocess::Stream::kStderr,
      [&](const std::vector<std::string>& lines) {
        size_t n = 0;
        for (const std::string& line : lines) {
          bool all = true;
          for (const std::string& needle : needles) {
            if (line.find(needle) == std::string::npos) all = false;
          }
          if (all) ++n;
        }
        return n >= count;
      },
      timeout);
}

// Holds upstream handlers until the test lets them through: release(n) lets n callers of pass()
// (waiting now or later) go on, open() lets every caller go from then on. A handler blocked in
// pass() keeps TestUpstream's destructor waiting, so tests keep an Opener, declared after the
// proxy, that opens the gate when the test ends in any way.
class Gate {
 public:
  // True when let through within `timeout`.
  bool pass(Millis timeout = kDefaultTimeout) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return open_ || permits_ > 0; })) return false;
    if (!open_) --permits_;
    return true;
  }
  void release(size_t n = 1) {
    {
      std::lock_guard lock(mutex_);
      permits_ += n;
    }
    cv_.notify_all();
  }
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }

  // Opens the gate when destroyed.
  struct Opener {
    explicit Opener(Gate& g) : gate(g) {}
    Opener(const Opener&) = delete;
    Opener& operator=(const Opener&) = delete;
    ~Opener() { gate.open(); }
    Gate& gate;
  };

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  size_t permits_ = 0;
  bool open_ = false;
};

}  // namespace bulwark::test
