#include "proxy/exchange.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <new>

#include "proxy/cluster.h"
#include "proxy/log.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

constexpr size_t kMaxResponseHeadSize = 64 * 1024;
constexpr size_t kMaxRequestIdSize = 128;
// More interim (1xx) responses than this before the final one: the upstream is broken.
constexpr uint32_t kMaxInterimResponses = 16;

uint64_t now_us() { return uv_hrtime() / 1000; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Resources and the pool.

ExchangeResources::ExchangeResources(Worker& worker)
    : wait_timer(Timer::make<&ExchangeResources::on_wait_timer>(worker.loop(), this)),
      deadline_timer(Timer::make<&ExchangeResources::on_deadline_timer>(worker.loop(), this)),
      response_parser(http::Parser::Type::kResponse, nullptr) {
  response_parser.set_max_head_size(kMaxResponseHeadSize);
}

void ExchangeResources::on_wait_timer() {
  if (exchange != nullptr) exchange->on_wait_timer();
}

void ExchangeResources::on_deadline_timer() {
  if (exchange != nullptr) exchange->on_deadline_timer();
}

// An exchange's storage and its resources, kept together for reuse.
struct ExchangePool::Slot {
  explicit Slot(Worker& worker) : resources(worker) { resources.slot = this; }
  ExchangeResources resources;
  alignas(Exchange) unsigned char storage[sizeof(Exchange)];
};

ExchangePool::~ExchangePool() {
  for (Slot* s : free_) delete s;
}

Exchange* ExchangePool::acquire(ListenerContext& listener, ExchangeStream& stream) {
  Slot* s;
  if (free_.empty()) {
    s = new Slot(worker_);
  } else {
    s = free_.back();
    free_.pop_back();
  }
  return new (s->storage) Exchange(worker_, listener, stream, s->resources);
}

void ExchangePool::release_later(Exchange* e) {
  worker_.deferred().defer(e, [](void* p) {
    auto* exchange = static_cast<Exchange*>(p);
    exchange->worker().exchanges().release(exchange);
  });
}

void ExchangePool::release(Exchange* e) {
  auto* s = static_cast<Slot*>(e->resources().slot);
  e->~Exchange();
  // Up to 256 kept: a burst's exchanges beyond that go back to the system.
  if (free_.size() < 256) {
    free_.push_back(s);
  } else {
    delete s;
  }
}

Exchange::Exchange(Worker& worker, ListenerContext& listener, ExchangeStream& stream,
                   ExchangeResources& res)
    : worker_(worker), listener_(listener), stream_(stream), res_(res) {
  res_.exchange = this;
  res_.failed_tries.clear();
  res_.log_request.clear();
}

Exchange::~Exchange() {
  res_.wait_timer.stop();
  res_.deadline_timer.stop();
  release_upstream(false);
  // A write to the upstream in flight was cut with the connection: the Outbox is free.
  res_.to_upstream.clear();
  res_.exchange = nullptr;
}

// ---------------------------------------------------------------------------------------------
// The request.

http::ParserCallbacks::HeadAction Exchange::on_request_head(http::MessageHead& head) {
  open();
  note_io();
  if (log_this_) res_.log_request.assign(head.method).append(1, ' ').append(head.str(head.target));
  client_http10_ = head.version_major == 1 && head.version_minor == 0;
  request_head_request_ = head.is_head_method;
  // An upgrade goes upstream only when the route lets its protocol through (below); any other
  // answer leaves the connection on HTTP/1.1, so the parser must not switch.
  const bool wants_upgrade = head.upgrade;
  head.upgrade = false;
  request_framing_ = head.chunked              ? http::BodyFraming::kChunked
                     : head.has_content_length ? http::BodyFraming::kContentLength
                                               : http::BodyFraming::kNone;
  const bool has_body = head.chunked || head.content_length > 0;
  request_has_body_ = has_body;

  // The request id: the client's, or a new one.
  std::string_view rid = head.value_of(head.request_id);
  bool add_request_id = true;
  if (!rid.empty() && rid.size() < kMaxRequestIdSize && rid.size() < sizeof request_id_) {
    std::memcpy(request_id_, rid.data(), rid.size());
    request_id_len_ = rid.size();
    add_request_id = false;
  } else {
    new_request_id();
  }

  if (head.is_connect_method) {
    local_reply(LocalReason::kNotImplemented, true);
    return http::ParserCallbacks::kPause;
  }
  RequestTarget target;
  // Asterisk-form is for OPTIONS only; an absolute-form authority must be a valid host, since it
  // replaces Host (RFC 9112 3.2.2, 3.2.4).
  std::string_view raw_target = head.str(head.target);
  if (!split_target(raw_target, &target) || (target.path == "*" && head.method != "OPTIONS") ||
      (raw_target.front() != '/' && raw_target != "*" &&
       (target.authority.empty() || !http::is_valid_host(target.authority)))) {
    local_reply(LocalReason::kBadRequest, true);
    return http::ParserCallbacks::kPause;
  }
  char host_buf[256];
  std::string_view host = request_host(head, target, host_buf, sizeof host_buf);
  route_index_ = listener_.router.match(head, target, host);
  if (route_index_ < 0) {
    local_reply(LocalReason::kNoRoute, has_body);
    return has_body ? http::ParserCallbacks::kPause : http::ParserCallbacks::kProceed;
  }
  const config::RouteConfig& route = listener_.config.routes[static_cast<size_t>(route_index_)];
  route_ = listener_.routes[static_cast<size_t>(route_index_)].get();
  route_stats_ = route_->stats.get();
  cluster_ = listener_.gen.clusters[route.cluster_index].get();

  std::string_view path = head.str(head.target);
  if (route.prefix_rewrite && route.match.path.kind == config::PathMatch::Kind::kPrefix) {
    res_.path_buf.assign(*route.prefix_rewrite);
    res_.path_buf.append(target.path.substr(route.match.path.value.size()));
    res_.path_buf.append(target.query);
    path = res_.path_buf;
  } else if (!target.authority.empty()) {
    res_.path_buf.assign(target.path);
    res_.path_buf.append(target.query);
    path = res_.path_buf;
  }
  http::UpstreamRequestHead how;
  if (wants_upgrade) {
    std::string& protocols = res_.upgrade_protocols;
    protocols.clear();
    http::for_each_list_element(head.value_of(head.upgrade_header), [&](std::string_view p) {
      std::string_view name = p.substr(0, p.find('/'));
      for (const std::string& allowed : route.upgrades) {
        if (!http::iequals(name, allowed)) continue;
        if (!protocols.empty()) protocols.append(", ");
        protocols.append(p);
        break;
      }
    });
    request_upgrade_ = head.upgrade = !protocols.empty();
    how.upgrade_protocols = protocols;
  }
  how.path = path;
  how.authority = target.authority;
  how.client_address = stream_.client_address();
  how.trusted_hops = listener_.config.trusted_hops;
  how.request_id = {request_id_, request_id_len_};
  how.add_request_id = add_request_id;
  how.upgrade = request_upgrade_;
  how.framing = request_framing_;
  res_.to_upstream.clear();
  http::write_upstream_request(head, how, res_.to_upstream.head);
  res_.to_upstream.add_head();

  // A request that may go again after bytes went out (an idempotent one, see filters/retry.h)
  // is kept whole until its response is chosen: a retry, or a reused connection that turns out
  // to be closed, re-sends it. Its body is copied when it fits max_body_bytes, so the client's
  // read buffer does not have to hold it.
  const filters::RetryPolicy& retry_policy = route_->shared->retry;
  const config::RetryConfig& retry = retry_policy.config();
  may_resend_ = retry_policy.may_resend(head.method, head.idempotency_key >= 0);
  copy_body_ =
      may_resend_ && has_body && (head.chunked || head.content_length <= retry.max_body_bytes);
  // A body too large to copy streams: once bytes of it went out, the request cannot go again.
  res_.to_upstream.set_keep_history(may_resend_ && (!has_body || copy_body_));

  route_deadline_ms_ = route.timeout.count() > 0
                           ? uv_now(worker_.loop()) + static_cast<uint64_t>(route.timeout.count())
                           : 0;
  try_deadline_ms_ = 0;
  arm_deadline_timer();
  cluster_->stats.active_requests.add(1);
  active_ = true;
  run_admission(head);
  if (state_ == State::kLocalReply) {
    head.upgrade = request_upgrade_ = false;
    if (has_body) return http::ParserCallbacks::kPause;
  }
  return http::ParserCallbacks::kProceed;
}

void Exchange::on_request_body(const char* data, size_t n, BufferBlock* block) {
  bytes_in_ += n;
  if (state_ != State::kProxying) return;
  Outbox& out = res_.to_upstream;
  if (copy_body_) {
    if (body_kept_ + n <= route_->shared->retry.config().max_body_bytes) {
      body_kept_ += n;
      if (request_framing_ == http::BodyFraming::kChunked) {
        out.add_chunk_copy(data, n);
      } else {
        out.add_data_copy(data, n);
      }
      return;
    }
    // Too large to keep: the rest streams, and once bytes went out it cannot go again.
    copy_body_ = false;
    out.set_keep_history(false);
  }
  if (request_framing_ == http::BodyFraming::kChunked) {
    out.add_chunk(data, n, block);
  } else {
    out.add_data(data, n, block);
  }
}

void Exchange::on_request_complete() {
  request_complete_ = true;
  if (state_ == State::kProxying && request_framing_ == http::BodyFraming::kChunked &&
      !request_upgrade_) {
    res_.to_upstream.add_last_chunk();
  }
}

void Exchange::on_tunnel_data(const char* data, size_t n, BufferBlock* block) {
  res_.to_upstream.add_data(data, n, block);
  flush_to_upstream();
}

bool Exchange::wants_request_bytes() const {
  switch (state_) {
    case State::kProxying:
      return request_complete_ || !res_.to_upstream.in_flight();
    case State::kTunnel:
      return !res_.to_upstream.in_flight();
    default:
      return false;  // a local reply reads no more of the request
  }
}

bool Exchange::reject(LocalReason reason) {
  if (state_ != State::kProxying || response_head_sent_ || stream_.writing()) return false;
  release_upstream(false);
  local_reply(reason, true);
  return true;
}

void Exchange::reply_to_incomplete_head(LocalReason reason) {
  open();
  new_request_id();
  local_reply(reason, true);
}

void Exchange::new_request_id() {
  worker_.new_request_id(request_id_);
  request_id_len_ = 32;
}

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
      start_try();
      return;
    case Admission::Status::kReply:
      local_reply(result.reason, request_has_body_ && !request_complete_, result.http_status,
                  result.retry_after_s);
      return;
    case Admission::Status::kWait:
      wait_ = Wait::kAdmission;
      res_.wait_timer.start(result.timer_ms);
      return;
  }
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
  try_.emplace(worker_, static_cast<UpstreamRequest::Callbacks&>(*this), res_.response_parser,
               res_.to_upstream);
  const config::RetryConfig& retry = route_->shared->retry.config();
  if (retry.per_try_timeout.count() > 0) {
    try_deadline_ms_ =
        uv_now(worker_.loop()) + static_cast<uint64_t>(retry.per_try_timeout.count());
    arm_deadline_timer();
  }
  connect_upstream(false);
}

