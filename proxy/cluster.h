#pragma once
// Clusters: the shared, cross-worker state of each upstream cluster (ClusterState), and each
// worker's own view of it (WorkerCluster: endpoint pools, the load balancer, waiting requests).

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "config/config.h"
#include "filters/adaptive_concurrency.h"
#include "filters/circuit_breaker.h"
#include "filters/clock.h"
#include "filters/priority.h"
#include "proxy/endpoint.h"
#include "proxy/lb.h"
#include "proxy/list.h"
#include "proxy/metrics.h"
#include "proxy/tls.h"
#include "proxy/upstream.h"

namespace bulwark {

// Shared by all workers; owned by the Server. The endpoint set is swapped by the main thread
// (DNS) and handed to each worker by a posted message, so workers never take this lock on the
// request path.
class ClusterState {
 public:
  // `owner` is the config `config` belongs to: kept alive as long as this state is, which may be
  // longer than that config is in force (a reload that left the cluster unchanged keeps it).
  // `previous` is the state of the same cluster before a reload changed its settings: its circuit
  // breaker goes on when the breaker's own settings did not change.
  ClusterState(std::shared_ptr<const config::Config> owner, const config::ClusterConfig& config,
               size_t index, const filters::Clock& clock, const ClusterState* previous = nullptr)
      : owner(std::move(owner)),
        config(config),
        index(index),
        clock(clock),
        circuit_owner(keeps_circuit(previous) ? previous->circuit_owner : this->owner),
        circuit(keeps_circuit(previous) ? previous->circuit
                : config.circuit_breaker
                    ? std::make_shared<filters::CircuitBreaker>(*config.circuit_breaker, clock)
                    : nullptr),
        adaptive(config.adaptive_concurrency
                     ? std::make_unique<filters::AdaptiveConcurrency>(
                           *config.adaptive_concurrency, clock,
                           static_cast<uint64_t>(clock.now()) ^ (index + 1) * 0x9e3779b97f4a7c15ULL)
                     : nullptr) {
    if (previous != nullptr) {
      adaptive_rejected_before =
          previous->adaptive_rejected_before +
          (previous->adaptive != nullptr ? previous->adaptive->rejected() : 0);
    }
    // A new breaker for the same cluster: its transitions count on from the old one's.
    if (keeps_circuit(previous)) {
      transitions_before = previous->transitions_before;
    } else if (previous != nullptr && previous->circuit != nullptr) {
      for (size_t i = 0; i < transitions_before.size(); ++i) {
        transitions_before[i] =
            previous->transitions_before[i] +
            previous->circuit->transitions(static_cast<filters::CircuitState>(i));
      }
    }
  }
  const std::shared_ptr<const config::Config> owner;
  const config::ClusterConfig& config;
  const size_t index;  // in `owner`
  const filters::Clock& clock;
  // The config the breaker's settings belong to (an older one when a reload kept the breaker).
  const std::shared_ptr<const config::Config> circuit_owner;
  // The cluster's circuit breaker; null when none is configured.
  const std::shared_ptr<filters::CircuitBreaker> circuit;
  // adaptive_concurrency: the limit of the cluster's requests in flight; null when off. A
  // reload makes a new one (it measures again); the exchanges of the old generation hold
  // permits of the old one, which lives as long as they do.
  const std::unique_ptr<filters::AdaptiveConcurrency> adaptive;
  // Refusals of the controllers this cluster had before reloads replaced them, so
  // bulwark_adaptive_concurrency_rejected_total never goes back.
  uint64_t adaptive_rejected_before = 0;
  // Transitions of the breakers this cluster had before a reload replaced its breaker, by new
  // state (closed, open, half-open), so bulwark_circuit_transitions_total never goes back.
  std::array<uint64_t, 3> transitions_before{};
  // Whether this state's breaker came from `previous` (so it already has its transition hook).
  bool kept_circuit_of(const ClusterState* previous) const {
    return previous != nullptr && circuit != nullptr && circuit == previous->circuit;
  }

  std::shared_ptr<const EndpointSet> endpoints() const;
  void set_endpoints(std::shared_ptr<const EndpointSet> set);

