// Upstream health as a client and an operator see it: active health checks take a failing or
// dead endpoint out of the traffic and bring it back, outlier detection ejects an endpoint whose
// real traffic fails while its checks pass, priority groups fail over and spill proportionally,
// panic mode spreads traffic over sick endpoints, no routable endpoint gives 503
// no_healthy_endpoints at once, and /ready follows readiness.require_healthy. Each change shows in
// the logs, /clusters and /metrics.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
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

// ---------------------------------------------------------------------------------------------
// Upstreams

// How an upstream answers its health checks.
enum class CheckMode {
  kAnswer,   // at once, with health_status
  kHold,     // once `gate` lets it, with health_status
  kHang,     // never; the checker has to give up (and close the connection)
  kClose,    // closes the connection without an answer
  kGarbage,  // answers a line that is not a status line
};

// A TestUpstream whose health check path answers as the test says and whose other paths (the
// traffic) answer traffic_status with the body "NAME\n" and "x-upstream: NAME", so a client
// sees which endpoint served it. Checks and traffic are counted apart.
class Backend {
 public:
  explicit Backend(std::string name, std::string check_path = "/healthz")
      : name_(std::move(name)),
        check_path_(std::move(check_path)),
        upstream([this](UpstreamConn& conn) { serve(conn); }, name_) {}
  ~Backend() {
    gate.open();
    upstream.stop();
  }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  std::string address() const { return upstream.address(); }

  std::atomic<int> health_status{200};
  std::atomic<int> traffic_status{200};
  std::atomic<CheckMode> check_mode{CheckMode::kAnswer};
  Gate gate;
  std::atomic<size_t> traffic{0};           // requests on other paths than the check path
  std::atomic<size_t> checks{0};            // requests on the check path
  std::atomic<size_t> abandoned_checks{0};  // kHang checks whose connection the checker closed

  // The connection number (TestUpstream's, from 1) of each check request, in order.
  std::vector<size_t> check_connections() const {
    std::lock_guard lock(mutex_);
    return check_connections_;
  }
  // When each check request arrived, in order.
  std::vector<Clock::time_point> check_times() const {
    std::lock_guard lock(mutex_);
    return check_times_;
  }

 private:
  void serve(UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (request->target == check_path_) {
        {
          std::lock_guard lock(mutex_);
          check_connections_.push_back(conn.index());
          check_times_.push_back(Clock::now());
        }
        ++checks;
        CheckMode mode = check_mode.load();
        if (mode == CheckMode::kHang) {
          if (conn.wait_peer_close(Millis{10000})) ++abandoned_checks;
          return;
        }
        if (mode == CheckMode::kClose) return;
        if (mode == CheckMode::kGarbage) {
          conn.write("I am fine, thank you\r\n\r\n");
          return;
        }
        if (mode == CheckMode::kHold && !gate.pass(Millis{10000})) return;
        // Keep the connection open as a keep-alive server would: the checker closes it.
        if (!conn.write_response(health_status.load(), "health\n")) return;
        continue;
      }
      ++traffic;
      if (!conn.write_response(traffic_status.load(), name_ + "\n", {{"x-upstream", name_}}))
        return;
    }
  }

  std::string name_;
  std::string check_path_;
  mutable std::mutex mutex_;
  std::vector<size_t> check_connections_;
  std::vector<Clock::time_point> check_times_;

 public:
  TestUpstream upstream;  // last: stopped (threads joined) before the members above go
};

// A bare HTTP server on a port chosen by the test (TestUpstream always picks its own), for an
// endpoint that comes back on the port it had. One connection at a time; each request gets 200
// with "x-upstream: NAME" and Connection: close.
class PortServer {
 public:
  // Throws std::runtime_error when the port cannot be bound.
  PortServer(uint16_t port, std::string name) : name_(std::move(name)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address = loopback(port);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(fd_, 64) != 0 || ::pipe2(wake_, O_CLOEXEC) != 0) {
      std::string why = std::strerror(errno);
      ::close(fd_);
      throw std::runtime_error("PortServer: cannot listen on port " + std::to_string(port) + ": " +
                               why);
    }
    thread_ = std::thread([this] { loop(); });
  }
  ~PortServer() {
    char byte = 1;
    [[maybe_unused]] auto ignored = ::write(wake_[1], &byte, 1);
    thread_.join();
    ::close(fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  PortServer(const PortServer&) = delete;
  PortServer& operator=(const PortServer&) = delete;

  size_t traffic() const { return traffic_.load(); }  // requests other than GET /healthz
  size_t checks() const { return checks_.load(); }

 private:
  // Waits for `fd` to be readable; false when stopped or after 2 s.
  bool readable(int fd) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int n = ::poll(fds, 2, 2000);
    return n > 0 && (fds[1].revents & POLLIN) == 0 && (fds[0].revents & (POLLIN | POLLHUP)) != 0;
  }
  void loop() {
    for (;;) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents & POLLIN) return;
      int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      serve(conn);
      ::close(conn);
    }
  }
  void serve(int conn) {
    std::string in;
    char buf[4096];
    while (in.find("\r\n\r\n") == std::string::npos) {
      if (!readable(conn)) return;
      ssize_t n = ::read(conn, buf, sizeof buf);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
    }
    size_t first = in.find(' ');
    size_t second = in.find(' ', first + 1);
    std::string target = first == std::string::npos || second == std::string::npos
                             ? std::string()
                             : in.substr(first + 1, second - first - 1);
    ++(target == "/healthz" ? checks_ : traffic_);
    std::string body = name_ + "\n";
    std::string out = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nx-upstream: " + name_ + "\r\nConnection: close\r\n\r\n" + body;
    [[maybe_unused]] auto sent = ::send(conn, out.data(), out.size(), MSG_NOSIGNAL);
  }

  std::string name_;
  int fd_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<size_t> traffic_{0};
  std::atomic<size_t> checks_{0};
  std::thread thread_;
};

// Clients that send GETs, each on a new connection, back to back until stopped, and keep a
// description of every response that was not a 200.
class ClientLoop {
 public:
  ClientLoop(uint16_t port, int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this, port] { run(port); });
  }
  ~ClientLoop() { stop(); }
  ClientLoop(const ClientLoop&) = delete;
  ClientLoop& operator=(const ClientLoop&) = delete;

  void stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  size_t sent() const { return sent_.load(); }
  std::vector<std::string> failures() const {
    std::lock_guard lock(mutex_);
    return failures_;
  }

 private:
  void run(uint16_t port) {
    while (!stop_) {
      std::string error;
      auto response = http_get(port, "/loop", {}, kDefaultTimeout, &error);
      ++sent_;
      if (!response || response->status != 200) {
        std::lock_guard lock(mutex_);
        failures_.push_back(response ? describe(response) : "no response: " + error);
      }
    }
  }

  std::atomic<bool> stop_{false};
  std::atomic<size_t> sent_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> failures_;
  std::vector<std::thread> threads_;
};

// ---------------------------------------------------------------------------------------------
// Traffic

// Sends `n` GETs, each on a new connection (so every worker takes part), checks that each got a
// 200, and counts them by the endpoint that served them (x-upstream).
std::map<std::string, int> spread(uint16_t port, int n) {
  std::map<std::string, int> served;
  for (int i = 0; i < n; ++i) {
    auto response = http_get(port, "/work/" + std::to_string(i));
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK_FALSE(response->has("x-bulwark-attempts"));
    ++served[response->get("x-upstream")];
  }
  return served;
}

// ---------------------------------------------------------------------------------------------
// Logs

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The "ts" of a bulwark log line ("2026-11-23T23:46:17.729Z") in ms since the epoch; -1 if none.
int64_t log_time_ms(const std::string& line) {
  size_t at = line.find("\"ts\":\"");
  if (at == std::string::npos) return -1;
  tm t{};
  int ms = 0;
  if (std::sscanf(line.c_str() + at + 6, "%d-%d-%dT%d:%d:%d.%dZ", &t.tm_year, &t.tm_mon, &t.tm_mday,
                  &t.tm_hour, &t.tm_min, &t.tm_sec, &ms) != 7) {
    return -1;
  }
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&t)) * 1000 + ms;
}

bool has_all(const std::string& line, const std::vector<std::string>& needles) {
  for (const std::string& needle : needles) {
    if (line.find(needle) == std::string::npos) return false;
  }
  return true;
}

