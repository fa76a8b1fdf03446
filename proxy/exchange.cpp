#include "proxy/exchange.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <new>

#include "proxy/cluster.h"
#include "proxy/log.h"
#include "proxy/tls.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

uint64_t now_us() { return uv_hrtime() / 1000; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Resources and the pool.

ExchangeResources::ExchangeResources(Worker& worker)
    : wait_timer(Timer::make<&ExchangeResources::on_wait_timer>(worker.loop(), this)),
      deadline_timer(Timer::make<&ExchangeResources::on_deadline_timer>(worker.loop(), this)),
      response_parser(http::Parser::Type::kResponse, nullptr) {
  response_parser.set_max_head_size(kMaxResponseHeadSize);
  deadline_timer.unref();  // armed in a free slot, it keeps nothing waiting
}

void ExchangeResources::on_wait_timer() {
  if (exchange != nullptr) exchange->on_wait_timer();
}

void ExchangeResources::on_deadline_timer() {
  deadline_armed_for = 0;  // it fired
  if (exchange != nullptr) exchange->on_deadline_timer();
}

// An exchange's storage and its resources, kept together for reuse.
struct ExchangePool::Slot {
  explicit Slot(Worker& worker) : resources(worker) { resources.slot = this; }
  ExchangeResources resources;
  alignas(Exchange) unsigned char storage[sizeof(Exchange)];
};

ExchangePool::ExchangePool(Worker& worker) : worker_(worker) {}
ExchangePool::~ExchangePool() = default;

Exchange* ExchangePool::acquire(ListenerContext& listener, ExchangeStream& stream) {
  Slot* s = free_.acquire(worker_);
  return new (s->storage) Exchange(worker_, listener, stream, s->resources);
}

void ExchangePool::release_later(Exchange* e) {
  worker_.deferred().defer(e, [](void* p) {
    auto* exchange = static_cast<Exchange*>(p);
    exchange->worker().exchanges().release(exchange);
  });
}

size_t ExchangePool::trim() { return free_.trim(); }

void ExchangePool::release(Exchange* e) {
  auto* s = static_cast<Slot*>(e->resources().slot);
  e->~Exchange();
  free_.release(s);
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
  release_upstream(false);
  // A write to the upstream in flight was cut with the connection: the Outbox is free.
  res_.to_upstream.clear();
  if (hedges_sent_ > 0) {
    for (const std::unique_ptr<HedgeTry>& h : res_.hedges) {
      h->upstream.reset();
      h->endpoint.reset();
      h->circuit.reset();
      h->racing = false;
      h->request.clear();
    }
  }
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
  request_framing_ = http::request_framing(head);
  const bool has_body = head.chunked || head.content_length > 0;
  request_has_body_ = has_body;

  const bool add_request_id = !take_request_id(head);
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
  write_upstream_head(head, target, route, wants_upgrade, add_request_id);

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
  active_request_.hold(cluster_->stats.active_requests);
  run_admission(head);
  if (state_ == State::kLocalReply) {
    head.upgrade = request_upgrade_ = false;
    if (has_body) return http::ParserCallbacks::kPause;
  }
  return http::ParserCallbacks::kProceed;
}

bool Exchange::take_request_id(const http::MessageHead& head) {
  static_assert(sizeof request_id_ > http::kMaxRequestIdLength);
  std::string_view rid = head.value_of(head.request_id);
  if (http::usable_request_id(rid)) {
    std::memcpy(request_id_, rid.data(), rid.size());
    request_id_len_ = rid.size();
    return true;
  }
  new_request_id();
  return false;
}

void Exchange::write_upstream_head(http::MessageHead& head, const RequestTarget& target,
                                   const config::RouteConfig& route, bool wants_upgrade,
                                   bool add_request_id) {
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
    http::forwarded_upgrades(head.value_of(head.upgrade_header), route.upgrades, protocols);
    request_upgrade_ = head.upgrade = !protocols.empty();
    how.upgrade_protocols = protocols;
  }
  how.path = path;
  how.authority = target.authority;
  using HostRewrite = config::RouteConfig::HostRewrite;
  // host_rewrite: auto puts each try's endpoint name in the Host written here (every request
  // has a Host: the parser refuses one without).
  if (route.host_rewrite_mode == HostRewrite::kLiteral) how.authority = route.host_rewrite;
  how.client_address = stream_.client_address();
  if (const TlsSession* tls = stream_.tls()) {
    how.proto = "https";
    // Empty unless the listener sets it; and only while it still does (a reload to sanitize).
    if (listener_.config.tls &&
        listener_.config.tls->forward_client_cert != config::ForwardClientCert::kSanitize) {
      how.client_cert = tls->forwarded_client_cert;
    }
    // append_forward trusts the caller's own header only when the caller proved who it is (a
    // verified client certificate on this connection), as Envoy does; anyone else's is dropped.
    how.keep_client_cert =
        !tls->forwarded_client_cert.empty() && listener_.config.tls &&
        listener_.config.tls->forward_client_cert == config::ForwardClientCert::kAppendForward;
  }
  how.trusted_hops = listener_.config.trusted_hops;
  how.request_id = {request_id_, request_id_len_};
  how.add_request_id = add_request_id;
  how.upgrade = request_upgrade_;
  how.framing = request_framing_;
  res_.to_upstream.clear();
  const http::HostValueSpan host = http::write_upstream_request(head, how, res_.to_upstream.head);
  res_.to_upstream.add_head();
  if (route.host_rewrite_mode == HostRewrite::kAuto && host.at != std::string::npos) {
    host_auto_ = true;
    host_at_ = static_cast<uint32_t>(host.at);
    host_len_ = static_cast<uint32_t>(host.length);
  }
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
  // adaptive_concurrency measures the upstream, not a slow upload: its clock starts now.
  if (adaptive_permit_) adaptive_since_us_ = now_us();
  if (state_ == State::kProxying && request_framing_ == http::BodyFraming::kChunked &&
      !request_upgrade_) {
    res_.to_upstream.add_last_chunk();
  }
  // A hedge waits for the whole request: its delay starts now when the try started before.
  if (state_ == State::kProxying && route_ != nullptr && route_->shared->retry.config().hedge &&
      try_ != nullptr && wait_ == Wait::kNone && !response_head_sent_ && hedge_at_ms_ == 0 &&
      hedges_racing_ == 0) {
    arm_hedge();
  }
}