  // Upstream connections open across all workers, against pool.max_connections.
  std::atomic<uint32_t> connections{0};
  // Requests waiting for a connection across all workers, against pool.max_pending.
  std::atomic<uint32_t> pending{0};
  // Set by the Server before workers start: a worker that closed a connection (freeing a slot
  // of max_connections) while requests of other workers wait for one tells those workers.
  std::function<void(size_t from_worker)> wake_other_workers;
  // adaptive_concurrency: requests waiting for a permit across all workers (their routes'
  // bulkheads have a queue). A worker whose permit ended while only others wait wakes them with
  // wake_other_workers.
  std::atomic<uint32_t> adaptive_waiting{0};
  // Their order over all workers, as the route bulkhead's queue: each waiter takes a ticket,
  // each worker publishes its oldest waiter's, and a freed permit goes to the oldest of all (its
  // worker is woken with wake_worker when it is another). Set up by the Server before workers
  // start.
  static constexpr uint64_t kNoAdaptiveWaiter = UINT64_MAX;
  static constexpr size_t kNoWorker = SIZE_MAX;
  std::atomic<uint64_t> next_adaptive_ticket{0};
  std::unique_ptr<std::atomic<uint64_t>[]> adaptive_oldest;  // [worker]
  size_t adaptive_workers = 0;
  std::function<void(size_t worker)> wake_worker;
  void init_adaptive_queue(size_t workers) {
    adaptive_workers = workers;
    adaptive_oldest = std::make_unique<std::atomic<uint64_t>[]>(workers);
    for (size_t w = 0; w < workers; ++w) adaptive_oldest[w].store(kNoAdaptiveWaiter);
  }
  size_t oldest_adaptive_worker() const {
    size_t best = kNoWorker;
    uint64_t best_ticket = kNoAdaptiveWaiter;
    for (size_t w = 0; w < adaptive_workers; ++w) {
      const uint64_t t = adaptive_oldest[w].load();
      if (t < best_ticket) {
        best_ticket = t;
        best = w;
      }
    }
    return best;
  }

  // Bumped (release) after any change of which endpoints are routable: a health check result
  // that changed an endpoint's state, an ejection, the end of one. Each worker compares it with
  // the version its routing table was built from on every pick, so a change is seen by all
  // workers at their next request. Read on every pick: a cache line of its own, away from the
  // counters above that workers write.
  alignas(64) std::atomic<uint64_t> health_version{0};
  void health_changed() { health_version.fetch_add(1, std::memory_order_release); }
  // Set by the Server: a worker ejected an endpoint (the main thread times its return).
  std::function<void()> on_ejection;
  // Set by the Server before workers start, for a cluster with `tls`: the TLS context new
  // connections take (replaced when certificate files change). Null: plain TCP.
  std::shared_ptr<TlsClientSlot> tls;

 private:
  bool keeps_circuit(const ClusterState* previous) const {
    return previous != nullptr && previous->circuit != nullptr && config.circuit_breaker &&
           previous->config.circuit_breaker == config.circuit_breaker;
  }

  mutable std::mutex mu_;
  std::shared_ptr<const EndpointSet> endpoints_;
};

// A request waiting for an adaptive_concurrency permit of its cluster: the limit was reached
// and its route's bulkhead has a queue, where it holds a place meanwhile. The wait ends with
// on_adaptive_permit() or cancel_adaptive_wait(), which the destructor calls.
class AdaptiveWaiter {
 public:
  AdaptiveWaiter() = default;
  AdaptiveWaiter(const AdaptiveWaiter&) = delete;
  AdaptiveWaiter& operator=(const AdaptiveWaiter&) = delete;
  // A permit, taken for this waiter (which is out of the queue already).
  virtual void on_adaptive_permit(filters::AdaptiveConcurrency::Permit permit) = 0;
  bool waiting_for_adaptive() const { return adaptive_cluster_ != nullptr; }
  void cancel_adaptive_wait();

  ListHook<AdaptiveWaiter> adaptive_hook;

 protected:
  ~AdaptiveWaiter() { cancel_adaptive_wait(); }

 private:
  friend class WorkerCluster;
  WorkerCluster* adaptive_cluster_ = nullptr;  // the queue it is in
  uint64_t adaptive_ticket_ = 0;
};

// One worker's view of a cluster. Lives on the worker's loop thread only.
class WorkerCluster {
 public:
  WorkerCluster(Worker& worker, std::shared_ptr<ClusterState> shared, ClusterStats& stats);
  ~WorkerCluster();

  // Applies a new endpoint set: pools of endpoints that stayed are kept, others retire.
  void update(const std::shared_ptr<const EndpointSet>& set);
  // The endpoint for the next request, or null when no endpoint is routable (has_endpoints()
  // tells whether there are none at all). The priority group comes from the priority load, the
  // endpoint within it from the load balancer. A retry passes the endpoint of the failed try as
  // `avoid`, and gets another one of the group when it has several. A retry after tries that
  // could not reach their endpoints also passes those (`unreachable`): it gets, at random, an
  // endpoint of the chosen group that is neither, else of the other groups (lowest priority
  // first, whatever their share of the priority load), else one that is only `avoid`; only when
  // every endpoint in the routing table is unreachable does it pick as without them.
  EndpointPool* pick(const EndpointPool* avoid = nullptr,
                     const UnreachableEndpoints* unreachable = nullptr);
  bool has_endpoints() const { return !pools_.empty(); }
  // type: original_destination: the pool of `destination` (where a redirected client meant to
  // connect), made at its first use. Pools that no request holds and that have no connection
  // left are dropped as new ones are made, so their number stays bounded by the connections
  // and requests under way.
  EndpointPool* pick_original(const sockaddr* destination);
  // The outcome of a try on `pool`'s endpoint, for outlier detection. An ejection is logged here.
  void record_outcome(const EndpointPool& pool, filters::OutlierDetector::Outcome outcome);

