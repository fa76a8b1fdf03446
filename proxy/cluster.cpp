#include "proxy/cluster.h"

#include <algorithm>
#include <cstring>

#include "filters/slow_start.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/worker.h"

namespace bulwark {

std::shared_ptr<const EndpointSet> ClusterState::endpoints() const {
  std::lock_guard<std::mutex> lock(mu_);
  return endpoints_;
}

void ClusterState::set_endpoints(std::shared_ptr<const EndpointSet> set) {
  std::lock_guard<std::mutex> lock(mu_);
  endpoints_ = std::move(set);
}

WorkerCluster::WorkerCluster(Worker& worker, std::shared_ptr<ClusterState> shared,
                             ClusterStats& stats)
    : shared_owner(std::move(shared)), shared(*shared_owner), stats(stats), worker_(worker) {}

WorkerCluster::~WorkerCluster() = default;

void WorkerCluster::update(const std::shared_ptr<const EndpointSet>& set) {
  set_ = set;
  std::vector<std::unique_ptr<EndpointPool>> next;
  if (set != nullptr) {
    for (const Endpoint& e : set->endpoints) {
      auto same =
          std::find_if(pools_.begin(), pools_.end(), [&](const std::unique_ptr<EndpointPool>& p) {
            return p != nullptr && p->endpoint.address == e.address &&
                   p->endpoint.weight == e.weight && p->endpoint.priority == e.priority;
          });
      if (same != pools_.end()) {
        next.push_back(std::move(*same));
      } else {
        next.push_back(std::make_unique<EndpointPool>(*this, e));
      }
      next.back()->index = next.size() - 1;
    }
  }
  for (auto& p : pools_) {
    if (p == nullptr) continue;
    // An endpoint that left: close its idle connections; busy ones close when released.
    p->retired = true;
    while (UpstreamConnection* c = p->idle.front()) c->close();
    retired_.push_back(std::move(p));
  }
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [](const std::unique_ptr<EndpointPool>& p) {
                                  return p->connections == 0 && p->holders == 0;
                                }),
                 retired_.end());
  pools_ = std::move(next);
  routing_version_ = shared.health_version.load(std::memory_order_acquire);
  rebuild_routing();
}

void WorkerCluster::rebuild_routing() {
  groups_.clear();
  load_ = {};
  if (set_ == nullptr) return;
  const EndpointSet::Groups g = set_->groups();
  load_ = filters::compute_priority_load(g.health, shared.config.panic_threshold_percent);
  groups_.assign(g.health.size(), Group(shared.config.lb));
  for (size_t i = 0; i < pools_.size(); ++i) {
    // In panic a group's traffic goes to all its endpoints, routable or not.
    if (!g.routable[i] && !load_.panic) continue;
    Group& group = groups_[g.group_of[i]];
    group.members.push_back(pools_[i].get());
    group.candidates.push_back(LbCandidate{pools_[i]->endpoint.weight, 0, 0});
    if (const auto& slow = shared.config.slow_start) {
      const int64_t since = pools_[i]->endpoint.status->warm_since.load(std::memory_order_acquire);
      if (since != 0) {
        group.warming_until =
            std::max(group.warming_until, since + filters::to_micros(slow->window));
      }
    }
  }
  for (Group& group : groups_) group.weights = LoadBalancer::weights_of(group.candidates);
}

void WorkerCluster::apply_slow_start(Group& group, int64_t now) {
  const config::SlowStartConfig& slow = *shared.config.slow_start;
  const bool warming = now < group.warming_until;
  for (size_t i = 0; i < group.members.size(); ++i) {
    const Endpoint& e = group.members[i]->endpoint;
    uint32_t weight = e.weight;
    if (warming) {
      // In thousandths, so that a member at 10% still differs from its peers at 100%.
      const int64_t since = e.status->warm_since.load(std::memory_order_acquire);
      weight *= since == 0 ? 1000 : filters::slow_start_permille(slow, now - since);
    }
    group.candidates[i].weight = std::max<uint32_t>(weight, 1);
  }
  group.weights = LoadBalancer::weights_of(group.candidates);
  if (!warming) group.warming_until = 0;
}