size_t count_log_lines(BulwarkProcess& bulwark, const std::vector<std::string>& needles) {
  size_t n = 0;
  for (const std::string& line : bulwark.process().lines(Subprocess::Stream::kStderr)) {
    if (has_all(line, needles)) ++n;
  }
  return n;
}

// The `nth` (from 1) stderr line of bulwark with all of `needles`, once it appears within
// `timeout`; nullopt otherwise.
std::optional<std::string> wait_for_log_line(BulwarkProcess& bulwark,
                                             const std::vector<std::string>& needles,
                                             Millis timeout = kDefaultTimeout, size_t nth = 1) {
  if (!wait_for_log_lines(bulwark, needles, nth, timeout)) return std::nullopt;
  size_t n = 0;
  for (const std::string& line : bulwark.process().lines(Subprocess::Stream::kStderr)) {
    if (has_all(line, needles) && ++n == nth) return line;
  }
  return std::nullopt;
}

std::string field(const std::string& key, const std::string& value) {
  return "\"" + key + "\":\"" + value + "\"";
}

// The info/warn line of an endpoint's health state change; `cause` when given must match whole.
std::vector<std::string> health_change(const std::string& endpoint, const std::string& from,
                                       const std::string& to, const std::string& cause = {}) {
  std::vector<std::string> needles = {"\"msg\":\"endpoint health changed\"",
                                      field("cluster", "app"), field("endpoint", endpoint),
                                      field("old", from), field("new", to)};
  if (!cause.empty()) needles.push_back(field("cause", cause));
  return needles;
}

std::vector<std::string> any_health_change(const std::string& endpoint) {
  return {"\"msg\":\"endpoint health changed\"", field("endpoint", endpoint)};
}

std::vector<std::string> ejected_log(const std::string& endpoint, const std::string& cause) {
  return {"\"msg\":\"endpoint ejected\"", field("cluster", "app"), field("endpoint", endpoint),
          field("old", "active"),         field("new", "ejected"), field("cause", cause)};
}

std::vector<std::string> returned_log(const std::string& endpoint) {
  return {"\"msg\":\"endpoint returned from ejection\"",
          field("cluster", "app"),
          field("endpoint", endpoint),
          field("old", "ejected"),
          field("new", "active"),
          field("cause", "ejection time over")};
}

const std::vector<std::string> kFirstRoundDone = {"\"msg\":\"first health check round done\"",
                                                  field("cluster", "app")};

// ---------------------------------------------------------------------------------------------
// Admin

// The number after "KEY": in `json` (the first occurrence), or nullopt.
std::optional<long> json_number(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return std::nullopt;
  const char* start = json.c_str() + at + key.size() + 3;
  char* end = nullptr;
  long value = std::strtol(start, &end, 10);
  if (end == start) return std::nullopt;
  return value;
}

// The JSON object of the endpoint with `address` in /clusters (from its '{' to its '}'), or "".
std::string endpoint_json(const BulwarkProcess& bulwark, const std::string& address) {
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

std::string clusters_body(const BulwarkProcess& bulwark) {
  auto clusters = http_get(bulwark.admin_port(), "/clusters");
  return clusters && clusters->status == 200 ? clusters->body : std::string();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

double metric(const BulwarkProcess& bulwark, const std::string& name,
              const std::map<std::string, std::string>& labels = {{"cluster", "app"}}) {
  return scrape_metric(bulwark, name, labels).value_or(-1);
}

std::map<std::string, std::string> endpoint_labels(const std::string& endpoint) {
  return {{"cluster", "app"}, {"endpoint", endpoint}};
}

double checks_total(const BulwarkProcess& bulwark, const std::string& endpoint,
                    const std::string& result) {
  return metric(bulwark, "bulwark_health_checks_total",
                {{"cluster", "app"}, {"endpoint", endpoint}, {"result", result}});
}

double retries_of(const BulwarkProcess& bulwark, const std::string& reason) {
  return scrape_metric(bulwark, "bulwark_retries_total", {{"route", "api"}, {"reason", reason}})
      .value_or(0);
}

// A health_check block for the cluster: fast checks, no jitter, and `extra` keys.
std::string fast_checks(const std::string& extra = {}) {
  return "health_check: {interval: 100ms, interval_jitter: 0%, timeout: 500ms" +
         (extra.empty() ? std::string() : ", " + extra) + "}";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Active health checks

TEST_CASE(
    "an endpoint whose health check fails stops taking traffic and comes back once it passes") {
  Backend a("a"), b("b");
  ProxyOptions options;
  options.cluster =
      "health_check: {interval: 100ms, interval_jitter: 0%, timeout: 300ms,\n"
      "               healthy_threshold: 2, unhealthy_threshold: 3}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address(), options));
  const uint16_t port = bulwark.port("inbound");
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(wait_for_log_lines(
      bulwark, health_change(a.address(), "pending", "healthy", "first check: status 200")));
  auto before = spread(port, 20);
  CHECK(before["a"] > 0);
  CHECK(before["b"] > 0);
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(a.address())) == 1);
  const double failures_before = checks_total(bulwark, a.address(), "failure");
  CHECK(failures_before == 0);

  // /healthz fails: three failed checks in a row, 100 ms apart, take it out.
  const int64_t failing_since = unix_ms_now();
  a.health_status = 503;
  auto out = wait_for_log_line(bulwark,
                               health_change(a.address(), "healthy", "unhealthy",
                                             "status 503 (3 consecutive failed checks)"),
                               Millis{5000});
  REQUIRE_MESSAGE(out, bulwark.logs_text());
  CHECK(out->find("\"level\":\"warn\"") != std::string::npos);
  const int64_t took = log_time_ms(*out) - failing_since;
  CAPTURE(took);
  CHECK(took >= 150);  // not at the first failed check: it takes three, 100 ms apart
  CHECK(took <= 3 * 100 + 300 + 1200);  // unhealthy_threshold × interval + timeout + slack

  const size_t a_traffic = a.traffic;
  auto during = spread(port, 30);
  CHECK(during["b"] == 30);
  CHECK(a.traffic == a_traffic);

  std::string json = endpoint_json(bulwark, a.address());
  INFO(json);
  CHECK(contains(json, "\"routable\":false"));
  CHECK(contains(json, "\"state\":\"unhealthy\""));
  CHECK(contains(json, "\"last_result\":\"failure\""));
  CHECK(contains(json, "\"last_detail\":\"status 503\""));
  CHECK(contains(json, "\"last_check\":\"20"));
  CHECK(json_number(json, "consecutive_failures").value_or(0) >= 3);
  CHECK(json_number(json, "consecutive_successes") == 0);
  // No outlier_detection section: the implicit detection (local-origin failures only) is there.
  CHECK(contains(json, "\"outlier\":{\"ejected\":false"));
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(a.address())) == 0);
  CHECK(json_number(clusters_body(bulwark), "routable_endpoints") == 1);
  CHECK(contains(endpoint_json(bulwark, b.address()), "\"state\":\"healthy\""));
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(a.address())) == 0);
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(b.address())) == 1);
  CHECK(checks_total(bulwark, a.address(), "failure") >= failures_before + 3);
  CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 1);

  // It recovers: two passing checks in a row bring it back.
  const int64_t passing_since = unix_ms_now();
  a.health_status = 200;
  auto back = wait_for_log_line(bulwark,
                                health_change(a.address(), "unhealthy", "healthy",
                                              "status 200 (2 consecutive passing checks)"),
                                Millis{5000});
  REQUIRE(back);
  const int64_t took_back = log_time_ms(*back) - passing_since;
  CAPTURE(took_back);
  CHECK(took_back >= 90);  // two checks, 100 ms apart
  CHECK(took_back <= 2 * 100 + 300 + 1200);
  auto after = spread(port, 20);
  CHECK(after["a"] >= 5);
  CHECK(after["b"] >= 5);
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(a.address())) == 1);
  CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 2);
  CHECK(contains(endpoint_json(bulwark, a.address()), "\"routable\":true"));
  // Each change was logged once: pending → healthy → unhealthy → healthy; b only its first.
  CHECK(count_log_lines(bulwark, any_health_change(a.address())) == 3);
  CHECK(count_log_lines(bulwark, any_health_change(b.address())) == 1);
  CHECK(count_log_lines(bulwark, kFirstRoundDone) == 1);
}