void Exchange::record_try_outcome(int status, bool local_origin) {
  if (endpoint_ == nullptr) {
    // The try never reached an endpoint (it waited for a pool connection until its timeout):
    // local saturation, no evidence against the cluster or any endpoint.
    circuit_permit_.reset();
    return;
  }
  const bool failure = status == 0 || status >= 500;
  if (circuit_permit_) {
    circuit_permit_.record(
        failure ? filters::CallOutcome::kFailure : filters::CallOutcome::kSuccess,
        static_cast<filters::Micros>(now_us() - try_->start_us()));
  }
  using Outcome = filters::OutlierDetector::Outcome;
  const bool gateway = status == 0 || status == 502 || status == 503 || status == 504;
  cluster_->record_outcome(*endpoint_, local_origin ? Outcome::kLocalOriginFailure
                                       : !failure   ? Outcome::kSuccess
                                       : gateway    ? Outcome::kGatewayFailure
                                                    : Outcome::kServerError);
  if (local_origin) unreachable_.add(endpoint_.get());
}

void Exchange::try_failed(filters::TryFailure failure, LocalReason reason, int err) {
  // Whether the try could not reach its endpoint at all: the connect failed (or was still under
  // way when the try timed out), or the connection closed before any response byte.
  const bool local_origin = failure == filters::TryFailure::kConnectFailure ||
                            (failure == filters::TryFailure::kReset &&
                             reason == LocalReason::kUpstreamReset && !try_->response_started()) ||
                            (failure == filters::TryFailure::kPerTryTimeout && try_->connecting());
  release_upstream(false);
  if (!response_head_sent_) {
    if (endpoint_ != nullptr) cluster_->stats.upstream_requests.inc(0);
    record_try_outcome(0, local_origin);
    if (maybe_retry(route_->shared->retry.retriable_failure(failure))) return;
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
  std::string& failed = res_.failed_tries;
  if (!failed.empty()) failed.append(", ");
  failed.append(endpoint_ != nullptr ? std::string_view(endpoint_->endpoint.address) : "-");
  failed.push_back(' ');
  if (response_status_ >= 200) {
    failed.append(std::to_string(response_status_));
  } else {
    failed.append(filters::to_string(*reason));
  }
  log::debug("retrying request")
      .str("route", policy.config.name)
      .str("request_id", {request_id_, request_id_len_})
      .str("reason", filters::to_string(*reason))
      .str("failed_tries", failed)
      .num("attempt", tries_ + 1)
      .num("backoff_ms", static_cast<int64_t>(backoff_ms));
  release_upstream(false);
  circuit_permit_.reset();
  failed_endpoint_ = endpoint_.get();
  try_deadline_ms_ = 0;
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
    default:
      break;
  }
  if (wait_ != Wait::kNone) res_.wait_timer.stop();
  wait_ = Wait::kNone;
}

