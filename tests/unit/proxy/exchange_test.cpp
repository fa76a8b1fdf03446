// The Exchange against a fake stream and a fake clock: what it decides from a request head
// alone (routing, the request target's form, admission, the circuit breaker, a cluster without
// endpoints, the request id), as a client connection would see it through ExchangeStream. The
// policies' time is a FakeClock the test moves (a rate limit refills, a breaker half-opens
// without waiting). The exchange runs on a real worker loop (its timers and pools are the
// worker's), on the worker's own thread; no client socket exists, and an admitted request's
// first try is cut when the test ends the exchange (the endpoint is the refused port 9).
#include "proxy/exchange.h"

#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "config/loader.h"
#include "filters/clock.h"
#include "proxy/cluster.h"
#include "proxy/codec.h"
#include "proxy/metrics.h"
#include "proxy/route_state.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

constexpr const char* kYaml = R"(
listeners:
  - name: inbound
    address: 127.0.0.1:0
    routes:
      - name: limited
        match: {prefix: /limited}
        cluster: app
        rate_limit: {requests_per_second: 1, burst: 1}
      - name: app
        match: {prefix: /app}
        cluster: app
      - name: guarded
        match: {prefix: /guarded}
        cluster: guarded
clusters:
  - name: app
    endpoints: [127.0.0.1:9]
  - name: guarded
    endpoints: [127.0.0.1:9]
    circuit_breaker: {minimum_calls: 2, window: 10s, open_duration: 30s, half_open_calls: 1}
)";

// What the exchange asked of its connection.
struct FakeStream : ExchangeStream {
  void send_interim(const http::MessageHead&) override { ++interims; }
  void send_head(const http::MessageHead& response, const HeadInfo&) override {
    head_status = response.status;
  }
  void send_body(const char*, size_t n, BufferBlock*) override { body_bytes += n; }
  void send_end() override { ended = true; }
  size_t send_local_reply(const LocalReply& reply) override {
    replies.push_back(reply);
    request_ids.emplace_back(reply.request_id);
    return 0;
  }
  void flush(bool) override { ++flushes; }
  bool writing() const override { return false; }
  bool has_unsent() const override { return false; }
  void cut() override { cut_called = true; }
  void close() override { closed_called = true; }
  bool end_sending() override { return true; }
  void request_forwarded(bool) override {}
  bool request_buffer_full() const override { return false; }
  void update_reading() override {}
  void start_tunnel() override {}
  void exchange_done() override { done = true; }
  bool closed() const override { return closed_called; }
  std::string_view client_address() const override { return "192.0.2.7"; }
  const TlsSession* tls() const override { return nullptr; }
  const sockaddr* original_destination() const override { return nullptr; }

  std::vector<LocalReply> replies;
  std::vector<std::string> request_ids;
  int interims = 0, head_status = 0, flushes = 0;
  size_t body_bytes = 0;
  bool ended = false, cut_called = false, closed_called = false, done = false;
};

// What one request head got from the exchange.
struct Outcome {
  http::ParserCallbacks::HeadAction action = http::ParserCallbacks::kProceed;
  bool head_seen = false;
  FakeStream stream;
};

// A worker on its own thread, running the config above. Its clusters have no endpoint set.
class Harness {
 public:
  Harness() {
    config::LoadResult loaded = config::load_config_string(kYaml, "exchange.yaml");
    for (const auto& e : loaded.errors) FAIL_CHECK(e.to_string());
    REQUIRE(loaded.ok());
    config_ = loaded.config;
    GenerationSpec spec;
    spec.number = 1;
    spec.config = config_;
    for (size_t i = 0; i < config_->clusters.size(); ++i) {
      auto state = std::make_shared<ClusterState>(config_, config_->clusters[i], i, clock_);
      spec.clusters.push_back(state);
      clusters_.push_back(state);
    }
    for (const auto& l : config_->listeners) {
      spec.routes.emplace_back();
      for (const auto& r : l.routes)
        spec.routes.back().push_back(std::make_shared<RouteState>(config_, r, clock_, 1));
    }
    spec.stats = std::make_shared<WorkerStats>(*config_);
    spec.process_limit = std::make_shared<ConnectionLimit>();
    worker_ = std::make_unique<Worker>(0, std::move(spec), [] {});
    worker_->start();
  }
  ~Harness() {
    worker_->stop();
    worker_->join();
  }