TEST_CASE("a killed endpoint is taken out without a single failed client request") {
  Backend a("a"), b("b");
  auto c = std::make_unique<Backend>("c");
  const std::string c_address = c->address();
  const uint16_t c_port = c->upstream.port();
  ProxyOptions options;
  // Default retries (2 attempts) hide the requests that meet the dead endpoint before its checks
  // catch it. The retry budget is off: on a fast machine the clients below send more requests in
  // that window than its minimum of 100 retries would cover, which is the budget doing its job.
  options.route = "retry: {budget: {enabled: false}}";
  options.cluster =
      "health_check: {interval: 50ms, interval_jitter: 0%, timeout: 500ms,\n"
      "               healthy_threshold: 2, unhealthy_threshold: 2}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address() + ", " + c_address, options));
  const uint16_t port = bulwark.port("inbound");
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));

  ClientLoop clients(port, 2);
  REQUIRE(eventually([&] { return c->traffic >= 5; }));
  c->upstream.stop();  // connections to its port are refused from now on
  auto out = wait_for_log_line(bulwark, health_change(c_address, "healthy", "unhealthy"));
  REQUIRE_MESSAGE(out, bulwark.logs_text());
  CHECK(out->find("connection refused (2 consecutive failed checks)") != std::string::npos);
  const size_t sent_then = clients.sent();
  REQUIRE(eventually([&] { return clients.sent() >= sent_then + 50; }));
  clients.stop();
  auto failures = clients.failures();
  INFO("first failure: " << (failures.empty() ? std::string() : failures.front()));
  CHECK(failures.empty());
  CHECK(clients.sent() > 50);

  // Out of the rotation: no more connects to it, so no retries either.
  const double connect_failures =
      scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}})
          .value_or(0);
  auto served = spread(port, 30);
  CHECK(served["a"] + served["b"] == 30);
  CHECK(scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}})
            .value_or(0) == connect_failures);
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(c_address)) == 0);
  CHECK(contains(endpoint_json(bulwark, c_address), "connect failed: connection refused"));

  // It is started again on the same port: two passing checks and it takes traffic again.
  c.reset();
  std::optional<PortServer> revived;
  try {
    revived.emplace(c_port, "c-again");
  } catch (const std::exception& e) {
    MESSAGE("cannot listen on the killed endpoint's port again, so the comeback is not tested: "
            << e.what());
    return;
  }
  REQUIRE(wait_for_log_lines(bulwark, health_change(c_address, "unhealthy", "healthy",
                                                    "status 200 (2 consecutive passing checks)")));
  CHECK(revived->checks() >= 2);
  CHECK(eventually([&] {
    auto response = http_get(port, "/again");
    CHECK(response);
    if (response) CHECK(response->status == 200);
    return revived->traffic() > 0;
  }));
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(c_address)) == 1);
}

TEST_CASE(
    "health checks send GET of the path with Host and User-Agent and pass on expected_statuses") {
  Backend teapot("teapot", "/status/deep"), plain("plain", "/status/deep");
  std::string teapot_endpoint = teapot.address();
  std::string host_key;
  std::string expected_host = teapot.address();
  SUBCASE("the Host header is the endpoint as configured by default") {}
  SUBCASE("the Host header of an endpoint configured by name is its name") {
    teapot_endpoint = "localhost:" + std::to_string(teapot.upstream.port());
    expected_host = teapot_endpoint;
  }
  SUBCASE("host sets the Host header") {
    host_key = ", host: app.local";
    expected_host = "app.local";
  }
  CAPTURE(teapot_endpoint);
  CAPTURE(host_key);
  teapot.health_status = 418;
  plain.health_status = 200;
  ProxyOptions options;
  options.cluster =
      "health_check: {path: /status/deep, interval: 100ms, interval_jitter: 0%,\n"
      "               expected_statuses: [204, 418]" +
      host_key + "}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(teapot_endpoint + ", " + plain.address(), options));
  INFO(bulwark.logs_text());
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(wait_for_log_lines(
      bulwark, health_change(teapot.address(), "pending", "healthy", "first check: status 418")));
  CHECK(wait_for_log_lines(
      bulwark, health_change(plain.address(), "pending", "unhealthy", "first check: status 200")));
  auto served = spread(bulwark.port("inbound"), 10);
  CHECK(served["teapot"] == 10);
  CHECK(plain.traffic == 0);

  // A few more checks, then look at what they sent.
  REQUIRE(eventually([&] { return teapot.checks >= 3; }));
  int seen = 0;
  for (const Request& request : teapot.upstream.received()) {
    if (request.target != "/status/deep") continue;
    ++seen;
    INFO(request.head);
    CHECK(request.method == "GET");
    CHECK(request.version == "HTTP/1.1");
    CHECK(request.get("host") == expected_host);
    CHECK(request.get("user-agent").rfind("bulwark-health-check", 0) == 0);
    CHECK(iequals(request.get("connection"), "close"));
    CHECK(request.body_size == 0);
  }
  CHECK(seen >= 3);
  // Each check on a connection of its own.
  auto connections = teapot.check_connections();
  for (size_t i = 1; i < connections.size(); ++i) CHECK(connections[i] != connections[i - 1]);
}

TEST_CASE("a health check that gets no answer within timeout counts as a timeout") {
  Backend a("a"), b("b");
  ProxyOptions options;
  options.cluster =
      "health_check: {interval: 100ms, interval_jitter: 0%, timeout: 200ms,\n"
      "               unhealthy_threshold: 2}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address(), options));
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(checks_total(bulwark, a.address(), "timeout") == 0);

  const int64_t hanging_since = unix_ms_now();
  a.check_mode = CheckMode::kHang;
  auto out =
      wait_for_log_line(bulwark,
                        health_change(a.address(), "healthy", "unhealthy",
                                      "no answer within 200ms (2 consecutive failed checks)"),
                        Millis{5000});
  REQUIRE_MESSAGE(out, bulwark.logs_text());
  const int64_t took = log_time_ms(*out) - hanging_since;
  CAPTURE(took);
  CHECK(took >= 400);  // two checks that each waited 200 ms, 100 ms apart
  CHECK(took <= 2 * (200 + 100) + 1500);
  CHECK(checks_total(bulwark, a.address(), "timeout") >= 2);
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(a.address())) == 0);
  std::string json = endpoint_json(bulwark, a.address());
  INFO(json);
  CHECK(contains(json, "\"last_result\":\"timeout\""));
  CHECK(contains(json, "\"state\":\"unhealthy\""));
  // The checker hung up on each check it gave up.
  CHECK(eventually([&] { return a.abandoned_checks >= 2; }));
  auto served = spread(bulwark.port("inbound"), 10);
  CHECK(served["b"] == 10);
}

TEST_CASE("a check answered without a status line fails") {
  CheckMode mode = CheckMode::kClose;
  std::string cause;
  SUBCASE("the connection closes before a response") {
    mode = CheckMode::kClose;
    cause = "first check: closed before a response";
  }
  SUBCASE("the answer is not HTTP") {
    mode = CheckMode::kGarbage;
    cause = "first check: malformed response";
  }
  CAPTURE(cause);
  Backend a("a"), b("b");
  a.check_mode = mode;
  ProxyOptions options;
  options.cluster = fast_checks();
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address(), options));
  INFO(bulwark.logs_text());
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(wait_for_log_lines(bulwark, health_change(a.address(), "pending", "unhealthy", cause)));
  CHECK(checks_total(bulwark, a.address(), "failure") >= 1);
  CHECK(contains(endpoint_json(bulwark, a.address()), "\"last_result\":\"failure\""));
  auto served = spread(bulwark.port("inbound"), 6);
  CHECK(served["b"] == 6);
}

