#include "proxy/http1_connection.h"

#include <algorithm>

#include "proxy/exchange.h"
#include "proxy/headers.h"
#include "proxy/log.h"
#include "proxy/tls_transport.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

// The longest a connection lingers after its last response (nginx's lingering_timeout is 5 s).
constexpr uint64_t kLingerMs = 2000;

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

}  // namespace

void accept_http1_connection(Worker& worker, ListenerContext& listener, int fd) {
  (new Http1Connection(worker, listener))->accept(fd);
}

Http1Connection::Http1Connection(Worker& worker, ListenerContext& listener)
    : worker_(worker), listener_(&listener), listener_limit_(listener.limit) {
  ++listener.gen.users;
  listener.stats.connections->add(1);
}

// Only after close() (see there).
Http1Connection::~Http1Connection() {
  in_.release(worker_.buffers());
  release_outbox();
  release_parser();
}

bool Http1Connection::accept(int fd) {
  outbound = listener_->config.direction == config::ListenerDirection::kOutbound;
  if (listener_->config.original_destination) {
    has_original_destination_ = bulwark::original_destination(fd, &original_destination_);
  }
  worker_.connection_opened(this);
  if (listener_->tls != nullptr) {
    transport_ = TlsTransport::accept(&worker_.transport_context(), fd, listener_->tls->get());
  } else {
    transport_ = TcpTransport::open(&worker_.transport_context(), fd);
  }
  if (!transport_) {
    close();
    return false;
  }
  transport_->attach(this, &in_);
  transport_->peer_ip(client_ip_, sizeof client_ip_);
  // A TLS client has request_headers_timeout for its handshake; the idle deadline starts after.
  if (listener_->tls != nullptr) {
    arm_headers_timer();
  } else {
    arm_idle_timer();
  }
  update_reading();
  return true;
}

void Http1Connection::on_reload() {
  if (closed_) return;
  if (phase_ == Phase::kIdle) {
    if (!move_to_newest_config()) close();
    return;
  }
  const ListenerContext* next = worker_.current().listener_named(listener_->config.name);
  if (next == nullptr) {
    draining_ = true;
  } else if (phase_ == Phase::kTunnel && !same_tls_policy(*next)) {
    // A tunnel has no "current request" to finish: one admitted under a policy a reload
    // changed (a client CA replaced, an identity no longer allowed) is cut now.
    close();
  }
}

bool Http1Connection::same_tls_policy(const ListenerContext& next) const {
  const uint64_t policy = transport_ ? transport_->tls_policy_id() : 0;
  if ((policy != 0) != (next.tls != nullptr)) return false;
  return policy == 0 || next.tls->get()->policy_id() == policy;
}

bool Http1Connection::move_to_newest_config() {
  WorkerGen& newest = worker_.current();
  if (&listener_->gen == &newest) return true;
  ListenerContext* next = newest.listener_named(listener_->config.name);
  if (next == nullptr) return false;
  // A client admitted under one TLS policy is not carried over to another (a reload that changes
  // the client CA, requires a certificate, narrows the allowed SANs, raises the version or
  // changes the ciphers ends its connection; it may come back under the new one), nor between
  // TLS and plaintext. A certificate rotation alone changes no policy.
  // (Also while its handshake is under way: it goes on under the context it started with.)
  if (!same_tls_policy(*next)) return false;
  WorkerGen& old = listener_->gen;
  listener_->stats.connections->add(-1);
  next->stats.connections->add(1);
  ++newest.users;
  listener_ = next;
  if (parser_ != nullptr) {
    parser_->set_max_head_size(next->config.max_request_headers_size);
    parser_->set_max_headers(next->config.max_request_headers);
  }
  worker_.release(old);  // may free the old generation
  return true;
}

// ---------------------------------------------------------------------------------------------
// Reading and parsing the request.

void Http1Connection::on_transport_connected(int status) {
  if (status == 0 && phase_ == Phase::kIdle && !closed_) arm_idle_timer();
}

