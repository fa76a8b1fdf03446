#include "proxy/worker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "proxy/downstream.h"
#include "proxy/log.h"

namespace bulwark {

Worker::Worker(size_t id, std::shared_ptr<const config::Config> config,
               const std::vector<ClusterState*>& clusters,
               const std::vector<std::vector<RouteState*>>& routes, std::vector<int> listener_fds,
               std::function<void()> on_drained)
    : id_(id),
      config_(std::move(config)),
      random_(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
              (id * 0x9e3779b97f4a7c15ULL) ^ static_cast<uint64_t>(getpid())),
      stats_(*config_),
      listener_fds_(std::move(listener_fds)),
      on_drained_(std::move(on_drained)) {
  uv_loop_init(&loop_);
  tasks_.init(&loop_);
  uv_timer_init(&loop_, &access_timer_);
  access_timer_.data = this;
  for (size_t i = 0; i < clusters.size(); ++i) {
    auto wc = std::make_unique<WorkerCluster>(*this, *clusters[i], *stats_.clusters[i]);
    wc->update(clusters[i]->endpoints());
    clusters_.push_back(std::move(wc));
  }
  for (size_t i = 0; i < config_->listeners.size(); ++i) {
    auto l = std::make_unique<ListenerContext>(*this, id_, config_->listeners[i], i,
                                               *stats_.listeners[i], routes[i]);
    uv_tcp_init(&loop_, &l->handle);
    l->handle.data = l.get();
    int rc = uv_tcp_open(&l->handle, listener_fds_[i]);
    if (rc == 0) {
      rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l->handle), 4096, [](uv_stream_t* s, int status) {
        auto* lc = static_cast<ListenerContext*>(s->data);
        if (status == 0) lc->worker.on_accept(*lc);
      });
    }
    if (rc != 0) {
      log::error("listener failed").str("listener", l->config.name).str("error", uv_strerror(rc));
    } else {
      l->open = true;
    }
    listeners_.push_back(std::move(l));
  }
}

Worker::~Worker() {
  // The loop was closed by run() after stop().
}

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  // stop() closed every handle; let their close callbacks run, then release the loop.
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

void Worker::post(std::function<void()> fn) { tasks_.post(std::move(fn)); }

void Worker::update_endpoints(size_t cluster, std::shared_ptr<const EndpointSet> set) {
  post([this, cluster, set = std::move(set)] { clusters_[cluster]->update(set); });
}

void Worker::wake_bulkhead_waiters(size_t listener, size_t route) {
  post([this, listener, route] {
    if (!stopping_) listeners_[listener]->routes[route].dispatch();
  });
}

void Worker::wake_pool_waiters(size_t cluster) {
  post([this, cluster] {
    if (!stopping_) clusters_[cluster]->on_remote_capacity();
  });
}

void WorkerRoute::enqueue(DownstreamConnection* d) {
  waiters.emplace_back(shared->next_ticket.fetch_add(1), d);
  if (waiters.size() == 1) publish_oldest();
}

void WorkerRoute::remove_waiter(DownstreamConnection* d) {
  auto it =
      std::find_if(waiters.begin(), waiters.end(), [d](const auto& w) { return w.second == d; });
  if (it == waiters.end()) return;
  bool was_front = it == waiters.begin();
  waiters.erase(it);
  if (was_front) publish_oldest();
}

void WorkerRoute::publish_oldest() {
  shared->oldest_waiter[worker_id].store(waiters.empty() ? RouteState::kNoWaiter
                                                         : waiters.front().first);
}

void WorkerRoute::dispatch() {
  filters::Bulkhead& bulkhead = *shared->bulkhead;
  while (bulkhead.queued() > 0 && bulkhead.active() < bulkhead.config().max_concurrent) {
    size_t oldest = shared->oldest_waiting_worker();
    // No ticket published yet: its owner dispatches right after publishing.
    if (oldest == RouteState::kNoWorker) return;
    if (oldest != worker_id) {
      shared->wake_worker(oldest);
      return;
    }
    filters::Bulkhead::Slot slot = bulkhead.try_acquire();
    if (!slot) return;  // another worker took it; its release dispatches again
    DownstreamConnection* d = waiters.front().second;
    waiters.pop_front();
    publish_oldest();
    d->on_bulkhead_slot(std::move(slot));
  }
}

void Worker::on_accept(ListenerContext& l) {
  auto* d = new DownstreamConnection(*this, l);
  d->accept(reinterpret_cast<uv_stream_t*>(&l.handle));
}

void Worker::connection_opened(DownstreamConnection* d) {
  d->worker_slot = connections_.size();
  connections_.push_back(d);
}

void Worker::connection_closed(DownstreamConnection* d) {
  size_t slot = d->worker_slot;
  if (slot < connections_.size() && connections_[slot] == d) {
    connections_[slot] = connections_.back();
    connections_[slot]->worker_slot = slot;
    connections_.pop_back();
  }
  if (draining_) drain_step();
}

void Worker::new_request_id(char* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t a = random_.next();
  uint64_t b = random_.next();
  for (int i = 0; i < 16; ++i) {
    out[i] = kHex[(a >> (i * 4)) & 15];
    out[16 + i] = kHex[(b >> (i * 4)) & 15];
  }
}

bool Worker::sample_access_log() {
  if (access_log_ == nullptr) return false;
  const double percent = access_log_->config().sample_percent;
  if (percent >= 100) return true;
  // Uniform in [0, 100) with 1/10000 of a percent steps.
  return static_cast<double>(random_.below(1'000'000)) < percent * 10'000;
}

void Worker::access_log_appended() {
  if (access_buf_.size() >= AccessLog::kFlushBytes) {
    flush_access_log();
  } else if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&access_timer_))) {
    uv_timer_start(&access_timer_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->flush_access_log(); },
                   AccessLog::kFlushDelayMs, 0);
  }
}

void Worker::flush_access_log() {
  uv_timer_stop(&access_timer_);
  if (access_log_ == nullptr || access_buf_.empty()) return;
  access_log_->submit(std::move(access_buf_));
  access_buf_ = std::string();
  access_buf_.reserve(AccessLog::kFlushBytes + 1024);
}

void Worker::close_listeners() {
  for (auto& l : listeners_) {
    if (l->open) {
      l->open = false;
      uv_close(reinterpret_cast<uv_handle_t*>(&l->handle), nullptr);
    }
  }
}

void Worker::begin_drain() {
  post([this] {
    if (draining_) return;
    draining_ = true;
    close_listeners();
    // Idle connections close now; busy ones after their response (with Connection: close).
    std::vector<DownstreamConnection*> all = connections_;
    for (DownstreamConnection* d : all) d->drain();
    for (auto& c : clusters_) c->close_idle();
    drain_step();
  });
}

void Worker::drain_step() {
  if (connections_.empty() && !drained_reported_ && !stopping_) {
    drained_reported_ = true;
    if (on_drained_) on_drained_();
  }
}

void Worker::stop() {
  post([this] {
    stopping_ = true;
    close_listeners();
    std::vector<DownstreamConnection*> all = connections_;
    for (DownstreamConnection* d : all) d->abort();
    for (auto& c : clusters_) c->close_idle();
    flush_access_log();  // the lines of the requests just aborted too
    uv_close(reinterpret_cast<uv_handle_t*>(&access_timer_), nullptr);
    tasks_.close();
  });
}

}  // namespace bulwark