TEST_CASE("unhealthy_interval checks an unhealthy endpoint more often than interval") {
  Backend a("a"), b("b");
  a.health_status = 503;
  ProxyOptions options;
  options.cluster =
      "health_check: {interval: 1500ms, interval_jitter: 0%, unhealthy_interval: 100ms,\n"
      "               healthy_threshold: 2}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address(), options));
  INFO(bulwark.logs_text());
  REQUIRE(wait_for_log_lines(bulwark, health_change(a.address(), "pending", "unhealthy")));
  // Unhealthy: checked every 100 ms (every 1.5 s this would take 4.5 s).
  REQUIRE(eventually([&] { return a.checks >= 4; }, Millis{3000}));
  a.health_status = 200;
  REQUIRE(wait_for_log_lines(bulwark, health_change(a.address(), "unhealthy", "healthy",
                                                    "status 200 (2 consecutive passing checks)")));
  const size_t healthy_at = a.checks;  // the check that made it healthy included
  // Healthy again: the next check comes after interval.
  REQUIRE(eventually([&] { return a.checks > healthy_at; }, Millis{5000}));
  auto times = a.check_times();
  REQUIRE(times.size() > healthy_at);
  for (size_t i = 1; i < healthy_at; ++i) {
    auto gap = std::chrono::duration_cast<Millis>(times[i] - times[i - 1]).count();
    CAPTURE(i);
    CAPTURE(gap);
    CHECK(gap >= 80);
    CHECK(gap < 1000);
  }
  auto gap = std::chrono::duration_cast<Millis>(times[healthy_at] - times[healthy_at - 1]).count();
  CAPTURE(gap);
  CHECK(gap >= 1400);
  CHECK(gap < 1500 + 1500);
}

TEST_CASE("interval_jitter spreads the checks of an endpoint around interval") {
  Backend a("a");
  ProxyOptions options;
  options.cluster = "health_check: {interval: 50ms, interval_jitter: 50%}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address(), options));
  INFO(bulwark.logs_text());
  REQUIRE(eventually([&] { return a.checks >= 31; }, Millis{10000}));
  auto times = a.check_times();
  long shortest = 1000000, longest = 0;
  for (size_t i = 1; i <= 30; ++i) {
    long gap =
        static_cast<long>(std::chrono::duration_cast<Millis>(times[i] - times[i - 1]).count());
    shortest = std::min(shortest, gap);
    longest = std::max(longest, gap);
  }
  CAPTURE(shortest);
  CAPTURE(longest);
  // Each wait is uniform in [25 ms, 75 ms]: thirty of them are not all near 50 ms.
  CHECK(shortest >= 20);
  CHECK(shortest < 45);
  CHECK(longest > 55);
}

TEST_CASE("tcp health checks only connect") {
  Backend open("open");
  RefusingPort refusing_port;
  const std::string refusing = refusing_port.address();
  ProxyOptions options;
  options.cluster = "health_check: {tcp: true, interval: 100ms, interval_jitter: 0%}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(open.address() + ", " + refusing, options));
  INFO(bulwark.logs_text());
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(wait_for_log_lines(
      bulwark, health_change(open.address(), "pending", "healthy", "first check: connected")));
  CHECK(wait_for_log_lines(bulwark,
                           health_change(refusing, "pending", "unhealthy",
                                         "first check: connect failed: connection refused")));
  REQUIRE(eventually([&] { return checks_total(bulwark, open.address(), "success") >= 3; }));
  // Connections, but not one request.
  CHECK(open.upstream.connections() >= 3);
  CHECK(open.upstream.requests() == 0);
  CHECK(checks_total(bulwark, refusing, "failure") >= 1);

  auto served = spread(bulwark.port("inbound"), 10);
  CHECK(served["open"] == 10);
  CHECK(scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}})
            .value_or(0) == 0);
  std::string json = endpoint_json(bulwark, refusing);
  INFO(json);
  CHECK(contains(json, "\"last_detail\":\"connect failed: connection refused\""));
}

TEST_CASE(
    "a cluster without health settings shows every endpoint routable, no health series, and the "
    "implicit outlier detection") {
  ProxyFixture proxy;
  const std::string address = proxy.upstream.address();
  CHECK(metric(proxy.bulwark, "bulwark_cluster_routable_endpoints") == 1);
  CHECK(metric(proxy.bulwark, "bulwark_cluster_panic") == 0);
  CHECK_FALSE(scrape_metric(proxy.bulwark, "bulwark_endpoint_healthy").has_value());
  CHECK_FALSE(scrape_metric(proxy.bulwark, "bulwark_health_checks_total").has_value());
  CHECK(metric(proxy.bulwark, "bulwark_endpoint_ejected", endpoint_labels(address)) == 0);
  CHECK(metric(proxy.bulwark, "bulwark_outlier_ejections_total", endpoint_labels(address)) == 0);
  std::string clusters = clusters_body(proxy.bulwark);
  INFO(clusters);
  CHECK(contains(clusters, "\"routable_endpoints\":1,\"panic\":false"));
  std::string json = endpoint_json(proxy.bulwark, address);
  CHECK(contains(json, "\"priority\":0"));
  CHECK(contains(json, "\"routable\":true"));
  CHECK_FALSE(contains(json, "\"health\""));
  CHECK(contains(json, "\"outlier\":{\"ejected\":false"));
  CHECK(proxy.upstream.requests() == 0);  // and nothing checks it
  auto ready = http_get(proxy.bulwark.admin_port(), "/ready");
  REQUIRE(ready);
  CHECK(ready->status == 200);
}

// ---------------------------------------------------------------------------------------------
// No routable endpoint, /ready

TEST_CASE("a cluster with no routable endpoint answers 503 no_healthy_endpoints at once") {
  Backend a("a"), b("b");
  a.health_status = 503;
  b.health_status = 503;
  ProxyOptions options;
  options.cluster = fast_checks("healthy_threshold: 1");
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address(), options));
  const uint16_t port = bulwark.port("inbound");
  // The first result decides at once: both are unhealthy after one failed check each.
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 0);
  CHECK(json_number(clusters_body(bulwark), "routable_endpoints") == 0);

  for (int i = 0; i < 5; ++i) {
    auto started = Clock::now();
    auto response = http_get(port, "/nowhere");
    auto elapsed = Clock::now() - started;
    check_local_reply(response, 503, "no_healthy_endpoints");
    CHECK_FALSE(response->has("x-bulwark-attempts"));
    CHECK(elapsed < Millis{500});
  }
  CHECK(a.traffic == 0);
  CHECK(b.traffic == 0);
  CHECK(scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}})
            .value_or(0) == 0);
  CHECK(eventually([&] {
    return scrape_metric(bulwark, "bulwark_local_replies_total",
                         {{"reason", "no_healthy_endpoints"}}) == 5;
  }));
  CHECK(metric(bulwark, "bulwark_cluster_panic") == 0);

  // One comes back: traffic flows again, to it.
  a.health_status = 200;
  REQUIRE(wait_for_log_lines(bulwark, health_change(a.address(), "unhealthy", "healthy")));
  auto served = spread(port, 6);
  CHECK(served["a"] == 6);
}

TEST_CASE(
    "ready follows readiness.require_healthy through the first round and unhealthy endpoints") {
  Backend a("a"), b("b");
  a.check_mode = CheckMode::kHold;
  ProxyOptions options;
  options.top = "readiness: {require_healthy: [app]}";
  options.cluster =
      "health_check: {interval: 100ms, interval_jitter: 0%, timeout: 5s,\n"
      "               healthy_threshold: 2, unhealthy_threshold: 1}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address(), options));
  INFO(bulwark.logs_text());
  const uint16_t admin = bulwark.admin_port();
  auto ready_body = [&](int status) {
    auto ready = http_get(admin, "/ready");
    REQUIRE(ready);
    CHECK(ready->status == status);
    return ready->body;
  };

  // b is healthy at once, but a's first check is held at the upstream: the round is not over.
  REQUIRE(wait_for_log_lines(bulwark, health_change(b.address(), "pending", "healthy")));
  REQUIRE(eventually([&] { return a.checks >= 1; }));
  CHECK(contains(ready_body(503), "cluster app: waiting for the first round of health checks"));
  // Pending counts as routable: a takes traffic meanwhile.
  auto served = spread(bulwark.port("inbound"), 10);
  CHECK(served["a"] > 0);
  std::string json = endpoint_json(bulwark, a.address());
  CHECK(contains(json, "\"state\":\"pending\""));
  CHECK(contains(json, "\"last_result\":null"));
  CHECK(contains(json, "\"routable\":true"));
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(a.address())) == 1);

  // a's first result is a failure: the round is over, and b is routable.
  a.health_status = 503;
  a.check_mode = CheckMode::kAnswer;
  a.gate.open();
  REQUIRE(wait_for_log_lines(
      bulwark, health_change(a.address(), "pending", "unhealthy", "first check: status 503")));
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(ready_body(200) == "ready\n");

  // b fails too: nothing routable.
  b.health_status = 503;
  REQUIRE(wait_for_log_lines(bulwark, health_change(b.address(), "healthy", "unhealthy")));
  CHECK(contains(ready_body(503), "cluster app: no routable endpoint"));

  a.health_status = 200;
  REQUIRE(wait_for_log_lines(bulwark, health_change(a.address(), "unhealthy", "healthy")));
  CHECK(ready_body(200) == "ready\n");
  CHECK(count_log_lines(bulwark, kFirstRoundDone) == 1);
}

