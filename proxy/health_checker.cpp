#include "proxy/health_checker.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "filters/health.h"
#include "filters/priority.h"
#include "filters/slow_start.h"
#include "proxy/headers.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/tls_transport.h"

namespace bulwark {

namespace {

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t to_ms(filters::Micros us) {
  return us <= 0 ? 0 : static_cast<uint64_t>((us + 999) / 1000);
}

// A check reads the response head only; a longer one is not a health endpoint's answer.
constexpr size_t kMaxCheckResponseHead = 8 * 1024;

}  // namespace

// One check's connection, owned by its Target: it ends (the socket closes) when the check ends
// or its endpoint leaves. Each callback may end the check, and does so last. It speaks HTTP/1
// with the code the proxy's tries use: the same transport, the same response codec.
struct HealthChecker::Probe final : private Transport::Callbacks, private http::ParserCallbacks {
  Probe(HealthChecker& owner, Target& target)
      : owner(owner),
        target(target),
        parser(http::Parser::Type::kResponse, this),
        transport(make_transport(owner, target)) {
    parser.set_max_head_size(kMaxCheckResponseHead);
    transport->attach(this, &in);
  }
  ~Probe() {
    transport.reset();  // first: it may be writing `out`, reading into `in`
    in.release(owner.buffers_);
  }
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  // Over TLS when the check says so (by default, when the cluster's traffic is), with the
  // cluster's context: the check proves what requests will meet, certificate included.
  static TransportPtr make_transport(HealthChecker& owner, Target& target);

  int connect(const sockaddr* addr) { return transport->connect(addr); }
  void on_transport_connected(int status) override;
  void on_transport_read(ssize_t nread) override;
  // A failed write shows up as a failed or closed read.
  void on_transport_written(int) override {}
  // The response head is all a check needs: its status.
  HeadAction on_head(http::MessageHead& head) override {
    status = head.status;
    return kPause;
  }
  void on_body(const char*, size_t) override {}
  void on_message_complete() override {}

  HealthChecker& owner;
  Target& target;
  http::Parser parser;
  int status = 0;  // of the response head, once parsed
  InputBuffer in;
  Outbox out;
  TransportPtr transport;
};

// One endpoint's checks. Freed when its endpoint leaves the cluster or the checker stops.
struct HealthChecker::Target {
  Target(HealthChecker& owner, const Endpoint& e, const config::HealthCheckConfig& c)
      : owner(owner),
        endpoint(e),
        health(c),
        timer(Timer::make<&Target::check_due>(owner.loop_, this)) {}
  void check_due() { owner.start_check(*this); }
  void timed_out() {
    const auto timeout = owner.cluster_.config.health_check->timeout.count();
    owner.finish_check(*this, CheckResult::kTimeout,
                       "no answer within " + std::to_string(timeout) + "ms");
  }

  HealthChecker& owner;
  Endpoint endpoint;
  filters::EndpointHealth health;
  TlsSessionCache tls_sessions;  // checks over TLS resume the last one's session (outlives probe)
  std::unique_ptr<Probe> probe;  // while a check runs
  Timer timer;                   // the next check, or the running check's timeout
  bool has_result = false;
  CheckResult last_result = CheckResult::kSuccess;
  std::string last_detail;
  int64_t last_check_unix_ms = 0;
  std::array<uint64_t, static_cast<size_t>(CheckResult::kCount)> checks{};
};

struct HealthChecker::Carried {
  std::string address;
  filters::EndpointHealth health;
  bool has_result;
  CheckResult last_result;
  std::string last_detail;
  int64_t last_check_unix_ms;
  std::array<uint64_t, static_cast<size_t>(CheckResult::kCount)> checks;
};

namespace {

// A share (0..1) as "97.5%".
std::string percent(double share) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f%%", share * 100);
  return text;
}

}  // namespace

HealthChecker::HealthChecker(uv_loop_t* loop, ClusterState& cluster, const filters::Clock& clock)
    : loop_(loop),
      cluster_(cluster),
      clock_(clock),
      random_(static_cast<uint64_t>(clock.now()) ^ (cluster.index + 1) * 0x9e3779b97f4a7c15ULL),
      sweep_timer_(Timer::make<&HealthChecker::sweep>(loop, this)),
      success_rate_timer_(Timer::make<&HealthChecker::judge_success_rate>(loop, this)),
      first_round_done_(!cluster.config.health_check) {}

