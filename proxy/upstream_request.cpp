#include "proxy/upstream_request.h"

#include "proxy/cluster.h"
#include "proxy/log.h"
#include "proxy/tls.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

uint64_t now_us() { return uv_hrtime() / 1000; }

// "Keep-Alive: timeout=5, max=100" -> 5000 ms; 0 when absent.
uint64_t keep_alive_timeout_ms(const http::MessageHead& head) {
  std::string_view v = head.value_of(head.keep_alive_header);
  size_t pos = v.find("timeout=");
  if (pos == std::string_view::npos) return 0;
  uint64_t secs = 0;
  for (size_t i = pos + 8; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i)
    secs = secs * 10 + (v[i] - '0');
  return secs * 1000;
}

}  // namespace

UpstreamRequest::UpstreamRequest(Worker& worker, Callbacks& callbacks, http::Parser& parser,
                                 Outbox& request)
    : worker_(worker),
      callbacks_(callbacks),
      parser_(parser),
      request_(request),
      start_us_(now_us()) {
  response_callbacks_.self = this;
}

UpstreamRequest::~UpstreamRequest() {
  if (waiting_turn_) worker_.pacer().cancel(this);
  lease_.release(false);
}

UpstreamRequest::Start UpstreamRequest::start(EndpointPool& pool, bool fresh_only,
                                              bool may_replay) {
  pool_ = &pool;
  may_replay_ = may_replay;
  switch (pool.cluster.checkout(pool, this, fresh_only, lease_, *this)) {
    case WorkerCluster::Checkout::kReady:
      use(lease_.get());
      return Start::kStarted;
    case WorkerCluster::Checkout::kConnecting:
      return Start::kStarted;
    case WorkerCluster::Checkout::kWaiting:
      return Start::kWaiting;
    case WorkerCluster::Checkout::kFull:
      break;
  }
  return Start::kFull;
}

void UpstreamRequest::release(bool reusable) {
  PoolWaiter::cancel();
  if (waiting_turn_) {
    worker_.pacer().cancel(this);
    waiting_turn_ = false;
  }
  lease_.release(reusable);
}

void UpstreamRequest::on_upstream_connected(UpstreamConnection& conn, int status) {
  if (status != 0) {
    const bool tls = is_tls_status(status);
    log::debug(tls ? "upstream TLS handshake failed" : "upstream connect failed")
        .str("endpoint", conn.pool().endpoint.address)
        .str("error", tls ? tls_error_name(tls_error_of(status)) : uv_strerror(status));
    conn.pool().cluster.stats.connect_failures.inc();
    // A failed handshake is a failed connect (retried and counted against the endpoint as one),
    // with a reply of its own: the endpoint is up, but not the one we were told to trust.
    fail(filters::TryFailure::kConnectFailure,
         tls ? LocalReason::kUpstreamTlsFailure : LocalReason::kUpstreamConnectFailure, status);
    return;
  }
  use(&conn);
}

void UpstreamRequest::use(UpstreamConnection* conn) {
  conn->count_request();
  on_reused_ = conn->reused();  // counted this request: more than one
  parser_.reset();
  parser_.set_callbacks(&response_callbacks_);
  parser_.set_max_headers(conn->pool().cluster.config().max_response_headers);
  conn->start_reading();
  callbacks_.on_try_ready(*this);
}

bool UpstreamRequest::send(bool at_once) {
  if (!connected() || request_.in_flight() || request_.empty()) return false;
  int rc = lease_->write(request_, at_once);
  if (rc == 0) return true;
  if (!replay()) fail(filters::TryFailure::kReset, LocalReason::kUpstreamReset, rc);
  return false;
}

void UpstreamRequest::on_upstream_written(UpstreamConnection&, int status) {
  if (status < 0) {
    if (upgraded_) {
      callbacks_.on_try_closed(*this, true);
    } else if (!response_started_ && lease_ != nullptr && !replay()) {
      fail(filters::TryFailure::kReset, LocalReason::kUpstreamReset, status);
    }
    return;
  }
  callbacks_.on_try_request_written(*this);
}

void UpstreamRequest::on_upstream_read(UpstreamConnection& conn, ssize_t nread) {
  if (nread > 0) {
    if (upgraded_) {
      forward_tunnel_bytes(conn);
      return;
    }
    response_started_ = true;
    parse(conn);
    return;
  }
  // The upstream closed or failed.
  if (upgraded_) {
    if (nread == UV_EOF && callbacks_.on_try_tunnel_end(*this)) return;
    callbacks_.on_try_closed(*this, false);
    return;
  }
  if (response_complete_) {
    // The whole response is here (its last bytes may still be on their way to a slow client):
    // the upstream closing costs the exchange nothing but the connection.
    lease_.release(false);
    return;
  }
  if (response_started_ && nread == UV_EOF && parser_.needs_eof()) {
    http::Parser::Result r = parser_.finish();  // completes a close-delimited body
    if (r.status != http::Parser::Status::kError) {
      reusable_ = false;
      callbacks_.on_try_parsed(*this);
      return;
    }
  }
  if (!response_started_ && is_tls_status(static_cast<int>(nread))) {
    // The handshake ended on our side, then the upstream refused it (TLS 1.3 judges the client
    // certificate after that): a failed connect, as if the handshake itself had failed.
    conn.pool().cluster.stats.connect_failures.inc();
    fail(filters::TryFailure::kConnectFailure, LocalReason::kUpstreamTlsFailure,
         static_cast<int>(nread));
    return;
  }
  if (!response_started_ && replay()) return;
  log::debug("upstream closed")
      .str("endpoint", conn.pool().endpoint.address)
      .str("error", uv_strerror(static_cast<int>(nread)))
      .boolean("response_started", response_started_);
  fail(filters::TryFailure::kReset, LocalReason::kUpstreamReset, static_cast<int>(nread));
}