  // Parses `request` and gives its head to a new exchange, on the worker's thread; ends the
  // exchange the way a closing connection would, then reports what it said.
  Outcome send(const std::string& request) {
    std::promise<Outcome> result;
    worker_->post([&] {
      Outcome out;
      Worker& w = *worker_;
      Exchange* e = w.exchanges().acquire(*w.current().listeners[0], out.stream);
      struct Feed : http::ParserCallbacks {
        Exchange* e;
        Outcome* out;
        HeadAction on_head(http::MessageHead& head) override {
          out->head_seen = true;
          out->action = e->on_request_head(head);
          return kPause;
        }
        void on_body(const char*, size_t) override {}
        void on_message_complete() override {}
      } feed;
      feed.e = e;
      feed.out = &out;
      http::Parser parser(http::Parser::Type::kRequest, &feed);
      parser.execute(request.data(), 0, request.size());
      e->on_stream_closed();
      w.exchanges().release(e);
      result.set_value(std::move(out));
    });
    return result.get_future().get();
  }

  // The policies' clock. Moved only between send()s: the worker reads it inside them.
  filters::FakeClock& clock() { return clock_; }
  ClusterState& cluster(size_t i) { return *clusters_[i]; }

  uint64_t local_replies(LocalReason reason) {
    std::promise<uint64_t> n;
    worker_->post(
        [&] { n.set_value(worker_->local_replies()[static_cast<size_t>(reason)].value()); });
    return n.get_future().get();
  }

 private:
  filters::FakeClock clock_;
  std::shared_ptr<const config::Config> config_;
  std::vector<std::shared_ptr<ClusterState>> clusters_;
  std::unique_ptr<Worker> worker_;
};