HealthChecker::~HealthChecker() { stop(); }

std::shared_ptr<const EndpointSet> HealthChecker::adopt(std::shared_ptr<EndpointSet> next) {
  const config::ClusterConfig& config = cluster_.config;
  const size_t n = next->endpoints.size();
  // Endpoints that stayed (by address) keep their status object, hence their check state.
  std::vector<long> new_to_old(n, -1);
  if (current_ != nullptr) {
    const auto& old = current_->endpoints;
    std::vector<bool> taken(old.size(), false);
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < old.size(); ++j) {
        if (taken[j] || old[j].address != next->endpoints[i].address) continue;
        taken[j] = true;
        new_to_old[i] = static_cast<long>(j);
        next->endpoints[i].status = old[j].status;
        break;
      }
    }
    // New from DNS or a reload: it warms up (the first set takes full weight at once).
    for (size_t i = 0; i < n; ++i) {
      if (new_to_old[i] < 0) start_warming(next->endpoints[i]);
    }
  }
  // Every cluster has outlier detection: without a section, the implicit one (local-origin
  // failures only). The state of the endpoints that stayed goes on, under this cluster's
  // settings (a reload may have changed them).
  const config::OutlierDetectionConfig& outlier_config =
      config.outlier_detection ? *config.outlier_detection : config::implicit_outlier_detection();
  next->outlier = current_ != nullptr && current_->outlier != nullptr
                      ? current_->outlier->remapped(new_to_old, outlier_config)
                      : std::make_shared<filters::OutlierDetector>(outlier_config, clock_, n);
  if (config.health_check && !stopped_) {
    std::vector<Target*> targets(n, nullptr);
    for (size_t i = 0; i < n; ++i) {
      const long old = new_to_old[i];
      if (old >= 0 && static_cast<size_t>(old) < targets_.size() &&
          targets_[static_cast<size_t>(old)] != nullptr) {
        targets[i] = targets_[static_cast<size_t>(old)];
        targets_[static_cast<size_t>(old)] = nullptr;
        continue;
      }
      auto* t = new Target(*this, next->endpoints[i], *config.health_check);
      uint64_t delay_ms = 0;
      if (const Carried* before = carried(next->endpoints[i].address)) {
        // Checked before a reload changed the cluster's settings: its state, counts and
        // results go on, and so does its check rhythm.
        t->health.restore(before->health);
        t->has_result = before->has_result;
        t->last_result = before->last_result;
        t->last_detail = before->last_detail;
        t->last_check_unix_ms = before->last_check_unix_ms;
        t->checks = before->checks;
        delay_ms = to_ms(t->health.next_delay(random_.next()));
      }
      // A new endpoint is checked at once (at start-up: the first round). It is routable while
      // pending, so the sooner its first result comes, the better.
      t->timer.start(delay_ms);
      targets[i] = t;
    }
    for (Target* t : targets_) {
      if (t != nullptr) retire(t);
    }
    targets_ = std::move(targets);
  }
  carried_.clear();  // taken over by the first set
  current_ = std::move(next);
  if (current_->outlier != nullptr) arm_sweep();
  // Restarted at each new set: an interval judges one set's endpoints.
  const auto& outlier = config.outlier_detection;
  // Started once: a new endpoint set (DNS) does not restart the interval being judged. A reload
  // that changes the cluster makes a new checker, with its own timer.
  if (outlier && outlier->success_rate && !stopped_) {
    if (!success_rate_timer_.active()) {
      const auto interval = static_cast<uint64_t>(outlier->interval.count());
      success_rate_timer_.start(interval, interval);
    }
  } else if (!stopped_) {
    success_rate_timer_.stop();
  }
  return current_;
}

void HealthChecker::inherit(const HealthChecker& old) {
  current_ = old.current_;
  if (old.first_round_done_) first_round_done_ = true;
  carried_.clear();
  for (const Target* t : old.targets_) {
    if (t == nullptr) continue;
    carried_.push_back({t->endpoint.address, t->health, t->has_result, t->last_result,
                        t->last_detail, t->last_check_unix_ms, t->checks});
  }
}