void Http1Connection::on_transport_read(ssize_t nread) {
  if (nread == UV_ENOBUFS) {
    update_reading();
    return;
  }
  if (nread < 0) {
    if (phase_ == Phase::kActive &&
        (exchange_->replying_locally() || (nread == UV_EOF && request_complete_))) {
      // The client half-closed after its request (or while we answer it): answer, then close.
      client_eof_ = true;
      update_reading();
      return;
    }
    if (phase_ == Phase::kTunnel && nread == UV_EOF && exchange_->on_tunnel_client_end()) {
      // The client half-closed a tunnel: the upstream's side follows, and its bytes still come.
      client_eof_ = true;
      update_reading();
      return;
    }
    close();
    return;
  }
  if (exchange_ != nullptr) exchange_->note_io();
  switch (phase_) {
    case Phase::kIdle:
      // The idle deadline stays until a request has begun: empty lines never extend it.
      phase_ = Phase::kHead;
      if (listener_->tls == nullptr && in_.data[in_.parsed] == 0x16) {
        // A TLS record (a ClientHello) where HTTP was expected: said in plain words.
        reply_to_incomplete_head(LocalReason::kTlsOnPlaintextPort);
        return;
      }
      parse_request();
      if (!closed_ && phase_ == Phase::kHead) arm_headers_timer();
      break;
    case Phase::kHead:
      parse_request();
      break;
    case Phase::kActive:
      if (!request_complete_ && !exchange_->replying_locally()) parse_request();
      break;
    case Phase::kLingering:
      in_.parsed = in_.filled;  // dropped
      in_.restart(worker_.buffers());
      return;
    case Phase::kTunnel:
      exchange_->on_tunnel_data(in_.data + in_.parsed, in_.filled - in_.parsed, in_.block);
      in_.parsed = in_.filled;
      break;
    default:
      break;
  }
  // Storage whose bytes are all parsed goes back to the pool between reads (a request waiting
  // for its response holds no read buffer), except under a head still being parsed: its spans
  // point into these bytes, and the rest of the head goes after them.
  if (parser_ == nullptr || !parser_->in_head()) in_.release_if_empty(worker_.buffers());
  update_reading();
}

void Http1Connection::parse_request() {
  while (true) {
    // Nothing is written upstream while the parser runs: its callbacks add to the exchange's
    // to_upstream, which must not change under a write in flight.
    if (exchange_ != nullptr) exchange_->set_parsing(true);
    http::Parser::Result r = parser().execute(in_.data, in_.parsed, in_.filled);
    if (exchange_ != nullptr) exchange_->set_parsing(false);
    in_.parsed += r.consumed;
    if (closed_) return;
    switch (r.status) {
      case http::Parser::Status::kOk:
        if (parser_->in_head() && in_.space() == 0) {
          size_t limit = listener_->config.max_request_headers_size + 1024;
          if (in_.capacity >= limit) {
            reply_to_incomplete_head(LocalReason::kHeadersTooLarge);
            return;
          }
          in_.grow(worker_.buffers(), std::min(in_.capacity * 2, limit));
        }
        break;
      case http::Parser::Status::kPaused:
      case http::Parser::Status::kUpgrade:
        break;
      case http::Parser::Status::kHeadTooLarge:
        if (phase_ == Phase::kHead) reply_to_incomplete_head(LocalReason::kHeadersTooLarge);
        return;
      case http::Parser::Status::kError:
        log::debug("bad request").str("error", r.error).str("client", client_ip_);
        if (phase_ == Phase::kHead) {
          reply_to_incomplete_head(rejection_reason(r.code));
        } else if (phase_ != Phase::kActive || !exchange_->reject(rejection_reason(r.code))) {
          close();
        }
        return;
    }
    break;
  }
  if (phase_ == Phase::kHead && !parser_->in_message() && in_.parsed == in_.filled) {
    // Only empty lines (RFC 9112 2.2 lets a client send some before a request line, and some
    // send CRLF after a body): no request has begun, so the connection is still idle, its idle
    // deadline where it was (see on_transport_read).
    in_.release(worker_.buffers());
    release_parser();
    phase_ = Phase::kIdle;
    return;
  }
  if (phase_ != Phase::kActive || exchange_->replying_locally()) return;
  // Parsed bytes nothing points to (a copied body, trailers, chunk framing, empty lines) make
  // room at once; bytes a queued write still sends wait for that write (backpressure).
  if (!parser_->in_head() && in_.block != nullptr && in_.block->refs == 1) {
    in_.restart(worker_.buffers());
  }
  exchange_->flush_request();
}