void Exchange::on_tunnel_data(const char* data, size_t n, BufferBlock* block) {
  res_.to_upstream.add_data(data, n, block);
  flush_to_upstream();
}

bool Exchange::on_tunnel_client_end() {
  // Both sides ended: the tunnel is over (the connection closes, the upstream's with it).
  if (state_ != State::kTunnel || !try_ || !try_->has_connection() || tunnel_upstream_ended_)
    return false;
  tunnel_client_ended_ = true;
  arm_deadline_timer();  // the shorter idle bound of a half-closed tunnel
  shut_down_tunnel_upstream();
  return true;
}

void Exchange::shut_down_tunnel_upstream() {
  if (!tunnel_client_ended_ || res_.to_upstream.in_flight() || !res_.to_upstream.empty()) return;
  if (try_->shutdown_write() != 0) {
    stream_.close();
    return;
  }
  // The upstream had ended its side already: nothing moves either way any more.
  if (tunnel_upstream_ended_) on_try_closed(*try_, false);
}

bool Exchange::wants_request_bytes() const {
  switch (state_) {
    case State::kProxying:
      if (request_complete_) return true;  // the next request's bytes, up to the read buffer
      // A write in flight holds the rest back. Without a connection that takes the bytes (the
      // request waits for admission, a pool slot, a connect or a backoff) nothing is in flight:
      // the body held meanwhile is bounded too.
      return !res_.to_upstream.in_flight() &&
             res_.to_upstream.bytes_pending() < kMaxUnsentRequestBytes;
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
// Toward the client.

void Exchange::flush_to_client(bool at_once) { stream_.flush(at_once); }

void Exchange::on_downstream_written() {
  note_io();
  switch (state_) {
    case State::kTunnel:
      if (!try_->has_connection()) {
        // The upstream is gone: after a clean end, the client is told so before the close.
        if (tunnel_upstream_ended_) end_tunnel_downstream();
        stream_.close();
        return;
      }
      if (tunnel_upstream_ended_) {
        end_tunnel_downstream();
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
  active_request_.release();
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
  complete(true);
  if (state_ == State::kProxying) {
    release_upstream(try_ && try_->reusable());
    end_policies();
  }
  // A local reply (circuit open, no endpoint) may leave it held: given back before the
  // generation, and so the cluster it belongs to, may go.
  release_adaptive(false);
  active_request_.release();
  state_ = State::kDone;
  endpoint_.reset();
  stream_.exchange_done();
}

void Exchange::on_stream_closed() {
  // Hedges still racing end first, so the access log lists them.
  if (hedges_racing_ > 0) end_racing_hedges(HedgeOutcome::kCancelled);
  // A tunnel ends by closing; anything else open now was cut short.
  complete(state_ == State::kTunnel);
  end_policies();
  state_ = State::kDone;
  res_.wait_timer.stop();
  release_upstream(false);
  active_request_.release();
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

namespace {

// How the last try ended, in the words of the failed tries (filters::to_string(RetryReason)); empty
// when its response status says it.
std::string_view last_try_outcome(LocalReason reason, int status, int error, std::string& scratch) {
  switch (reason) {
    case LocalReason::kUpstreamTlsFailure:
      scratch = "tls:";
      scratch += is_tls_status(error) ? tls_error_name(tls_error_of(error)) : "internal";
      return scratch;
    case LocalReason::kUpstreamConnectFailure:
      return "connect-failure";
    case LocalReason::kUpstreamReset:
    case LocalReason::kUpstreamProtocolError:
      return "reset";
    case LocalReason::kUpstreamTimeout:
      return "timeout";
    case LocalReason::kCount:
      return status == 0 ? "none" : "";  // none: cut short before a response head
    default:
      return info(reason).token;
  }
}

}  // namespace

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
  if (const TlsSession* tls = stream_.tls()) {
    r.tls_version = tls->version;
    r.tls_cipher = tls->cipher;
    r.tls_sni = tls->sni;
    r.tls_resumed = tls->resumed;
    r.tls_peer = tls->peer_identity;
  }

  // The last try, when one was made after the failed ones listed: its endpoint and outcome.
  const std::string& failed = res_.failed_tries;
  size_t listed = failed.empty() ? 0 : 1;
  for (size_t at = failed.find(", "); at != std::string::npos; at = failed.find(", ", at + 2))
    ++listed;
  char last_try[128];
  if (tries_ > listed && endpoint_ != nullptr) {
    r.upstream = endpoint_->endpoint.address;
    std::string scratch;
    std::string_view outcome =
        last_try_outcome(local_reason_, response_status_, try_error_, scratch);
    const char* hedge = lead_hedge_ != nullptr ? " (hedge)" : "";
    int n = outcome.empty()
                ? snprintf(last_try, sizeof last_try, "%.*s %d%s",
                           static_cast<int>(r.upstream.size()), r.upstream.data(),
                           response_status_, hedge)
                : snprintf(last_try, sizeof last_try, "%.*s %.*s%s",
                           static_cast<int>(r.upstream.size()), r.upstream.data(),
                           static_cast<int>(outcome.size()), outcome.data(), hedge);
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