EndpointPool* WorkerCluster::pick(const EndpointPool* avoid,
                                  const UnreachableEndpoints* unreachable) {
  const uint64_t version = shared.health_version.load(std::memory_order_acquire);
  if (version != routing_version_) {
    routing_version_ = version;
    rebuild_routing();
  }
  int chosen = -1;
  if (groups_.size() == 1) {
    chosen = load_.percent[0] != 0 ? 0 : -1;  // the common case: no random draw
  } else if (!groups_.empty()) {
    chosen = filters::choose_group(load_, worker_.random().next());
  }
  if (chosen < 0) return nullptr;
  if (unreachable != nullptr && !unreachable->empty()) {
    if (EndpointPool* p = pick_reachable(static_cast<size_t>(chosen), avoid, *unreachable))
      return p;
  }
  Group& group = groups_[static_cast<size_t>(chosen)];
  const size_t n = group.members.size();
  if (n == 0) return nullptr;
  if (avoid != nullptr && n > 1) {
    // A retry: any other endpoint of the group, chosen at random, without moving the balancer.
    // (Taking the balancer's next turn would hand the next request's turn to the failed
    // endpoint again.)
    for (size_t a = 0; a < n; ++a) {
      if (group.members[a] != avoid) continue;
      size_t i = worker_.random().below(static_cast<uint32_t>(n - 1));
      return group.members[i >= a ? i + 1 : i];
    }
  }
  if (group.warming_until != 0) apply_slow_start(group, shared.clock.now());
  for (size_t i = 0; i < n; ++i)
    group.candidates[i].active_requests = group.members[i]->active_requests;
  return group.members[group.lb.pick(group.candidates, worker_.random(), group.weights)];
}

EndpointPool* WorkerCluster::pick_reachable(size_t chosen, const EndpointPool* avoid,
                                            const UnreachableEndpoints& unreachable) {
  // The chosen group first, then the others lowest priority first: a group the priority load
  // gives nothing yet (a failover group while the first one looks healthy) still takes a retry
  // that found no reachable endpoint before it. First pass: neither unreachable nor `avoid`;
  // second pass: `avoid` too (it failed, but it could be reached).
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t k = 0; k <= groups_.size(); ++k) {
      if (k > 0 && k - 1 == chosen) continue;
      const Group& group = groups_[k == 0 ? chosen : k - 1];
      auto eligible = [&](const EndpointPool* p) {
        return !unreachable.contains(p) && (pass == 1 || p != avoid);
      };
      uint32_t count = 0;
      for (const EndpointPool* p : group.members) count += eligible(p) ? 1 : 0;
      if (count == 0) continue;
      // At random, without moving the balancer (as a retry within a group, below).
      uint32_t nth = worker_.random().below(count);
      for (EndpointPool* p : group.members) {
        if (eligible(p) && nth-- == 0) return p;
      }
    }
  }
  return nullptr;
}

void WorkerCluster::record_outcome(const EndpointPool& pool,
                                   filters::OutlierDetector::Outcome outcome) {
  filters::OutlierDetector* outlier = set_ != nullptr ? set_->outlier.get() : nullptr;
  if (outlier == nullptr || pool.retired) return;
  filters::OutlierDetector::Cause cause{};
  if (!outlier->record(pool.index, outcome, &cause)) return;
  shared.health_changed();
  const filters::Micros until = outlier->ejected_until(pool.index);
  const config::OutlierDetectionConfig& c = outlier->config();
  std::string why;
  switch (cause) {
    case filters::OutlierDetector::Cause::kConsecutiveGatewayFailure:
      why = std::to_string(c.consecutive_gateway_failure) + " consecutive gateway failures";
      break;
    case filters::OutlierDetector::Cause::kConsecutiveLocalOriginFailure:
      why =
          std::to_string(c.consecutive_local_origin_failure) + " consecutive local-origin failures";
      break;
    case filters::OutlierDetector::Cause::kConsecutive5xx:
      why = std::to_string(c.consecutive_5xx) + " consecutive 5xx";
      break;
    case filters::OutlierDetector::Cause::kSuccessRate:  // judged by the health checker
      why = "success rate below the cluster's";
      break;
    case filters::OutlierDetector::Cause::kFailurePercent:
      why = "at least " + std::to_string(c.failure_percent) + "% of tries failed in " +
            std::to_string(c.interval.count()) + "ms";
      break;
  }
  log::warn("endpoint ejected")
      .str("cluster", shared.config.name)
      .str("endpoint", pool.endpoint.address)
      .str("old", "active")
      .str("new", "ejected")
      .str("cause", why)
      .num("ejection_ms", until > 0 ? (until - shared.clock.now() + 999) / 1000 : 0)
      .num("times_ejected", outlier->times_ejected(pool.index));
  if (shared.on_ejection) shared.on_ejection();
}