TEST_CASE("without readiness ready stays 200 while the cluster is unhealthy") {
  Backend a("a");
  a.health_status = 503;
  ProxyOptions options;
  options.cluster = fast_checks();
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address(), options));
  REQUIRE(wait_for_log_lines(bulwark, health_change(a.address(), "pending", "unhealthy")));
  check_local_reply(http_get(bulwark.port("inbound"), "/down"), 503, "no_healthy_endpoints");
  auto ready = http_get(bulwark.admin_port(), "/ready");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  CHECK(ready->body == "ready\n");
}

// ---------------------------------------------------------------------------------------------
// Priorities and panic

TEST_CASE("priority groups fail over to priority 1 and spill proportionally") {
  std::string threshold;
  bool panics_without_p0 = false;  // 1 of 3 routable: below 50 %
  SUBCASE("panic_threshold 0%") { threshold = "panic_threshold: 0%"; }
  SUBCASE("default panic_threshold") { panics_without_p0 = true; }
  CAPTURE(threshold);
  Backend p0a("p0a"), p0b("p0b"), p1("p1");
  ProxyOptions options;
  options.cluster = fast_checks("healthy_threshold: 1, unhealthy_threshold: 1") + "\n" + threshold;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(
      p0a.address() + ", " + p0b.address() + ", {address: " + p1.address() + ", priority: 1}",
      options));
  const uint16_t port = bulwark.port("inbound");
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(contains(endpoint_json(bulwark, p1.address()), "\"priority\":1"));

  // All healthy: priority 0 takes everything.
  auto served = spread(port, 60);
  CHECK(served["p0a"] > 0);
  CHECK(served["p0b"] > 0);
  CHECK(served["p1"] == 0);

  // Priority 0 down: everything to priority 1, and no failed request.
  p0a.health_status = 503;
  p0b.health_status = 503;
  REQUIRE(wait_for_log_lines(bulwark, health_change(p0a.address(), "healthy", "unhealthy")));
  REQUIRE(wait_for_log_lines(bulwark, health_change(p0b.address(), "healthy", "unhealthy")));
  served = spread(port, 60);
  CHECK(served["p1"] == 60);
  CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 1);
  // Even in panic a group with no routable endpoint takes no traffic.
  CHECK(metric(bulwark, "bulwark_cluster_panic") == (panics_without_p0 ? 1 : 0));

  // One of two back: priority 0 health min(100, 1.4 × 50) = 70 %, priority 1 takes the rest.
  p0a.health_status = 200;
  REQUIRE(wait_for_log_lines(bulwark, health_change(p0a.address(), "unhealthy", "healthy")));
  served = spread(port, 200);
  CAPTURE(served["p0a"]);
  CAPTURE(served["p1"]);
  CHECK(served["p0b"] == 0);
  // 140 expected (standard deviation 6.5); 100 would be a plain 50/50 split.
  CHECK(served["p0a"] >= 115);
  CHECK(served["p0a"] <= 165);
  CHECK(served["p1"] == 200 - served["p0a"]);
  CHECK(metric(bulwark, "bulwark_cluster_panic") == 0);

  // Both back: priority 0 takes everything again.
  p0b.health_status = 200;
  REQUIRE(wait_for_log_lines(bulwark, health_change(p0b.address(), "unhealthy", "healthy")));
  served = spread(port, 60);
  CHECK(served["p1"] == 0);
  CHECK(served["p0a"] > 0);
  CHECK(served["p0b"] > 0);
}

TEST_CASE("panic mode spreads traffic over all endpoints when too few are routable") {
  std::string threshold;
  bool panic = true;
  SUBCASE("one of three routable is below the default panic_threshold of 50%") {}
  SUBCASE("panic_threshold 0% never panics") {
    threshold = "panic_threshold: 0%";
    panic = false;
  }
  CAPTURE(threshold);
  Backend a("a"), b("b"), c("c");
  b.health_status = 503;  // their checks fail, but they answer real requests
  c.health_status = 503;
  ProxyOptions options;
  options.cluster = fast_checks() + "\n" + threshold;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address() + ", " + c.address(), options));
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 1);
  CHECK(metric(bulwark, "bulwark_cluster_panic") == (panic ? 1 : 0));
  std::string clusters = clusters_body(bulwark);
  INFO(clusters);
  CHECK(contains(clusters, panic ? "\"panic\":true" : "\"panic\":false"));
  CHECK(json_number(clusters, "routable_endpoints") == 1);

  auto served = spread(bulwark.port("inbound"), 60);
  if (panic) {
    // Round robin over all three in each worker.
    CHECK(served["a"] >= 15);
    CHECK(served["b"] >= 15);
    CHECK(served["c"] >= 15);
  } else {
    CHECK(served["a"] == 60);
  }
}

// ---------------------------------------------------------------------------------------------
// Failover of tries that could not reach their endpoint

// Sends `n` GETs at once, each from its own thread on a new connection (so every worker takes
// part), and returns what each got.
std::vector<std::optional<Response>> burst(uint16_t port, int n) {
  std::vector<std::optional<Response>> responses(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  Gate start;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.pass(Millis{10000});
      responses[static_cast<size_t>(i)] = http_get(port, "/burst/" + std::to_string(i));
    });
  }
  start.open();
  for (auto& t : threads) t.join();
  return responses;
}

// Checks that every response of a burst is a 200 from `from` after at most `max_attempts` tries;
// returns how many took more than one.
int check_all_served(const std::vector<std::optional<Response>>& responses, const std::string& from,
                     int max_attempts) {
  int retried = 0;
  for (const auto& response : responses) {
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == from);
    const std::string attempts = response->get("x-bulwark-attempts");
    if (attempts.empty()) continue;
    ++retried;
    CHECK(std::stoi(attempts) <= max_attempts);
  }
  return retried;
}

// No ejection at all (every threshold off), so that every try meets the dead endpoint and only
// the retry's failover hides it.
constexpr const char* kNoEjection =
    "outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failure: 0,\n"
    "                    consecutive_local_origin_failure: 0}";

TEST_CASE(
    "a refused priority-0 endpoint costs no request: a retry that cannot connect goes to "
    "priority 1") {
  Backend backup("backup");
  RefusingPort dead_port;
  const std::string dead = dead_port.address();
  ProxyOptions options;
  bool ejects = true;
  SUBCASE("the implicit outlier detection") {}
  SUBCASE("outlier detection that never ejects") {
    options.cluster = kNoEjection;
    ejects = false;
  }
  CAPTURE(ejects);
  // No health checks: nothing but real traffic tells bulwark the endpoint is dead, and priority
  // 0 looks healthy, so the priority load sends priority 1 nothing.
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(dead + ", {address: " + backup.address() + ", priority: 1}", options));
  INFO(bulwark.logs_text());
  const uint16_t port = bulwark.port("inbound");

  const auto responses = burst(port, 50);
  const int retried = check_all_served(responses, "backup", 2);
  CHECK(backup.traffic == 50);
  if (ejects) {
    // 3 local-origin failures eject it; requests already past their pick still retry.
    CHECK(retried >= 3);
    CHECK(wait_for_log_lines(bulwark, ejected_log(dead, "3 consecutive local-origin failures")));
    CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(dead)) == 1);
    auto after = spread(port, 10);
    CHECK(after["backup"] == 10);
  } else {
    CHECK(retried == 50);  // each first try went to priority 0
    CHECK(count_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}) == 0);
  }
  CHECK(retries_of(bulwark, "connect-failure") == retried);
}

