#include "proxy/downstream.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "proxy/cluster.h"
#include "proxy/log.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

constexpr size_t kMaxResponseHeadSize = 64 * 1024;
constexpr size_t kMaxRequestIdSize = 128;
// More interim (1xx) responses than this before the final one: the upstream is broken.
constexpr uint32_t kMaxInterimResponses = 16;
// The longest a connection lingers after its last response (nginx's lingering_timeout is 5 s).
constexpr uint64_t kLingerMs = 2000;

uint64_t now_us() { return uv_hrtime() / 1000; }

}  // namespace

// A 101 switches to a protocol the request offered (and bulwark forwarded), or to nothing.
bool DownstreamConnection::upgrade_was_offered(const http::MessageHead& response) {
  std::string_view chosen = response.value_of(response.upgrade_header);
  bool offered = false;
  http::for_each_list_element(ex().upgrade_protocols, [&](std::string_view p) {
    offered = offered || http::iequals(p, chosen);
  });
  return offered;
}

namespace {

// The reply to a request the codec refused.
LocalReason rejection_reason(http::ParseError code) {
  switch (code) {
    case http::ParseError::kHeadTooLarge:
      return LocalReason::kHeadersTooLarge;
    case http::ParseError::kTooManyHeaders:
      return LocalReason::kTooManyHeaders;
    case http::ParseError::kUnsupportedCoding:
      return LocalReason::kNotImplemented;
    case http::ParseError::kVersionNotSupported:
      return LocalReason::kHttpVersionNotSupported;
    default:
      return LocalReason::kBadRequest;
  }
}

// "Keep-Alive: timeout=5, max=100" -> 5000 ms; 0 when absent.
uint64_t keep_alive_timeout_ms(const http::MessageHead& head) {
  const http::Header* h = head.find("keep-alive");
  if (h == nullptr) return 0;
  std::string_view v = head.str(h->value);
  size_t pos = v.find("timeout=");
  if (pos == std::string_view::npos) return 0;
  uint64_t secs = 0;
  for (size_t i = pos + 8; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i)
    secs = secs * 10 + (v[i] - '0');
  return secs * 1000;
}

}  // namespace

DownstreamConnection::DownstreamConnection(Worker& worker, ListenerContext& listener)
    : worker_(worker),
      listener_(&listener),
      listener_limit_(listener.limit),
      timer_(Timer::make<&DownstreamConnection::on_timer>(worker.loop(), this)),
      deadline_timer_(Timer::make<&DownstreamConnection::on_deadline_timer>(worker.loop(), this)),
      request_parser_(http::Parser::Type::kRequest, &request_callbacks_) {
  request_callbacks_.self = this;
  response_callbacks_.self = this;
  request_parser_.set_max_head_size(listener.config.max_request_headers_size);
  request_parser_.set_max_headers(listener.config.max_request_headers);
  ++listener.gen.users;
  listener.stats.connections->add(1);
}

void DownstreamConnection::on_reload() {
  if (closed_) return;
  if (phase_ == Phase::kIdle) {
    if (!move_to_newest_config()) close();
  } else if (worker_.current().listener_named(listener_->config.name) == nullptr) {
    draining_ = true;
  }
}

bool DownstreamConnection::move_to_newest_config() {
  WorkerGen& newest = worker_.current();
  if (&listener_->gen == &newest) return true;
  ListenerContext* next = newest.listener_named(listener_->config.name);
  if (next == nullptr) return false;
  WorkerGen& old = listener_->gen;
  listener_->stats.connections->add(-1);
  next->stats.connections->add(1);
  ++newest.users;
  listener_ = next;
  request_parser_.set_max_head_size(next->config.max_request_headers_size);
  request_parser_.set_max_headers(next->config.max_request_headers);
  worker_.release(old);  // may free the old generation
  return true;
}

void accept_http1_connection(Worker& worker, ListenerContext& listener, uv_stream_t* server) {
  (new DownstreamConnection(worker, listener))->accept(server);
}

bool DownstreamConnection::accept(uv_stream_t* server) {
  worker_.connection_opened(this);
  transport_ = TcpTransport::accept(worker_.transport_context(), server);
  if (!transport_) {
    close();
    return false;
  }
  transport_->attach(this, &in_);
  transport_->peer_ip(client_ip_, sizeof client_ip_);
  arm_idle_timer();
  update_reading();
  return true;
}

// ---------------------------------------------------------------------------------------------
// Reading and parsing the request.

void DownstreamConnection::on_transport_read(ssize_t nread) {
  DownstreamConnection* self = this;
  if (nread == UV_ENOBUFS) {
    self->update_reading();
    return;
  }
  if (nread < 0) {
    switch (self->phase_) {
      case Phase::kProxying:
        if (nread == UV_EOF && self->request_complete_) {
          // The client half-closed after its request: answer it, then close.
          self->client_eof_ = true;
          self->update_reading();
          return;
        }
        break;
      case Phase::kLocalReply:
        self->client_eof_ = true;
        self->update_reading();
        return;
      default:
        break;
    }
    self->close();
    return;
  }
  self->note_io();
  switch (self->phase_) {
    case Phase::kIdle:
      self->phase_ = Phase::kHead;
      self->arm_headers_timer();
      self->parse_request();
      break;
    case Phase::kHead:
      self->parse_request();
      break;
    case Phase::kProxying:
      if (!self->request_complete_) self->parse_request();
      break;
    case Phase::kLingering:
      self->in_.parsed = self->in_.filled;  // dropped
      self->in_.restart(self->worker_.buffers());
      return;
    case Phase::kTunnel:
      self->ex().to_upstream.add_data(self->in_.data + self->in_.parsed,
                                      self->in_.filled - self->in_.parsed, self->in_.block);
      self->in_.parsed = self->in_.filled;
      self->flush_to_upstream();
      break;
    default:
      break;
  }
  self->update_reading();
}

