// Adaptive concurrency against an upstream that queues: it works on four requests at a time,
// 20 ms each, and makes the rest wait, so its latency grows with what it is given. Forty clients
// call without pause. bulwark measures the minimum latency, then keeps the requests in flight
// near what the upstream can do: the upstream's queue stays short, and the requests over the
// limit get 503 adaptive_concurrency_limited at once instead of waiting in it.

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

// Four workers, 20 ms a request; what arrives beyond them waits for one. Counts the requests it
// holds (waiting or worked on), and the most it held since reset_peak().
class QueueingUpstream {
 public:
  QueueingUpstream()
      : upstream_(
            [this](UpstreamConn& conn) {
              while (auto request = conn.read_request(Millis{10000})) {
                enter();
                {
                  std::unique_lock<std::mutex> lock(mu_);
                  cv_.wait(lock, [this] { return busy_ < 4 || stopping_; });
                  ++busy_;
                }
                conn.pause(Millis{20});  // the work itself
                {
                  std::lock_guard<std::mutex> lock(mu_);
                  --busy_;
                }
                cv_.notify_one();
                leave();
                if (!conn.write_response(200, "done\n")) return;
              }
            },
            "queueing") {}
  ~QueueingUpstream() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    upstream_.stop();
  }

  std::string address() const { return upstream_.address(); }
  int peak() const { return peak_.load(); }
  void reset_peak() { peak_ = held_.load(); }

 private:
  void enter() {
    const int now = ++held_;
    int peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
  }
  void leave() { --held_; }

  std::atomic<int> held_{0};
  std::atomic<int> peak_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  int busy_ = 0;
  bool stopping_ = false;
  TestUpstream upstream_;
};

}  // namespace

TEST_CASE("adaptive concurrency keeps an upstream's queue short and refuses the excess at once") {
  QueueingUpstream upstream;
  ProxyOptions options;
  options.route = "timeout: 10s\nretry: {attempts: 1}";
  options.cluster =
      "pool: {max_connections: 200}\n"
      "adaptive_concurrency: {min_limit: 2, max_limit: 200, sample_window: 100ms,\n"
      "                       min_rtt_interval: 60s, jitter: 0%, min_rtt_samples: 10}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address(), options));
  const uint16_t port = bulwark.port("inbound");

  constexpr int kClients = 40;
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, limited{0}, other{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      ClientConn conn;
      while (!stop) {
        if (!conn.connected() && !conn.connect(port)) continue;
        if (!conn.send(make_request("GET", "/work"))) {
          conn.close();
          continue;
        }
        auto response = conn.read_response(false, Millis{15000});
        if (!response) {
          conn.close();
          ++other;
          continue;
        }
        if (response->status == 200) {
          ++ok;
        } else if (response->status == 503 &&
                   response->get("x-bulwark-reason") == "adaptive_concurrency_limited") {
          ++limited;
          std::this_thread::sleep_for(Millis{5});  // the client's own backoff, not a wait
        } else {
          ++other;
        }
      }
    });
  }
  // Let the controller measure and settle, then watch the upstream's queue for a second and a
  // half.
  std::this_thread::sleep_for(Millis{1500});
  upstream.reset_peak();
  std::this_thread::sleep_for(Millis{1500});
  const int peak = upstream.peak();
  stop = true;
  for (auto& t : clients) t.join();

  INFO("ok " << ok.load() << ", limited " << limited.load() << ", other " << other.load()
                << ", peak held " << peak);
  INFO(bulwark.logs_text());
  CHECK(ok > 50);
  CHECK(limited > 0);
  CHECK(other == 0);
  // Forty clients, but the upstream never held more than about what it can work on: without
  // the limit it holds all forty.
  CHECK(peak <= 20);
  const auto limit = scrape_metric(bulwark, "bulwark_adaptive_concurrency_limit", {{"cluster", "app"}});
  REQUIRE(limit);
  CHECK(*limit >= 2);
  CHECK(*limit <= 20);
  CHECK(scrape_metric(bulwark, "bulwark_adaptive_concurrency_rejected_total", {{"cluster", "app"}})
            .value_or(0) >= limited.load());
  const double min_rtt = scrape_metric(bulwark, "bulwark_adaptive_concurrency_min_rtt_seconds",
                                       {{"cluster", "app"}})
                             .value_or(0);
  CHECK(min_rtt >= 0.019);
  CHECK(min_rtt < 0.2);
  CHECK(scrape_metric(bulwark, "bulwark_local_replies_total",
                      {{"reason", "adaptive_concurrency_limited"}})
            .value_or(0) >= limited.load());
}

