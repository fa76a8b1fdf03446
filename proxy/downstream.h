#pragma once
// A client connection and the exchange (request + response) it is currently carrying.
//
// Data flows in two directions, each with one Outbox and at most one write in flight:
//   request:  client socket -> in_ -> request parser -> to_upstream_ -> upstream socket
//   response: upstream socket -> upstream.in -> response parser -> to_client_ -> client socket
// A direction's reader is stopped while its Outbox has a write in flight (the Outbox points into
// the reader's buffer), so a fast sender facing a slow receiver is paused and memory per
// connection stays bounded. Requests on one connection are handled one at a time; pipelined
// requests wait, unparsed, in in_ and are answered in order.
//
// Policies (filters/) run between the request head and the upstream, in this order: rate
// limit, fault injection, bulkhead, circuit breaker; then a try goes to an endpoint. A failed try
// may be retried (filters/retry.h) after a backoff, on another endpoint, by re-sending the
// request kept in to_upstream_. Each wait (fault delay, bulkhead queue, backoff, pool) runs on
// `timer_`; the route's deadline and the try's deadline share `deadline_timer_`. Everything
// a request holds from a policy (bulkhead slot or queue place, circuit permit) is an RAII guard
// released by end_policies() when the exchange ends in any way.
//
// Lifetime: close() closes the transport (which cuts a write in flight) and the timers, and hands
// the object to the worker's DeferredDeleter: it is freed once the callback that closed it has
// returned.

#include <uv.h>

#include <cstdint>
#include <optional>
#include <string>

#include "filters/bulkhead.h"
#include "filters/circuit_breaker.h"
#include "filters/retry.h"
#include "proxy/admission.h"
#include "proxy/buffer.h"
#include "proxy/client_connection.h"
#include "proxy/codec.h"
#include "proxy/connection_limit.h"
#include "proxy/exchange_state.h"
#include "proxy/headers.h"
#include "proxy/outbox.h"
#include "proxy/pacer.h"
#include "proxy/reasons.h"
#include "proxy/route_state.h"
#include "proxy/router.h"
#include "proxy/transport.h"
#include "proxy/upstream.h"
#include "proxy/uv_handle.h"