EndpointPool* WorkerCluster::pick_original(const sockaddr* destination) {
  for (const auto& p : originals_) {
    if (same_address(reinterpret_cast<const sockaddr*>(&p->endpoint.sockaddr), destination)) {
      return p.get();
    }
  }
  // A few dozen destinations is the common case; past that, forget the unused ones first.
  constexpr size_t kSweepAbove = 64;
  if (originals_.size() >= kSweepAbove) {
    originals_.erase(std::remove_if(originals_.begin(), originals_.end(),
                                    [](const std::unique_ptr<EndpointPool>& p) {
                                      return p->connections == 0 && p->holders == 0;
                                    }),
                     originals_.end());
  }
  Endpoint e;
  std::memcpy(&e.sockaddr, destination,
              destination->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  e.address = format_sockaddr(e.sockaddr);
  e.name = e.address;
  originals_.push_back(std::make_unique<EndpointPool>(*this, e));
  return originals_.back().get();
}

bool WorkerCluster::close_idle_elsewhere(const EndpointPool& pool) {
  // The longest idle of this worker's connections to other endpoints: the back of each pool's
  // idle list (most recently used at the front).
  UpstreamConnection* oldest = nullptr;
  for (auto* list : {&pools_, &originals_}) {
    for (const auto& p : *list) {
      UpstreamConnection* c = p.get() == &pool ? nullptr : p->idle.back();
      if (c != nullptr && (oldest == nullptr || c->idle_since_ms() < oldest->idle_since_ms())) {
        oldest = c;
      }
    }
  }
  if (oldest == nullptr) return false;
  oldest->close();  // gives its slot back (to the oldest waiter first, if any)
  return true;
}

bool WorkerCluster::try_reserve_connection() {
  uint32_t max = shared.config.pool.max_connections;
  uint32_t n = shared.connections.load(std::memory_order_relaxed);
  while (n < max) {
    if (shared.connections.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

void WorkerCluster::return_connection_slot() {
  shared.connections.fetch_sub(1, std::memory_order_seq_cst);
}

void WorkerCluster::announce_connection_slot() {
  if (!waiters_.empty()) {
    on_capacity();
  } else if (shared.pending.load(std::memory_order_seq_cst) > 0 && shared.wake_other_workers) {
    shared.wake_other_workers(worker_.id());
  }
}

void WorkerCluster::wait_for_adaptive(AdaptiveWaiter* w) {
  w->adaptive_ticket_ = shared.next_adaptive_ticket.fetch_add(1);
  adaptive_waiters_.push_back(w);
  w->adaptive_cluster_ = this;
  if (adaptive_waiters_.front() == w) publish_oldest_adaptive();
  shared.adaptive_waiting.fetch_add(1, std::memory_order_seq_cst);
  // A permit may have ended on another worker between the refusal and now, unseen by it (no
  // waiter yet): look once more. The fences pair with on_adaptive_release's (the permits'
  // in-flight count is relaxed).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  serve_adaptive_waiters();
}

void WorkerCluster::remove_adaptive_waiter(AdaptiveWaiter* w) {
  if (w->adaptive_cluster_ != this) return;
  const bool was_front = adaptive_waiters_.front() == w;
  adaptive_waiters_.remove(w);
  w->adaptive_cluster_ = nullptr;
  if (was_front) publish_oldest_adaptive();
  shared.adaptive_waiting.fetch_sub(1, std::memory_order_relaxed);
}

void WorkerCluster::publish_oldest_adaptive() {
  if (shared.adaptive_oldest == nullptr) return;
  shared.adaptive_oldest[worker_.id()].store(adaptive_waiters_.empty()
                                                 ? ClusterState::kNoAdaptiveWaiter
                                                 : adaptive_waiters_.front()->adaptive_ticket_);
}

void AdaptiveWaiter::cancel_adaptive_wait() {
  if (adaptive_cluster_ != nullptr) adaptive_cluster_->remove_adaptive_waiter(this);
}

void WorkerCluster::on_adaptive_release() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (shared.adaptive_waiting.load(std::memory_order_relaxed) > 0) serve_adaptive_waiters();
}

void WorkerCluster::serve_adaptive_waiters() {
  filters::AdaptiveConcurrency* adaptive = shared.adaptive.get();
  if (adaptive == nullptr || serving_adaptive_) return;
  serving_adaptive_ = true;
  // Free permits go to the oldest waiters of all workers: served here while they are this
  // worker's, else their worker is told (and serves in turn).
  while (shared.adaptive_waiting.load() > 0) {
    const size_t oldest = shared.oldest_adaptive_worker();
    if (oldest == ClusterState::kNoWorker) break;  // its owner serves right after publishing
    if (oldest != worker_.id()) {
      if (adaptive->in_flight() < adaptive->limit() && shared.wake_worker)
        shared.wake_worker(oldest);
      break;
    }
    filters::AdaptiveConcurrency::Permit permit = adaptive->try_acquire_waiting();
    if (!permit) break;
    AdaptiveWaiter* w = adaptive_waiters_.front();
    remove_adaptive_waiter(w);
    w->on_adaptive_permit(std::move(permit));
  }
  serving_adaptive_ = false;
}

void WorkerCluster::on_remote_capacity() {
  if (!adaptive_waiters_.empty()) serve_adaptive_waiters();
  // Each served waiter either takes a slot or queues again at the back; stop after one round.
  for (size_t n = waiters_.size(); n > 0 && !waiters_.empty(); --n) {
    if (shared.connections.load(std::memory_order_relaxed) >= shared.config.pool.max_connections)
      return;
    on_capacity();
  }
}

void WorkerCluster::on_capacity() {
  if (waiters_.empty() || serving_waiters_) return;
  serving_waiters_ = true;
  // Serve the oldest waiter; it takes an idle connection or the freed slot.
  PoolWaiter* w = waiters_.front();
  remove_waiter(w);
  w->on_pool_capacity();
  serving_waiters_ = false;
}

bool WorkerCluster::enqueue_waiter(PoolWaiter* w) {
  uint32_t n = shared.pending.fetch_add(1, std::memory_order_seq_cst);
  if (n >= shared.config.pool.max_pending) {
    shared.pending.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  waiters_.push_back(w);
  w->cluster_ = this;
  return true;
}

void WorkerCluster::remove_waiter(PoolWaiter* w) {
  if (w->cluster_ != this) return;
  waiters_.remove(w);
  w->cluster_ = nullptr;
  shared.pending.fetch_sub(1, std::memory_order_relaxed);
}

void PoolWaiter::cancel() {
  if (cluster_ != nullptr) cluster_->remove_waiter(this);
}

WorkerCluster::Checkout WorkerCluster::checkout(EndpointPool& pool,
                                                UpstreamConnection::Owner* owner, bool fresh_only,
                                                UpstreamLease& lease, PoolWaiter& waiter) {
  if (UpstreamConnection* idle = fresh_only ? nullptr : pool.idle.pop_front()) {
    stats.idle_connections.add(-1);
    stats.active_connections.add(1);
    idle->attach(owner);
    pool.active_requests++;
    lease.hold(idle);
    return Checkout::kReady;
  }
  if (!try_reserve_connection() && !(close_idle_elsewhere(pool) && try_reserve_connection())) {
    if (!enqueue_waiter(&waiter)) return Checkout::kFull;
    // Another worker may have freed a slot between the two steps (it saw no waiter to wake). The
    // waiters are served a moment later, not from inside this call: the caller is not waiting
    // yet. (Both sides use seq_cst: either that worker sees our pending request, or we see its
    // free slot.)
    if (shared.connections.load(std::memory_order_seq_cst) < config().pool.max_connections)
      worker_.wake_pool_waiters(&shared);
    return Checkout::kWaiting;
  }
  auto* conn = new UpstreamConnection(worker_, pool);
  pool.active_requests++;
  stats.active_connections.add(1);
  lease.hold(conn);
  conn->connect(owner, static_cast<uint64_t>(config().connect_timeout.count()));
  return Checkout::kConnecting;
}

void WorkerCluster::checkin(UpstreamConnection* conn, bool reusable) {
  conn->pool().active_requests--;
  stats.active_connections.add(-1);
  if (conn->state() == UpstreamConnection::State::kClosed) return;
  const config::PoolConfig& pool = config().pool;
  if (reusable && conn->in.empty() && !worker_.draining() &&
      (pool.max_requests_per_connection == 0 ||
       conn->requests() < pool.max_requests_per_connection)) {
    conn->release(static_cast<uint64_t>(pool.idle_timeout.count()));
  } else {
    // A request write still in flight is cut at once (see Transport::close), so the request's
    // Outbox is free for the next try.
    conn->close();
  }
}

void UpstreamLease::release(bool reusable) {
  if (conn_ == nullptr) return;
  UpstreamConnection* conn = conn_;
  conn_ = nullptr;
  conn->pool().cluster.checkin(conn, reusable);
}

bool WorkerCluster::has_connections() const {
  auto open = [](const std::unique_ptr<EndpointPool>& p) { return p->connections > 0; };
  return std::any_of(pools_.begin(), pools_.end(), open) ||
         std::any_of(retired_.begin(), retired_.end(), open) ||
         std::any_of(originals_.begin(), originals_.end(), open);
}

void WorkerCluster::close_idle() {
  for (auto* list : {&pools_, &originals_}) {
    for (auto& p : *list) {
      while (UpstreamConnection* c = p->idle.front()) c->close();
    }
  }
}

}  // namespace bulwark