  // What checkout() did.
  enum class Checkout {
    kReady,       // an idle connection, attached to the owner: use it now
    kConnecting,  // a new connection: the owner hears on_upstream_connected()
    kWaiting,     // every slot is taken: `waiter` is queued and hears on_pool_capacity()
    kFull,        // every slot is taken and the pending queue (pool.max_pending) is full
  };
  // Gets `owner` a connection to `pool`'s endpoint: an idle one unless `fresh_only`, else a new
  // one when a slot of pool.max_connections is free, else a place in the queue. With kReady and
  // kConnecting, `lease` holds the connection.
  Checkout checkout(EndpointPool& pool, UpstreamConnection::Owner* owner, bool fresh_only,
                    UpstreamLease& lease, PoolWaiter& waiter);
  // Takes back a leased connection (UpstreamLease::release).
  void checkin(UpstreamConnection* conn, bool reusable);

  // A connection closed: its slot of the cluster-wide connection limit is free at once, so a
  // request re-sent from inside the close (its pooled connection was found closed) can take it.
  void return_connection_slot();
  // The closed connection was freed: tell waiters, from the deferred-work loop (never from
  // inside the close, which may run inside a waiter's own call).
  void announce_connection_slot();
  // Another worker freed a connection slot: serve this worker's waiters while slots are free.
  void on_remote_capacity();
  // Called by pools when a connection of this cluster went idle or closed, so waiting requests
  // can go.
  void on_capacity();

  // Leaves the queue (PoolWaiter::cancel).
  void remove_waiter(PoolWaiter* w);

  // adaptive_concurrency: queues `w` for a permit (first come, first served on this worker),
  // and serves it at once if one came free meanwhile.
  void wait_for_adaptive(AdaptiveWaiter* w);
  void remove_adaptive_waiter(AdaptiveWaiter* w);
  // A permit of this cluster ended on this worker: its waiters get permits while there are
  // any, and when it has none while others wait, the other workers are told.
  void on_adaptive_release();

  // Closes idle connections and stops (drain).
  void close_idle();
  // Whether any upstream connection of this cluster is still open (busy, idle or closing).
  bool has_connections() const;

  const std::shared_ptr<ClusterState> shared_owner;
  ClusterState& shared;
  ClusterStats& stats;
  const config::ClusterConfig& config() const { return shared.config; }
  const std::vector<std::unique_ptr<EndpointPool>>& pools() const { return pools_; }

 private:
  // One priority group's share of the routing table: the pools that take its traffic (its
  // routable ones, or all of them in panic) and its balancer state.
  struct Group {
    explicit Group(config::LbPolicy policy) : lb(policy) {}
    std::vector<EndpointPool*> members;
    std::vector<LbCandidate> candidates;
    LoadBalancer::Weights weights;  // of the candidates, set with them
    LoadBalancer lb;
    // slow_start: until when a member warms up (the cluster clock's Micros); 0: none does, and
    // the candidates carry the configured weights.
    int64_t warming_until = 0;
  };
  // slow_start: sets the group's candidates' weights for `now`, and back to the configured
  // ones once no member warms any more.
  void apply_slow_start(Group& group, int64_t now);
  // Rebuilds groups_ and load_ from the endpoints' routable state.
  void rebuild_routing();
  // pick() after unreachable endpoints: null when every endpoint is unreachable.
  EndpointPool* pick_reachable(size_t chosen, const EndpointPool* avoid,
                               const UnreachableEndpoints& unreachable);

  Worker& worker_;
  std::shared_ptr<const EndpointSet> set_;
  std::vector<std::unique_ptr<EndpointPool>> pools_;  // index-aligned with set_->endpoints
  std::vector<std::unique_ptr<EndpointPool>> retired_;
  std::vector<std::unique_ptr<EndpointPool>> originals_;  // type: original_destination
  std::vector<Group> groups_;  // by priority, lowest first; only priorities that have endpoints
  filters::PriorityLoad load_;
  uint64_t routing_version_ = 0;
  // Reserves a slot for a new connection against the cluster-wide limit.
  bool try_reserve_connection();
  // At that limit: closes this worker's longest idle connection to another endpoint than
  // `pool`'s, so a request that needs a connection gets its slot instead of waiting while
  // slots sit idle (many endpoints, or the many destinations of an original_destination
  // cluster). False when there is none.
  bool close_idle_elsewhere(const EndpointPool& pool);
  bool enqueue_waiter(PoolWaiter* w);

  IntrusiveList<PoolWaiter, &PoolWaiter::hook> waiters_;  // oldest first
  bool serving_waiters_ = false;
  void serve_adaptive_waiters();
  void publish_oldest_adaptive();
  IntrusiveList<AdaptiveWaiter, &AdaptiveWaiter::adaptive_hook> adaptive_waiters_;  // oldest first
  bool serving_adaptive_ = false;
};

}  // namespace bulwark