TEST_CASE("adaptive concurrency: a request that ends without an upstream answer gives its place back") {
  // One place only. The upstream fails twice, which opens the circuit; then every request is
  // answered circuit_open by bulwark itself, after it took its place. Were the place kept, the
  // next request would get adaptive_concurrency_limited.
  std::atomic<int> n{0};
  TestUpstream upstream([&](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      ++n;
      if (!conn.write_response(500, "broken\n")) return;
    }
  });
  ProxyOptions options;
  options.route = "retry: {attempts: 1}";
  options.cluster =
      "adaptive_concurrency: {min_limit: 1, max_limit: 1}\n"
      "circuit_breaker: {minimum_calls: 2, failure_rate_percent: 100, open_duration: 1m}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address(), options));
  const uint16_t port = bulwark.port("inbound");
  for (int i = 0; i < 2; ++i) {
    auto r = http_get(port, "/fail");
    REQUIRE(r);
    CHECK(r->status == 500);
  }
  for (int i = 0; i < 5; ++i) {
    auto r = http_get(port, "/open");
    REQUIRE(r);
    CHECK(r->status == 503);
    CHECK(r->get("x-bulwark-reason") == "circuit_open");
  }
  CHECK(n.load() == 2);
}

TEST_CASE("adaptive concurrency: failures to reach the cluster measure nothing") {
  // Refused connects answer in microseconds: taken for the minimum latency, they would hold the
  // limit at min_limit once the upstream is back. They are not samples.
  RefusingPort refused;
  ProxyOptions options;
  options.route = "retry: {attempts: 1}";
  options.cluster = "adaptive_concurrency: {min_limit: 2, max_limit: 50, min_rtt_samples: 5}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config("127.0.0.1:" + std::to_string(refused.port()), options));
  for (int i = 0; i < 10; ++i) {
    auto r = http_get(bulwark.port("inbound"), "/down");
    REQUIRE(r);
    CHECK(r->status == 503);
    CHECK(r->get("x-bulwark-reason") == "upstream_connect_failure");
  }
  CHECK(scrape_metric(bulwark, "bulwark_adaptive_concurrency_min_rtt_seconds", {{"cluster", "app"}})
            .value_or(-1) == 0);
  CHECK(scrape_metric(bulwark, "bulwark_adaptive_concurrency_in_flight", {{"cluster", "app"}})
            .value_or(-1) == 0);
}

TEST_CASE("adaptive concurrency: its refusals still count after a reload replaces the controller") {
  Event release;
  TestUpstream upstream([&](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (request->target == "/hold") release.wait(Millis{10000});
      if (!conn.write_response(200, "ok\n")) return;
    }
  });
  ProxyOptions options;
  options.cluster = "adaptive_concurrency: {min_limit: 1, max_limit: 1}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address(), options));
  const uint16_t port = bulwark.port("inbound");
  ClientConn held(port);
  REQUIRE(held.send(make_request("GET", "/hold")));
  REQUIRE(eventually([&] { return upstream.requests() == 1; }));
  auto refused = http_get(port, "/more");
  REQUIRE(refused);
  CHECK(refused->get("x-bulwark-reason") == "adaptive_concurrency_limited");
  CHECK(scrape_metric(bulwark, "bulwark_adaptive_concurrency_in_flight", {{"cluster", "app"}})
            .value_or(-1) == 1);
  // /clusters says the same, and that the minimum is still being measured.
  auto clusters = http_get(bulwark.admin_port(), "/clusters");
  REQUIRE(clusters);
  CHECK(clusters->body.find("\"adaptive_concurrency\":{\"limit\":1,\"in_flight\":1,\"min_rtt_us\":0,"
                            "\"measuring\":true,\"rejected\":1}") != std::string::npos);
  release.set();
  REQUIRE(held.read_response());

  options.cluster = "adaptive_concurrency: {min_limit: 1, max_limit: 2}";
  write_file(bulwark.config_path(), proxy_config(upstream.address(), options));
  REQUIRE(bulwark.signal(SIGHUP));
  REQUIRE(wait_for_log_lines(bulwark, {"\"msg\":\"config reloaded\""}));
  CHECK(scrape_metric(bulwark, "bulwark_adaptive_concurrency_rejected_total", {{"cluster", "app"}})
            .value_or(-1) == 1);
}