namespace bulwark {

class Worker;
struct ListenerContext;
class WorkerCluster;
struct RouteStats;
struct WorkerRoute;

class DownstreamConnection : public DeferredDeletable,
                             public ClientConnection,
                             public UpstreamConnection::Owner,
                             private PoolWaiter,
                             private Admission::Owner,
                             private Transport::Callbacks,
                             private Pacer::Waiter {
 public:
  DownstreamConnection(Worker& worker, ListenerContext& listener);
  ~DownstreamConnection() override;
  DownstreamConnection(const DownstreamConnection&) = delete;
  DownstreamConnection& operator=(const DownstreamConnection&) = delete;

  // Accepts the pending connection of `server` and starts reading. False if accept failed
  // (the object then closes itself).
  bool accept(uv_stream_t* server);
  // ClientConnection
  void drain() override;
  void abort() override;
  void on_reload() override;

 private:
  // Binds the connection to the newest generation's listener of the same name (after a
  // reload). False when the newest config has no such listener.
  bool move_to_newest_config();

  // PoolWaiter: a connection slot of the cluster this request waits on became free.
  void on_pool_capacity() override;
  // Admission::Owner: a bulkhead slot came and the chain went on.
  void on_admission_resumed(const Admission::Result& result) override;

  // UpstreamConnection::Owner
  void on_upstream_connected(UpstreamConnection& conn, int status) override;
  void on_upstream_read(UpstreamConnection& conn, ssize_t nread) override;

  // Transport::Callbacks (the client's socket).
  void on_transport_connected(int) override {}
  void on_transport_read(ssize_t nread) override;
  void on_transport_written(int status) override;

  // Request side.
  void parse_request();
  http::ParserCallbacks::HeadAction on_request_head(http::MessageHead& head);
  void on_request_body(const char* data, size_t n);
  void on_request_complete();
  void start_exchange(http::MessageHead& head);

  // Policies and tries.
  // Runs the admission chain (proxy/admission.h) for the request, then acts on its answer.
  void run_admission(const http::MessageHead& head);
  void after_admission(const Admission::Result& result);
  void start_try();
  // A try ended without a usable response: record it, retry if allowed, else reply.
  void try_failed(filters::TryFailure failure, LocalReason reason, int err);
  // Retries when the policy, the request and the budget allow it: true if a retry is scheduled.
  bool maybe_retry(std::optional<filters::RetryReason> reason);
  // The outcome of the current try, for the circuit breaker and outlier detection: the response
  // status, or 0 when the try got none (connect failure, reset, timeout). `local_origin`: the
  // try could not reach its endpoint (connect refused, unreachable or timed out, or the
  // connection closed before any response byte); its retries then avoid that endpoint. A try
  // that never reached an endpoint (endpoint_ null: it timed out waiting for a pool connection)
  // is nobody's failure: neither the circuit breaker nor outlier detection hears of it.
  void record_try_outcome(int status, bool local_origin = false);
  void cancel_wait();
  void end_policies();
  // Arms deadline_timer_ for the first of: the route's deadline, the try's, and the moment the
  // exchange will have been idle (no byte moved either way) for stream_idle_timeout.
  void arm_deadline_timer();
  uint64_t stream_idle_deadline_ms() const;
  void stream_idle_expired();
  // A byte moved on either side of the exchange.
  void note_io();

  // Upstream side.
  void connect_upstream(bool fresh_only);
  void use_upstream(UpstreamConnection* conn);
  void flush_to_upstream();
  void on_upstream_written(UpstreamConnection& conn, int status) override;
  void parse_response(UpstreamConnection& conn);
  // The client took what was written: read the next buffer of the response (or tunnel) from the
  // upstream, now if this loop turn's budget allows (see Pacer), else in a later turn.
  void read_upstream_on();
  void on_turn() override;
  http::ParserCallbacks::HeadAction on_response_head(http::MessageHead& head);
  void on_response_body(const char* data, size_t n);
  void on_response_complete();
  bool upgrade_was_offered(const http::MessageHead& response);
  void upstream_failed(LocalReason reason, int err);
  bool try_replay();
  // The exchange stops using its upstream connection: back to the pool when `reusable` and the
  // whole request and response went through, else closed.
  void release_upstream(bool reusable);

  // Client side output.
  // Writes what is queued for the client. With `at_once` (see Outbox::flush) the write may be
  // complete on return: the caller then does what on_client_written() would.
  void flush_to_client(bool at_once = false);
  // `status` overrides the reason's status (an injected abort); `retry_after_s` adds Retry-After.
  void local_reply(LocalReason reason, bool close_after, int status = 0,
                   uint32_t retry_after_s = 0);
  void finish_exchange();
  // Closes after the last response, lingering first when the client may still be sending (see
  // kLingerMs): closing a socket with unread bytes makes the kernel send a reset, which can
  // destroy the response before the client has read it.
  void close_after_response();
  // The client half-closed and sent nothing after the current request: no request follows.
  bool client_done() const { return client_eof_ && in_.empty(); }
  void start_tunnel();

  // The start of an exchange (a request head, or a reply to a head that never completed): its
  // clock, counters and access log sampling.
  void open_exchange();
  // The end of an exchange, exactly once whichever way it ends: counts it (when `answered`, a
  // whole response went out) and writes its access log line.
  void complete_exchange(bool answered);
  void write_access_log();

  // The exchange's state: borrowed on first use, given back when the connection goes idle
  // (or closes) with no write in flight.
  DownstreamExchange& ex() {
    if (ex_ == nullptr) take_exchange();
    return *ex_;
  }
  void take_exchange();
  void release_exchange();

  // Timers and lifetime.
  void arm_idle_timer();
  void arm_headers_timer();
  void on_timer();
  void on_deadline_timer();
  void update_reading();
  void close();

  struct RequestCallbacks : http::ParserCallbacks {
    DownstreamConnection* self;
    HeadAction on_head(http::MessageHead& h) override { return self->on_request_head(h); }
    void on_body(const char* d, size_t n) override { self->on_request_body(d, n); }
    void on_message_complete() override { self->on_request_complete(); }
  };
  struct ResponseCallbacks : http::ParserCallbacks {
    DownstreamConnection* self;
    HeadAction on_head(http::MessageHead& h) override { return self->on_response_head(h); }
    void on_body(const char* d, size_t n) override { self->on_response_body(d, n); }
    void on_message_complete() override { self->on_response_complete(); }
  };

  // What the exchange waits for on timer_, between its head and an upstream connection.
  enum class Wait : unsigned char { kNone, kAdmission, kBackoff, kPool };

  enum class Phase {
    kIdle,        // between requests (or before the first)
    kHead,        // reading a request head
    kLocalReply,  // writing a reply of our own
    kProxying,    // an exchange with an upstream is under way
    kTunnel,      // after 101: raw bytes both ways
    kLingering,  // answered and shut down for writing; reading and dropping until the client closes
    kClosing,
  };

  Worker& worker_;
  ListenerContext* listener_;  // of the generation this connection is bound to
  // The listener's connection slot this connection holds (taken by the worker at accept), given
  // back at close; the process-wide one is the worker's.
  std::shared_ptr<ConnectionLimit> listener_limit_;
  TransportPtr transport_;  // the client's socket
  Timer timer_;             // idle / request headers / the exchange's current Wait
  Timer deadline_timer_;    // the route's timeout and the try's timeout, whichever is first
  RequestCallbacks request_callbacks_;
  ResponseCallbacks response_callbacks_;
  http::Parser request_parser_;
  InputBuffer in_;
  DownstreamExchange* ex_ = nullptr;
  char client_ip_[48] = {0};
  Phase phase_ = Phase::kIdle;
  bool parsing_request_ = false;
  bool client_eof_ = false;
  uint64_t idle_since_ms_ = 0;  // when the connection last went idle (arm_idle_timer)
  bool waiting_turn_ = false;   // in the worker's Pacer
  bool draining_ = false;
  bool closed_ = false;

  // The current exchange.
  int route_index_ = -1;
  WorkerRoute* route_ = nullptr;
  WorkerCluster* cluster_ = nullptr;
  RouteStats* route_stats_ = nullptr;
  PoolRef endpoint_;        // the pool of the current (or last) try
  UpstreamLease upstream_;  // the connection of the current try
  Wait wait_ = Wait::kNone;
  Admission admission_;  // the admission chain's state, and what the request holds from it
  filters::CircuitBreaker::Permit circuit_permit_;
  uint64_t route_deadline_ms_ = 0;  // loop time; 0 = none
  uint64_t try_deadline_ms_ = 0;    // loop time; 0 = none
  uint64_t last_io_ms_ = 0;         // loop time of the exchange's last byte moved
  uint64_t try_start_us_ = 0;
  const EndpointPool* failed_endpoint_ = nullptr;  // of the last failed try; a retry avoids it
  uint32_t tries_ = 0;
  size_t body_kept_ = 0;       // request body bytes copied for re-sending
  bool may_resend_ = false;    // the request may be sent again after bytes went out
  bool copy_body_ = false;     // the body is copied into to_upstream_ as it arrives
  bool request_sent_ = false;  // some request byte went to an upstream (any try)
  bool request_has_body_ = false;
  bool request_complete_ = false;
  bool request_head_request_ = false;  // HEAD: the response has no body
  bool request_upgrade_ = false;
  bool client_keep_alive_ = true;
  bool client_http10_ = false;
  bool response_started_ = false;    // any response byte arrived from the upstream
  bool response_head_sent_ = false;  // a final response head was queued for the client
  bool response_complete_ = false;
  bool response_interim_ = false;  // the message being parsed is a 1xx
  uint8_t interim_responses_ = 0;  // 1xx responses of the current try
  bool keep_client_ = true;        // keep the client connection after this response
  bool upstream_reusable_ = false;
  bool replayed_ = false;
  http::BodyFraming request_framing_ = http::BodyFraming::kNone;
  http::BodyFraming response_framing_ = http::BodyFraming::kNone;
  int response_status_ = 0;
  uint64_t start_us_ = 0;
  char request_id_[40] = {0};
  size_t request_id_len_ = 0;

  // For the access log (and the request counters): the exchange since its head.
  enum LogFlag : uint8_t {
    kLogFaultInjected = 1,     // FI: a fault delay (or abort) was injected
    kLogRetriesExhausted = 2,  // URX: the last try failed and no retry was left
    kLogDownstreamClosed = 4,  // DC: the client went away before the response was complete
    kLogUpstreamCut = 8,       // UC: the upstream failed after the response had started
    kLogStreamIdle = 16,       // SI: no byte moved either way for stream_idle_timeout
  };
  bool exchange_open_ = false;  // a request (or a malformed head) awaits its end
  bool log_this_ = false;       // the access log samples this request
  uint8_t log_flags_ = 0;
  LocalReason local_reason_ = LocalReason::kCount;  // kCount: no local reply
  uint64_t bytes_in_ = 0, bytes_out_ = 0;           // request and response body bytes
  uint64_t upstream_us_ = 0;                        // the last try's time to its response head
};

}  // namespace bulwark
