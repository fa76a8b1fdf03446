#pragma once
// One request from its head to its last byte: route, admission, tries and retries, deadlines,
// the outcome for the circuit breaker and outlier detection, and the access-log record. This is
// where a request's life is decided.
//
// An Exchange is made fresh for each request (ExchangePool), so it starts with no state left
// from the one before; what is worth keeping between requests (its timers, the response parser,
// the request's Outbox and string buffers) lives in ExchangeResources, lent with it. It talks to
// the client connection carrying it only through ExchangeStream (stream.h), and to its upstream
// connection as that connection's Owner. Everything a request holds (its admission chain's
// bulkhead slot or queue place, its circuit permit, its pool connection or place in the pool's
// queue, its endpoint) is a guard member: released when the exchange ends, whichever way.
//
// Data flows in two directions, each with one Outbox and at most one write in flight:
//   request:  client -> the connection's read buffer -> request parser -> to_upstream -> upstream
//   response: upstream -> conn.in -> response parser -> the stream (to the client)
// A direction's reader stops while its Outbox has a write in flight (the Outbox points into the
// reader's buffer), so a fast sender facing a slow receiver is paused and memory stays bounded.
//
// A failed try may be retried (filters/retry.h) after a backoff, on another endpoint, by
// re-sending the request kept in to_upstream. Each wait (admission, backoff, pool) runs on the
// wait timer; the route's deadline, the try's deadline and the stream idle timeout share the
// deadline timer.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "filters/adaptive_concurrency.h"
#include "filters/circuit_breaker.h"
#include "filters/retry.h"
#include "proxy/admission.h"
#include "proxy/buffer.h"
#include "proxy/cluster.h"
#include "proxy/codec.h"
#include "proxy/fwd.h"
#include "proxy/headers.h"
#include "proxy/metrics.h"
#include "proxy/outbox.h"
#include "proxy/pacer.h"
#include "proxy/reasons.h"
#include "proxy/router.h"
#include "proxy/stream.h"
#include "proxy/upstream.h"
#include "proxy/upstream_request.h"
#include "proxy/uv_handle.h"

namespace bulwark {

// The request body an exchange holds while no upstream connection takes it (waiting for
// admission, a pool slot, a connect or a backoff): reading the client stops beyond it.
inline constexpr size_t kMaxUnsentRequestBytes = 64 * 1024;
// How long a tunnel one side half-closed may stay without a byte moving (HAProxy's
// `timeout client-fin`), whatever the stream idle timeout says.
inline constexpr uint64_t kHalfClosedTunnelIdleMs = 30'000;

// A hedge (retry.hedge): a try racing the exchange's lead try, on another endpoint, with its own
// response parser and its own copy of the request. Made at a slot's first hedge and kept with it.
struct HedgeTry {
  HedgeTry();
  http::Parser parser;
  Outbox request;
  std::optional<UpstreamRequest> upstream;
  PoolRef endpoint;
  filters::CircuitBreaker::Permit circuit;
  uint64_t started_ms = 0;  // loop time
  bool racing = false;      // running beside the lead try
};

// What an exchange keeps between requests: lent with it, never reset but reused.
struct ExchangeResources {
  explicit ExchangeResources(Worker& worker);
  ExchangeResources(const ExchangeResources&) = delete;
  ExchangeResources& operator=(const ExchangeResources&) = delete;

  Exchange* exchange = nullptr;  // the one using it now
  void* slot = nullptr;          // the ExchangePool slot it belongs to
  Timer wait_timer;              // admission, backoff, pool
  // Route, try and stream-idle deadlines of the exchange using the slot. Left armed when an
  // exchange ends: the next one in this slot needs a later moment, so an early fire just re-arms
  // it, and a request costs no timer operation unless its deadline is earlier than the armed one.
  Timer deadline_timer;
  uint64_t deadline_armed_for = 0;  // loop time the deadline timer is armed for; 0: not armed
  http::Parser response_parser;
  Outbox to_upstream;
  std::string path_buf;           // the rewritten path when prefix_rewrite applies
  std::string upgrade_protocols;  // of an Upgrade request: the protocols forwarded
  // The failed tries of a retried request, "ENDPOINT OUTCOME" joined by ", " (empty when the
  // first try was the last): for the debug log and the access log.
  std::string failed_tries;
  std::string log_request;  // "METHOD TARGET", kept only when logged
  std::vector<std::unique_ptr<HedgeTry>> hedges;  // up to max_hedges, made as first needed