TEST_CASE("over the adaptive limit, requests wait in the route's bulkhead queue when it has one") {
  // The limit stays at min_limit (2) for the whole test: the minimum latency is still being
  // measured (1,000 samples). The upstream answers each request after 150 ms. Six clients at
  // once: two go, the others wait for a permit.
  TestUpstream upstream(
      [](UpstreamConn& conn) {
        while (auto request = conn.read_request()) {
          if (!conn.pause(Millis{150})) return;
          if (!conn.write_response(200, "done\n")) return;
        }
      },
      "slow");
  auto run_six = [&](const std::string& bulkhead, std::vector<int>* statuses,
                     std::vector<Millis>* times) {
    ProxyOptions options;
    options.workers = 2;
    options.route = bulkhead;
    options.cluster = "adaptive_concurrency: {min_limit: 2, max_limit: 100, min_rtt_samples: 1000}";
    BulwarkProcess bulwark;
    bulwark.start(proxy_config(upstream.address(), options));
    std::vector<std::thread> clients;
    std::mutex mu;
    const auto start = Clock::now();
    for (int i = 0; i < 6; ++i) {
      clients.emplace_back([&, i] {
        auto response = http_get(bulwark.port("inbound"), "/q/" + std::to_string(i));
        const auto took = std::chrono::duration_cast<Millis>(Clock::now() - start);
        std::lock_guard<std::mutex> lock(mu);
        statuses->push_back(response ? response->status : 0);
        times->push_back(took);
      });
    }
    for (auto& c : clients) c.join();
    std::sort(statuses->begin(), statuses->end());
    std::sort(times->begin(), times->end());
  };

  SUBCASE("a queue long enough: everyone is served, two at a time") {
    std::vector<int> statuses;
    std::vector<Millis> times;
    run_six("bulkhead: {max_concurrent: 100, max_queued: 10, queue_timeout: 3s}", &statuses,
            &times);
    CHECK(statuses == std::vector<int>{200, 200, 200, 200, 200, 200});
    CHECK(times.back() >= Millis{440});  // three waves of 150 ms
  }
  SUBCASE("a queue timeout shorter than the wait: refused when it expires") {
    std::vector<int> statuses;
    std::vector<Millis> times;
    run_six("bulkhead: {max_concurrent: 100, max_queued: 10, queue_timeout: 100ms}", &statuses,
            &times);
    CHECK(std::count(statuses.begin(), statuses.end(), 200) == 2);
    CHECK(std::count(statuses.begin(), statuses.end(), 503) == 4);
    CHECK(times[0] >= Millis{90});  // the refused waited their queue_timeout
  }
  SUBCASE("no bulkhead queue: refused at once") {
    std::vector<int> statuses;
    std::vector<Millis> times;
    run_six("bulkhead: {max_concurrent: 100, max_queued: 0}", &statuses, &times);
    CHECK(std::count(statuses.begin(), statuses.end(), 200) == 2);
    CHECK(std::count(statuses.begin(), statuses.end(), 503) == 4);
    CHECK(times[0] < Millis{100});
  }
}

