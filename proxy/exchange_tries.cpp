// The exchange's tries: the admission chain before the first, each try's start, outcome and
// retry, the deadlines that bound them, and what the current try reports (UpstreamRequest::
// Callbacks). The rest of the Exchange is in exchange.cpp.
#include <algorithm>

#include "proxy/cluster.h"
#include "proxy/exchange.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/tls.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

// More interim (1xx) responses than this before the final one: the upstream is broken.
constexpr uint32_t kMaxInterimResponses = 16;

uint64_t now_us() { return uv_hrtime() / 1000; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Policies: admission, tries and retries.

void Exchange::run_admission(const http::MessageHead& head) {
  Admission::Request request;
  const filters::FaultInjector* fault = route_->shared->fault.get();
  if (fault != nullptr && fault->config().header_control) {
    if (const http::Header* h = head.find(filters::kFaultDelayHeader))
      request.fault_delay_header = head.str(h->value);
    if (const http::Header* h = head.find(filters::kFaultAbortHeader))
      request.fault_abort_header = head.str(h->value);
  }
  after_admission(admission_.start(*route_, this, request, worker_.random()));
}

void Exchange::after_admission(const Admission::Result& result) {
  if (admission_.fault_injected()) log_flags_ |= kLogFaultInjected;
  switch (result.status) {
    case Admission::Status::kContinue:
      if (filters::AdaptiveConcurrency* adaptive = cluster_->shared.adaptive.get()) {
        // Requests already waiting for a permit go first (when this one may wait too).
        const bool queue_behind = cluster_->shared.adaptive_waiting.load() > 0 &&
                                  route_->shared->bulkhead != nullptr &&
                                  route_->shared->bulkhead->config().max_queued > 0;
        if (!queue_behind) adaptive_permit_ = adaptive->try_acquire();
        if (!adaptive_permit_) {
          wait_for_adaptive();
          return;
        }
        adaptive_since_us_ = now_us();
      }
      start_try();
      return;
    case Admission::Status::kReply:
      local_reply(result.reason, request_has_body_ && !request_complete_, result.http_status,
                  result.retry_after_s);
      return;
    case Admission::Status::kWait:
      if (admission_.in_queue() && queue_entered_ms_ == 0)
        queue_entered_ms_ = uv_now(worker_.loop());
      wait_ = Wait::kAdmission;
      res_.wait_timer.start(result.timer_ms);
      return;
  }
}

void Exchange::wait_for_adaptive() {
  // Over the cluster's limit: the request waits in its route's bulkhead queue when it has one
  // (a place of max_queued, at most queue_timeout), else it is refused at once.
  filters::Bulkhead* bulkhead = route_->shared->bulkhead.get();
  if (bulkhead != nullptr) adaptive_queue_place_ = bulkhead->try_enqueue();
  if (!adaptive_queue_place_) {
    local_reply(LocalReason::kAdaptiveConcurrencyLimited, request_has_body_ && !request_complete_);
    return;
  }
  // queue_timeout bounds the whole time in the queue: a wait for a bulkhead slot before counts.
  const auto timeout = static_cast<uint64_t>(bulkhead->config().queue_timeout.count());
  const uint64_t now = uv_now(worker_.loop());
  const uint64_t waited = queue_entered_ms_ != 0 ? now - queue_entered_ms_ : 0;
  if (waited >= timeout) {
    adaptive_queue_place_.reset();
    local_reply(LocalReason::kAdaptiveConcurrencyLimited, request_has_body_ && !request_complete_);
    return;
  }
  wait_ = Wait::kAdaptive;
  res_.wait_timer.start(timeout - waited);
  cluster_->wait_for_adaptive(this);  // may serve it at once (on_adaptive_permit)
}

void Exchange::on_adaptive_permit(filters::AdaptiveConcurrency::Permit permit) {
  res_.wait_timer.stop();
  wait_ = Wait::kNone;
  adaptive_queue_place_.reset();
  adaptive_permit_ = std::move(permit);
  adaptive_since_us_ = now_us();
  start_try();
}

void Exchange::release_adaptive(bool sample) {
  if (!adaptive_permit_) return;
  if (sample) {
    adaptive_permit_.record(static_cast<filters::Micros>(now_us() - adaptive_since_us_));
  } else {
    adaptive_permit_.reset();
  }
  cluster_->on_adaptive_release();
}

void Exchange::on_admission_resumed(const Admission::Result& result) {
  res_.wait_timer.stop();
  wait_ = Wait::kNone;
  after_admission(result);
}

void Exchange::on_wait_timer() {
  const bool body_unread = request_has_body_ && !request_complete_;
  switch (wait_) {
    case Wait::kPool:
      cancel_wait();
      local_reply(LocalReason::kPoolTimeout, body_unread);
      return;
    case Wait::kAdmission:
      wait_ = Wait::kNone;
      after_admission(admission_.on_timer());
      return;
    case Wait::kBackoff:
      wait_ = Wait::kNone;
      start_try();
      return;
    case Wait::kAdaptive:
      cancel_wait();
      local_reply(LocalReason::kAdaptiveConcurrencyLimited, body_unread);
      return;
    case Wait::kNone:
      return;
  }
}

void Exchange::start_try() {
  if (tries_ > 0) {
    // A retry. The write to the failed connection was cut when it closed, so nothing should be
    // in flight. If it is, look again soon.
    if (res_.to_upstream.in_flight()) {
      wait_ = Wait::kBackoff;
      res_.wait_timer.start(1);
      return;
    }
  }
  if (filters::CircuitBreaker* circuit = cluster_->shared.circuit.get()) {
    circuit_permit_ = circuit->try_acquire();
    if (!circuit_permit_) {
      local_reply(LocalReason::kCircuitOpen, request_has_body_ && !request_complete_);
      return;
    }
  }
  if (tries_ == 0) {
    route_->shared->budget.on_request();
    unreachable_.clear();
  } else {
    res_.to_upstream.rewind();
    response_status_ = 0;
  }
  ++tries_;
  // A new try: its connection, parser state and flags start fresh.
  first_try_.emplace(worker_, static_cast<UpstreamRequest::Callbacks&>(*this),
                     res_.response_parser, res_.to_upstream);
  try_ = &*first_try_;
  count_lead_hedge(HedgeOutcome::kFailed);
  lead_hedge_ = nullptr;
  const config::RetryConfig& retry = route_->shared->retry.config();
  if (retry.per_try_timeout.count() > 0) {
    try_deadline_ms_ =
        uv_now(worker_.loop()) + static_cast<uint64_t>(retry.per_try_timeout.count());
    arm_deadline_timer();
  }
  if (retry.hedge) arm_hedge();
  connect_upstream(false);
}

void Exchange::record_try_outcome(int status, bool local_origin) {
  record_outcome(endpoint_.get(), circuit_permit_, try_->start_us(), status, local_origin);
}

void Exchange::record_outcome(const EndpointPool* pool, filters::CircuitBreaker::Permit& permit,
                              uint64_t try_start_us, int status, bool local_origin) {
  if (pool == nullptr) {
    // The try never reached an endpoint (it waited for a pool connection until its timeout):
    // local saturation, no evidence against the cluster or any endpoint.
    permit.reset();
    return;
  }
  const bool failure = status == 0 || status >= 500;
  if (permit) {
    permit.record(failure ? filters::CallOutcome::kFailure : filters::CallOutcome::kSuccess,
                  static_cast<filters::Micros>(now_us() - try_start_us));
  }
  using Outcome = filters::OutlierDetector::Outcome;
  const bool gateway = status == 0 || status == 502 || status == 503 || status == 504;
  cluster_->record_outcome(*pool, local_origin ? Outcome::kLocalOriginFailure
                                  : !failure   ? Outcome::kSuccess
                                  : gateway    ? Outcome::kGatewayFailure
                                               : Outcome::kServerError);
  if (local_origin) unreachable_.add(pool);
}

void Exchange::try_failed(filters::TryFailure failure, LocalReason reason, int err) {
  // Whether the try could not reach its endpoint at all: the connect failed (or was still under
  // way when the try timed out), or the connection closed before any response byte.
  const bool local_origin = failure == filters::TryFailure::kConnectFailure ||
                            (failure == filters::TryFailure::kReset &&
                             reason == LocalReason::kUpstreamReset && !try_->response_started()) ||
                            (failure == filters::TryFailure::kPerTryTimeout && try_->connecting());
  try_error_ = err;
  if (failure == filters::TryFailure::kReset && reason == LocalReason::kUpstreamReset &&
      request_sent_ && !try_->response_started() && !try_->on_reused_connection()) {
    // A query of death? The free replay this try may have had counts now as the try it was,
    // so an upstream that dies on this request is hit at most `attempts` times.
    if (try_->replayed()) ++tries_;
    request_suspect_ = true;
  }
  release_upstream(false);
  if (!response_head_sent_) {
    if (endpoint_ != nullptr) cluster_->stats.upstream_requests.inc(0);
    record_try_outcome(0, local_origin);
    count_lead_hedge(HedgeOutcome::kFailed);
    const std::optional<filters::RetryReason> retriable =
        route_->shared->retry.retriable_failure(failure);
    if (hedges_racing_ > 0) {
      // A hedge is already under way: it takes over, whatever retry_on says.
      note_failed_lead(filters::to_string(filters::retry_reason_of(failure)));
      hand_over_to_hedge();
      return;
    }
    if (maybe_retry(retriable)) return;
  }
  upstream_failed(reason, err);
}

bool Exchange::maybe_retry(std::optional<filters::RetryReason> reason) {
  RouteState& policy = *route_->shared;
  filters::RetryAsk ask;
  ask.reason = reason;
  ask.tries = tries_;
  ask.response_sent = response_head_sent_;
  ask.request_at_hand = res_.to_upstream.can_rewind();
  ask.request_bytes_sent = request_sent_;
  ask.may_resend = may_resend_;
  if (route_deadline_ms_ != 0) {
    const uint64_t now = uv_now(worker_.loop());
    ask.until_deadline = route_deadline_ms_ > now
                             ? static_cast<filters::Micros>(route_deadline_ms_ - now) * 1000
                             : 0;
  }
  const filters::RetryDecision decision =
      policy.retry.decide(ask, policy.budget, worker_.random().next());
  switch (decision.verdict) {
    case filters::RetryVerdict::kRetry:
      break;
    case filters::RetryVerdict::kAttemptsExhausted:
      if (policy.retry.config().attempts > 1) log_flags_ |= kLogRetriesExhausted;
      return false;
    case filters::RetryVerdict::kBudgetExhausted:
      route_stats_->retry_budget_exhausted.inc();
      log_flags_ |= kLogRetriesExhausted;
      return false;
    default:
      return false;
  }
  const uint64_t backoff_ms = static_cast<uint64_t>((decision.backoff + 999) / 1000);
  route_stats_->retries[static_cast<size_t>(*reason)].inc();
  note_failed_lead(filters::to_string(*reason));
  log::debug("retrying request")
      .str("route", policy.config.name)
      .str("request_id", {request_id_, request_id_len_})
      .str("reason", filters::to_string(*reason))
      .str("failed_tries", res_.failed_tries)
      .num("attempt", tries_ + 1)
      .num("backoff_ms", static_cast<int64_t>(backoff_ms));
  release_upstream(false);
  circuit_permit_.reset();
  failed_endpoint_ = endpoint_.get();
  try_deadline_ms_ = 0;
  hedge_at_ms_ = 0;
  arm_deadline_timer();
  wait_ = Wait::kBackoff;
  res_.wait_timer.start(backoff_ms);
  return true;
}

void Exchange::cancel_wait() {
  switch (wait_) {
    case Wait::kPool:
      if (try_) try_->cancel_wait();
      break;
    case Wait::kAdmission:
      admission_.release();
      break;
    case Wait::kAdaptive:
      cancel_adaptive_wait();
      adaptive_queue_place_.reset();
      break;
    default:
      break;
  }
  if (wait_ != Wait::kNone) res_.wait_timer.stop();
  wait_ = Wait::kNone;
}

void Exchange::note_failed_lead(std::string_view reason) {
  if (response_status_ >= 200) {
    char status[16];
    snprintf(status, sizeof status, "%d", response_status_);
    note_ended_try(endpoint_.get(), status, lead_hedge_ != nullptr);
  } else if (is_tls_status(try_error_)) {
    std::string tls = "tls:";
    tls += tls_error_name(tls_error_of(try_error_));
    note_ended_try(endpoint_.get(), tls, lead_hedge_ != nullptr);
  } else {
    note_ended_try(endpoint_.get(), reason, lead_hedge_ != nullptr);
  }
}

void Exchange::note_ended_try(const EndpointPool* pool, std::string_view outcome, bool hedge) {
  std::string& tries = res_.failed_tries;
  if (!tries.empty()) tries.append(", ");
  tries.append(pool != nullptr ? std::string_view(pool->endpoint.address) : "-");
  tries.push_back(' ');
  tries.append(outcome);
  if (hedge) tries.append(" (hedge)");
}

void Exchange::end_policies() {
  hedge_at_ms_ = 0;
  if (hedges_racing_ > 0) end_racing_hedges(HedgeOutcome::kCancelled);
  count_lead_hedge(HedgeOutcome::kCancelled);
  cancel_wait();
  circuit_permit_.reset();
  release_adaptive(false);
  admission_.release();
  route_deadline_ms_ = try_deadline_ms_ = 0;
}

void Exchange::note_io() { last_io_ms_ = uv_now(worker_.loop()); }

uint64_t Exchange::stream_idle_deadline_ms() const {
  auto idle = static_cast<uint64_t>(listener_.config.stream_idle_timeout.count());
  // A half-closed tunnel: the ended side's socket is no longer watched (a reset would go
  // unnoticed), so the quiet time it may last is bounded even without a stream idle timeout.
  if ((tunnel_client_ended_ || tunnel_upstream_ended_) &&
      (idle == 0 || idle > kHalfClosedTunnelIdleMs))
    idle = kHalfClosedTunnelIdleMs;
  if (idle == 0 || state_ == State::kDone) return 0;
  return last_io_ms_ + idle;
}

void Exchange::arm_deadline_timer() {
  if (state_ == State::kDone) return;
  const bool proxying = state_ == State::kProxying;
  uint64_t next = proxying ? route_deadline_ms_ : 0;
  if (proxying && try_deadline_ms_ != 0 && (next == 0 || try_deadline_ms_ < next))
    next = try_deadline_ms_;
  if (proxying && hedge_at_ms_ != 0 && (next == 0 || hedge_at_ms_ < next)) next = hedge_at_ms_;
  uint64_t idle = stream_idle_deadline_ms();
  if (idle != 0 && (next == 0 || idle < next)) next = idle;
  // Nothing due, or the timer fires by then anyway (armed for this moment or an earlier one, by
  // this exchange or one before it in the slot): leave it be; an early fire re-arms.
  if (next == 0) return;
  if (res_.deadline_armed_for != 0 && res_.deadline_armed_for <= next) return;
  res_.deadline_armed_for = next;
  uint64_t now = uv_now(worker_.loop());
  res_.deadline_timer.start(next > now ? next - now : 0);
}

void Exchange::on_deadline_timer() {
  uint64_t now = uv_now(worker_.loop());
  uint64_t idle = stream_idle_deadline_ms();
  if (idle != 0 && now >= idle) {
    stream_idle_expired();
    return;
  }
  if (state_ != State::kProxying) {
    arm_deadline_timer();
    return;
  }
  const bool route_due = route_deadline_ms_ != 0 && now >= route_deadline_ms_;
  const bool try_due = try_deadline_ms_ != 0 && now >= try_deadline_ms_;
  // The client has not finished its request although the upstream connection is up and takes
  // bytes (nothing waits, no write to it is stuck): the time went to the client, not to the
  // upstream, so neither the circuit breaker nor outlier detection hears of it.
  const bool client_stalled = !request_complete_ && wait_ == Wait::kNone && try_ &&
                              try_->connected() && !res_.to_upstream.in_flight() &&
                              !response_head_sent_ && !stream_.writing();
  if ((route_due || try_due) && client_stalled) {
    route_deadline_ms_ = try_deadline_ms_ = 0;
    cancel_wait();
    release_upstream(false);
    local_reply(LocalReason::kRequestTimeout, true);
    return;
  }
  if (route_due) {
    // The route's timeout bounds all tries and waits together: no retry after it.
    route_deadline_ms_ = 0;
    bool trying = try_ && try_->has_connection() && !response_head_sent_;
    cancel_wait();
    if (trying) {
      cluster_->stats.upstream_requests.inc(0);
      record_try_outcome(0);
    }
    upstream_failed(LocalReason::kUpstreamTimeout, UV_ETIMEDOUT);
    // A response cut short may still wait for a client that does not read: the idle timer
    // bounds that wait.
    if (!stream_.closed()) arm_deadline_timer();
    return;
  }
  if (try_due) {
    try_deadline_ms_ = 0;
    // A try still waiting for a pool connection never reached its endpoint: the endpoint is not
    // to blame (outlier detection), nor to be avoided by the retry.
    if (wait_ == Wait::kPool) endpoint_ = nullptr;
    cancel_wait();
    try_failed(filters::TryFailure::kPerTryTimeout, LocalReason::kUpstreamTimeout, UV_ETIMEDOUT);
    return;
  }
  if (hedge_at_ms_ != 0 && now >= hedge_at_ms_) {
    hedge_at_ms_ = 0;
    start_hedge();
  }
  arm_deadline_timer();
}

void Exchange::stream_idle_expired() {
  log_flags_ |= kLogStreamIdle;
  log::debug("stream idle timeout").str("client", stream_.client_address());
  if (state_ == State::kProxying && !response_head_sent_ && !stream_.writing()) {
    // No response has started: say who went quiet. A client that stopped sending its body gets
    // 408; a request fully sent whose upstream stopped answering gets 504 and counts as a
    // timed-out try.
    bool client_stalled = !request_complete_;
    if (!client_stalled && try_ && try_->has_connection()) {
      cluster_->stats.upstream_requests.inc(0);
      record_try_outcome(0);
    }
    cancel_wait();
    release_upstream(false);
    local_reply(LocalReason::kStreamIdleTimeout, true, client_stalled ? 408 : 504);
    return;
  }
  // A response under way, a tunnel, or a reply the client does not read: all we can do is cut.
  stream_.close();
}

// ---------------------------------------------------------------------------------------------
// The upstream side: the current try.

void Exchange::connect_upstream(bool fresh_only) {
  if (cluster_->config().type == config::ClusterType::kOriginalDestination) {
    const sockaddr* destination = stream_.original_destination();
    if (destination == nullptr) {
      upstream_failed(LocalReason::kNoOriginalDestination, 0);
      return;
    }
    endpoint_ = cluster_->pick_original(destination);
  } else {
    endpoint_ = cluster_->pick(failed_endpoint_, &unreachable_);
  }
  if (route_->shared->retry.config().hedge) tried_.add(endpoint_.get());  // for hedges only
  if (endpoint_ == nullptr) {
    // No connect attempt and no wait: the answer is known now.
    upstream_failed(
        cluster_->has_endpoints() ? LocalReason::kNoHealthyEndpoints : LocalReason::kNoEndpoints,
        0);
    return;
  }
  if (host_auto_) rewrite_host(res_.to_upstream, *endpoint_, host_len_);
  start_lead(fresh_only, may_resend_ && !request_suspect_);
}

void Exchange::start_lead(bool fresh_only, bool may_replay) {
  switch (try_->start(*endpoint_, fresh_only, may_replay)) {
    case UpstreamRequest::Start::kStarted:
      return;
    case UpstreamRequest::Start::kWaiting:
      wait_ = Wait::kPool;
      res_.wait_timer.start(static_cast<uint64_t>(cluster_->config().pool.pending_timeout.count()));
      return;
    case UpstreamRequest::Start::kFull:
      // A hedge that led and now finds no slot is a hedge that failed.
      count_lead_hedge(HedgeOutcome::kFailed);
      upstream_failed(LocalReason::kPoolExhausted, 0);
      return;
  }
}

void Exchange::rewrite_host(Outbox& request, const EndpointPool& pool, uint32_t& host_len) {
  // The endpoint's name as configured ("payments.internal:8443", "10.0.0.5:80"), without the
  // port its scheme implies, as a client of it would write Host.
  std::string_view name = pool.endpoint.name;
  const std::string_view default_port = cluster_->config().tls ? ":443" : ":80";
  if (name.size() > default_port.size() && name.substr(name.size() - default_port.size()) ==
                                               default_port) {
    name.remove_suffix(default_port.size());
  }
  const std::string& head = request.head;
  if (std::string_view(head).substr(host_at_, host_len) == name) return;  // as the last try's
  if (request.replace_in_head(host_at_, host_len, name)) {
    host_len = static_cast<uint32_t>(name.size());
  }
}

void Exchange::on_try_pool_capacity(UpstreamRequest& t) {
  if (wait_ != Wait::kPool || &t != try_) return;
  wait_ = Wait::kNone;
  res_.wait_timer.stop();
  if (lead_hedge_ != nullptr) {
    restart_lead_hedge(false);
  } else {
    connect_upstream(false);
  }
}

void Exchange::restart_lead_hedge(bool fresh_only) {
  // Its copy of the request names its endpoint (host_rewrite: auto): it stays there.
  start_lead(fresh_only, false);
}

void Exchange::on_try_ready(UpstreamRequest& t) {
  if (racing_hedge(t) != nullptr) {
    if (t.send(true)) note_io();  // a hedge's request is whole
    return;
  }
  flush_to_upstream();
}

void Exchange::on_try_replay(UpstreamRequest& t) {
  if (HedgeTry* h = racing_hedge(t)) {
    h->request.rewind();
    if (t.start(*h->endpoint, true, false) != UpstreamRequest::Start::kStarted) {
      t.cancel_wait();
      end_hedge(*h, HedgeOutcome::kFailed, "pool-full");
    }
    return;
  }
  if (hedges_racing_ > 0) {
    // The lead's pooled connection had been closed while idle, and a hedge is under way: the
    // hedge takes over (a replay would be one more try, perhaps on the hedge's endpoint). No
    // outcome: the endpoint never saw the request.
    note_ended_try(endpoint_.get(), "reset", lead_hedge_ != nullptr);
    count_lead_hedge(HedgeOutcome::kFailed);
    circuit_permit_.reset();
    hand_over_to_hedge();
    return;
  }
  if (lead_hedge_ != nullptr) {
    lead_hedge_->request.rewind();
    restart_lead_hedge(true);
    return;
  }
  res_.to_upstream.rewind();
  connect_upstream(true);
}

void Exchange::flush_to_upstream() {
  // Not while the request parser runs: its callbacks add to to_upstream.
  if (parsing_ || !try_) return;
  // A whole request (the common GET) is written at once when the socket takes it: no write
  // callback, hence none of the epoll_ctl calls libuv makes around one. What that callback would
  // do for a whole request is only to note the I/O.
  const bool whole = request_complete_ && state_ == State::kProxying;
  if (try_->send(whole)) {
    request_sent_ = true;
    if (whole && !res_.to_upstream.in_flight()) note_io();
  }
}

void Exchange::on_try_failed(UpstreamRequest& t, filters::TryFailure failure, LocalReason reason,
                             int err) {
  if (HedgeTry* h = racing_hedge(t)) {
    hedge_failed(*h, failure, reason, err);
    return;
  }
  if (failure == filters::TryFailure::kConnectFailure && is_local_resource_error(err)) {
    // bulwark is out of descriptors or memory: no evidence against the endpoint.
    endpoint_ = nullptr;
  }
  try_failed(failure, reason, err);
}

void Exchange::on_try_request_written(UpstreamRequest& t) {
  note_io();
  if (racing_hedge(t) != nullptr) return;
  // The bytes went out: the part of the client's read buffer they came from may be reused,
  // unless it is kept for a possible replay (then only until the buffer fills up).
  if (state_ == State::kTunnel || !request_complete_) {
    Outbox& out = res_.to_upstream;
    // A body kept by reference holds the read buffer's blocks: once the buffer is full, keeping
    // them would stop reading for good. A copied body (copy_body_) holds nothing of it.
    if (out.keep_history() && !copy_body_ && stream_.request_buffer_full())
      out.set_keep_history(false);
    stream_.request_forwarded(out.keep_history());
    if (stream_.closed()) return;
  }
  flush_to_upstream();
  if (state_ == State::kTunnel) shut_down_tunnel_upstream();
  stream_.update_reading();
}

bool Exchange::on_try_interim(UpstreamRequest& t, const http::MessageHead& head) {
  note_io();
  if (HedgeTry* h = racing_hedge(t)) {
    // Not forwarded: the client hears the interim responses of the try that leads.
    if (t.interim_responses() <= kMaxInterimResponses) return true;
    cluster_->stats.upstream_requests.inc(0);
    record_outcome(h->endpoint.get(), h->circuit, t.start_us(), 0, false);
    end_hedge(*h, HedgeOutcome::kFailed, "reset");
    return false;
  }
  response_status_ = head.status;
  if (t.interim_responses() > kMaxInterimResponses) {
    // A broken upstream: a failed try, as a malformed response is (retried as a reset, or
    // handed over to a racing hedge). The 1xx already forwarded do no harm: a client takes any
    // number of them before the final response.
    try_failed(filters::TryFailure::kReset, LocalReason::kUpstreamProtocolError, 0);
    return false;
  }
  // Interim responses (100 Continue, 103 Early Hints) go to the client as they come.
  stream_.send_interim(head);
  return true;
}

// A 101 switches to a protocol the request offered (and bulwark forwarded), or to nothing.
bool Exchange::upgrade_was_offered(const http::MessageHead& response) {
  std::string_view chosen = response.value_of(response.upgrade_header);
  bool offered = false;
  http::for_each_list_element(res_.upgrade_protocols, [&](std::string_view p) {
    offered = offered || http::iequals(p, chosen);
  });
  return offered;
}

http::ParserCallbacks::HeadAction Exchange::on_try_head(UpstreamRequest& t,
                                                        http::MessageHead& head) {
  if (HedgeTry* h = racing_hedge(t)) {
    // A hedge answered before the lead: it wins (and leads from here), unless its answer is
    // one to retry; then it ends and the lead goes on.
    if (!hedge_answered(*h, head)) return http::ParserCallbacks::kPause;
  } else if (hedges_racing_ > 0 && route_->shared->retry.retriable_status(head.status)) {
    // The lead got an answer to retry while a hedge is under way: the hedge takes over.
    response_status_ = head.status;
    cluster_->stats.upstream_requests.inc(head.status);
    record_try_outcome(head.status);
    count_lead_hedge(HedgeOutcome::kFailed);
    note_failed_lead("");
    release_upstream(false);
    hand_over_to_hedge();
    return http::ParserCallbacks::kPause;
  }
  if (head.status == 101 && (!request_upgrade_ || !upgrade_was_offered(head))) {
    // A switch the request did not offer: a malformed answer, so a failed try (retried as a
    // reset, or handed over to a racing hedge), never a success.
    try_failed(filters::TryFailure::kReset, LocalReason::kUpstreamProtocolError, 0);
    return http::ParserCallbacks::kPause;
  }
  response_status_ = head.status;
  // The try's outcome is known: its deadline no longer applies, and the circuit hears of it.
  upstream_us_ = now_us() - t.start_us();
  try_deadline_ms_ = 0;
  arm_deadline_timer();
  cluster_->stats.upstream_requests.inc(head.status);
  record_try_outcome(head.status);
  if (maybe_retry(route_->shared->retry.retriable_status(head.status)))
    return http::ParserCallbacks::kPause;
  // This response goes to the client: the request will not be sent again, and the tries
  // racing this one are cancelled.
  res_.to_upstream.set_keep_history(false);
  if (route_->shared->retry.config().hedge) hedge_lead_answered();
  ExchangeStream::HeadInfo info;
  info.request_id = {request_id_, request_id_len_};
  info.attempts = tries_;
  if (head.status == 101) {  // one the request offered (checked above)
    info.upgrade = true;
    stream_.send_head(head, info);
    response_head_sent_ = true;
    end_adaptive_sample();
    return http::ParserCallbacks::kProceed;
  }
  // HEAD, 204 and 304 never have a body, whatever Content-Length says (RFC 9112 6.3).
  info.no_body = http::response_has_no_body(request_head_request_, head.status);
  // A response that must have no body but announces one: if the upstream sends the body anyway,
  // those bytes may come at any time, and on a reused connection they would be read as the
  // answer to the next request, perhaps another client's. Such a connection carries nothing
  // more (it costs a HEAD or 304 with a length a new connection next time).
  const bool announces_body = head.chunked || head.content_length > 0;
  t.set_reusable(head.keep_alive && !(info.no_body && announces_body));
  stream_.send_head(head, info);
  response_head_sent_ = true;
  end_adaptive_sample();
  return info.no_body ? http::ParserCallbacks::kNoBody : http::ParserCallbacks::kProceed;
}

void Exchange::on_try_body(UpstreamRequest&, const char* data, size_t n, BufferBlock* block) {
  bytes_out_ += n;
  stream_.send_body(data, n, block);
}

void Exchange::on_try_complete(UpstreamRequest&) {
  // The upstream is done with this request: its bulkhead slot goes back now, before the client
  // can see the response's end (a client that sends its next request the moment it has the
  // answer finds the slot free, whichever worker takes it).
  admission_.release();
  stream_.send_end();
}

UpstreamRequest::Callbacks::Next Exchange::on_try_parsed(UpstreamRequest& t) {
  note_io();
  if (racing_hedge(t) != nullptr) return Next::kMore;  // no response head yet
  // The last bytes of a response are written at once when the socket takes them: the exchange
  // then ends now, not a loop turn later, and the client's next request is read sooner. Body
  // bytes before them go through the loop (one read buffer per connection per turn), so that
  // large responses take turns with everything else on the worker.
  flush_to_client(t.response_complete());
  if (stream_.closed()) return Next::kDone;
  if (stream_.writing()) return Next::kWait;
  if (t.response_complete()) {
    finish();
    return Next::kDone;
  }
  return Next::kMore;
}

void Exchange::on_try_upgraded(UpstreamRequest&) {
  // A tunnel may live for hours: it gives its bulkhead slot back now.
  end_policies();
  state_ = State::kTunnel;
  arm_deadline_timer();  // only the stream idle timeout bounds a tunnel
  res_.to_upstream.set_keep_history(false);
  // Bytes the client sent after its request head are already tunnel data.
  stream_.start_tunnel();
  if (stream_.closed()) return;
  flush_to_upstream();
  stream_.update_reading();
}

UpstreamRequest::Callbacks::Next Exchange::on_try_data(UpstreamRequest&, const char* data, size_t n,
                                                       BufferBlock* block) {
  note_io();
  if (n > 0) stream_.send_body(data, n, block);
  flush_to_client();
  if (stream_.closed()) return Next::kDone;
  // Backpressure, as for responses: no more reading until the client has taken these bytes.
  return stream_.writing() ? Next::kWait : Next::kMore;
}

void Exchange::on_try_closed(UpstreamRequest&, bool write_failed) {
  if (!write_failed && stream_.writing()) {
    release_upstream(false);  // the connection closes once the client has the rest
  } else {
    stream_.close();
  }
}

bool Exchange::on_try_tunnel_end(UpstreamRequest&) {
  if (stream_.closed()) return false;
  // Both sides ended. The client's last bytes may still be on their way to the upstream (sent
  // with its FIN before the 101): the connection stays until they and the FIN are written
  // (shut_down_tunnel_upstream ends the tunnel then).
  if (tunnel_client_ended_ && !res_.to_upstream.in_flight() && res_.to_upstream.empty()) {
    // The client ended first: the end is passed on before the close (TLS: close_notify, as
    // when the upstream ends first), now or once the client has the rest.
    tunnel_upstream_ended_ = true;
    end_tunnel_downstream();
    return false;
  }
  tunnel_upstream_ended_ = true;
  arm_deadline_timer();  // the shorter idle bound of a half-closed tunnel
  end_tunnel_downstream();
  return true;
}

void Exchange::end_tunnel_downstream() {
  if (stream_.writing() || stream_.has_unsent()) return;  // on_downstream_written() comes back
  if (tunnel_end_sent_) return;
  tunnel_end_sent_ = true;
  stream_.end_sending();
}

bool Exchange::on_try_turn(UpstreamRequest& t) {
  return &t == try_ && !stream_.closed() && !stream_.writing() &&
         (state_ == State::kTunnel || state_ == State::kProxying);
}

void Exchange::release_upstream(bool reusable) {
  if (try_) try_->release(reusable && request_complete_ && try_->response_complete());
}

void Exchange::end_adaptive_sample() { release_adaptive(true); }

void Exchange::upstream_failed(LocalReason reason, int) {
  // A timeout is a latency too (what overload looks like); a failure to reach the cluster at
  // all (refused, no endpoint, pool full) or a reset says nothing of its latency, and a fast
  // one measured as the minimum would pin the limit at min_limit.
  if (reason == LocalReason::kUpstreamTimeout || reason == LocalReason::kStreamIdleTimeout) {
    end_adaptive_sample();
  } else {
    release_adaptive(false);
  }
  release_upstream(false);
  if (response_head_sent_ || stream_.writing()) {
    // The client already has part of a response: all we can do is cut the connection, after
    // what is queued.
    log_flags_ |= kLogUpstreamCut;
    stream_.cut();
    return;
  }
  // A request without a body is read whole once its head is (even when the reply is decided
  // inside the head's callback, before the parser says so): the connection can carry the next.
  local_reply(reason, request_has_body_ && !request_complete_);
}

}  // namespace bulwark