TEST_CASE("a retry that cannot connect falls through every priority group to one that can") {
  Backend last("last");
  RefusingPort dead0, dead1;
  ProxyOptions options;
  options.route = "retry: {attempts: 3}";
  options.cluster = kNoEjection;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(dead0.address() + ", {address: " + dead1.address() +
                                 ", priority: 1}, {address: " + last.address() + ", priority: 2}",
                             options));
  INFO(bulwark.logs_text());
  const auto responses = burst(bulwark.port("inbound"), 20);
  CHECK(check_all_served(responses, "last", 3) == 20);
  for (const auto& response : responses) CHECK(response->get("x-bulwark-attempts") == "3");
  CHECK(last.traffic == 20);
}

TEST_CASE("a refused endpoint among two of priority 0 costs no request") {
  Backend live("live");
  RefusingPort dead_port;
  const std::string dead = dead_port.address();
  ProxyOptions options;
  bool ejects = true;
  SUBCASE("the implicit outlier detection") {}
  SUBCASE("outlier detection that never ejects") {
    options.cluster = kNoEjection;
    ejects = false;
  }
  CAPTURE(ejects);
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(dead + ", " + live.address(), options));
  INFO(bulwark.logs_text());
  const uint16_t port = bulwark.port("inbound");

  const auto responses = burst(port, 50);
  const int retried = check_all_served(responses, "live", 2);
  CHECK(retried >= 3);  // round robin sends about half of the first tries to `dead`
  CHECK(live.traffic == 50);
  if (ejects) {
    CHECK(wait_for_log_lines(bulwark, ejected_log(dead, "3 consecutive local-origin failures")));
    CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 1);
  } else {
    CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 2);
  }
}

TEST_CASE("the implicit outlier detection never ejects a cluster's only endpoint") {
  RefusingPort dead_port;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(dead_port.address()));
  const uint16_t port = bulwark.port("inbound");
  for (int i = 0; i < 5; ++i) {
    // Refused every time, never no_healthy_endpoints: the app of a sidecar that restarts is
    // tried again at once when it is back.
    check_local_reply(http_get(port, "/alone"), 503, "upstream_connect_failure");
  }
  CHECK(count_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}) == 0);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(dead_port.address())) == 0);
}

// ---------------------------------------------------------------------------------------------
// Outlier detection

TEST_CASE(
    "an endpoint that answers 5xx while its health checks pass is ejected for its whole ejection "
    "time") {
  Backend bad("bad"), good("good");
  bad.traffic_status = 500;
  ProxyOptions options;
  options.route = "retry: {attempts: 1}";  // every 500 reaches the client until the ejection
  options.cluster = fast_checks() +
                    "\n"
                    "outlier_detection: {consecutive_5xx: 3, base_ejection_time: 1500ms,\n"
                    "                    max_ejection_time: 10s}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(bad.address() + ", " + good.address(), options));
  const uint16_t port = bulwark.port("inbound");
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(bad.address())) == 0);
  CHECK(metric(bulwark, "bulwark_outlier_ejections_total", endpoint_labels(bad.address())) == 0);

  // Each request on a new connection, so both workers send some of them to `bad`: the run of
  // 5xx is counted across workers, and the third 500 in all ejects it.
  auto send_until_errors = [&](int errors) {
    int seen = 0;
    for (int i = 0; i < 40 && seen < errors; ++i) {
      auto response = http_get(port, "/data");
      REQUIRE(response);
      INFO(describe(response));
      if (response->status == 500) {
        CHECK(response->get("x-upstream") == "bad");
        ++seen;
      } else {
        CHECK(response->status == 200);
      }
    }
    return seen;
  };
  INFO(bulwark.logs_text());
  REQUIRE(send_until_errors(3) == 3);
  CHECK(bad.traffic == 3);
  auto ejected = wait_for_log_line(bulwark, ejected_log(bad.address(), "3 consecutive 5xx"));
  REQUIRE(ejected);
  CHECK(contains(*ejected, "\"times_ejected\":1"));
  CHECK(json_number(*ejected, "ejection_ms").value_or(0) > 1400);
  CHECK(json_number(*ejected, "ejection_ms").value_or(0) <= 1500);
  const int64_t ejected_at = log_time_ms(*ejected);

  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(bad.address())) == 1);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(good.address())) == 0);
  CHECK(metric(bulwark, "bulwark_outlier_ejections_total", endpoint_labels(bad.address())) == 1);
  CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 1);
  std::string json = endpoint_json(bulwark, bad.address());
  {
    INFO(json);
    CHECK(contains(json, "\"routable\":false"));
    CHECK(contains(json, "\"ejected\":true"));
    CHECK(contains(json, "\"ejected_until\":\"20"));
    CHECK(json_number(json, "times_ejected") == 1);
    CHECK(json_number(json, "ejections_total") == 1);
    CHECK(contains(json, "\"state\":\"healthy\""));  // its checks never failed
  }

  // While ejected it gets no request, though its checks keep passing.
  const double passed = checks_total(bulwark, bad.address(), "success");
  auto served = spread(port, 10);
  CHECK(served["good"] == 10);
  CHECK(bad.traffic == 3);
  CHECK(eventually([&] { return checks_total(bulwark, bad.address(), "success") >= passed + 2; }));
  CHECK(metric(bulwark, "bulwark_endpoint_healthy", endpoint_labels(bad.address())) == 1);

  // It comes back after its whole ejection time, not at a passing check.
  auto returned = wait_for_log_line(bulwark, returned_log(bad.address()), Millis{5000});
  REQUIRE(returned);
  const int64_t ejected_for = log_time_ms(*returned) - ejected_at;
  CAPTURE(ejected_for);
  CHECK(ejected_for >= 1490);
  CHECK(ejected_for <= 1500 + 1000);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(bad.address())) == 0);
  CHECK(contains(endpoint_json(bulwark, bad.address()), "\"ejected_until\":null"));

  // Back in the rotation it still fails, and is ejected again, for twice as long.
  REQUIRE(send_until_errors(3) == 3);
  CHECK(bad.traffic == 6);
  auto again = wait_for_log_line(bulwark, ejected_log(bad.address(), "3 consecutive 5xx"),
                                 kDefaultTimeout, 2);
  REQUIRE(again);
  CHECK(contains(*again, "\"times_ejected\":2"));
  CHECK(json_number(*again, "ejection_ms").value_or(0) > 2900);
  CHECK(json_number(*again, "ejection_ms").value_or(0) <= 3000);
  CHECK(metric(bulwark, "bulwark_outlier_ejections_total", endpoint_labels(bad.address())) == 2);
  json = endpoint_json(bulwark, bad.address());
  INFO(json);
  CHECK(json_number(json, "times_ejected") == 2);
  CHECK(contains(json, "\"ejected\":true"));
}

TEST_CASE(
    "a refused endpoint is ejected after consecutive local-origin failures while retries hide it") {
  Backend good("good");
  RefusingPort dead_port;
  const std::string dead = dead_port.address();
  ProxyOptions options;
  // consecutive_local_origin_failure is 3 by default.
  options.cluster = "outlier_detection: {consecutive_gateway_failure: 1, base_ejection_time: 10s}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(dead + ", " + good.address(), options));
  const uint16_t port = bulwark.port("inbound");

  // One client connection, so one worker, whose round robin tries `dead` first every other
  // request; each such request is retried on `good`.
  ClientConn client(port);
  for (int i = 0; i < 6; ++i) {
    REQUIRE(client.send(make_request("GET", "/retried")));
    auto response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "good");
  }
  // Counted apart from gateway failures: one of those would have ejected it at once.
  auto ejected =
      wait_for_log_line(bulwark, ejected_log(dead, "3 consecutive local-origin failures"));
  REQUIRE_MESSAGE(ejected, bulwark.logs_text());
  CHECK(contains(*ejected, "\"times_ejected\":1"));
  REQUIRE(eventually([&] {
    return scrape_metric(bulwark, "bulwark_upstream_connect_failures_total",
                         {{"cluster", "app"}}) == 3;
  }));

  // Ejected: no more connect attempts, no more retries.
  for (int i = 0; i < 10; ++i) {
    REQUIRE(client.send(make_request("GET", "/direct")));
    auto response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK_FALSE(response->has("x-bulwark-attempts"));
  }
  CHECK(scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}}) ==
        3);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(dead)) == 1);
  CHECK(metric(bulwark, "bulwark_outlier_ejections_total", endpoint_labels(dead)) == 1);
  CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 1);
  CHECK(metric(bulwark, "bulwark_cluster_panic") == 0);  // 1 of 2 is not below 50 %
  // Without health_check: no health series and no "health" in /clusters.
  CHECK_FALSE(scrape_metric(bulwark, "bulwark_endpoint_healthy").has_value());
  CHECK_FALSE(scrape_metric(bulwark, "bulwark_health_checks_total").has_value());
  std::string json = endpoint_json(bulwark, dead);
  INFO(json);
  CHECK(contains(json, "\"outlier\":{\"ejected\":true"));
  CHECK_FALSE(contains(json, "\"health\""));
}