void Exchange::end_policies() {
  cancel_wait();
  circuit_permit_.reset();
  admission_.release();
  route_deadline_ms_ = try_deadline_ms_ = 0;
  res_.deadline_timer.stop();
}

void Exchange::note_io() { last_io_ms_ = uv_now(worker_.loop()); }

uint64_t Exchange::stream_idle_deadline_ms() const {
  auto idle = static_cast<uint64_t>(listener_.config.stream_idle_timeout.count());
  if (idle == 0 || state_ == State::kDone) return 0;
  return last_io_ms_ + idle;
}

void Exchange::arm_deadline_timer() {
  if (state_ == State::kDone) return;
  const bool proxying = state_ == State::kProxying;
  uint64_t next = proxying ? route_deadline_ms_ : 0;
  if (proxying && try_deadline_ms_ != 0 && (next == 0 || try_deadline_ms_ < next))
    next = try_deadline_ms_;
  uint64_t idle = stream_idle_deadline_ms();
  if (idle != 0 && (next == 0 || idle < next)) next = idle;
  if (next == 0) {
    res_.deadline_timer.stop();
    return;
  }
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
  endpoint_ = cluster_->pick(failed_endpoint_, &unreachable_);
  if (endpoint_ == nullptr) {
    // No connect attempt and no wait: the answer is known now.
    upstream_failed(
        cluster_->has_endpoints() ? LocalReason::kNoHealthyEndpoints : LocalReason::kNoEndpoints,
        0);
    return;
  }
  switch (try_->start(*endpoint_, fresh_only, may_resend_)) {
    case UpstreamRequest::Start::kStarted:
      return;
    case UpstreamRequest::Start::kWaiting:
      wait_ = Wait::kPool;
      res_.wait_timer.start(static_cast<uint64_t>(cluster_->config().pool.pending_timeout.count()));
      return;
    case UpstreamRequest::Start::kFull:
      upstream_failed(LocalReason::kPoolExhausted, 0);
      return;
  }
}