void DownstreamConnection::parse_request() {
  while (true) {
    // Nothing is written upstream while the parser runs: its callbacks add to to_upstream,
    // which must not change under a write in flight.
    parsing_request_ = true;
    http::Parser::Result r = request_parser_.execute(in_.data, in_.parsed, in_.filled);
    parsing_request_ = false;
    in_.parsed += r.consumed;
    if (closed_) return;
    switch (r.status) {
      case http::Parser::Status::kOk:
        if (request_parser_.in_head() && in_.space() == 0) {
          size_t limit = listener_->config.max_request_headers_size + 1024;
          if (in_.capacity >= limit) {
            local_reply(LocalReason::kHeadersTooLarge, true);
            return;
          }
          in_.grow(worker_.buffers(), std::min(in_.capacity * 2, limit));
        }
        break;
      case http::Parser::Status::kPaused:
      case http::Parser::Status::kUpgrade:
        break;
      case http::Parser::Status::kHeadTooLarge:
        if (phase_ == Phase::kHead) local_reply(LocalReason::kHeadersTooLarge, true);
        return;
      case http::Parser::Status::kError:
        log::debug("bad request").str("error", r.error).str("client", client_ip_);
        if (phase_ == Phase::kHead ||
            (phase_ == Phase::kProxying && !response_head_sent_ && !ex().to_client.in_flight())) {
          if (upstream_ != nullptr) release_upstream(false);
          local_reply(rejection_reason(r.code), true);
        } else {
          close();
        }
        return;
    }
    break;
  }
  if (phase_ == Phase::kHead && !request_parser_.in_message() && in_.parsed == in_.filled) {
    // Only empty lines (RFC 9112 2.2 lets a client send some before a request line, and some
    // send CRLF after a body): no request has begun, so the connection is still idle. Its idle
    // timeout keeps running from when it went idle: empty lines never extend it.
    in_.release(worker_.buffers());
    phase_ = Phase::kIdle;
    uint64_t now = uv_now(worker_.loop());
    uint64_t due = idle_since_ms_ + static_cast<uint64_t>(listener_->config.idle_timeout.count());
    timer_.start(due > now ? due - now : 0);
    return;
  }
  if (phase_ != Phase::kProxying) return;
  // Parsed bytes nothing points to (a copied body, trailers, chunk framing, empty lines) make
  // room at once; bytes a queued write still sends wait for that write (backpressure).
  if (!request_parser_.in_head() && in_.block != nullptr && in_.block->refs == 1) {
    in_.restart(worker_.buffers());
  }
  flush_to_upstream();
}