void Http1Connection::start_exchange() {
  DeadlineList::Entry::cancel();
  request_complete_ = false;
  request_upgrade_ = false;
  keep_client_ = true;
  response_ended_ = false;
  response_framing_ = http::BodyFraming::kNone;
  phase_ = Phase::kActive;
  exchange_ = worker_.exchanges().acquire(*listener_, *this);
}

http::ParserCallbacks::HeadAction Http1Connection::on_request_head(http::MessageHead& head) {
  // A reload since the last request: this one runs on the new config. A listener the new config
  // no longer has serves this request on the old one, then the connection closes.
  if (!move_to_newest_config()) draining_ = true;
  client_http10_ = head.version_major == 1 && head.version_minor == 0;
  client_keep_alive_ = head.keep_alive;
  request_is_head_ = head.is_head_method;
  start_exchange();
  exchange_->set_parsing(true);
  http::ParserCallbacks::HeadAction action = exchange_->on_request_head(head);
  request_upgrade_ = head.upgrade;  // what the parser was told
  return action;
}

void Http1Connection::on_request_body(const char* data, size_t n) {
  if (exchange_ != nullptr) exchange_->on_request_body(data, n, in_.block);
}

void Http1Connection::on_request_complete() {
  request_complete_ = true;
  if (exchange_ == nullptr) return;
  exchange_->on_request_complete();
  if (exchange_->replying_locally() && out_ != nullptr && !out_->in_flight()) {
    // The reply was already written; the request's end was all we waited for. Defer: we are
    // inside the parser.
    worker_.deferred().defer(
        this, [](void* p) { static_cast<Http1Connection*>(p)->finish_local_reply(); });
  }
}

void Http1Connection::finish_local_reply() {
  if (!closed_ && exchange_ != nullptr && exchange_->replying_locally()) exchange_->finish();
}

void Http1Connection::reply_to_incomplete_head(LocalReason reason) {
  // Not the previous request's facts: this one never told its method or version.
  request_is_head_ = false;
  start_exchange();
  exchange_->reply_to_incomplete_head(reason);
}

void Http1Connection::release_exchange() {
  if (exchange_ == nullptr) return;
  worker_.exchanges().release_later(exchange_);
  exchange_ = nullptr;
}

void Http1Connection::request_forwarded(bool keep) {
  if (!keep) in_.restart(worker_.buffers());
  if (phase_ == Phase::kActive && !request_complete_ && !exchange_->replying_locally() &&
      !in_.empty()) {
    parse_request();
  }
}

void Http1Connection::start_tunnel() {
  phase_ = Phase::kTunnel;
  // Bytes that followed the request head are already tunnel data.
  if (!in_.empty()) {
    const size_t n = in_.filled - in_.parsed;
    const char* data = in_.data + in_.parsed;
    in_.parsed = in_.filled;
    exchange_->on_tunnel_data(data, n, in_.block);
  }
  // The client half-closed before the 101 came: its end goes on to the upstream too.
  if (client_eof_ && !closed_ && !exchange_->on_tunnel_client_end()) close();
}

// ---------------------------------------------------------------------------------------------
// Writing the response.

http::Parser& Http1Connection::parser() {
  if (parser_ == nullptr) {
    parser_ = worker_.request_parsers().acquire(http::Parser::Type::kRequest, nullptr);
    parser_->reset();
    parser_->set_callbacks(this);
    parser_->set_max_head_size(listener_->config.max_request_headers_size);
    parser_->set_max_headers(listener_->config.max_request_headers);
  }
  return *parser_;
}

