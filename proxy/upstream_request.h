#pragma once
// One try of an exchange: a connection to one endpoint, checked out of its pool, the request
// written to it, and the response read and parsed. The try speaks HTTP/1 to the upstream and
// reports what happens to its exchange through Callbacks; the exchange decides what it means
// (forward, retry, reply). Each try has its own connection, parser and state, so an exchange
// may run two at once (a hedged request).
//
// The request bytes are the exchange's (an Outbox it keeps for re-sending); the try writes them,
// one write at a time. The response's bytes stay in the connection's read buffer: the exchange
// forwards them by reference, and the try reads on only when the exchange says the client took
// what was forwarded (backpressure), in turns with the worker's other large transfers (Pacer).

#include <cstdint>

#include "filters/retry.h"
#include "proxy/codec.h"
#include "proxy/fwd.h"
#include "proxy/outbox.h"
#include "proxy/pacer.h"
#include "proxy/reasons.h"
#include "proxy/upstream.h"

namespace bulwark {

// The largest response head a try reads (the response parser's limit; a larger one is a
// protocol error).
inline constexpr size_t kMaxResponseHeadSize = 64 * 1024;

class UpstreamRequest final : public UpstreamConnection::Owner,
                              private PoolWaiter,
                              private Pacer::Waiter {
 public:
  // What the exchange hears from its try. Calls come from the worker's loop; those that can come
  // from inside a call into the try say so.
  class Callbacks {
   public:
    // A connection slot of the cluster came free while the try waited for one: check out again
    // (start()).
    virtual void on_try_pool_capacity(UpstreamRequest& t) = 0;
    // Connected (or given an idle connection): the request may be sent (send()).
    virtual void on_try_ready(UpstreamRequest& t) = 0;
    // A reused connection failed before any response byte: the upstream closed it while idle and
    // never saw the request. The connection is released; the exchange may send the request
    // again on a new one (start() with fresh_only), once: the try does not offer it twice.
    virtual void on_try_replay(UpstreamRequest& t) = 0;
    // The try cannot go on (connect failure, reset, malformed response). Its connection is
    // released already. May come from inside send().
    virtual void on_try_failed(UpstreamRequest& t, filters::TryFailure failure, LocalReason reason,
                               int err) = 0;
    // Request bytes were written (a failed write is a failure, or a replay).
    virtual void on_try_request_written(UpstreamRequest& t) = 0;
    // A 1xx response (not 101), the t.interim_responses()th: false when the exchange let go of
    // the try (too many).
    virtual bool on_try_interim(UpstreamRequest& t, const http::MessageHead& head) = 0;
    // The final response head (or a 101). The answer tells the parser how to go on: kPause when
    // the exchange let go of the try (a retry).
    virtual http::ParserCallbacks::HeadAction on_try_head(UpstreamRequest& t,
                                                          http::MessageHead& head) = 0;
    virtual void on_try_body(UpstreamRequest& t, const char* data, size_t n,
                             BufferBlock* block) = 0;
    virtual void on_try_complete(UpstreamRequest& t) = 0;
    // What the try does after the bytes at hand were parsed (and forwarded).
    enum class Next : uint8_t {
      kMore,  // read on: the client took everything
      kWait,  // the client has not taken it yet: the exchange calls resume() once it has
      kDone,  // the exchange is over (or let go of the try)
    };
    virtual Next on_try_parsed(UpstreamRequest& t) = 0;
    // A 101 went through: from now on the connection's bytes are tunnel data (on_try_data).
    virtual void on_try_upgraded(UpstreamRequest& t) = 0;
    // Tunnel data from the upstream, inside `block` (none, right after the 101: what was queued
    // goes to the client).
    virtual Next on_try_data(UpstreamRequest& t, const char* data, size_t n,
                             BufferBlock* block) = 0;
    // The tunnel's upstream side ended: it closed or failed (`write_failed`: a write to it).
    virtual void on_try_closed(UpstreamRequest& t, bool write_failed) = 0;
    // The tunnel's upstream side ended its sending (end of stream) but may still read: the
    // connection stays, for the client's bytes. False when the exchange lets it go (then the
    // tunnel ends as in on_try_closed).
    virtual bool on_try_tunnel_end(UpstreamRequest& t) = 0;
    // The try's turn came to read a buffer (see Pacer): false when it must not read now (the
    // client has not taken the last one, or the exchange moved on).
    virtual bool on_try_turn(UpstreamRequest& t) = 0;

   protected:
    ~Callbacks() = default;
  };

  // What start() did.
  enum class Start : uint8_t {
    kStarted,  // connected or connecting; the request goes as soon as it can
    kWaiting,  // every connection slot is taken: on_try_pool_capacity() follows
    kFull,     // every slot is taken and the pool's queue too
  };

  UpstreamRequest(Worker& worker, Callbacks& callbacks, http::Parser& parser, Outbox& request);
  ~UpstreamRequest();
  UpstreamRequest(const UpstreamRequest&) = delete;
  UpstreamRequest& operator=(const UpstreamRequest&) = delete;

  // Starts (or, after a pool wait or a replay, restarts) the try on `pool`'s endpoint: a fresh
  // connection only with `fresh_only`. `may_replay`: the request may go again on a new
  // connection when a reused one turns out closed (on_try_replay).
  Start start(EndpointPool& pool, bool fresh_only, bool may_replay);
  // Writes what the request Outbox has not sent yet (when connected and no write is in flight).
  // True when a write started. With `at_once` (Transport::write) it may also have ended: then
  // no on_try_request_written() follows.
  bool send(bool at_once = false);
  // The client took what was forwarded: parse what is buffered, or read the next buffer of the
  // response (or tunnel).
  void resume();
  // Ends the sending side of the connection after the write in flight (a tunnel the client
  // half-closed). 0 or a libuv error.
  int shutdown_write() { return lease_ != nullptr ? lease_->shutdown() : UV_EPIPE; }
  // Ends the try: its connection goes back to the pool when `reusable` (and the whole exchange
  // went through), else it is closed. Leaves the pool's queue.
  void release(bool reusable);
  // Stops waiting for a pool slot.
  void cancel_wait() { PoolWaiter::cancel(); }

  bool connected() const {
    return lease_ != nullptr && lease_->state() == UpstreamConnection::State::kBusy;
  }
  bool connecting() const {
    return lease_ != nullptr && lease_->state() == UpstreamConnection::State::kConnecting;
  }
  bool has_connection() const { return lease_ != nullptr; }
  bool writing() const { return request_.in_flight(); }
  // Any response byte arrived.
  bool response_started() const { return response_started_; }
  // The try's request went (or goes) on a connection that had carried requests before.
  bool on_reused_connection() const { return on_reused_; }
  // A reused connection failed under this try and the request went again on a new one.
  bool replayed() const { return replayed_; }
  bool response_complete() const { return response_complete_; }
  // The upstream let the connection carry another request after this response.
  bool reusable() const { return reusable_; }
  void set_reusable(bool reusable) { reusable_ = reusable; }
  uint8_t interim_responses() const { return interim_responses_; }
  uint64_t start_us() const { return start_us_; }
  EndpointPool* pool() const { return pool_; }
  // The response bytes not yet parsed or forwarded.
  InputBuffer& in() { return lease_->in; }

 private:
  // UpstreamConnection::Owner
  void on_upstream_connected(UpstreamConnection& conn, int status) override;
  void on_upstream_read(UpstreamConnection& conn, ssize_t nread) override;
  void on_upstream_written(UpstreamConnection& conn, int status) override;
  // PoolWaiter
  void on_pool_capacity() override { callbacks_.on_try_pool_capacity(*this); }
  // Pacer::Waiter
  void on_turn() override;

  void use(UpstreamConnection* conn);
  void parse(UpstreamConnection& conn);
  // Acts on what the exchange said after parsing or forwarding.
  void after(UpstreamConnection& conn, Callbacks::Next next);
  // Hands the unparsed bytes of a tunnel (none, right after the 101) to the exchange.
  void forward_tunnel_bytes(UpstreamConnection& conn);
  void read_on();
  // A reused connection failed before any response byte: offers a replay (once). False when
  // that is not allowed.
  bool replay();
  void fail(filters::TryFailure failure, LocalReason reason, int err);

  http::ParserCallbacks::HeadAction on_head(http::MessageHead& head);
  void on_body(const char* data, size_t n);
  void on_complete();

  struct ResponseCallbacks : http::ParserCallbacks {
    UpstreamRequest* self;
    HeadAction on_head(http::MessageHead& h) override { return self->on_head(h); }
    void on_body(const char* d, size_t n) override { self->on_body(d, n); }
    void on_message_complete() override { self->on_complete(); }
  };

  Worker& worker_;
  Callbacks& callbacks_;
  http::Parser& parser_;
  Outbox& request_;
  ResponseCallbacks response_callbacks_;
  EndpointPool* pool_ = nullptr;
  UpstreamLease lease_;
  uint64_t start_us_ = 0;
  uint8_t interim_responses_ = 0;
  bool may_replay_ = false;
  bool replayed_ = false;
  bool on_reused_ = false;
  bool upgraded_ = false;
  bool response_started_ = false;
  bool response_interim_ = false;  // the message being parsed is a 1xx
  bool response_complete_ = false;
  bool reusable_ = false;
  bool waiting_turn_ = false;  // in the worker's Pacer
};

}  // namespace bulwark
