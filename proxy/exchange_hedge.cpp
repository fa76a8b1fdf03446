// Hedged requests (retry.hedge, filters/hedge.h): when the lead try of a re-sendable request has
// no response head after the hedge delay, another try starts on another endpoint, and the first
// head wins.
//
// Each hedge is a HedgeTry: its own UpstreamRequest, response parser and copy of the request,
// so tries race without sharing a cursor. The exchange's lead try (try_) is the one whose
// failure would be retried; the hedges race beside it. When the lead fails (no response, or an
// answer to retry), the earliest hedge takes the lead instead of a retry. When a hedge's head
// comes first, the lead is cancelled and the hedge leads. When the lead's head goes to the
// client, the racing hedges are cancelled. A cancelled try's connection is closed (it would
// carry the rest of an unwanted response), and neither the circuit breaker nor outlier detection
// hears of it: it was neither a success nor a failure. Each hedge is a try (it counts against
// attempts) and a retry of the budget.
#include "proxy/cluster.h"
#include "proxy/exchange.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/worker.h"

namespace bulwark {
namespace {

uint64_t now_us() { return uv_hrtime() / 1000; }

}  // namespace

HedgeTry::HedgeTry() : parser(http::Parser::Type::kResponse, nullptr) {
  parser.set_max_head_size(kMaxResponseHeadSize);
}

void Exchange::arm_hedge() {
  hedge_at_ms_ = 0;
  const std::optional<config::HedgeConfig>& hedge = route_->shared->retry.config().hedge;
  // Only a request that may go again (the idempotency rule), whole and kept (its body fits
  // max_body_bytes), and never an upgrade (a tunnel has one peer).
  if (!hedge || hedges_sent_ >= hedge->max_hedges || !request_complete_ || !may_resend_ ||
      request_upgrade_ || !res_.to_upstream.can_rewind() ||
      cluster_->config().type == config::ClusterType::kOriginalDestination) {
    return;
  }
  const std::optional<filters::Micros> delay =
      filters::hedge_delay(*hedge, route_->recent_latency.get(),
                           static_cast<filters::Micros>(now_us()));
  if (!delay) return;  // delay: auto without enough answers yet
  hedge_at_ms_ = uv_now(worker_.loop()) + static_cast<uint64_t>((*delay + 999) / 1000);
  arm_deadline_timer();
}

HedgeTry* Exchange::racing_hedge(const UpstreamRequest& t) {
  if (hedges_racing_ == 0) return nullptr;
  for (const std::unique_ptr<HedgeTry>& h : res_.hedges) {
    if (h->racing && h->upstream && &*h->upstream == &t) return h.get();
  }
  return nullptr;
}

void Exchange::start_hedge() {
  const config::RetryConfig& retry = route_->shared->retry.config();
  if (!retry.hedge || state_ != State::kProxying || response_head_sent_ || !request_complete_ ||
      wait_ != Wait::kNone || try_ == nullptr || !try_->has_connection() ||
      !res_.to_upstream.can_rewind() || tries_ >= retry.attempts ||
      hedges_sent_ >= retry.hedge->max_hedges) {
    return;
  }
  // An endpoint no try of this request went to (those it could not reach included).
  EndpointPool* pool = cluster_->pick(nullptr, &tried_);
  if (pool == nullptr || tried_.contains(pool)) return;  // no other endpoint to hedge on
  filters::CircuitBreaker::Permit permit;
  if (filters::CircuitBreaker* circuit = cluster_->shared.circuit.get()) {
    permit = circuit->try_acquire();
    if (!permit) return;
  }
  if (!route_->shared->budget.try_spend()) {
    route_stats_->retry_budget_exhausted.inc();
    return;
  }

  HedgeTry* h = nullptr;
  for (const std::unique_ptr<HedgeTry>& slot : res_.hedges) {
    if (!slot->racing && slot.get() != lead_hedge_) h = slot.get();
  }
  if (h == nullptr) h = res_.hedges.emplace_back(std::make_unique<HedgeTry>()).get();
  // The hedge's own copy of the request, with its own Host when the route rewrites it.
  h->request.clear();
  res_.to_upstream.copy_message(h->request.head);
  h->request.add_head();
  h->request.set_keep_history(true);  // for a replay when a reused connection is closed
  if (host_auto_) {
    uint32_t host_len = host_len_;
    rewrite_host(h->request, *pool, host_len);
  }
  tried_.add(pool);
  h->endpoint = pool;
  h->circuit = std::move(permit);
  h->started_ms = uv_now(worker_.loop());
  h->racing = true;
  ++tries_;
  ++hedges_sent_;
  ++hedges_racing_;
  h->upstream.emplace(worker_, static_cast<UpstreamRequest::Callbacks&>(*this), h->parser,
                      h->request);
  log::debug("hedging request")
      .str("route", route_->shared->config.name)
      .str("request_id", {request_id_, request_id_len_})
      .str("lead", endpoint_ != nullptr ? std::string_view(endpoint_->endpoint.address) : "-")
      .str("hedge", pool->endpoint.address)
      .num("attempt", tries_);
  arm_hedge();  // the next one, when more are allowed
  // Connected at once (an idle pooled connection) or connecting; a hedge never waits for a
  // connection slot: when the pool is full it is not sent.
  if (h->upstream->start(*pool, false, true) != UpstreamRequest::Start::kStarted) {
    // Not sent, so not a try (its retry of the budget is spent all the same).
    h->upstream->cancel_wait();
    h->upstream->release(false);
    h->racing = false;
    --hedges_racing_;
    h->circuit.reset();
    h->endpoint.reset();
    --tries_;
    --hedges_sent_;
  }
}

void Exchange::hedge_failed(HedgeTry& h, filters::TryFailure failure, LocalReason reason,
                            int err) {
  UpstreamRequest& t = *h.upstream;
  const bool local_origin = failure == filters::TryFailure::kConnectFailure ||
                            (failure == filters::TryFailure::kReset &&
                             reason == LocalReason::kUpstreamReset && !t.response_started());
  // bulwark out of descriptors or memory: no evidence against the endpoint.
  const bool our_fault =
      failure == filters::TryFailure::kConnectFailure && is_local_resource_error(err);
  const EndpointPool* pool = our_fault ? nullptr : h.endpoint.get();
  if (pool != nullptr) cluster_->stats.upstream_requests.inc(0);
  record_outcome(pool, h.circuit, t.start_us(), 0, local_origin);
  end_hedge(h, HedgeOutcome::kFailed, filters::to_string(filters::retry_reason_of(failure)));
}

bool Exchange::hedge_answered(HedgeTry& h, const http::MessageHead& head) {
  if (head.status == 101) {
    // A switch nobody asked for (hedged requests are never upgrades): a broken answer, which
    // must not cancel the lead.
    cluster_->stats.upstream_requests.inc(head.status);
    record_outcome(h.endpoint.get(), h.circuit, h.upstream->start_us(), 0, false);
    end_hedge(h, HedgeOutcome::kFailed, "reset");
    return false;
  }
  if (route_->shared->retry.retriable_status(head.status)) {
    // No better than waiting for the lead.
    cluster_->stats.upstream_requests.inc(head.status);
    record_outcome(h.endpoint.get(), h.circuit, h.upstream->start_us(), head.status, false);
    char status[16];
    snprintf(status, sizeof status, "%d", head.status);
    end_hedge(h, HedgeOutcome::kFailed, status);
    return false;
  }
  // The lead is cancelled: no outcome for it.
  note_ended_try(endpoint_.get(), "cancelled", lead_hedge_ != nullptr);
  count_lead_hedge(HedgeOutcome::kLost);
  release_upstream(false);
  circuit_permit_.reset();
  promote(h);
  return true;  // on_try_head goes on with it as the lead
}

void Exchange::hedge_lead_answered() {
  hedge_at_ms_ = 0;
  if (hedges_racing_ > 0) end_racing_hedges(HedgeOutcome::kLost);
  count_lead_hedge(HedgeOutcome::kWon);
  // From the start of the try the hedges raced (the time the client waited on the upstream),
  // not of the winner: a hedge's win is no sign that tries got faster.
  if (route_->recent_latency) {
    const uint64_t now = now_us();
    route_->recent_latency->record(static_cast<filters::Micros>(now - first_try_->start_us()),
                                   static_cast<filters::Micros>(now));
  }
}

bool Exchange::hand_over_to_hedge() {
  HedgeTry* next = nullptr;
  for (const std::unique_ptr<HedgeTry>& h : res_.hedges) {
    if (h->racing && (next == nullptr || h->started_ms < next->started_ms)) next = h.get();
  }
  if (next == nullptr) return false;
  log::debug("hedge takes the lead")
      .str("request_id", {request_id_, request_id_len_})
      .str("hedge", next->endpoint->endpoint.address);
  promote(*next);
  return true;
}

void Exchange::promote(HedgeTry& h) {
  circuit_permit_ = std::move(h.circuit);
  endpoint_ = h.endpoint.get();
  h.endpoint.reset();
  h.racing = false;
  --hedges_racing_;
  try_ = &*h.upstream;
  lead_hedge_ = &h;
  lead_hedge_counted_ = false;
  response_status_ = 0;
  try_error_ = 0;
  // The hedge's own per-try deadline, from when it started.
  const config::RetryConfig& retry = route_->shared->retry.config();
  try_deadline_ms_ = retry.per_try_timeout.count() > 0
                         ? h.started_ms + static_cast<uint64_t>(retry.per_try_timeout.count())
                         : 0;
  arm_deadline_timer();
}

void Exchange::end_hedge(HedgeTry& h, HedgeOutcome outcome, std::string_view log_outcome) {
  h.racing = false;
  --hedges_racing_;
  h.upstream->release(false);
  h.circuit.reset();
  note_ended_try(h.endpoint.get(), log_outcome, true);
  h.endpoint.reset();
  count_hedge(outcome);
}

void Exchange::end_racing_hedges(HedgeOutcome outcome) {
  const std::string_view word = outcome == HedgeOutcome::kLost ? "lost" : "cancelled";
  for (const std::unique_ptr<HedgeTry>& h : res_.hedges) {
    if (h->racing) end_hedge(*h, outcome, word);
  }
}

void Exchange::count_lead_hedge(HedgeOutcome outcome) {
  if (lead_hedge_ == nullptr || lead_hedge_counted_) return;
  lead_hedge_counted_ = true;
  count_hedge(outcome);
}

void Exchange::count_hedge(HedgeOutcome outcome) {
  if (route_stats_ != nullptr) route_stats_->hedges[static_cast<size_t>(outcome)].inc();
}

}  // namespace bulwark