const HealthChecker::Carried* HealthChecker::carried(const std::string& address) const {
  for (const Carried& c : carried_) {
    if (c.address == address) return &c;
  }
  return nullptr;
}

void HealthChecker::retire(Target* t) { delete t; }

void HealthChecker::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (Target* t : targets_) {
    if (t != nullptr) retire(t);
  }
  targets_.clear();
  sweep_timer_.close();
  success_rate_timer_.close();
  later_.close();
}

// ---------------------------------------------------------------------------------------------
// Active checks.

void HealthChecker::start_check(Target& t) {
  const config::HealthCheckConfig& hc = *cluster_.config.health_check;
  t.probe = std::make_unique<Probe>(*this, t);
  t.timer.start_once<&Target::timed_out>(static_cast<uint64_t>(hc.timeout.count()));
  int rc = t.probe->connect(reinterpret_cast<const sockaddr*>(&t.endpoint.sockaddr));
  if (rc != 0 && is_local_resource_error(rc)) {
    skip_check(t, rc);
  } else if (rc != 0) {
    finish_check(t, CheckResult::kFailure, std::string("connect failed: ") + uv_strerror(rc));
  }
}

void HealthChecker::skip_check(Target& t, int error) {
  // bulwark is out of descriptors or memory: the endpoint is not to blame, and the check counts
  // neither way. It is made again after the interval.
  t.probe.reset();
  ++t.checks[static_cast<size_t>(CheckResult::kSkipped)];
  log::warn("health check skipped")
      .str("cluster", cluster_.config.name)
      .str("endpoint", t.endpoint.address)
      .str("error", uv_strerror(error));
  t.timer.start(to_ms(t.health.next_delay(random_.next())));
}

TransportPtr HealthChecker::Probe::make_transport(HealthChecker& owner, Target& target) {
  const ClusterState& cluster = owner.cluster_;
  const bool tls = cluster.tls != nullptr &&
                   cluster.config.health_check->tls.value_or(cluster.config.tls.has_value());
  if (!tls) return TcpTransport::create(&owner.transport_context_);
  std::shared_ptr<const TlsClientContext> context = cluster.tls->get();
  std::string name = context->server_name_for(target.endpoint.name);
  return TlsTransport::create(&owner.transport_context_, std::move(context), std::move(name),
                              &target.tls_sessions);
}

void HealthChecker::Probe::on_transport_connected(int status) {
  if (status != 0 && is_local_resource_error(status)) {
    owner.skip_check(target, status);
    return;
  }
  if (status != 0 && is_tls_status(status)) {
    owner.finish_check(
        target, CheckResult::kFailure,
        std::string("TLS handshake failed: ") + tls_error_name(tls_error_of(status)));
    return;
  }
  if (status != 0) {
    owner.finish_check(target, CheckResult::kFailure,
                       std::string("connect failed: ") + uv_strerror(status));
    return;
  }
  const config::HealthCheckConfig& hc = *owner.cluster_.config.health_check;
  if (hc.tcp) {
    owner.finish_check(target, CheckResult::kSuccess, "connected");
    return;
  }
  http::write_health_check_request(hc.path, hc.host.empty() ? target.endpoint.name : hc.host,
                                   out.head);
  out.add_head();
  int rc = transport->write(out);
  if (rc != 0) {
    owner.finish_check(target, CheckResult::kFailure,
                       std::string("write failed: ") + uv_strerror(rc));
    return;
  }
  transport->read_start();
}

void HealthChecker::Probe::on_transport_read(ssize_t nread) {
  if (nread < 0) {
    owner.finish_check(target, CheckResult::kFailure,
                       nread == UV_EOF ? std::string("closed before a response")
                       : nread == UV_ENOBUFS
                           ? std::string("malformed response")
                           : std::string("read failed: ") + uv_strerror(static_cast<int>(nread)));
    return;
  }
  const http::Parser::Result r = parser.execute(in.data, in.parsed, in.filled);
  in.parsed += r.consumed;
  if (status == 0) {
    if (r.status == http::Parser::Status::kError ||
        r.status == http::Parser::Status::kHeadTooLarge || in.space() == 0) {
      owner.finish_check(target, CheckResult::kFailure, "malformed response");
    }
    return;  // the rest of the head is still to come
  }
  const bool ok = filters::status_expected(*owner.cluster_.config.health_check, status);
  owner.finish_check(target, ok ? CheckResult::kSuccess : CheckResult::kFailure,
                     "status " + std::to_string(status));
}