TEST_CASE(
    "a crashed endpoint ejected for 30 s is back at its first passing health check once "
    "restarted") {
  Backend a("a"), b("b");
  auto c = std::make_unique<Backend>("c");
  const std::string c_address = c->address();
  const uint16_t c_port = c->upstream.port();
  ProxyOptions options;
  bool unejects = true;
  std::string outlier;
  SUBCASE("the implicit outlier detection") {}
  SUBCASE("configured, with the default uneject_on_health_check_pass") {
    outlier = "\noutlier_detection: {base_ejection_time: 30s}";
  }
  SUBCASE("uneject_on_health_check_pass: false") {
    outlier = "\noutlier_detection: {base_ejection_time: 30s, uneject_on_health_check_pass: false}";
    unejects = false;
  }
  CAPTURE(outlier);
  // Checks every 100 ms, but a crash takes 10 failed ones to be seen by them: the short crash
  // is met by real traffic first, which ejects the endpoint for 30 s.
  options.cluster = fast_checks("healthy_threshold: 1, unhealthy_threshold: 10") + outlier;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address() + ", " + c_address, options));
  INFO(bulwark.logs_text());
  const uint16_t port = bulwark.port("inbound");
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));

  ClientLoop clients(port, 2);
  REQUIRE(eventually([&] { return c->traffic >= 5; }));
  c->upstream.stop();  // crashed: connections to its port are refused
  auto ejected =
      wait_for_log_line(bulwark, ejected_log(c_address, "3 consecutive local-origin failures"));
  REQUIRE(ejected);
  CHECK(json_number(*ejected, "ejection_ms").value_or(0) > 29000);

  // Restarted on the same port, well within its ejection.
  c.reset();
  std::optional<PortServer> revived;
  try {
    revived.emplace(c_port, "c-again");
  } catch (const std::exception& e) {
    MESSAGE("cannot listen on the crashed endpoint's port again, so the comeback is not tested: "
            << e.what());
    return;
  }
  const auto restarted = Clock::now();
  if (unejects) {
    std::vector<std::string> back = returned_log(c_address);
    back.back() = field("cause", "active health check passed");
    REQUIRE(wait_for_log_lines(bulwark, back, 1, Millis{3000}));
    REQUIRE(eventually([&] { return revived->traffic() > 0; }, Millis{3000}));
    const auto took = std::chrono::duration_cast<Millis>(Clock::now() - restarted).count();
    CAPTURE(took);
    CHECK(took < 2000);  // about one check interval (100 ms), not 30 s
    CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(c_address)) == 0);
    CHECK(contains(endpoint_json(bulwark, c_address), "\"ejected\":false"));
  } else {
    // Its checks pass, yet it sits out its ejection.
    REQUIRE(eventually([&] { return revived->checks() >= 5; }, Millis{5000}));
    CHECK(revived->traffic() == 0);
    CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(c_address)) == 1);
  }
  clients.stop();
  // The crash cost no client request: the tries that met it were retried elsewhere.
  auto failures = clients.failures();
  INFO("first failure: " << (failures.empty() ? std::string() : failures.front()));
  CHECK(failures.empty());
}

TEST_CASE("max_ejection_percent keeps one of two failing endpoints in service") {
  Backend a("a"), b("b");
  a.traffic_status = 500;
  b.traffic_status = 500;
  ProxyOptions options;
  options.route = "retry: {attempts: 1}";
  options.cluster =
      "outlier_detection: {consecutive_5xx: 2, base_ejection_time: 10s, max_ejection_percent: 50}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address(), options));
  ClientConn client(bulwark.port("inbound"));
  for (int i = 0; i < 12; ++i) {
    REQUIRE(client.send(make_request("GET", "/failing")));
    auto response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 500);  // the upstreams' own answers: never no_healthy_endpoints
  }
  REQUIRE(wait_for_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}));
  CHECK(count_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}) == 1);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected") == 1);  // the sum over both endpoints
  CHECK(metric(bulwark, "bulwark_cluster_routable_endpoints") == 1);
  CHECK(a.traffic + b.traffic == 12);
}

TEST_CASE("tries that time out count as gateway failures and get the endpoint ejected") {
  TestUpstream hanging(
      [](UpstreamConn& conn) {
        if (conn.read_request()) conn.wait_peer_close(Millis{10000});
      },
      "hanging");
  Backend good("good");
  ProxyOptions options;
  options.route =
      "timeout: 5s\n"
      "retry: {per_try_timeout: 150ms, retry_on: [connect-failure, reset, per-try-timeout]}";
  options.cluster =
      "outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failure: 2,\n"
      "                    base_ejection_time: 10s}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(hanging.address() + ", " + good.address(), options));
  INFO(bulwark.logs_text());
  // One client connection, so one worker, whose round robin sends every other request to
  // `hanging` first; after 150 ms that try is given up and retried on `good`.
  ClientConn client(bulwark.port("inbound"));
  for (int i = 0; i < 4; ++i) {
    REQUIRE(client.send(make_request("GET", "/slow-or-not")));
    auto response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "good");
  }
  CHECK(hanging.requests() == 2);
  auto ejected =
      wait_for_log_line(bulwark, ejected_log(hanging.address(), "2 consecutive gateway failures"));
  REQUIRE(ejected);

  // Ejected: no try waits for it any more.
  for (int i = 0; i < 6; ++i) {
    REQUIRE(client.send(make_request("GET", "/fast")));
    auto response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "good");
    CHECK_FALSE(response->has("x-bulwark-attempts"));
  }
  CHECK(hanging.requests() == 2);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(hanging.address())) == 1);
}

TEST_CASE("a response below 500 between 5xx responses starts the run again") {
  std::atomic<bool> always_fail{false};
  std::atomic<int> counter{0};
  TestUpstream flaky([&](UpstreamConn& conn) {
    while (conn.read_request()) {
      bool fail = always_fail || ++counter % 2 == 1;
      if (!conn.write_response(fail ? 500 : 200, fail ? "broken\n" : "fine\n")) return;
    }
  });
  ProxyOptions options;
  options.route = "retry: {attempts: 1}";
  options.cluster = "outlier_detection: {consecutive_5xx: 2, base_ejection_time: 10s}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(flaky.address(), options));
  INFO(bulwark.logs_text());
  const uint16_t port = bulwark.port("inbound");

  // 500, 200, 500, 200, ...: never two 5xx in a row.
  for (int i = 0; i < 20; ++i) {
    auto response = http_get(port, "/alternating");
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == (i % 2 == 0 ? 500 : 200));
  }
  CHECK(count_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}) == 0);
  CHECK(metric(bulwark, "bulwark_outlier_ejections_total", endpoint_labels(flaky.address())) == 0);
  CHECK(json_number(endpoint_json(bulwark, flaky.address()), "consecutive_5xx") == 0);

  // Two in a row eject it; it is the only endpoint, so nothing is left to route to.
  always_fail = true;
  for (int i = 0; i < 2; ++i) {
    auto response = http_get(port, "/failing");
    REQUIRE(response);
    CHECK(response->status == 500);
  }
  CHECK(wait_for_log_lines(bulwark, ejected_log(flaky.address(), "2 consecutive 5xx")));
  check_local_reply(http_get(port, "/after"), 503, "no_healthy_endpoints");
  CHECK(flaky.requests() == 22);
}