void Http1Connection::release_parser() {
  if (parser_ == nullptr) return;
  parser_->trim();  // a burst's large header vector goes back to the system
  worker_.request_parsers().release(parser_);
  parser_ = nullptr;
}

Outbox& Http1Connection::out() {
  if (out_ == nullptr) out_ = worker_.outboxes().acquire();
  return *out_;
}

void Http1Connection::release_outbox() {
  // A write in flight still points into it.
  if (out_ == nullptr || out_->in_flight()) return;
  out_->clear();
  worker_.outboxes().release(out_);
  out_ = nullptr;
}

void Http1Connection::send_interim(const http::MessageHead& response) {
  if (client_http10_) return;  // an HTTP/1.0 client knows no 1xx
  // Written into a buffer of the thread's, reused (the Outbox copies it): no allocation per 1xx.
  thread_local std::string interim;
  interim.clear();
  http::DownstreamResponseHead how;
  how.framing = http::BodyFraming::kNone;
  http::write_downstream_response(response, how, interim);
  out().add_framing(interim);
}

void Http1Connection::send_head(const http::MessageHead& response, const HeadInfo& info) {
  http::DownstreamResponseHead how;
  if (info.upgrade) {
    how.upgrade = true;
    response_framing_ = http::BodyFraming::kNone;
  } else {
    response_framing_ = http::response_framing(response, info.no_body, client_http10_);
    keep_client_ = keep_client_ && client_keep_alive_ && !client_done() && !draining_ &&
                   !worker_.draining() && request_complete_ &&
                   response_framing_ != http::BodyFraming::kClose;
    how.keep_alive = keep_client_;
    how.http10_keep_alive = client_http10_ && keep_client_;
  }
  how.framing = response_framing_;
  how.request_id = info.request_id;
  how.attempts = info.attempts;
  Outbox& o = out();
  http::write_downstream_response(response, how, o.head);
  o.add_head();
}

void Http1Connection::send_body(const char* data, size_t n, BufferBlock* block) {
  if (response_framing_ == http::BodyFraming::kChunked) {
    out().add_chunk(data, n, block);
  } else {
    out().add_data(data, n, block);
  }
}

void Http1Connection::send_end() {
  response_ended_ = true;
  if (response_framing_ == http::BodyFraming::kChunked) out().add_last_chunk();
}

size_t Http1Connection::send_local_reply(const LocalReply& reply) {
  keep_client_ = !reply.close_after && client_keep_alive_ && !draining_ && !worker_.draining() &&
                 !client_done();
  http::LocalReplyExtras extras;
  extras.attempts = reply.attempts;
  extras.retry_after_s = reply.retry_after_s;
  Outbox& o = out();
  size_t body = http::write_local_reply(reply.status, info(reply.reason).token, keep_client_,
                                        reply.request_id, request_is_head_, o.head, extras);
  o.add_head();
  return body;
}

void Http1Connection::flush(bool at_once) {
  if (closed_ || out_ == nullptr || out_->in_flight() || out_->empty()) return;
  int rc = transport_->write(*out_, at_once);
  if (rc != 0) {
    close();
  } else if (!out_->in_flight() && exchange_ != nullptr) {
    exchange_->note_io();  // all written at once: the caller goes on as after a write callback
  }
}

bool Http1Connection::end_sending() {
  if (closed_) return false;
  if (transport_->shutdown() != 0) {
    close();
    return false;
  }
  return true;
}

void Http1Connection::cut() {
  keep_client_ = false;
  flush(false);
  if (!closed_ && !writing()) close();
}

void Http1Connection::on_transport_written(int status) {
  if (status < 0) {
    close();
    return;
  }
  if (exchange_ == nullptr) return;
  exchange_->note_io();
  // What was added while that write was in flight (a final response behind a 1xx, say) goes
  // next; nothing ends before all of it is out.
  if (has_unsent()) {
    flush(response_ended_ || exchange_->replying_locally());
    if (closed_ || writing()) return;
  }
  if (phase_ == Phase::kActive && exchange_->replying_locally()) {
    if (!keep_client_ || (client_eof_ && (!request_complete_ || in_.empty()))) {
      exchange_->complete(true);
      close_after_response();
    } else if (request_complete_) {
      exchange_->finish();
    }
    return;
  }
  exchange_->on_downstream_written();
}