void HealthChecker::finish_check(Target& t, CheckResult result, std::string detail) {
  t.probe.reset();
  ++t.checks[static_cast<size_t>(result)];
  t.has_result = true;
  t.last_result = result;
  t.last_check_unix_ms = unix_ms_now();

  const filters::HealthState before = t.health.state();
  const bool success = result == CheckResult::kSuccess;
  if (t.health.on_result(success)) {
    const filters::HealthState after = t.health.state();
    if (before == filters::HealthState::kUnhealthy && t.health.routable()) start_warming(t.endpoint);
    t.endpoint.status->check_passing.store(t.health.routable(), std::memory_order_release);
    cluster_.health_changed();
    std::string cause;
    if (before == filters::HealthState::kPending) {
      cause = "first check: " + detail;
    } else {
      const uint32_t run =
          success ? t.health.consecutive_successes() : t.health.consecutive_failures();
      cause = detail + " (" + std::to_string(run) +
              (success ? " consecutive passing checks)" : " consecutive failed checks)");
    }
    log::LogLine(after == filters::HealthState::kUnhealthy ? log::Level::kWarn : log::Level::kInfo,
                 "endpoint health changed")
        .str("cluster", cluster_.config.name)
        .str("endpoint", t.endpoint.address)
        .str("old", filters::to_string(before))
        .str("new", filters::to_string(after))
        .str("cause", cause);
  }
  uneject_on_check(t, success);
  t.last_detail = std::move(detail);
  if (!first_round_done_) update_first_round();
  const filters::Micros delay = t.health.next_delay(random_.next());
  t.timer.start(to_ms(delay));
}

void HealthChecker::update_first_round() {
  if (targets_.empty()) return;
  for (const Target* t : targets_) {
    if (t == nullptr || !t->has_result) return;
  }
  first_round_done_ = true;
  log::info("first health check round done").str("cluster", cluster_.config.name);
}

// ---------------------------------------------------------------------------------------------
// Outlier ejections: their end.

void HealthChecker::uneject_on_check(const Target& t, bool passed) {
  filters::OutlierDetector* outlier = current_ != nullptr ? current_->outlier.get() : nullptr;
  if (outlier == nullptr) return;
  const auto at = std::find(targets_.begin(), targets_.end(), &t);
  if (at == targets_.end()) return;
  const auto i = static_cast<size_t>(at - targets_.begin());
  if (!outlier->on_health_check(i, passed)) return;
  start_warming(current_->endpoints[i]);
  log::info("endpoint returned from ejection")
      .str("cluster", cluster_.config.name)
      .str("endpoint", current_->endpoints[i].address)
      .str("old", "ejected")
      .str("new", "active")
      .str("cause", "active health check passed");
  cluster_.health_changed();
}

void HealthChecker::on_ejection() {
  if (!stopped_) arm_sweep();
}

void HealthChecker::arm_sweep() {
  if (stopped_) return;
  const filters::OutlierDetector& outlier = *current_->outlier;
  filters::Micros next = 0;
  for (size_t i = 0; i < outlier.size(); ++i) {
    const filters::Micros until = outlier.ejected_until(i);
    if (until != 0 && (next == 0 || until < next)) next = until;
  }
  if (next == 0 || (sweep_at_ != 0 && sweep_at_ <= next)) return;
  sweep_at_ = next;
  // libuv timers have millisecond resolution: round up, so the sweep finds the ejection over.
  sweep_timer_.start(to_ms(next - clock_.now()));
}

