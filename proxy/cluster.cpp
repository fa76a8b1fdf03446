#include "proxy/cluster.h"

#include <algorithm>

#include "proxy/downstream.h"
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

WorkerCluster::WorkerCluster(Worker& worker, ClusterState& shared, ClusterStats& stats)
    : shared(shared), stats(stats), worker_(worker), lb_(shared.config.lb) {}

WorkerCluster::~WorkerCluster() = default;

void WorkerCluster::update(const std::shared_ptr<const EndpointSet>& set) {
  set_ = set;
  std::vector<std::unique_ptr<EndpointPool>> next;
  if (set != nullptr) {
    for (const Endpoint& e : set->endpoints) {
      auto same = std::find_if(pools_.begin(), pools_.end(), [&](const std::unique_ptr<EndpointPool>& p) {
        return p != nullptr && p->endpoint.address == e.address && p->endpoint.weight == e.weight;
      });
      if (same != pools_.end()) {
        next.push_back(std::move(*same));
      } else {
        next.push_back(std::make_unique<EndpointPool>(*this, e));
      }
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
                                [](const std::unique_ptr<EndpointPool>& p) { return p->connections == 0; }),
                 retired_.end());
  pools_ = std::move(next);
  candidates_.assign(pools_.size(), LbCandidate{});
  for (size_t i = 0; i < pools_.size(); ++i) candidates_[i].weight = pools_[i]->endpoint.weight;
}

EndpointPool* WorkerCluster::pick(const EndpointPool* avoid) {
  if (pools_.empty()) return nullptr;
  if (avoid != nullptr && pools_.size() > 1) {
    // A retry: any other endpoint, chosen at random, without moving the balancer. (Taking the
    // balancer's next turn would hand the next request's turn to the failed endpoint again.)
    for (size_t a = 0; a < pools_.size(); ++a) {
      if (pools_[a].get() != avoid) continue;
      size_t i = worker_.random().below(static_cast<uint32_t>(pools_.size() - 1));
      return pools_[i >= a ? i + 1 : i].get();
    }
  }
  for (size_t i = 0; i < pools_.size(); ++i) candidates_[i].active_requests = pools_[i]->active_requests;
  return pools_[lb_.pick(candidates_, worker_.random())].get();
}

bool WorkerCluster::try_reserve_connection() {
  uint32_t max = shared.config.pool.max_connections;
  uint32_t n = shared.connections.load(std::memory_order_relaxed);
  while (n < max) {
    if (shared.connections.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

void WorkerCluster::release_connection_slot() {
  shared.connections.fetch_sub(1, std::memory_order_seq_cst);
  if (!waiters_.empty()) {
    on_capacity();
  } else if (shared.pending.load(std::memory_order_seq_cst) > 0 && shared.wake_other_workers) {
    shared.wake_other_workers(worker_.id());
  }
}

void WorkerCluster::on_remote_capacity() {
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
  DownstreamConnection* d = waiters_.front();
  waiters_.erase(waiters_.begin());
  shared.pending.fetch_sub(1, std::memory_order_relaxed);
  d->on_pool_capacity();
  serving_waiters_ = false;
}

bool WorkerCluster::enqueue_waiter(DownstreamConnection* d) {
  uint32_t n = shared.pending.fetch_add(1, std::memory_order_seq_cst);
  if (n >= shared.config.pool.max_pending) {
    shared.pending.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  waiters_.push_back(d);
  return true;
}

void WorkerCluster::remove_waiter(DownstreamConnection* d) {
  auto it = std::find(waiters_.begin(), waiters_.end(), d);
  if (it == waiters_.end()) return;
  waiters_.erase(it);
  shared.pending.fetch_sub(1, std::memory_order_relaxed);
}

void WorkerCluster::close_idle() {
  for (auto& p : pools_) {
    while (UpstreamConnection* c = p->idle.front()) c->close();
  }
}

}  // namespace bulwark