void UpstreamRequest::parse(UpstreamConnection& conn) {
  while (true) {
    http::Parser::Result r = parser_.execute(conn.in.data, conn.in.parsed, conn.in.filled);
    conn.in.parsed += r.consumed;
    // The exchange may have let go of this try or connection (a retry, a failure, its end).
    if (lease_ != &conn) return;
    if (r.status == http::Parser::Status::kPaused && response_interim_ && !response_complete_) {
      // A 1xx ended (it was forwarded); the final response follows. Its head starts at the
      // front of the buffer, so interim responses one after another never add up to a head too
      // large.
      conn.in.compact(worker_.buffers());
      parser_.resume();
      continue;
    }
    if (r.status == http::Parser::Status::kUpgrade) {
      upgraded_ = true;
      callbacks_.on_try_upgraded(*this);
      if (lease_ != &conn) return;
      // Bytes that followed the 101 are already tunnel data; with the 101 itself, they go to
      // the client now.
      forward_tunnel_bytes(conn);
      return;
    }
    if (r.status == http::Parser::Status::kError ||
        r.status == http::Parser::Status::kHeadTooLarge) {
      log::debug("bad upstream response")
          .str("endpoint", conn.pool().endpoint.address)
          .str("error", r.error);
      fail(filters::TryFailure::kReset, LocalReason::kUpstreamProtocolError, 0);
      return;
    }
    if (r.status == http::Parser::Status::kOk && parser_.in_head() && conn.in.space() == 0) {
      if (conn.in.capacity >= kMaxResponseHeadSize + 1024) {
        fail(filters::TryFailure::kReset, LocalReason::kUpstreamProtocolError, 0);
        return;
      }
      conn.in.grow(worker_.buffers(), kMaxResponseHeadSize + 1024);
    }
    break;
  }
  after(conn, callbacks_.on_try_parsed(*this));
}

void UpstreamRequest::forward_tunnel_bytes(UpstreamConnection& conn) {
  InputBuffer& in = conn.in;
  const char* data = in.data + in.parsed;
  const size_t n = in.filled - in.parsed;
  in.parsed = in.filled;
  after(conn, callbacks_.on_try_data(*this, data, n, in.block));
}

void UpstreamRequest::after(UpstreamConnection& conn, Callbacks::Next next) {
  if (lease_ != &conn) return;
  switch (next) {
    case Callbacks::Next::kWait:
      // Stop reading until the client has taken these bytes (backpressure). A complete response
      // needs no more bytes, so keep the reader as it is: an idle pooled connection reads anyway,
      // and this saves two epoll_ctl calls per request.
      if (!response_complete_) conn.stop_reading();
      return;
    case Callbacks::Next::kMore:
      // Everything was parsed and forwarded: reuse the buffer from its start. Not during a head,
      // whose spans still point at the bytes.
      if (upgraded_ || !parser_.in_head()) conn.in.restart(worker_.buffers());
      return;
    case Callbacks::Next::kDone:
      return;
  }
}

void UpstreamRequest::resume() {
  if (lease_ == nullptr) return;
  UpstreamConnection& conn = *lease_;
  if (!upgraded_ && conn.in.parsed != conn.in.filled) {
    parse(conn);
    return;
  }
  if (upgraded_ || !parser_.in_head()) conn.in.restart(worker_.buffers());
  read_on();
}

void UpstreamRequest::read_on() {
  if (waiting_turn_ || lease_ == nullptr) return;
  if (worker_.pacer().take_step()) {
    lease_->start_reading();
  } else {
    waiting_turn_ = true;
    worker_.pacer().wait(this);
  }
}

void UpstreamRequest::on_turn() {
  waiting_turn_ = false;
  // The exchange may have moved on meanwhile (ended, failed, cut).
  if (lease_ == nullptr || !callbacks_.on_try_turn(*this)) return;
  if (upgraded_ || !response_complete_) lease_->start_reading();
}

bool UpstreamRequest::replay() {
  // Only a reused connection that failed before any response byte, and only once: the upstream
  // closed it while idle, so it never saw the request.
  if (replayed_ || !may_replay_ || lease_ == nullptr || !lease_->reused() || response_started_ ||
      !request_.can_rewind() || request_.in_flight()) {
    return false;
  }
  replayed_ = true;
  log::debug("reused upstream connection was closed; sending the request again on a new one")
      .str("endpoint", lease_->pool().endpoint.address);
  lease_.release(false);
  callbacks_.on_try_replay(*this);
  return true;
}

void UpstreamRequest::fail(filters::TryFailure failure, LocalReason reason, int err) {
  lease_.release(false);
  callbacks_.on_try_failed(*this, failure, reason, err);
}

http::ParserCallbacks::HeadAction UpstreamRequest::on_head(http::MessageHead& head) {
  if (head.status >= 100 && head.status < 200 && head.status != 101) {
    response_interim_ = true;
    ++interim_responses_;
    return callbacks_.on_try_interim(*this, head) ? http::ParserCallbacks::kProceed
                                                  : http::ParserCallbacks::kPause;
  }
  response_interim_ = false;
  if (lease_ != nullptr) lease_->set_keep_alive_timeout_ms(keep_alive_timeout_ms(head));
  return callbacks_.on_try_head(*this, head);
}

void UpstreamRequest::on_body(const char* data, size_t n) {
  callbacks_.on_try_body(*this, data, n, lease_->in.block);
}

void UpstreamRequest::on_complete() {
  if (response_interim_) return;
  response_complete_ = true;
  callbacks_.on_try_complete(*this);
}

}  // namespace bulwark