void HealthChecker::sweep() {
  sweep_at_ = 0;
  if (stopped_ || current_ == nullptr || current_->outlier == nullptr) return;
  const std::vector<size_t> back = current_->outlier->sweep();
  for (size_t i : back) {
    start_warming(current_->endpoints[i]);
    log::info("endpoint returned from ejection")
        .str("cluster", cluster_.config.name)
        .str("endpoint", current_->endpoints[i].address)
        .str("old", "ejected")
        .str("new", "active")
        .str("cause", "ejection time over");
  }
  if (!back.empty()) cluster_.health_changed();
  arm_sweep();
}

void HealthChecker::start_warming(const Endpoint& endpoint) {
  if (cluster_.config.slow_start) {
    endpoint.status->warm_since.store(clock_.now(), std::memory_order_release);
  }
}

void HealthChecker::judge_success_rate() {
  if (stopped_ || current_ == nullptr || current_->outlier == nullptr) return;
  const filters::OutlierDetector::SuccessRateJudgement j = current_->outlier->judge_success_rate();
  for (size_t k = 0; k < j.ejected.size(); ++k) {
    const size_t i = j.ejected[k];
    const filters::Micros until = current_->outlier->ejected_until(i);
    log::warn("endpoint ejected")
        .str("cluster", cluster_.config.name)
        .str("endpoint", current_->endpoints[i].address)
        .str("old", "active")
        .str("new", "ejected")
        .str("cause", "success rate " + percent(j.rates[k]) + " below the threshold " +
                          percent(j.threshold) + " (mean " + percent(j.mean) + " of " +
                          std::to_string(j.judged) + " endpoints)")
        .num("ejection_ms", until > 0 ? (until - clock_.now() + 999) / 1000 : 0)
        .num("times_ejected", current_->outlier->times_ejected(i));
  }
  if (!j.ejected.empty()) {
    cluster_.health_changed();
    arm_sweep();
  }
}

// ---------------------------------------------------------------------------------------------
// Introspection.

ClusterHealthView HealthChecker::view() const {
  ClusterHealthView v;
  v.checks = cluster_.config.health_check.has_value();
  if (current_ == nullptr) return v;
  v.outlier = current_->outlier != nullptr;
  v.slow_start = cluster_.config.slow_start.has_value();
  const int64_t now_ms = unix_ms_now();
  const filters::Micros now = clock_.now();
  const filters::OutlierDetector* outlier = current_->outlier.get();
  const EndpointSet::Groups groups = current_->groups();

  for (size_t i = 0; i < current_->endpoints.size(); ++i) {
    const Endpoint& e = current_->endpoints[i];
    EndpointHealthView ev;
    ev.name = e.name;
    ev.address = e.address;
    ev.weight = e.weight;
    ev.priority = e.priority;
    ev.routable = groups.routable[i];
    if (ev.routable) ++v.routable;
    if (i < targets_.size() && targets_[i] != nullptr) {
      const Target& t = *targets_[i];
      ev.state = filters::to_string(t.health.state());
      ev.has_result = t.has_result;
      ev.last_result = t.last_result;
      ev.last_detail = t.last_detail;
      ev.last_check_unix_ms = t.last_check_unix_ms;
      ev.consecutive_failures = t.health.consecutive_failures();
      ev.consecutive_successes = t.health.consecutive_successes();
      ev.checks = t.checks;
    }
    if (outlier != nullptr) {
      const filters::Micros until = outlier->ejected_until(i);
      ev.ejected = until != 0;
      ev.ejected_until_unix_ms = until != 0 ? now_ms + static_cast<int64_t>(to_ms(until - now)) : 0;
      ev.times_ejected = outlier->times_ejected(i);
      ev.consecutive_5xx = outlier->consecutive_5xx(i);
      ev.consecutive_gateway_failures = outlier->consecutive_gateway_failures(i);
      ev.consecutive_local_origin_failures = outlier->consecutive_local_origin_failures(i);
      ev.ejections_total = outlier->ejections_total(i);
    }
    if (const auto& slow = cluster_.config.slow_start) {
      const int64_t since = e.status->warm_since.load(std::memory_order_acquire);
      if (since != 0) ev.slow_start_weight_percent = filters::slow_start_permille(*slow, now - since) / 10.0;
    }
    v.endpoints.push_back(std::move(ev));
  }
  v.panic =
      filters::compute_priority_load(groups.health, cluster_.config.panic_threshold_percent).panic;
  return v;
}

}  // namespace bulwark