// ---------------------------------------------------------------------------------------------
// Between requests, and the end.

void Http1Connection::exchange_done() {
  DeadlineList::Entry::cancel();
  if (!request_complete_) keep_client_ = false;
  release_exchange();
  phase_ = Phase::kIdle;
  // Between requests a connection follows the newest config (its timeouts apply to the wait).
  if (!keep_client_ || client_done() || draining_ || worker_.draining() ||
      !move_to_newest_config()) {
    close_after_response();
    return;
  }
  if (request_upgrade_) {
    // An upgrade answered without 101: the connection goes on as HTTP/1.1.
    parser().resume_after_refused_upgrade();
    request_upgrade_ = false;
  } else {
    parser().resume();
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
         (phase_ == Phase::kActive && !request_complete_))) {
      close();
      return;
    }
  }
  if (phase_ == Phase::kIdle) {
    in_.release(worker_.buffers());
    release_parser();
    release_outbox();
    arm_idle_timer();
  }
  if (!closed_) update_reading();
}

void Http1Connection::close_after_response() {
  // Only a client that may still be sending: its request unfinished, or bytes after it unread.
  if (closed_ || client_eof_ || (request_complete_ && in_.empty())) {
    // The end is said first (TLS: close_notify, without which a client may drop its session).
    if (!closed_) transport_->shutdown();
    close();
    return;
  }
  if (transport_->shutdown() != 0) {
    close();
    return;
  }
  if (exchange_ != nullptr) {
    exchange_->on_stream_closed();  // answered already: this only ends its timers
    release_exchange();
  }
  phase_ = Phase::kLingering;
  worker_.deadlines(kLingerMs).add(*this);
  in_.parsed = in_.filled;
  in_.restart(worker_.buffers());
  update_reading();
}

void Http1Connection::arm_idle_timer() {
  worker_.deadlines(static_cast<uint64_t>(listener_->config.idle_timeout.count())).add(*this);
}

void Http1Connection::arm_headers_timer() {
  worker_.deadlines(static_cast<uint64_t>(listener_->config.request_headers_timeout.count()))
      .add(*this);
}

void Http1Connection::on_deadline() {
  switch (phase_) {
    case Phase::kIdle:
    case Phase::kLingering:
      // An unfinished TLS handshake timed out; a keep-alive connection ends with its FIN (and
      // TLS's close_notify) first.
      if (transport_ && !transport_->note_deadline()) transport_->shutdown();
      close();
      return;
    case Phase::kHead:
      reply_to_incomplete_head(LocalReason::kRequestHeadersTimeout);
      return;
    default:
      return;
  }
}

void Http1Connection::update_reading() {
  if (closed_) return;
  bool want = false;
  switch (phase_) {
    case Phase::kIdle:
    case Phase::kHead:
    case Phase::kLingering:
      want = true;
      break;
    case Phase::kActive:
    case Phase::kTunnel:
      want = exchange_ != nullptr && exchange_->wants_request_bytes();
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

void Http1Connection::drain() {
  draining_ = true;
  if (phase_ == Phase::kIdle) close();
}

void Http1Connection::abort() { close(); }

void Http1Connection::close() {
  if (closed_) return;
  closed_ = true;
  if (exchange_ != nullptr) {
    exchange_->on_stream_closed();
    release_exchange();
  }
  phase_ = Phase::kClosing;
  listener_limit_->release();
  worker_.process_limit().release();
  worker_.connection_closed(this);
  listener_->stats.connections->add(-1);
  worker_.release(listener_->gen);  // the generation may be freed: listener_ is not used again
  transport_.reset();               // cuts a write in flight: the Outbox is free
  DeadlineList::Entry::cancel();
  worker_.deferred().defer(this);
}

}  // namespace bulwark