void Exchange::on_try_pool_capacity(UpstreamRequest&) {
  if (wait_ != Wait::kPool) return;
  wait_ = Wait::kNone;
  res_.wait_timer.stop();
  connect_upstream(false);
}

void Exchange::on_try_ready(UpstreamRequest&) { flush_to_upstream(); }

void Exchange::on_try_replay(UpstreamRequest&) {
  res_.to_upstream.rewind();
  connect_upstream(true);
}

void Exchange::flush_to_upstream() {
  // Not while the request parser runs: its callbacks add to to_upstream.
  if (parsing_ || !try_) return;
  if (try_->send()) request_sent_ = true;
}

void Exchange::on_try_failed(UpstreamRequest&, filters::TryFailure failure, LocalReason reason,
                             int err) {
  if (failure == filters::TryFailure::kConnectFailure &&
      (err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS || err == UV_ENOMEM)) {
    // bulwark is out of descriptors or memory: no evidence against the endpoint.
    endpoint_ = nullptr;
  }
  try_failed(failure, reason, err);
}

void Exchange::on_try_request_written(UpstreamRequest&) {
  note_io();
  // The bytes went out: the part of the client's read buffer they came from may be reused,
  // unless it is kept for a possible replay (then only until the buffer fills up).
  if (state_ == State::kTunnel || !request_complete_) {
    Outbox& out = res_.to_upstream;
    if (out.keep_history() && stream_.request_buffer_full()) out.set_keep_history(false);
    stream_.request_forwarded(out.keep_history());
    if (stream_.closed()) return;
  }
  flush_to_upstream();
  stream_.update_reading();
}