TEST_CASE("a try that timed out waiting for a pool connection is not held against the endpoint") {
  Gate gate;
  TestUpstream upstream([&gate](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (request->target == "/hold" && !gate.pass(Millis{10000})) return;
      if (!conn.write_response(200, request->target + "\n")) return;
    }
  });
  // One connection for the whole cluster: while /hold has it, the next request waits for it
  // until its per_try_timeout.
  std::string yaml =
      "workers: 1\n"
      "drain_delay: 0s\n"
      "admin: {address: 127.0.0.1:0}\n"
      "listeners:\n"
      "  - name: inbound\n"
      "    address: 127.0.0.1:0\n"
      "    routes:\n"
      "      - name: hold\n"
      "        match: {prefix: /hold}\n"
      "        cluster: app\n"
      "        timeout: 10s\n"
      "        retry: {attempts: 1}\n"
      "      - name: api\n"
      "        match: {prefix: /}\n"
      "        cluster: app\n"
      "        retry: {attempts: 1, per_try_timeout: 200ms}\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [" +
      upstream.address() +
      "]\n"
      "    pool: {max_connections: 1, max_pending: 10, pending_timeout: 5s}\n"
      "    outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failure: 1,\n"
      "                        base_ejection_time: 10s}\n";
  BulwarkProcess bulwark;
  bulwark.start(yaml);
  Gate::Opener open_at_end(gate);
  INFO(bulwark.logs_text());
  const uint16_t port = bulwark.port("inbound");

  ClientConn holder(port);
  REQUIRE(holder.send(make_request("GET", "/hold")));
  REQUIRE(upstream.wait_for_requests(1));
  auto waited = http_get(port, "/waits");
  check_local_reply(waited, 504, "upstream_timeout");
  CHECK(upstream.requests() == 1);
  // One gateway failure would have ejected it.
  CHECK(count_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}) == 0);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(upstream.address())) == 0);
  CHECK(json_number(endpoint_json(bulwark, upstream.address()), "consecutive_gateway_failures") ==
        0);

  gate.open();
  auto held = holder.read_response();
  REQUIRE(held);
  CHECK(held->status == 200);
  auto after = http_get(port, "/after");
  REQUIRE(after);
  CHECK(after->status == 200);
}

TEST_CASE(
    "failure_percent ejects an endpoint that fails every fourth request, never two in a row") {
  std::atomic<int> counter{0};
  TestUpstream flaky(
      [&](UpstreamConn& conn) {
        while (conn.read_request()) {
          const bool fail = ++counter % 4 == 0;
          if (!conn.write_response(fail ? 503 : 200, fail ? "busy\n" : "fine\n")) return;
        }
      },
      "flaky");
  Backend good("good");
  ProxyOptions options;
  options.cluster =
      "outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failure: 0, failure_percent: "
      "20,\n"
      "                    failure_percent_minimum_requests: 8, interval: 300ms,\n"
      "                    base_ejection_time: 10s}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(flaky.address() + ", " + good.address(), options));
  INFO(bulwark.logs_text());
  // One connection, one worker: round robin sends every other request to `flaky` first, and its
  // 503s are retried on `good`. The first try on `flaky` after 300 ms judges the interval.
  ClientConn client(bulwark.port("inbound"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int sent = 0;
  while (count_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    REQUIRE(client.send(make_request("GET", "/mostly-fine")));
    auto response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);  // every 503 was retried on the other endpoint
    ++sent;
  }
  REQUIRE(wait_for_log_lines(
      bulwark, ejected_log(flaky.address(), "at least 20% of tries failed in 300ms")));
  CHECK(sent >= 16);  // at least the minimum number of tries on `flaky`, at half the traffic

  // Ejected: `flaky` gets nothing more.
  const size_t flaky_requests = flaky.requests();
  for (int i = 0; i < 10; ++i) {
    auto response = http_get(bulwark.port("inbound"), "/after");
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  CHECK(flaky.requests() == flaky_requests);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(flaky.address())) == 1);
}

TEST_CASE("success_rate ejects the one endpoint that fails 5% of its requests, worse than its peers") {
  // Four good endpoints and one that answers one request in twenty with 503: never two in a
  // row, and far under any failure_percent one would set, but the group's figures single it out.
  std::atomic<int> counter{0};
  TestUpstream flaky(
      [&](UpstreamConn& conn) {
        while (conn.read_request()) {
          const bool fail = ++counter % 20 == 0;
          if (!conn.write_response(fail ? 503 : 200, fail ? "busy\n" : "fine\n")) return;
        }
      },
      "flaky");
  std::vector<std::unique_ptr<Backend>> good;
  std::string endpoints = flaky.address();
  for (int i = 0; i < 4; ++i) {
    good.push_back(std::make_unique<Backend>("good" + std::to_string(i)));
    endpoints += ", " + good.back()->address();
  }
  ProxyOptions options;
  options.workers = 1;
  options.cluster =
      "outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failure: 0, interval: 500ms,\n"
      "                    base_ejection_time: 10s,\n"
      "                    success_rate: {minimum_hosts: 3, request_volume: 20, stdev_factor: 1.9}}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(endpoints, options));
  INFO(bulwark.logs_text());
  ClientConn client(bulwark.port("inbound"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (count_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    REQUIRE(client.send(make_request("GET", "/mostly-fine")));
    auto response = client.read_response();
    REQUIRE(response);
    CHECK(response->status == 200);  // each 503 was retried on another endpoint
  }
  // Four perfect endpoints and one below: it is sqrt(4) = 2 deviations under the mean, past 1.9.
  REQUIRE(wait_for_log_lines(bulwark, {"\"msg\":\"endpoint ejected\"",
                                       field("endpoint", flaky.address()),
                                       "\"cause\":\"success rate 9", "of 5 endpoints)"}));
  CHECK(count_log_lines(bulwark, {"\"msg\":\"endpoint ejected\""}) == 1);  // only it

  const size_t flaky_requests = flaky.requests();
  for (int i = 0; i < 20; ++i) {
    auto response = http_get(bulwark.port("inbound"), "/after");
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  CHECK(flaky.requests() == flaky_requests);
  CHECK(metric(bulwark, "bulwark_endpoint_ejected", endpoint_labels(flaky.address())) == 1);
}

TEST_CASE("slow_start: an endpoint back from failing checks takes a small share at first, then its full share") {
  Backend a("a"), b("b");
  ProxyOptions options;
  options.workers = 1;
  options.cluster = fast_checks("healthy_threshold: 1, unhealthy_threshold: 1") +
                    "\nslow_start: {window: 4s, min_weight_percent: 10}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address(), options));
  const uint16_t port = bulwark.port("inbound");
  REQUIRE(wait_for_log_lines(bulwark, kFirstRoundDone));
  // The first set takes full weight at once: round robin, half each.
  auto start = spread(port, 20);
  CHECK(start["a"] == 10);
  CHECK(start["b"] == 10);

  b.health_status = 503;
  REQUIRE(wait_for_log_lines(bulwark, health_change(b.address(), "healthy", "unhealthy")));
  b.health_status = 200;
  REQUIRE(wait_for_log_lines(bulwark, health_change(b.address(), "unhealthy", "healthy")));
  // Back: its weight starts at 10% of a's and grows over 4 s, so of the next 60 requests
  // (well under a second) it takes far fewer than half.
  auto warming = spread(port, 60);
  INFO("a " << warming["a"] << ", b " << warming["b"]);
  CHECK(warming["b"] >= 1);
  CHECK(warming["b"] <= 15);
  // /clusters shows the share it gets now.
  const auto share = json_number(endpoint_json(bulwark, b.address()), "slow_start_weight_percent");
  REQUIRE(share);
  CHECK(*share >= 10);
  CHECK(*share < 50);
  CHECK(json_number(endpoint_json(bulwark, a.address()), "slow_start_weight_percent") ==
        std::optional<long>(100));
  // Once the window is over it takes half again.
  std::map<std::string, int> warm;
  CHECK(eventually(
      [&] {
        warm = spread(port, 20);
        return warm["b"] == 10;
      },
      Millis{10000}, Millis{200}));
  // Its full weight once the 4 s are over (round robin gave it half a little before).
  CHECK(eventually(
      [&] {
        return json_number(endpoint_json(bulwark, b.address()), "slow_start_weight_percent") ==
               std::optional<long>(100);
      },
      Millis{10000}, Millis{100}));
}