 private:
  void on_wait_timer();
  void on_deadline_timer();
};

class Exchange final : private UpstreamRequest::Callbacks,
                       private Admission::Owner,
                       private AdaptiveWaiter {
 public:
  Exchange(Worker& worker, ListenerContext& listener, ExchangeStream& stream,
           ExchangeResources& res);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  ExchangeResources& resources() { return res_; }
  Worker& worker() { return worker_; }

  // ---- From the connection: the request.
  // A request head: routes it, decides what goes upstream and runs the admission chain. The
  // answer tells the parser how to go on (a local reply pauses it when a body follows).
  http::ParserCallbacks::HeadAction on_request_head(http::MessageHead& head);
  // Body bytes inside `block` (the connection's read buffer).
  void on_request_body(const char* data, size_t n, BufferBlock* block);
  void on_request_complete();
  // The connection parsed what it had: what the parser queued may go upstream now. While the
  // parser runs nothing is written upstream (its callbacks add to to_upstream).
  void set_parsing(bool parsing) { parsing_ = parsing; }
  void flush_request() { flush_to_upstream(); }
  // After a 101: client bytes for the upstream, inside `block`.
  void on_tunnel_data(const char* data, size_t n, BufferBlock* block);
  // The client ended its side of the tunnel (a half-close): the upstream's side is shut down once
  // everything the client sent is written, and the upstream's bytes go on to the client until
  // the upstream closes. False when there is no tunnel to keep: the connection closes.
  bool on_tunnel_client_end();
  // Whether the connection should read more of the client's bytes now.
  bool wants_request_bytes() const;
  // A request that cannot be served: its head never completed (malformed, too large, too slow),
  // or the parser failed later. False when a reply is no longer possible (a response started):
  // the caller closes.
  bool reject(LocalReason reason);
  // The client stalled (request headers timeout) or an unreadable head: the exchange of a head
  // that never completed. Opens it and replies.
  void reply_to_incomplete_head(LocalReason reason);

  // ---- From the connection: the response side.
  // A write to the client finished (not one that flush(at_once) completed).
  void on_downstream_written();
  // The client connection closed (the client went away, a write failed, shutdown): the
  // exchange ends now, counted as unanswered unless it was a tunnel.
  void on_stream_closed();
  // The connection's own I/O moved a byte (the stream idle timeout restarts).
  void note_io();

  // ---- State the connection looks at.
  bool request_complete() const { return request_complete_; }
  bool replying_locally() const { return state_ == State::kLocalReply; }
  bool tunnelling() const { return state_ == State::kTunnel; }
  bool response_started() const { return response_head_sent_; }
  bool request_is_head() const { return request_head_request_; }
  // The request asked for an upgrade that was let through (the parser must be told when it is
  // refused).
  bool upgrade_requested() const { return request_upgrade_; }
  // Ends a finished exchange: counts it and writes its log line (the connection calls this when
  // a local reply was written and the connection closes without reading the rest).
  void complete(bool answered);
  // The response is complete and written (the connection calls this for a local reply once the
  // request is read too): the exchange ends and the connection goes on (exchange_done()).
  void finish();

 private:
  enum class State : uint8_t {
    kProxying,    // an exchange with an upstream is under way
    kLocalReply,  // writing a reply of our own
    kTunnel,      // after 101: raw bytes both ways
    kDone,        // finished or cut off
  };
  // What the exchange waits for on the wait timer, between its head and an upstream connection.
  enum class Wait : uint8_t { kNone, kAdmission, kBackoff, kPool, kAdaptive };

  friend struct ExchangeResources;
  void on_wait_timer();
  void on_deadline_timer();

  // Admission, tries and retries.
  void run_admission(const http::MessageHead& head);
  void after_admission(const Admission::Result& result);
  void on_admission_resumed(const Admission::Result& result) override;
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
  // Gives back everything held from the policies, and stops the exchange's deadlines.
  void end_policies();
  // Arms the deadline timer for the first of: the route's deadline, the try's, and the moment
  // the exchange will have been idle (no byte moved either way) for stream_idle_timeout.
  void arm_deadline_timer();
  uint64_t stream_idle_deadline_ms() const;
  void stream_idle_expired();

  // The upstream side: the current try (upstream_request.h) and what it reports.
  // Picks an endpoint for the try and starts it there.
  void connect_upstream(bool fresh_only);
  // Shuts the upstream's side of a tunnel the client half-closed, once all it sent is written.
  void shut_down_tunnel_upstream();
  void flush_to_upstream();
  void on_try_pool_capacity(UpstreamRequest& t) override;
  void on_try_ready(UpstreamRequest& t) override;
  void on_try_replay(UpstreamRequest& t) override;
  void on_try_failed(UpstreamRequest& t, filters::TryFailure failure, LocalReason reason,
                     int err) override;
  void on_try_request_written(UpstreamRequest& t) override;
  bool on_try_interim(UpstreamRequest& t, const http::MessageHead& head) override;
  http::ParserCallbacks::HeadAction on_try_head(UpstreamRequest& t,
                                                http::MessageHead& head) override;
  void on_try_body(UpstreamRequest& t, const char* data, size_t n, BufferBlock* block) override;
  void on_try_complete(UpstreamRequest& t) override;
  Next on_try_parsed(UpstreamRequest& t) override;
  void on_try_upgraded(UpstreamRequest& t) override;
  Next on_try_data(UpstreamRequest& t, const char* data, size_t n, BufferBlock* block) override;
  void on_try_closed(UpstreamRequest& t, bool write_failed) override;
  bool on_try_tunnel_end(UpstreamRequest& t) override;
  // Ends the client's side of a tunnel the upstream half-closed, once all it sent is written.
  void end_tunnel_downstream();
  bool on_try_turn(UpstreamRequest& t) override;
  bool upgrade_was_offered(const http::MessageHead& response);
  void upstream_failed(LocalReason reason, int err);
  // adaptive_concurrency: the request's latency is known (its response head, or its failure).
  void end_adaptive_sample();
  // Gives the permit back, with its latency as a sample or without, and lets a waiting request
  // of the cluster have it.
  void release_adaptive(bool sample);
  // Over the limit: waits in the route's bulkhead queue for a permit, or is refused.
  void wait_for_adaptive();
  void on_adaptive_permit(filters::AdaptiveConcurrency::Permit permit) override;
  // The exchange stops using its upstream connection: back to the pool when `reusable` and the
  // whole request and response went through, else closed.
  void release_upstream(bool reusable);
  bool response_complete() const { return try_ && try_->response_complete(); }

  // Hedging (retry.hedge; exchange_hedge.cpp).
  enum class HedgeOutcome : uint8_t { kWon, kLost, kFailed, kCancelled, kCount };
  // Sets when the current try gets a hedge, if it may have one.
  void arm_hedge();
  // The hedge delay passed without a response head: starts a hedge when everything allows it.
  void start_hedge();
  // The racing hedge `t` is, or null (the lead try, or not a hedge).
  HedgeTry* racing_hedge(const UpstreamRequest& t);
  // The lead try failed (or got a status to retry) while hedges race: the earliest takes the
  // lead instead of a retry. False when none races.
  bool hand_over_to_hedge();
  // The lead try checks out a connection to endpoint_: started, waiting for the pool, or refused.
  void start_lead(bool fresh_only, bool may_replay);
  // A hedge that leads starts again on its endpoint: after a replay, or a wait for the pool.
  void restart_lead_hedge(bool fresh_only);
  // Makes `h` the lead try (the lead is released or cancelled by the caller).
  void promote(HedgeTry& h);
  // A racing hedge ends: its connection is closed, its permit given back without an outcome
  // unless recorded, and the access log lists it.
  void end_hedge(HedgeTry& h, HedgeOutcome outcome, std::string_view log_outcome);
  // Every racing hedge ends with `outcome` (a response won, or the exchange ended).
  void end_racing_hedges(HedgeOutcome outcome);
  void count_hedge(HedgeOutcome outcome);
  // The hedge that leads ends with `outcome`, counted once (nothing when the lead is no hedge).
  void count_lead_hedge(HedgeOutcome outcome);
  // A racing hedge failed without a response head: recorded against its endpoint, and it ends.
  void hedge_failed(HedgeTry& h, filters::TryFailure failure, LocalReason reason, int err);
  // A racing hedge's response head: true when the hedge wins (it leads now), false when its
  // answer is one to retry (it ended; the lead goes on).
  bool hedge_answered(HedgeTry& h, const http::MessageHead& head);
  // The lead's response head goes to the client: racing hedges lose, the delay is recorded.
  void hedge_lead_answered();
  // The failed lead try in the access log's tries: its status, TLS error or `reason`.
  void note_failed_lead(std::string_view reason);
  // The failed try list of the access log: "ENDPOINT OUTCOME".
  void note_ended_try(const EndpointPool* pool, std::string_view outcome, bool hedge);
  // record_try_outcome() for any try.
  void record_outcome(const EndpointPool* pool, filters::CircuitBreaker::Permit& permit,
                      uint64_t try_start_us, int status, bool local_origin);

  // Toward the client.
  void flush_to_client(bool at_once = false);
  // `status` overrides the reason's status (an injected abort); `retry_after_s` adds Retry-After.
  void local_reply(LocalReason reason, bool close_after, int status = 0,
                   uint32_t retry_after_s = 0);
  void start_tunnel();
  // The start: its clock, counters and access log sampling.
  void open();
  void write_access_log();
  void new_request_id();
  // Keeps the client's X-Request-Id when it has a usable one (true), else makes one.
  bool take_request_id(const http::MessageHead& head);
  // The request head for the upstream, into to_upstream: the route's path rewrite, the
  // upgrade protocols the route lets through (the parser is told in head.upgrade), and the
  // forwarding headers.
  // host_rewrite: auto: puts the Host of the endpoint the try goes to (`pool`) in the head of
  // `request` (the try's copy), where the Host value is host_len long now.
  void rewrite_host(Outbox& request, const EndpointPool& pool, uint32_t& host_len);
  void write_upstream_head(http::MessageHead& head, const RequestTarget& target,
                           const config::RouteConfig& route, bool wants_upgrade,
                           bool add_request_id);

  Worker& worker_;
  ListenerContext& listener_;
  ExchangeStream& stream_;
  ExchangeResources& res_;
  State state_ = State::kProxying;
  bool parsing_ = false;

  int route_index_ = -1;
  WorkerRoute* route_ = nullptr;
  WorkerCluster* cluster_ = nullptr;
  RouteStats* route_stats_ = nullptr;
  GaugeHold active_request_;            // counted in the cluster's active requests
  PoolRef endpoint_;  // the pool of the current (or last) try
  // The current (or last) try: first_try_ (a new one for each retry), or a hedge that took the
  // lead (lead_hedge_).
  UpstreamRequest* try_ = nullptr;
  std::optional<UpstreamRequest> first_try_;
  HedgeTry* lead_hedge_ = nullptr;
  uint64_t hedge_at_ms_ = 0;  // loop time the current try gets a hedge; 0 = none
  // Every endpoint a try of this request went to: a hedge goes elsewhere.
  UnreachableEndpoints tried_;
  uint8_t hedges_sent_ = 0;
  uint8_t hedges_racing_ = 0;
  bool lead_hedge_counted_ = false;  // lead_hedge_'s outcome is counted
  Wait wait_ = Wait::kNone;
  Admission admission_;  // the admission chain's state, and what the request holds from it
  filters::CircuitBreaker::Permit circuit_permit_;
  // adaptive_concurrency: held from admission to the response head (or the local reply).
  filters::AdaptiveConcurrency::Permit adaptive_permit_;
  // Waiting for a permit: a place in the route's bulkhead queue (against max_queued).
  filters::Bulkhead::QueuePlace adaptive_queue_place_;
  uint64_t queue_entered_ms_ = 0;  // loop time it joined the bulkhead queue; 0: it did not
  uint64_t adaptive_since_us_ = 0;
  uint64_t route_deadline_ms_ = 0;                 // loop time; 0 = none
  uint64_t try_deadline_ms_ = 0;                   // loop time; 0 = none
  uint64_t last_io_ms_ = 0;                        // loop time of the exchange's last byte moved
  const EndpointPool* failed_endpoint_ = nullptr;  // of the last failed try; a retry avoids it
  // The endpoints this request's tries could not reach: its retries go elsewhere.
  UnreachableEndpoints unreachable_;
  uint32_t tries_ = 0;
  // host_rewrite: auto: where the Host value is in the upstream head, replaced at each try by
  // the name of the endpoint it goes to (host_auto_ false: the route does not rewrite).
  uint32_t host_at_ = 0, host_len_ = 0;
  bool host_auto_ = false;
  size_t body_kept_ = 0;                // request body bytes copied for re-sending
  bool may_resend_ = false;             // the request may be sent again after bytes went out
  // An upstream closed a fresh connection before answering this request: it may be the request
  // that kills it (a query of death), so a reused connection that dies under it is no longer
  // taken for one the upstream closed while idle, and gets no free replay (try_failed()).
  bool request_suspect_ = false;
  bool copy_body_ = false;              // the body is copied into to_upstream as it arrives
  bool request_sent_ = false;           // some request byte went to an upstream (any try)
  bool tunnel_client_ended_ = false;    // the client half-closed the tunnel
  bool tunnel_upstream_ended_ = false;  // the upstream half-closed the tunnel
  bool tunnel_end_sent_ = false;        // ...and the client was told (end_tunnel_downstream)
  bool request_has_body_ = false;
  bool request_complete_ = false;
  bool request_head_request_ = false;  // HEAD: the response has no body
  bool request_upgrade_ = false;
  bool client_http10_ = false;
  bool response_head_sent_ = false;  // a final response head was queued for the client
  http::BodyFraming request_framing_ = http::BodyFraming::kNone;
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
  bool open_ = false;      // counted and logged at complete()
  bool log_this_ = false;  // the access log samples this request
  uint8_t log_flags_ = 0;
  LocalReason local_reason_ = LocalReason::kCount;  // kCount: no local reply
  int try_error_ = 0;  // how the last failed try failed (a libuv error or a tls_status())
  uint64_t bytes_in_ = 0, bytes_out_ = 0;  // request and response body bytes
  uint64_t upstream_us_ = 0;               // the last try's time to its response head
};

// Lends exchanges and their resources: a worker's requests allocate nothing once it has served
// as many at once as it serves now.
class ExchangePool {
 public:
  explicit ExchangePool(Worker& worker);
  ~ExchangePool();
  ExchangePool(const ExchangePool&) = delete;
  ExchangePool& operator=(const ExchangePool&) = delete;

  Exchange* acquire(ListenerContext& listener, ExchangeStream& stream);
  // Ends `e` (its guards give back what it held) and keeps its resources for the next one.
  void release(Exchange* e);
  // The same once the current loop phase is over (the caller may be running inside `e`).
  void release_later(Exchange* e);
  // Frees the kept slots nobody took since the last call (as FreeList::trim()); returns how many.
  size_t trim();

 private:
  struct Slot;
  Worker& worker_;
  FreeList<Slot> free_{256};  // a burst's slots beyond 256 go back to the system at once
};

}  // namespace bulwark