TEST_CASE("exchange: a request no route matches gets 404 no_route, and the connection stays") {
  Harness h;
  Outcome o = h.send("GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(o.head_seen);
  REQUIRE(o.stream.replies.size() == 1);
  CHECK(o.stream.replies[0].status == 404);
  CHECK(o.stream.replies[0].reason == LocalReason::kNoRoute);
  CHECK_FALSE(o.stream.replies[0].close_after);
  CHECK(o.action == http::ParserCallbacks::kProceed);
  CHECK(o.stream.flushes >= 1);
  CHECK(h.local_replies(LocalReason::kNoRoute) == 1);
}

TEST_CASE("exchange: an unmatched request with a body pauses the parser and closes after") {
  Harness h;
  Outcome o = h.send("POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
  REQUIRE(o.stream.replies.size() == 1);
  CHECK(o.stream.replies[0].reason == LocalReason::kNoRoute);
  CHECK(o.stream.replies[0].close_after);  // the body is not read: no request can follow
  CHECK(o.action == http::ParserCallbacks::kPause);
}

TEST_CASE("exchange: CONNECT and malformed request targets are refused before routing") {
  Harness h;
  Outcome connect = h.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
  REQUIRE(connect.stream.replies.size() == 1);
  CHECK(connect.stream.replies[0].status == 501);
  CHECK(connect.stream.replies[0].close_after);
  Outcome star = h.send("GET * HTTP/1.1\r\nHost: a\r\n\r\n");  // asterisk-form is for OPTIONS
  REQUIRE(star.stream.replies.size() == 1);
  CHECK(star.stream.replies[0].status == 400);
  Outcome authority = h.send("GET http://bad host/app HTTP/1.1\r\nHost: a\r\n\r\n");
  // A space in the target never reaches the exchange: the codec refuses the head.
  CHECK_FALSE(authority.head_seen);
  Outcome userinfo = h.send("GET http://user@host/app HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(userinfo.stream.replies.size() == 1);
  CHECK(userinfo.stream.replies[0].status == 400);
}

TEST_CASE("exchange: the rate limit's 429 carries Retry-After and counts") {
  Harness h;
  // Admitted: the cluster has no endpoints yet.
  auto admitted = [](const Outcome& o) {
    return o.stream.replies.size() == 1 && o.stream.replies[0].reason == LocalReason::kNoEndpoints;
  };
  CHECK(admitted(h.send("GET /limited HTTP/1.1\r\nHost: a\r\n\r\n")));
  Outcome second = h.send("GET /limited HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(second.stream.replies.size() == 1);
  CHECK(second.stream.replies[0].status == 429);
  CHECK(second.stream.replies[0].retry_after_s == 1);
  CHECK(h.local_replies(LocalReason::kRateLimited) == 1);
  // Half a second later the bucket holds half a token: still refused, and still told to come
  // back within a second.
  h.clock().advance(std::chrono::milliseconds(500));
  Outcome third = h.send("GET /limited HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(third.stream.replies.size() == 1);
  CHECK(third.stream.replies[0].status == 429);
  CHECK(third.stream.replies[0].retry_after_s == 1);
  // A whole second after the first: refilled, admitted.
  h.clock().advance(std::chrono::milliseconds(500));
  CHECK(admitted(h.send("GET /limited HTTP/1.1\r\nHost: a\r\n\r\n")));
  CHECK(h.local_replies(LocalReason::kRateLimited) == 2);
}

TEST_CASE("exchange: an open circuit answers 503 circuit_open until its open time is over") {
  Harness h;
  filters::CircuitBreaker& breaker = *h.cluster(1).circuit;
  for (int i = 0; i < 2; ++i) breaker.try_acquire().record(filters::CallOutcome::kFailure, 0);
  REQUIRE(breaker.state() == filters::CircuitState::kOpen);
  Outcome refused = h.send("GET /guarded HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(refused.stream.replies.size() == 1);
  CHECK(refused.stream.replies[0].status == 503);
  CHECK(refused.stream.replies[0].reason == LocalReason::kCircuitOpen);
  CHECK(h.local_replies(LocalReason::kCircuitOpen) == 1);
  auto reason = [&](const char* path) {
    Outcome o = h.send(std::string("GET ") + path + " HTTP/1.1\r\nHost: a\r\n\r\n");
    return o.stream.replies.size() == 1 ? o.stream.replies[0].reason : LocalReason::kCount;
  };
  // Another route's cluster has no breaker: admitted (and without endpoints).
  CHECK(reason("/app") == LocalReason::kNoEndpoints);
  h.clock().advance(std::chrono::seconds(29));
  CHECK(reason("/guarded") == LocalReason::kCircuitOpen);
  // After open_duration: half-open, and this request is its one probe. It reached no endpoint,
  // so it is no evidence either way: the probe goes back and the breaker stays half-open.
  h.clock().advance(std::chrono::seconds(1));
  CHECK(reason("/guarded") == LocalReason::kNoEndpoints);
  CHECK(breaker.state() == filters::CircuitState::kHalfOpen);
  CHECK(h.local_replies(LocalReason::kCircuitOpen) == 2);
}

TEST_CASE("exchange: a cluster without endpoints answers 503 no_endpoints at once") {
  Harness h;
  Outcome o = h.send("GET /app HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(o.stream.replies.size() == 1);
  CHECK(o.stream.replies[0].status == 503);
  CHECK(o.stream.replies[0].reason == LocalReason::kNoEndpoints);
  CHECK(o.stream.replies[0].attempts == 1);
  // Decided inside the head's callback, before the parser reports the (empty) request complete:
  // a GET is read whole all the same, and its connection carries the next request.
  CHECK_FALSE(o.stream.replies[0].close_after);
  Outcome post = h.send("POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
  REQUIRE(post.stream.replies.size() == 1);
  CHECK(post.stream.replies[0].close_after);  // its body is not read
}

TEST_CASE("exchange: a usable client request id is kept, a missing or oversized one is replaced") {
  Harness h;
  Outcome kept = h.send("GET /nowhere HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n");
  REQUIRE(kept.stream.request_ids.size() == 1);
  CHECK(kept.stream.request_ids[0] == "abc-123");
  Outcome none = h.send("GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(none.stream.request_ids.size() == 1);
  CHECK(none.stream.request_ids[0].size() == 32);
  const std::string long_id(http::kMaxRequestIdLength + 1, 'x');
  Outcome oversized =
      h.send("GET /nowhere HTTP/1.1\r\nHost: a\r\nX-Request-Id: " + long_id + "\r\n\r\n");
  REQUIRE(oversized.stream.request_ids.size() == 1);
  CHECK(oversized.stream.request_ids[0].size() == 32);
  CHECK(oversized.stream.request_ids[0] != long_id);
}

}  // namespace
}  // namespace bulwark
