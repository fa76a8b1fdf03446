#pragma once
// A client connection speaking HTTP/1.1: the request parser, pipelining, keep-alive, the
// connection's own timers (idle, request headers, lingering close) and, after a 101, the client
// side of a tunnel. Each request is an Exchange (exchange.h), made when its head is parsed and
// ended when its response is written; the connection carries one at a time and is its
// ExchangeStream: it frames what the exchange sends as HTTP/1 and decides whether the
// connection outlives the response. Bytes meet the socket in the Transport below it.
//
// Requests on one connection are handled one at a time: pipelined requests wait, unparsed, in
// the read buffer and are answered in order.
//
// What an idle keep-alive connection holds: its transport and a timer. The read buffer, the
// request parser, the Outbox of the response and the exchange are lent while a request is under
// way and given back when the connection is idle again.
//
// Lifetime: close() closes the transport (which cuts a write in flight), ends the exchange and
// hands the object to the worker's DeferredDeleter: it is freed once the callback that closed it
// has returned.

#include <cstdint>
#include <memory>

#include "proxy/buffer.h"
#include "proxy/client_connection.h"
#include "proxy/codec.h"
#include "proxy/connection_limit.h"
#include "proxy/deadlines.h"
#include "proxy/fwd.h"
#include "proxy/headers.h"
#include "proxy/net.h"
#include "proxy/outbox.h"
#include "proxy/slab.h"
#include "proxy/stream.h"
#include "proxy/transport.h"
#include "proxy/uv_handle.h"

namespace bulwark {

class Http1Connection final : public DeferredDeletable,
                              public SlabAllocated<Http1Connection>,
                              public ClientConnection,
                              private ExchangeStream,
                              private Transport::Callbacks,
                              private http::ParserCallbacks,
                              private DeadlineList::Entry {
 public:
  Http1Connection(Worker& worker, ListenerContext& listener);
  ~Http1Connection() override;
  Http1Connection(const Http1Connection&) = delete;
  Http1Connection& operator=(const Http1Connection&) = delete;

  // Takes the accepted socket `fd` and starts reading. False if that failed
  // (the object then closes itself).
  bool accept(int fd);

  // ClientConnection
  void drain() override;
  void abort() override;
  void on_reload() override;

 private:
  enum class Phase : uint8_t {
    kIdle,       // between requests (or before the first)
    kHead,       // reading a request head
    kActive,     // an exchange is under way (proxying, or a reply of our own)
    kTunnel,     // after 101: raw bytes both ways
    kLingering,  // answered and shut down for writing; reading and dropping until the client closes
    kClosing,
  };

  // Binds the connection to the newest generation's listener of the same name (after a
  // reload). False when the newest config has no such listener.
  bool move_to_newest_config();

  // Transport::Callbacks (the client's socket).
  // An accepted TLS connection finished its handshake: it may idle now.
  void on_transport_connected(int status) override;
  void on_transport_read(ssize_t nread) override;
  void on_transport_written(int status) override;

  // The request.
  void parse_request();
  http::ParserCallbacks::HeadAction on_request_head(http::MessageHead& head);
  void on_request_body(const char* data, size_t n);
  void on_request_complete();
  // An exchange for the request now starting (a head, or a reply to one that never completed).
  void start_exchange();
  void reply_to_incomplete_head(LocalReason reason);
  // A local reply was written before the request's end; that end has now been read.
  void finish_local_reply();
  void release_exchange();

  // ExchangeStream
  void send_interim(const http::MessageHead& response) override;
  void send_head(const http::MessageHead& response, const HeadInfo& info) override;
  void send_body(const char* data, size_t n, BufferBlock* block) override;
  void send_end() override;
  size_t send_local_reply(const LocalReply& reply) override;
  void flush(bool at_once) override;
  bool writing() const override { return out_ != nullptr && out_->in_flight(); }
  bool has_unsent() const override { return out_ != nullptr && !out_->empty(); }
  void cut() override;
  void close() override;
  bool end_sending() override;
  // Whether this connection's TLS policy (none: plaintext) is listener `next`'s too.
  bool same_tls_policy(const ListenerContext& next) const;
  void request_forwarded(bool keep) override;
  // Full, not merely given back (a buffer with no storage holds nothing up).
  bool request_buffer_full() const override { return in_.has_storage() && in_.space() == 0; }
  void update_reading() override;
  void start_tunnel() override;
  void exchange_done() override;
  bool closed() const override { return closed_; }
  std::string_view client_address() const override { return client_ip_; }
  const TlsSession* tls() const override { return transport_ ? transport_->tls() : nullptr; }
  const sockaddr* original_destination() const override {
    return has_original_destination_ ? &original_destination_.sa : nullptr;
  }

  // The response's Outbox: lent while a request is under way.
  Outbox& out();
  void release_outbox();
  // The request parser: lent from the first byte of a request until the connection is idle
  // again (a new one starts at a message's beginning, as a resumed one would).
  http::Parser& parser();
  void release_parser();
  // Closes after the last response, lingering first when the client may still be sending (see
  // kLingerMs): closing a socket with unread bytes makes the kernel send a reset, which can
  // destroy the response before the client has read it.
  void close_after_response();
  // The client half-closed and sent nothing after the current request: no request follows.
  bool client_done() const { return client_eof_ && in_.empty(); }

  // The connection's own deadlines (one at a time): idle, request headers, lingering.
  void arm_idle_timer();
  void arm_headers_timer();
  void on_deadline() override;

  // The request parser's callbacks.
  HeadAction on_head(http::MessageHead& h) override { return on_request_head(h); }
  void on_body(const char* d, size_t n) override { on_request_body(d, n); }
  void on_message_complete() override { on_request_complete(); }

  Worker& worker_;
  ListenerContext* listener_;  // of the generation this connection is bound to
  // The listener's connection slot this connection holds (taken by the worker at accept), given
  // back at close; the process-wide one is the worker's.
  std::shared_ptr<ConnectionLimit> listener_limit_;
  TransportPtr transport_;          // the client's socket
  http::Parser* parser_ = nullptr;  // lent while a request is being read or answered
  InputBuffer in_;
  Outbox* out_ = nullptr;         // lent while a request is under way
  Exchange* exchange_ = nullptr;  // the request under way
  char client_ip_[48] = {0};
  IpAddress original_destination_{};  // with has_original_destination_
  bool has_original_destination_ = false;
  Phase phase_ = Phase::kIdle;
  http::BodyFraming response_framing_ = http::BodyFraming::kNone;
  bool client_eof_ = false;
  bool draining_ = false;
  bool closed_ = false;
  // The current request, as HTTP/1 sees it.
  bool request_complete_ = false;
  bool request_is_head_ = false;   // HEAD: a local reply has no body
  bool request_upgrade_ = false;   // the parser was told to switch if a 101 comes
  bool client_keep_alive_ = true;  // the client asked to keep the connection
  bool client_http10_ = false;
  bool keep_client_ = true;      // keep the connection after this response
  bool response_ended_ = false;  // the exchange sent the response's end
};

}  // namespace bulwark