TEST_CASE("requests waiting for an adaptive permit are served in order over all workers") {
  // A limit held at 2, an upstream that answers in 20 ms, four workers and eight clients that
  // each send request after request on a connection of their own. Served first come first served
  // over all workers, each waits about 8 x 20 / 2 = 80 ms; a worker that kept handing its own
  // freed permits to its own next waiter would starve the clients of the others.
  TestUpstream upstream(
      [](UpstreamConn& conn) {
        while (auto request = conn.read_request()) {
          if (!conn.pause(Millis{20})) return;
          if (!conn.write_response(200, "done\n")) return;
        }
      },
      "paced");
  ProxyOptions options;
  options.workers = 4;
  options.route = "bulkhead: {max_concurrent: 100, max_queued: 100, queue_timeout: 3s}";
  options.cluster = "adaptive_concurrency: {min_limit: 2, max_limit: 100, min_rtt_samples: 100000}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address(), options));
  constexpr int kClients = 8;
  std::vector<int> served(kClients, 0), refused(kClients, 0);
  std::vector<Millis> worst(kClients, Millis{0});
  std::vector<std::thread> clients;
  const auto end = Clock::now() + Millis{2000};
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      ClientConn conn(bulwark.port("inbound"));
      while (Clock::now() < end) {
        const auto t0 = Clock::now();
        if (!conn.send(make_request("GET", "/fair/" + std::to_string(c)))) return;
        auto response = conn.read_response(false, Millis{5000});
        if (!response) return;
        worst[c] = std::max(worst[c], std::chrono::duration_cast<Millis>(Clock::now() - t0));
        (response->status == 200 ? served : refused)[c]++;
      }
    });
  }
  for (auto& t : clients) t.join();
  const int most = *std::max_element(served.begin(), served.end());
  for (int c = 0; c < kClients; ++c) {
    CAPTURE(c);
    CAPTURE(served[c]);
    CAPTURE(most);
    CHECK(refused[c] == 0);
    CHECK(worst[c] < Millis{1000});
    CHECK(served[c] * 3 >= most);
  }
}

TEST_CASE("queue_timeout bounds a request's whole wait: for a bulkhead slot, then for a permit") {
  // A limit held at 2, a bulkhead of 3. Two long requests hold both permits; a third takes the
  // last slot and waits for a permit; a fourth waits for a slot, gets the third's when that
  // one's queue_timeout ends, and then waits for a permit only for what is left of its own.
  TestUpstream upstream(
      [](UpstreamConn& conn) {
        while (auto request = conn.read_request()) {
          if (!conn.pause(Millis{1500})) return;
          if (!conn.write_response(200, "done\n")) return;
        }
      },
      "long");
  ProxyOptions options;
  options.workers = 1;
  options.route = "bulkhead: {max_concurrent: 3, max_queued: 10, queue_timeout: 600ms}";
  options.cluster = "adaptive_concurrency: {min_limit: 2, max_limit: 100, min_rtt_samples: 100000}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address(), options));
  ClientConn a(bulwark.port("inbound")), b(bulwark.port("inbound")), c(bulwark.port("inbound")),
      d(bulwark.port("inbound"));
  REQUIRE(a.send(make_request("GET", "/a")));
  REQUIRE(b.send(make_request("GET", "/b")));
  REQUIRE(eventually([&] { return upstream.requests() == 2; }));
  REQUIRE(c.send(make_request("GET", "/c")));
  REQUIRE(eventually([&] {
    return scrape_metric(bulwark, "bulwark_bulkhead_queued", {{"route", "api"}}) == 1;
  }));
  const auto d_sent = Clock::now();
  REQUIRE(d.send(make_request("GET", "/d")));
  auto rc = c.read_response();
  REQUIRE(rc);
  CHECK(rc->get("x-bulwark-reason") == "adaptive_concurrency_limited");
  auto rd = d.read_response();
  const auto d_took = Clock::now() - d_sent;
  REQUIRE(rd);
  INFO(describe(rd));
  CHECK(rd->status == 503);
  CHECK(d_took >= Millis{550});
  CHECK(d_took < Millis{900});  // not 600 ms for the slot plus 600 more for a permit
}