bool Exchange::on_try_interim(UpstreamRequest& t, const http::MessageHead& head) {
  note_io();
  response_status_ = head.status;
  if (t.interim_responses() > kMaxInterimResponses) {
    upstream_failed(LocalReason::kUpstreamProtocolError, 0);
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
  response_status_ = head.status;
  // The try's outcome is known: its deadline no longer applies, and the circuit hears of it.
  upstream_us_ = now_us() - t.start_us();
  try_deadline_ms_ = 0;
  arm_deadline_timer();
  cluster_->stats.upstream_requests.inc(head.status);
  record_try_outcome(head.status);
  if (maybe_retry(route_->shared->retry.retriable_status(head.status)))
    return http::ParserCallbacks::kPause;
  // This response goes to the client: the request will not be sent again.
  res_.to_upstream.set_keep_history(false);
  ExchangeStream::HeadInfo info;
  info.request_id = {request_id_, request_id_len_};
  info.attempts = tries_;
  if (head.status == 101) {
    if (!request_upgrade_ || !upgrade_was_offered(head)) {
      upstream_failed(LocalReason::kUpstreamProtocolError, 0);
      return http::ParserCallbacks::kPause;
    }
    info.upgrade = true;
    stream_.send_head(head, info);
    response_head_sent_ = true;
    return http::ParserCallbacks::kProceed;
  }
  // HEAD, 204 and 304 never have a body, whatever Content-Length says (RFC 9112 6.3).
  info.no_body = request_head_request_ || head.status == 204 || head.status == 304;
  // A response that must have no body but announces one: if the upstream sends the body anyway,
  // those bytes may come at any time, and on a reused connection they would be read as the
  // answer to the next request, perhaps another client's. Such a connection carries nothing
  // more (it costs a HEAD or 304 with a length a new connection next time).
  const bool announces_body = head.chunked || head.content_length > 0;
  t.set_reusable(head.keep_alive && !(info.no_body && announces_body));
  stream_.send_head(head, info);
  response_head_sent_ = true;
  return info.no_body ? http::ParserCallbacks::kNoBody : http::ParserCallbacks::kProceed;
}

void Exchange::on_try_body(UpstreamRequest&, const char* data, size_t n, BufferBlock* block) {
  bytes_out_ += n;
  stream_.send_body(data, n, block);
}

void Exchange::on_try_complete(UpstreamRequest&) { stream_.send_end(); }

UpstreamRequest::Callbacks::Next Exchange::on_try_parsed(UpstreamRequest& t) {
  note_io();
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

bool Exchange::on_try_turn(UpstreamRequest&) {
  return !stream_.closed() && !stream_.writing() &&
         (state_ == State::kTunnel || state_ == State::kProxying);
}

void Exchange::release_upstream(bool reusable) {
  if (try_) try_->release(reusable && request_complete_ && try_->response_complete());
}

void Exchange::upstream_failed(LocalReason reason, int) {
  release_upstream(false);
  if (response_head_sent_ || stream_.writing()) {
    // The client already has part of a response: all we can do is cut the connection, after
    // what is queued.
    log_flags_ |= kLogUpstreamCut;
    stream_.cut();
    return;
  }
  local_reply(reason, !request_complete_);
}

// ---------------------------------------------------------------------------------------------
// Toward the client.

void Exchange::flush_to_client(bool at_once) { stream_.flush(at_once); }

void Exchange::on_downstream_written() {
  note_io();
  switch (state_) {
    case State::kTunnel:
      if (!try_->has_connection()) {
        stream_.close();
        return;
      }
      try_->resume();
      return;
    case State::kProxying:
      break;
    default:
      return;
  }
  if (response_complete()) {
    finish();
    return;
  }
  if (!try_ || !try_->has_connection()) {
    log_flags_ |= kLogUpstreamCut;
    stream_.close();  // the upstream went away mid-response
    return;
  }
  try_->resume();
}

void Exchange::local_reply(LocalReason reason, bool close_after, int status,
                           uint32_t retry_after_s) {
  const LocalReasonInfo& r = info(reason);
  if (status == 0) status = r.status;
  local_reason_ = reason;
  log::debug("local reply")
      .str("reason", r.token)
      .num("status", status)
      .str("client", stream_.client_address());
  end_policies();
  if (active_) {
    cluster_->stats.active_requests.add(-1);
    active_ = false;
  }
  state_ = State::kLocalReply;
  // A reply the client does not read, or a request body it never finishes, ends after
  // stream_idle_timeout.
  note_io();
  arm_deadline_timer();
  response_status_ = status;
  worker_.local_replies()[static_cast<size_t>(reason)].inc();
  ExchangeStream::LocalReply reply;
  reply.status = status;
  reply.reason = reason;
  reply.request_id = {request_id_, request_id_len_};
  reply.attempts = tries_;
  reply.retry_after_s = retry_after_s;
  reply.close_after = close_after;
  bytes_out_ = stream_.send_local_reply(reply);
  // Completed when written (the connection hears it): this may run inside the request parser,
  // which must not be re-entered by finishing the exchange here.
  flush_to_client();
  if (stream_.closed()) return;
  stream_.update_reading();
}

void Exchange::finish() {
  res_.wait_timer.stop();
  res_.deadline_timer.stop();
  complete(true);
  if (state_ == State::kProxying) {
    release_upstream(try_ && try_->reusable());
    end_policies();
  }
  if (active_) {
    cluster_->stats.active_requests.add(-1);
    active_ = false;
  }
  state_ = State::kDone;
  endpoint_.reset();
  stream_.exchange_done();
}

void Exchange::on_stream_closed() {
  // A tunnel ends by closing; anything else open now was cut short.
  complete(state_ == State::kTunnel);
  end_policies();
  state_ = State::kDone;
  res_.wait_timer.stop();
  release_upstream(false);
  if (active_) {
    cluster_->stats.active_requests.add(-1);
    active_ = false;
  }
  endpoint_.reset();  // before the generation (and maybe its clusters and pools) goes
}

// ---------------------------------------------------------------------------------------------
// The exchange's record.

void Exchange::open() {
  start_us_ = now_us();
  open_ = true;
  log_this_ = worker_.sample_access_log();
}

void Exchange::complete(bool answered) {
  if (!open_) return;
  open_ = false;
  if (answered && route_stats_ != nullptr) {
    route_stats_->requests.inc(response_status_);
    route_stats_->duration.observe_us(now_us() - start_us_);
  }
  if (!answered && (log_flags_ & (kLogUpstreamCut | kLogStreamIdle)) == 0)
    log_flags_ |= kLogDownstreamClosed;
  if (log_this_) write_access_log();
}

void Exchange::write_access_log() {
  log_this_ = false;
  const uint64_t now = now_us();
  timespec wall{};
  clock_gettime(CLOCK_REALTIME, &wall);
  AccessRecord r;
  r.start_unix_us = static_cast<int64_t>(wall.tv_sec) * 1'000'000 + wall.tv_nsec / 1000 -
                    static_cast<int64_t>(now - start_us_);
  r.request_id = {request_id_, request_id_len_};
  r.listener = listener_.config.name;
  if (route_index_ >= 0) r.route = listener_.config.routes[static_cast<size_t>(route_index_)].name;
  if (cluster_ != nullptr) r.cluster = cluster_->config().name;
  r.request = res_.log_request;
  r.http10 = client_http10_;
  r.status = response_head_sent_ || local_reason_ != LocalReason::kCount ? response_status_ : 0;
  r.duration_us = now - start_us_;
  if (upstream_us_ != 0) r.upstream_us = static_cast<int64_t>(upstream_us_);
  r.bytes_in = bytes_in_;
  r.bytes_out = bytes_out_;
  r.failed_tries = res_.failed_tries;
  r.attempts = tries_;

  // The last try, when one was made after the failed ones listed: its endpoint and outcome.
  const std::string& failed = res_.failed_tries;
  size_t listed = failed.empty() ? 0 : 1;
  for (size_t at = failed.find(", "); at != std::string::npos; at = failed.find(", ", at + 2))
    ++listed;
  char last_try[96];
  if (tries_ > listed && endpoint_ != nullptr) {
    r.upstream = endpoint_->endpoint.address;
    // The words of the failed tries (filters::to_string(RetryReason)), or the status.
    std::string_view outcome;
    switch (local_reason_) {
      case LocalReason::kUpstreamConnectFailure:
        outcome = "connect-failure";
        break;
      case LocalReason::kUpstreamReset:
      case LocalReason::kUpstreamProtocolError:
        outcome = "reset";
        break;
      case LocalReason::kUpstreamTimeout:
        outcome = "timeout";
        break;
      case LocalReason::kCount:
        if (response_status_ == 0) outcome = "none";  // cut short before a response head
        break;
      default:
        outcome = info(local_reason_).token;
    }
    int n =
        outcome.empty()
            ? snprintf(last_try, sizeof last_try, "%.*s %d", static_cast<int>(r.upstream.size()),
                       r.upstream.data(), response_status_)
            : snprintf(last_try, sizeof last_try, "%.*s %.*s", static_cast<int>(r.upstream.size()),
                       r.upstream.data(), static_cast<int>(outcome.size()), outcome.data());
    r.last_try = {last_try, std::min(static_cast<size_t>(std::max(n, 0)), sizeof last_try - 1)};
  }

  // Response flags: the local reply's, then what else happened.
  char flags[32];
  size_t nflags = 0;
  auto add = [&](std::string_view f) {
    if (nflags + f.size() + 1 >= sizeof flags) return;
    if (nflags > 0) flags[nflags++] = ',';
    std::memcpy(flags + nflags, f.data(), f.size());
    nflags += f.size();
  };
  if (local_reason_ != LocalReason::kCount) {
    r.reason = info(local_reason_).token;
    add(info(local_reason_).flag);
  }
  if (log_flags_ & kLogRetriesExhausted) add("URX");
  if ((log_flags_ & kLogFaultInjected) && local_reason_ != LocalReason::kFaultAbort) add("FI");
  if (log_flags_ & kLogUpstreamCut) add("UC");
  if (log_flags_ & kLogDownstreamClosed) add("DC");
  if ((log_flags_ & kLogStreamIdle) && local_reason_ != LocalReason::kStreamIdleTimeout) add("SI");
  r.flags = {flags, nflags};

  format_access_line(r, worker_.access_log()->config().format, worker_.access_log_buffer());
  worker_.access_log_appended();
}

}  // namespace bulwark