http::ParserCallbacks::HeadAction DownstreamConnection::on_request_head(http::MessageHead& head) {
  timer_.stop();
  // A reload since the last request: this one runs on the new config. A listener the new config
  // no longer has serves this request on the old one, then the connection closes.
  if (!move_to_newest_config()) draining_ = true;
  open_exchange();
  note_io();
  if (log_this_) ex().log_request.assign(head.method).append(1, ' ').append(head.str(head.target));
  client_http10_ = head.version_major == 1 && head.version_minor == 0;
  client_keep_alive_ = head.keep_alive;
  request_head_request_ = head.is_head_method;
  // An upgrade goes upstream only when the route lets its protocol through (below); any other
  // answer leaves the connection on HTTP/1.1, so the parser must not switch.
  const bool wants_upgrade = head.upgrade;
  head.upgrade = false;
  request_upgrade_ = false;
  request_complete_ = response_started_ = response_head_sent_ = response_complete_ = false;
  response_interim_ = upstream_reusable_ = replayed_ = false;
  response_status_ = 0;
  interim_responses_ = 0;
  keep_client_ = true;
  route_index_ = -1;
  route_ = nullptr;
  route_stats_ = nullptr;
  cluster_ = nullptr;
  tries_ = 0;
  failed_endpoint_ = nullptr;
  ex().failed_tries.clear();
  body_kept_ = 0;
  may_resend_ = copy_body_ = request_sent_ = false;
  request_framing_ = head.chunked              ? http::BodyFraming::kChunked
                     : head.has_content_length ? http::BodyFraming::kContentLength
                                               : http::BodyFraming::kNone;
  bool has_body = head.chunked || head.content_length > 0;
  request_has_body_ = has_body;

  // The request id: the client's, or a new one.
  std::string_view rid = head.value_of(head.request_id);
  bool add_request_id = true;
  if (!rid.empty() && rid.size() < kMaxRequestIdSize && rid.size() < sizeof request_id_) {
    std::memcpy(request_id_, rid.data(), rid.size());
    request_id_len_ = rid.size();
    add_request_id = false;
  } else {
    worker_.new_request_id(request_id_);
    request_id_len_ = 32;
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
  route_index_ = listener_->router.match(head, target, host);
  if (route_index_ < 0) {
    local_reply(LocalReason::kNoRoute, has_body);
    return has_body ? http::ParserCallbacks::kPause : http::ParserCallbacks::kProceed;
  }
  const config::RouteConfig& route = listener_->config.routes[static_cast<size_t>(route_index_)];
  route_ = listener_->routes[static_cast<size_t>(route_index_)].get();
  route_stats_ = route_->stats.get();
  cluster_ = listener_->gen.clusters[route.cluster_index].get();
  phase_ = Phase::kProxying;

  std::string_view path = head.str(head.target);
  if (route.prefix_rewrite && route.match.path.kind == config::PathMatch::Kind::kPrefix) {
    ex().path_buf.assign(*route.prefix_rewrite);
    ex().path_buf.append(target.path.substr(route.match.path.value.size()));
    ex().path_buf.append(target.query);
    path = ex().path_buf;
  } else if (!target.authority.empty()) {
    ex().path_buf.assign(target.path);
    ex().path_buf.append(target.query);
    path = ex().path_buf;
  }
  http::UpstreamRequestHead how;
  if (wants_upgrade) {
    std::string& protocols = ex().upgrade_protocols;
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
  how.client_address = client_ip_;
  how.trusted_hops = listener_->config.trusted_hops;
  how.request_id = {request_id_, request_id_len_};
  how.add_request_id = add_request_id;
  how.upgrade = request_upgrade_;
  how.framing = request_framing_;
  ex().to_upstream.clear();
  http::write_upstream_request(head, how, ex().to_upstream.head);
  ex().to_upstream.add_head();

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
  ex().to_upstream.set_keep_history(may_resend_ && (!has_body || copy_body_));

  route_deadline_ms_ = route.timeout.count() > 0
                           ? uv_now(worker_.loop()) + static_cast<uint64_t>(route.timeout.count())
                           : 0;
  try_deadline_ms_ = 0;
  arm_deadline_timer();
  cluster_->stats.active_requests.add(1);
  run_admission(head);
  if (phase_ == Phase::kLocalReply) {
    head.upgrade = request_upgrade_ = false;
    if (has_body) return http::ParserCallbacks::kPause;
  }
  return http::ParserCallbacks::kProceed;
}

void DownstreamConnection::on_request_body(const char* data, size_t n) {
  bytes_in_ += n;
  if (phase_ != Phase::kProxying) return;
  if (copy_body_) {
    if (body_kept_ + n <= route_->shared->retry.config().max_body_bytes) {
      body_kept_ += n;
      if (request_framing_ == http::BodyFraming::kChunked) {
        ex().to_upstream.add_chunk_copy(data, n);
      } else {
        ex().to_upstream.add_data_copy(data, n);
      }
      return;
    }
    // Too large to keep: the rest streams, and once bytes went out it cannot go again.
    copy_body_ = false;
    ex().to_upstream.set_keep_history(false);
  }
  if (request_framing_ == http::BodyFraming::kChunked) {
    ex().to_upstream.add_chunk(data, n, in_.block);
  } else {
    ex().to_upstream.add_data(data, n, in_.block);
  }
}

void DownstreamConnection::on_request_complete() {
  request_complete_ = true;
  if (phase_ == Phase::kProxying && request_framing_ == http::BodyFraming::kChunked &&
      !request_upgrade_) {
    ex().to_upstream.add_last_chunk();
  }
  if (phase_ == Phase::kLocalReply && !ex().to_client.in_flight()) {
    // The reply was already written; the request's end was all we waited for. Defer: we are
    // inside the parser.
    timer_.start_once<&DownstreamConnection::finish_exchange>(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Policies: admission, tries and retries.

void DownstreamConnection::run_admission(const http::MessageHead& head) {
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

void DownstreamConnection::after_admission(const Admission::Result& result) {
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
      timer_.start(result.timer_ms);
      return;
  }
}

void DownstreamConnection::on_admission_resumed(const Admission::Result& result) {
  timer_.stop();
  wait_ = Wait::kNone;
  after_admission(result);
}

void DownstreamConnection::start_try() {
  if (tries_ > 0) {
    // A retry. The write to the failed connection was cancelled when it closed; libuv reports
    // that before any timer runs, so nothing should be in flight. If it is, look again soon.
    if (ex().to_upstream.in_flight()) {
      wait_ = Wait::kBackoff;
      timer_.start(1);
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
    ex().unreachable.clear();
  } else {
    ex().to_upstream.rewind();
    response_started_ = response_interim_ = upstream_reusable_ = replayed_ = false;
    response_status_ = 0;
    interim_responses_ = 0;
  }
  ++tries_;
  try_start_us_ = now_us();
  const config::RetryConfig& retry = route_->shared->retry.config();
  if (retry.per_try_timeout.count() > 0) {
    try_deadline_ms_ =
        uv_now(worker_.loop()) + static_cast<uint64_t>(retry.per_try_timeout.count());
    arm_deadline_timer();
  }
  connect_upstream(false);
}

void DownstreamConnection::record_try_outcome(int status, bool local_origin) {
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
        static_cast<filters::Micros>(now_us() - try_start_us_));
  }
  using Outcome = filters::OutlierDetector::Outcome;
  const bool gateway = status == 0 || status == 502 || status == 503 || status == 504;
  cluster_->record_outcome(*endpoint_, local_origin ? Outcome::kLocalOriginFailure
                                       : !failure   ? Outcome::kSuccess
                                       : gateway    ? Outcome::kGatewayFailure
                                                    : Outcome::kServerError);
  if (local_origin) ex().unreachable.add(endpoint_.get());
}

void DownstreamConnection::try_failed(filters::TryFailure failure, LocalReason reason, int err) {
  // Whether the try could not reach its endpoint at all: the connect failed (or was still under
  // way when the try timed out), or the connection closed before any response byte.
  const bool local_origin =
      failure == filters::TryFailure::kConnectFailure ||
      (failure == filters::TryFailure::kReset && reason == LocalReason::kUpstreamReset &&
       !response_started_) ||
      (failure == filters::TryFailure::kPerTryTimeout && upstream_ != nullptr &&
       upstream_->state() == UpstreamConnection::State::kConnecting);
  if (upstream_ != nullptr) release_upstream(false);
  if (!response_head_sent_) {
    if (endpoint_ != nullptr) cluster_->stats.upstream_requests.inc(0);
    record_try_outcome(0, local_origin);
    if (maybe_retry(route_->shared->retry.retriable_failure(failure))) return;
  }
  upstream_failed(reason, err);
}

bool DownstreamConnection::maybe_retry(std::optional<filters::RetryReason> reason) {
  RouteState& policy = *route_->shared;
  filters::RetryAsk ask;
  ask.reason = reason;
  ask.tries = tries_;
  ask.response_sent = response_head_sent_;
  ask.request_at_hand = ex().to_upstream.can_rewind();
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
  if (!ex().failed_tries.empty()) ex().failed_tries.append(", ");
  ex().failed_tries.append(endpoint_ != nullptr ? std::string_view(endpoint_->endpoint.address)
                                                : "-");
  ex().failed_tries.push_back(' ');
  if (response_status_ >= 200) {
    ex().failed_tries.append(std::to_string(response_status_));
  } else {
    ex().failed_tries.append(filters::to_string(*reason));
  }
  log::debug("retrying request")
      .str("route", policy.config.name)
      .str("request_id", {request_id_, request_id_len_})
      .str("reason", filters::to_string(*reason))
      .str("failed_tries", ex().failed_tries)
      .num("attempt", tries_ + 1)
      .num("backoff_ms", static_cast<int64_t>(backoff_ms));
  if (upstream_ != nullptr) release_upstream(false);
  circuit_permit_.reset();
  failed_endpoint_ = endpoint_.get();
  try_deadline_ms_ = 0;
  arm_deadline_timer();
  wait_ = Wait::kBackoff;
  timer_.start(backoff_ms);
  return true;
}

void DownstreamConnection::cancel_wait() {
  switch (wait_) {
    case Wait::kPool:
      PoolWaiter::cancel();
      break;
    case Wait::kAdmission:
      admission_.release();
      break;
    default:
      break;
  }
  if (wait_ != Wait::kNone) timer_.stop();
  wait_ = Wait::kNone;
}

void DownstreamConnection::end_policies() {
  cancel_wait();
  circuit_permit_.reset();
  admission_.release();
  route_deadline_ms_ = try_deadline_ms_ = 0;
  deadline_timer_.stop();
}

void DownstreamConnection::note_io() { last_io_ms_ = uv_now(worker_.loop()); }

uint64_t DownstreamConnection::stream_idle_deadline_ms() const {
  auto idle = static_cast<uint64_t>(listener_->config.stream_idle_timeout.count());
  if (idle == 0) return 0;
  switch (phase_) {
    case Phase::kProxying:
    case Phase::kLocalReply:
    case Phase::kTunnel:
      return last_io_ms_ + idle;
    default:
      return 0;
  }
}

void DownstreamConnection::arm_deadline_timer() {
  if (closed_) return;
  uint64_t next = phase_ == Phase::kProxying ? route_deadline_ms_ : 0;
  if (phase_ == Phase::kProxying && try_deadline_ms_ != 0 && (next == 0 || try_deadline_ms_ < next))
    next = try_deadline_ms_;
  uint64_t idle = stream_idle_deadline_ms();
  if (idle != 0 && (next == 0 || idle < next)) next = idle;
  if (next == 0) {
    deadline_timer_.stop();
    return;
  }
  uint64_t now = uv_now(worker_.loop());
  deadline_timer_.start(next > now ? next - now : 0);
}

// ---------------------------------------------------------------------------------------------
// The upstream side of the exchange.

void DownstreamConnection::connect_upstream(bool fresh_only) {
  endpoint_ = cluster_->pick(failed_endpoint_, &ex().unreachable);
  if (endpoint_ == nullptr) {
    // No connect attempt and no wait: the answer is known now.
    upstream_failed(
        cluster_->has_endpoints() ? LocalReason::kNoHealthyEndpoints : LocalReason::kNoEndpoints,
        0);
    return;
  }
  switch (cluster_->checkout(*endpoint_, this, fresh_only, upstream_, *this)) {
    case WorkerCluster::Checkout::kReady:
      use_upstream(upstream_.get());
      return;
    case WorkerCluster::Checkout::kConnecting:
      return;
    case WorkerCluster::Checkout::kWaiting:
      wait_ = Wait::kPool;
      timer_.start(static_cast<uint64_t>(cluster_->config().pool.pending_timeout.count()));
      return;
    case WorkerCluster::Checkout::kFull:
      upstream_failed(LocalReason::kPoolExhausted, 0);
      return;
  }
}

void DownstreamConnection::on_pool_capacity() {
  if (wait_ != Wait::kPool) return;
  wait_ = Wait::kNone;
  timer_.stop();
  connect_upstream(false);
}

void DownstreamConnection::on_upstream_connected(UpstreamConnection& conn, int status) {
  if (status != 0) {
    log::debug("upstream connect failed")
        .str("endpoint", conn.pool().endpoint.address)
        .str("error", uv_strerror(status));
    cluster_->stats.connect_failures.inc();
    upstream_.release(false);  // closed already
    if (status == UV_EMFILE || status == UV_ENFILE || status == UV_ENOBUFS || status == UV_ENOMEM) {
      // bulwark is out of descriptors or memory: no evidence against the endpoint.
      endpoint_ = nullptr;
    }
    try_failed(filters::TryFailure::kConnectFailure, LocalReason::kUpstreamConnectFailure, status);
    return;
  }
  use_upstream(&conn);
}

void DownstreamConnection::use_upstream(UpstreamConnection* conn) {
  conn->count_request();
  ex().response_parser.reset();
  ex().response_parser.set_max_headers(cluster_->config().max_response_headers);
  conn->start_reading();
  flush_to_upstream();
}

void DownstreamConnection::flush_to_upstream() {
  if (parsing_request_ || upstream_ == nullptr ||
      upstream_->state() != UpstreamConnection::State::kBusy)
    return;
  if (ex().to_upstream.in_flight() || ex().to_upstream.empty()) return;
  int rc = upstream_->write(ex().to_upstream);
  if (rc == 0) {
    request_sent_ = true;
  } else if (!try_replay()) {
    try_failed(filters::TryFailure::kReset, LocalReason::kUpstreamReset, rc);
  }
}

void DownstreamConnection::on_upstream_written(UpstreamConnection&, int status) {
  note_io();
  if (status < 0) {
    if (phase_ == Phase::kTunnel) {
      close();
      return;
    }
    if (phase_ == Phase::kProxying && !response_started_ && upstream_ != nullptr) {
      if (!try_replay())
        try_failed(filters::TryFailure::kReset, LocalReason::kUpstreamReset, status);
    }
    return;
  }
  // The bytes went out: the part of in_ they came from may be reused, unless it is kept for a
  // possible replay (then only until the buffer fills up).
  InputBuffer& in = in_;
  if (phase_ == Phase::kTunnel || !request_complete_) {
    if (ex().to_upstream.keep_history() && in.space() == 0)
      ex().to_upstream.set_keep_history(false);
    if (!ex().to_upstream.keep_history()) in.restart(worker_.buffers());
  }
  if (phase_ == Phase::kProxying && !request_complete_ && !in.empty()) {
    parse_request();
  }
  flush_to_upstream();
  update_reading();
}

void DownstreamConnection::on_upstream_read(UpstreamConnection& conn, ssize_t nread) {
  if (nread > 0) {
    note_io();
    if (phase_ == Phase::kTunnel) {
      ex().to_client.add_data(conn.in.data + conn.in.parsed, conn.in.filled - conn.in.parsed,
                              conn.in.block);
      conn.in.parsed = conn.in.filled;
      flush_to_client();
      if (closed_) return;
      // Backpressure, as for responses: no more reading until the client has taken these bytes.
      if (ex().to_client.in_flight()) {
        conn.stop_reading();
      } else {
        conn.in.restart(worker_.buffers());
      }
      return;
    }
    response_started_ = true;
    parse_response(conn);
    return;
  }
  // The upstream closed or failed.
  if (phase_ == Phase::kTunnel) {
    if (ex().to_client.in_flight()) {
      keep_client_ = false;
      release_upstream(false);
    } else {
      close();
    }
    return;
  }
  if (response_complete_) {
    // The whole response is here (its last bytes may still be on their way to a slow client):
    // the upstream closing costs this exchange nothing but the connection.
    release_upstream(false);
    return;
  }
  if (response_started_ && nread == UV_EOF && ex().response_parser.needs_eof()) {
    http::Parser::Result r = ex().response_parser.finish();  // completes a close-delimited body
    if (r.status != http::Parser::Status::kError) {
      upstream_reusable_ = false;
      flush_to_client(response_complete_);
      if (!closed_ && !ex().to_client.in_flight() && response_complete_) finish_exchange();
      return;
    }
  }
  if (!response_started_ && try_replay()) return;
  log::debug("upstream closed")
      .str("endpoint", conn.pool().endpoint.address)
      .str("error", uv_strerror(static_cast<int>(nread)))
      .boolean("response_started", response_started_);
  try_failed(filters::TryFailure::kReset, LocalReason::kUpstreamReset, static_cast<int>(nread));
}

void DownstreamConnection::parse_response(UpstreamConnection& conn) {
  while (true) {
    http::Parser::Result r =
        ex().response_parser.execute(conn.in.data, conn.in.parsed, conn.in.filled);
    conn.in.parsed += r.consumed;
    // The exchange may have left this connection (a retry, a failure).
    if (closed_ || upstream_ != &conn) return;
    if (r.status == http::Parser::Status::kPaused && response_interim_ && !response_complete_) {
      // A 1xx ended (it was copied out); the final response follows. Its head starts at the
      // front of the buffer, so interim responses one after another never add up to a head too
      // large.
      conn.in.compact(worker_.buffers());
      ex().response_parser.resume();
      continue;
    }
    if (r.status == http::Parser::Status::kUpgrade) {
      start_tunnel();
      return;
    }
    if (r.status == http::Parser::Status::kError ||
        r.status == http::Parser::Status::kHeadTooLarge) {
      log::debug("bad upstream response")
          .str("endpoint", conn.pool().endpoint.address)
          .str("error", r.error);
      try_failed(filters::TryFailure::kReset, LocalReason::kUpstreamProtocolError, 0);
      return;
    }
    if (r.status == http::Parser::Status::kOk && ex().response_parser.in_head() &&
        conn.in.space() == 0) {
      if (conn.in.capacity >= kMaxResponseHeadSize + 1024) {
        try_failed(filters::TryFailure::kReset, LocalReason::kUpstreamProtocolError, 0);
        return;
      }
      conn.in.grow(worker_.buffers(), kMaxResponseHeadSize + 1024);
    }
    break;
  }
  // The last bytes of a response are written at once when the socket takes them: the exchange
  // then ends now, not a loop turn later, and the client's next request is read sooner. Body
  // bytes before them go through the loop (one read buffer per connection per turn), so that
  // large responses take turns with everything else on the worker.
  flush_to_client(response_complete_);
  if (closed_) return;
  if (ex().to_client.in_flight()) {
    // Stop reading until the client has taken these bytes (backpressure). A complete response
    // needs no more bytes, so keep the reader as it is: an idle pooled connection reads anyway,
    // and this saves two epoll_ctl calls per request.
    if (!response_complete_) conn.stop_reading();
  } else if (response_complete_) {
    finish_exchange();
  } else if (!ex().response_parser.in_head()) {
    // Everything was parsed and written: reuse the buffer from its start. Not during a head,
    // whose spans still point at the bytes.
    conn.in.restart(worker_.buffers());
  }
}

http::ParserCallbacks::HeadAction DownstreamConnection::on_response_head(http::MessageHead& head) {
  response_status_ = head.status;
  if (head.status >= 100 && head.status < 200 && head.status != 101) {
    response_interim_ = true;
    if (++interim_responses_ > kMaxInterimResponses) {
      upstream_failed(LocalReason::kUpstreamProtocolError, 0);
      return http::ParserCallbacks::kPause;
    }
    if (!client_http10_) {
      // Interim responses (100 Continue, 103 Early Hints) go to the client as they come.
      std::string interim;
      http::DownstreamResponseHead how;
      how.framing = http::BodyFraming::kNone;
      http::write_downstream_response(head, how, interim);
      ex().to_client.add_framing(interim);
    }
    return http::ParserCallbacks::kProceed;
  }
  response_interim_ = false;
  // The try's outcome is known: its deadline no longer applies, and the circuit hears of it.
  upstream_us_ = now_us() - try_start_us_;
  try_deadline_ms_ = 0;
  arm_deadline_timer();
  cluster_->stats.upstream_requests.inc(head.status);
  record_try_outcome(head.status);
  if (maybe_retry(route_->shared->retry.retriable_status(head.status)))
    return http::ParserCallbacks::kPause;
  // This response goes to the client: the request will not be sent again.
  ex().to_upstream.set_keep_history(false);
  if (head.status == 101) {
    if (!request_upgrade_ || !upgrade_was_offered(head)) {
      upstream_failed(LocalReason::kUpstreamProtocolError, 0);
      return http::ParserCallbacks::kPause;
    }
    http::DownstreamResponseHead how;
    how.upgrade = true;
    how.framing = http::BodyFraming::kNone;
    how.request_id = {request_id_, request_id_len_};
    how.attempts = tries_;
    http::write_downstream_response(head, how, ex().to_client.head);
    ex().to_client.add_head();
    response_head_sent_ = true;
    return http::ParserCallbacks::kProceed;
  }
  if (request_head_request_ || head.status == 204 || head.status == 304) {
    response_framing_ = http::BodyFraming::kNone;
  } else if (head.has_content_length && !head.chunked) {
    response_framing_ = http::BodyFraming::kContentLength;
  } else {
    response_framing_ = client_http10_ ? http::BodyFraming::kClose : http::BodyFraming::kChunked;
  }
  keep_client_ = keep_client_ && client_keep_alive_ && !client_done() && !draining_ &&
                 !worker_.draining() && request_complete_ &&
                 response_framing_ != http::BodyFraming::kClose;
  // A 204 that announces a body: whatever bytes follow are not a response to anything, so the
  // connection must not carry another request.
  // A response that must have no body (HEAD, 204, 304) but announces one: if the upstream sends
  // the body anyway, those bytes may come at any time, and on a reused connection they would be
  // read as the answer to the next request, perhaps another client's. Such a connection carries
  // nothing more (it costs a HEAD or 304 with a length a new connection next time).
  const bool announces_body = head.chunked || head.content_length > 0;
  upstream_reusable_ =
      head.keep_alive && !(response_framing_ == http::BodyFraming::kNone && announces_body);
  if (upstream_ != nullptr) upstream_->set_keep_alive_timeout_ms(keep_alive_timeout_ms(head));
  http::DownstreamResponseHead how;
  how.keep_alive = keep_client_;
  how.http10_keep_alive = client_http10_ && keep_client_;
  how.framing = response_framing_;
  how.request_id = {request_id_, request_id_len_};
  how.attempts = tries_;
  http::write_downstream_response(head, how, ex().to_client.head);
  ex().to_client.add_head();
  response_head_sent_ = true;
  // HEAD, 204 and 304 never have a body, whatever Content-Length says (RFC 9112 6.3).
  return response_framing_ == http::BodyFraming::kNone ? http::ParserCallbacks::kNoBody
                                                       : http::ParserCallbacks::kProceed;
}

void DownstreamConnection::on_response_body(const char* data, size_t n) {
  bytes_out_ += n;
  if (response_framing_ == http::BodyFraming::kChunked) {
    ex().to_client.add_chunk(data, n, upstream_->in.block);
  } else {
    ex().to_client.add_data(data, n, upstream_->in.block);
  }
}

void DownstreamConnection::on_response_complete() {
  if (response_interim_) return;
  response_complete_ = true;
  if (response_framing_ == http::BodyFraming::kChunked) ex().to_client.add_last_chunk();
}

bool DownstreamConnection::try_replay() {
  // Only a reused connection that failed before any response byte, and only once: the upstream
  // closed it while idle, so it never saw the request.
  if (replayed_ || upstream_ == nullptr || !upstream_->reused() || response_started_ ||
      !may_resend_ || !ex().to_upstream.can_rewind() || ex().to_upstream.in_flight()) {
    return false;
  }
  replayed_ = true;
  log::debug("reused upstream connection was closed; sending the request again on a new one")
      .str("endpoint", upstream_->pool().endpoint.address);
  upstream_.release(false);
  ex().to_upstream.rewind();
  connect_upstream(true);
  return true;
}

void DownstreamConnection::release_upstream(bool reusable) {
  upstream_.release(reusable && request_complete_ && response_complete_);
}

void DownstreamConnection::upstream_failed(LocalReason reason, int err) {
  if (upstream_ != nullptr) release_upstream(false);
  if (response_head_sent_ || ex().to_client.in_flight()) {
    // The client already has part of a response: all we can do is cut the connection, after
    // what is queued.
    log_flags_ |= kLogUpstreamCut;
    keep_client_ = false;
    flush_to_client();
    if (!ex().to_client.in_flight()) close();
    return;
  }
  local_reply(reason, !request_complete_);
}

// ---------------------------------------------------------------------------------------------
// Writing to the client.

void DownstreamConnection::flush_to_client(bool at_once) {
  if (ex().to_client.in_flight() || ex().to_client.empty() || closed_) return;
  int rc = transport_->write(ex().to_client, at_once);
  if (rc != 0) {
    close();
  } else if (!ex().to_client.in_flight()) {
    note_io();  // all written at once: the caller goes on as on_transport_written() would
  }
}

void DownstreamConnection::on_transport_written(int status) {
  DownstreamConnection* self = this;
  if (status < 0) {
    self->close();
    return;
  }
  self->note_io();
  // What was added while that write was in flight (a final response behind a 1xx, say) goes
  // next; nothing ends before all of it is out.
  if (!self->ex().to_client.empty()) {
    self->flush_to_client(self->response_complete_ || self->phase_ == Phase::kLocalReply);
    if (self->closed_ || self->ex().to_client.in_flight()) return;
  }
  switch (self->phase_) {
    case Phase::kLocalReply:
      if (!self->keep_client_ ||
          (self->client_eof_ && (!self->request_complete_ || self->in_.empty()))) {
        self->complete_exchange(true);
        self->close_after_response();
      } else if (self->request_complete_) {
        self->finish_exchange();
      }
      return;
    case Phase::kTunnel:
      if (self->upstream_ == nullptr) {
        self->close();
        return;
      }
      self->flush_to_client();  // bytes that came while the write was in flight
      if (self->ex().to_client.in_flight()) return;
      self->upstream_->in.restart(self->worker_.buffers());
      self->read_upstream_on();
      return;
    case Phase::kProxying:
      break;
    default:
      return;
  }
  if (self->response_complete_) {
    self->finish_exchange();
    return;
  }
  if (self->upstream_ == nullptr) {
    self->log_flags_ |= kLogUpstreamCut;
    self->close();  // the upstream went away mid-response
    return;
  }
  UpstreamConnection& conn = *self->upstream_;
  if (conn.in.parsed == conn.in.filled) {
    if (!self->ex().response_parser.in_head()) conn.in.restart(self->worker_.buffers());
    self->read_upstream_on();
  } else {
    self->parse_response(conn);
  }
}

void DownstreamConnection::read_upstream_on() {
  if (waiting_turn_) return;
  if (worker_.pacer().take_step()) {
    upstream_->start_reading();
  } else {
    waiting_turn_ = true;
    worker_.pacer().wait(this);
  }
}

void DownstreamConnection::on_turn() {
  waiting_turn_ = false;
  // The exchange may have moved on meanwhile (ended, failed, cut).
  if (closed_ || upstream_ == nullptr || ex().to_client.in_flight()) return;
  if (phase_ == Phase::kTunnel || (phase_ == Phase::kProxying && !response_complete_)) {
    upstream_->start_reading();
  }
}

void DownstreamConnection::local_reply(LocalReason reason, bool close_after, int status,
                                       uint32_t retry_after_s) {
  const LocalReasonInfo& r = info(reason);
  if (status == 0) status = r.status;
  if (!exchange_open_) {
    // A reply to a request whose head never completed (malformed, too large, too slow).
    open_exchange();
    route_index_ = -1;
    tries_ = 0;
    ex().failed_tries.clear();
    worker_.new_request_id(request_id_);  // not the previous request's
    request_id_len_ = 32;
  }
  local_reason_ = reason;
  log::debug("local reply").str("reason", r.token).num("status", status).str("client", client_ip_);
  if (phase_ == Phase::kProxying) {
    end_policies();
    if (cluster_ != nullptr) cluster_->stats.active_requests.add(-1);
  }
  phase_ = Phase::kLocalReply;
  // A reply the client does not read, or a request body it never finishes, ends after
  // stream_idle_timeout.
  note_io();
  arm_deadline_timer();
  response_status_ = status;
  keep_client_ =
      !close_after && client_keep_alive_ && !draining_ && !worker_.draining() && !client_done();
  worker_.local_replies()[static_cast<size_t>(reason)].inc();
  http::LocalReplyExtras extras;
  extras.attempts = tries_;
  extras.retry_after_s = retry_after_s;
  bytes_out_ =
      http::write_local_reply(status, r.token, keep_client_, {request_id_, request_id_len_},
                              request_head_request_, ex().to_client.head, extras);
  ex().to_client.add_head();
  // Completed by on_transport_written(): this may run inside the request parser, which must not
  // be re-entered by finishing the exchange here.
  flush_to_client();
  update_reading();
}

void DownstreamConnection::finish_exchange() {
  timer_.stop();
  deadline_timer_.stop();
  complete_exchange(true);
  if (phase_ == Phase::kProxying) {
    release_upstream(upstream_reusable_);
    end_policies();
    cluster_->stats.active_requests.add(-1);
  }
  if (!request_complete_) keep_client_ = false;
  ex().to_upstream.clear();
  ex().to_client.clear();
  phase_ = Phase::kIdle;
  route_ = nullptr;
  route_stats_ = nullptr;
  cluster_ = nullptr;
  endpoint_ = nullptr;
  // Between requests a connection follows the newest config (its timeouts apply to the wait).
  if (!keep_client_ || client_done() || draining_ || worker_.draining() ||
      !move_to_newest_config()) {
    close_after_response();
    return;
  }
  if (request_upgrade_) {
    // An upgrade answered without 101: the connection goes on as HTTP/1.1.
    request_parser_.resume_after_refused_upgrade();
    request_upgrade_ = false;
  } else {
    request_parser_.resume();
  }
  if (!in_.empty()) {
    in_.compact(worker_.buffers());
    phase_ = Phase::kHead;
    arm_headers_timer();
    parse_request();  // only empty lines: back to kIdle
    // A client that half-closed after pipelining gets answers to every complete request it
    // sent; a request it left unfinished never will be.
    if (!closed_ && client_eof_ &&
        (phase_ == Phase::kIdle || phase_ == Phase::kHead ||
         (phase_ == Phase::kProxying && !request_complete_))) {
      close();
      return;
    }
  }
  if (phase_ == Phase::kIdle) {
    in_.release(worker_.buffers());
    request_parser_.trim();
    release_exchange();
    arm_idle_timer();
  }
  if (!closed_) update_reading();
}

void DownstreamConnection::close_after_response() {
  // Only a client that may still be sending: its request unfinished, or bytes after it unread.
  if (closed_ || client_eof_ || (request_complete_ && in_.empty())) {
    close();
    return;
  }
  if (transport_->shutdown() != 0) {
    close();
    return;
  }
  phase_ = Phase::kLingering;
  deadline_timer_.stop();
  timer_.start(kLingerMs);
  in_.parsed = in_.filled;
  in_.restart(worker_.buffers());
  update_reading();
}

void DownstreamConnection::open_exchange() {
  start_us_ = now_us();
  exchange_open_ = true;
  log_flags_ = 0;
  local_reason_ = LocalReason::kCount;
  bytes_in_ = bytes_out_ = upstream_us_ = 0;
  log_this_ = worker_.sample_access_log();
  ex().log_request.clear();
}

void DownstreamConnection::complete_exchange(bool answered) {
  if (!exchange_open_) return;
  exchange_open_ = false;
  if (answered && route_stats_ != nullptr) {
    route_stats_->requests.inc(response_status_);
    route_stats_->duration.observe_us(now_us() - start_us_);
  }
  if (!answered && (log_flags_ & (kLogUpstreamCut | kLogStreamIdle)) == 0)
    log_flags_ |= kLogDownstreamClosed;
  if (log_this_) write_access_log();
}

void DownstreamConnection::write_access_log() {
  log_this_ = false;
  const uint64_t now = now_us();
  timespec wall{};
  clock_gettime(CLOCK_REALTIME, &wall);
  AccessRecord r;
  r.start_unix_us = static_cast<int64_t>(wall.tv_sec) * 1'000'000 + wall.tv_nsec / 1000 -
                    static_cast<int64_t>(now - start_us_);
  r.request_id = {request_id_, request_id_len_};
  r.listener = listener_->config.name;
  if (route_index_ >= 0) r.route = listener_->config.routes[static_cast<size_t>(route_index_)].name;
  if (cluster_ != nullptr) r.cluster = cluster_->config().name;
  r.request = ex().log_request;
  r.http10 = client_http10_;
  r.status = response_head_sent_ || local_reason_ != LocalReason::kCount ? response_status_ : 0;
  r.duration_us = now - start_us_;
  if (upstream_us_ != 0) r.upstream_us = static_cast<int64_t>(upstream_us_);
  r.bytes_in = bytes_in_;
  r.bytes_out = bytes_out_;
  r.failed_tries = ex().failed_tries;
  r.attempts = tries_;

  // The last try, when one was made after the failed ones listed: its endpoint and outcome.
  size_t listed = ex().failed_tries.empty() ? 0 : 1;
  for (size_t at = ex().failed_tries.find(", "); at != std::string::npos;
       at = ex().failed_tries.find(", ", at + 2))
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

void DownstreamConnection::start_tunnel() {
  // A tunnel may live for hours: it gives its bulkhead slot back now.
  end_policies();
  phase_ = Phase::kTunnel;
  arm_deadline_timer();  // only the stream idle timeout bounds a tunnel
  ex().to_upstream.set_keep_history(false);
  // Bytes that followed the heads on either side are already tunnel data.
  if (!in_.empty()) {
    ex().to_upstream.add_data(in_.data + in_.parsed, in_.filled - in_.parsed, in_.block);
    in_.parsed = in_.filled;
  }
  UpstreamConnection& conn = *upstream_;
  if (!conn.in.empty()) {
    ex().to_client.add_data(conn.in.data + conn.in.parsed, conn.in.filled - conn.in.parsed,
                            conn.in.block);
    conn.in.parsed = conn.in.filled;
  }
  flush_to_client();
  if (closed_) return;
  if (ex().to_client.in_flight()) {
    conn.stop_reading();
  } else {
    conn.in.restart(worker_.buffers());
  }
  flush_to_upstream();
  update_reading();
}

// ---------------------------------------------------------------------------------------------
// Timers, reading control, drain and lifetime.

void DownstreamConnection::arm_idle_timer() {
  idle_since_ms_ = uv_now(worker_.loop());
  timer_.start(static_cast<uint64_t>(listener_->config.idle_timeout.count()));
}

void DownstreamConnection::arm_headers_timer() {
  timer_.start(static_cast<uint64_t>(listener_->config.request_headers_timeout.count()));
}

void DownstreamConnection::on_timer() {
  DownstreamConnection* self = this;
  bool body_unread = self->request_has_body_ && !self->request_complete_;
  switch (self->wait_) {
    case Wait::kPool:
      self->cancel_wait();
      self->local_reply(LocalReason::kPoolTimeout, body_unread);
      return;
    case Wait::kAdmission:
      self->wait_ = Wait::kNone;
      self->after_admission(self->admission_.on_timer());
      return;
    case Wait::kBackoff:
      self->wait_ = Wait::kNone;
      self->start_try();
      return;
    case Wait::kNone:
      break;
  }
  switch (self->phase_) {
    case Phase::kIdle:
    case Phase::kLingering:
      self->close();
      return;
    case Phase::kHead:
      self->local_reply(LocalReason::kRequestHeadersTimeout, true);
      return;
    default:
      return;
  }
}

void DownstreamConnection::on_deadline_timer() {
  DownstreamConnection* self = this;
  uint64_t now = uv_now(self->worker_.loop());
  uint64_t idle = self->stream_idle_deadline_ms();
  if (idle != 0 && now >= idle) {
    self->stream_idle_expired();
    return;
  }
  if (self->phase_ != Phase::kProxying) {
    self->arm_deadline_timer();
    return;
  }
  const bool route_due = self->route_deadline_ms_ != 0 && now >= self->route_deadline_ms_;
  const bool try_due = self->try_deadline_ms_ != 0 && now >= self->try_deadline_ms_;
  // The client has not finished its request although the upstream connection is up and takes
  // bytes (nothing waits, no write to it is stuck): the time went to the client, not to the
  // upstream, so neither the circuit breaker nor outlier detection hears of it.
  const bool client_stalled = !self->request_complete_ && self->wait_ == Wait::kNone &&
                              self->upstream_ != nullptr &&
                              self->upstream_->state() == UpstreamConnection::State::kBusy &&
                              !self->ex().to_upstream.in_flight() && !self->response_head_sent_ &&
                              !self->ex().to_client.in_flight();
  if ((route_due || try_due) && client_stalled) {
    self->route_deadline_ms_ = self->try_deadline_ms_ = 0;
    self->cancel_wait();
    if (self->upstream_ != nullptr) self->release_upstream(false);
    self->local_reply(LocalReason::kRequestTimeout, true);
    return;
  }
  if (route_due) {
    // The route's timeout bounds all tries and waits together: no retry after it.
    self->route_deadline_ms_ = 0;
    bool trying = self->upstream_ != nullptr && !self->response_head_sent_;
    self->cancel_wait();
    if (trying) {
      self->cluster_->stats.upstream_requests.inc(0);
      self->record_try_outcome(0);
    }
    self->upstream_failed(LocalReason::kUpstreamTimeout, UV_ETIMEDOUT);
    // A response cut short may still wait for a client that does not read: the idle timer
    // bounds that wait.
    self->arm_deadline_timer();
    return;
  }
  if (self->try_deadline_ms_ != 0 && now >= self->try_deadline_ms_) {
    self->try_deadline_ms_ = 0;
    // A try still waiting for a pool connection never reached its endpoint: the endpoint is not
    // to blame (outlier detection), nor to be avoided by the retry.
    if (self->wait_ == Wait::kPool) self->endpoint_ = nullptr;
    self->cancel_wait();
    self->try_failed(filters::TryFailure::kPerTryTimeout, LocalReason::kUpstreamTimeout,
                     UV_ETIMEDOUT);
    return;
  }
  self->arm_deadline_timer();
}

void DownstreamConnection::stream_idle_expired() {
  log_flags_ |= kLogStreamIdle;
  log::debug("stream idle timeout").str("client", client_ip_);
  if (phase_ == Phase::kProxying && !response_head_sent_ && !ex().to_client.in_flight()) {
    // No response has started: say who went quiet. A client that stopped sending its body gets
    // 408; a request fully sent whose upstream stopped answering gets 504 and counts as a
    // timed-out try.
    bool client_stalled = !request_complete_;
    if (!client_stalled && upstream_ != nullptr) {
      cluster_->stats.upstream_requests.inc(0);
      record_try_outcome(0);
    }
    cancel_wait();
    if (upstream_ != nullptr) release_upstream(false);
    local_reply(LocalReason::kStreamIdleTimeout, true, client_stalled ? 408 : 504);
    return;
  }
  // A response under way, a tunnel, or a reply the client does not read: all we can do is cut.
  close();
}

void DownstreamConnection::update_reading() {
  if (closed_) return;
  bool want = false;
  switch (phase_) {
    case Phase::kIdle:
    case Phase::kHead:
    case Phase::kLingering:
      want = true;
      break;
    case Phase::kProxying:
      want = request_complete_ || !ex().to_upstream.in_flight();
      break;
    case Phase::kTunnel:
      want = !ex().to_upstream.in_flight();
      break;
    default:
      want = false;
  }
  if (client_eof_) want = false;
  if (in_.has_storage() && in_.space() == 0) want = false;
  if (want) {
    transport_->read_start();
  } else {
    transport_->read_stop();
  }
}

void DownstreamConnection::drain() {
  draining_ = true;
  if (phase_ == Phase::kIdle) close();
}

void DownstreamConnection::abort() { close(); }

void DownstreamConnection::close() {
  if (closed_) return;
  closed_ = true;
  if (waiting_turn_) {
    worker_.pacer().cancel(this);
    waiting_turn_ = false;
  }
  // A tunnel ends by closing; anything else open now was cut short.
  complete_exchange(phase_ == Phase::kTunnel);
  // Only a request still with its upstream counts as active (a local reply took it off).
  const bool active = phase_ == Phase::kProxying || phase_ == Phase::kTunnel;
  if (phase_ == Phase::kProxying) end_policies();
  phase_ = Phase::kClosing;
  upstream_.release(false);
  if (cluster_ != nullptr) {
    if (active) cluster_->stats.active_requests.add(-1);
    cluster_ = nullptr;
  }
  listener_limit_->release();
  worker_.process_limit().release();
  worker_.connection_closed(this);
  listener_->stats.connections->add(-1);
  endpoint_.reset();                // before the generation (and maybe its clusters and pools) goes
  worker_.release(listener_->gen);  // the generation may be freed: listener_ is not used again
  transport_.reset();               // cuts a write in flight: the outboxes are free
  timer_.close();
  deadline_timer_.close();
  worker_.deferred().defer(this);
}

// Only after close() (see there).
DownstreamConnection::~DownstreamConnection() {
  in_.release(worker_.buffers());
  release_exchange();
}

// ---------------------------------------------------------------------------------------------
// The exchange's state, borrowed from the worker while a request is under way.

DownstreamExchange::DownstreamExchange() : response_parser(http::Parser::Type::kResponse, nullptr) {
  response_parser.set_max_head_size(kMaxResponseHeadSize);
}

void DownstreamConnection::take_exchange() {
  ex_ = worker_.exchanges().acquire();
  ex_->response_parser.set_callbacks(&response_callbacks_);
}

void DownstreamConnection::release_exchange() {
  // A write in flight still points into the outboxes.
  if (ex_ == nullptr || ex_->to_client.in_flight() || ex_->to_upstream.in_flight()) return;
  ex_->to_upstream.clear();
  ex_->to_client.clear();
  worker_.exchanges().release(ex_);
  ex_ = nullptr;
}

}  // namespace bulwark
