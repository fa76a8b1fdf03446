#include "proxy/worker.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "proxy/client_connection.h"
#include "proxy/exchange.h"
#include "proxy/log.h"

namespace bulwark {

std::string listener_key(const config::ListenerConfig& listener) {
  return listener.name + " " + listener.address.text();
}

ListenerContext* WorkerGen::listener_at(std::string_view key) {
  for (auto& l : listeners) {
    if (listener_key(l->config) == key) return l.get();
  }
  return nullptr;
}

ListenerContext* WorkerGen::listener_named(std::string_view name) {
  for (auto& l : listeners) {
    if (l->config.name == name) return l.get();
  }
  return nullptr;
}

Worker::Worker(size_t id, GenerationSpec first, std::function<void()> on_drained)
    : id_(id),
      random_(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
              (id * 0x9e3779b97f4a7c15ULL) ^ static_cast<uint64_t>(getpid())),
      on_drained_(std::move(on_drained)) {
  uv_loop_init(&loop_);
  reserve_fd_ = ::open("/", O_RDONLY | O_CLOEXEC);
  tasks_.init(&loop_);
  pacer_ = std::make_unique<Pacer>(&loop_);
  deferred_ = std::make_unique<DeferredDeleter>(&loop_);
  exchanges_ = std::make_unique<ExchangePool>(*this);
  transport_context_.loop = &loop_;
  transport_context_.buffers = &buffers_;
  transport_context_.later = deferred_.get();
  uv_timer_init(&loop_, &access_timer_);
  access_timer_.data = this;
  uv_timer_init(&loop_, &retire_timer_);
  retire_timer_.data = this;
  // Gives back what a burst left unused (see trim()); not a reason to keep the loop running.
  uv_timer_init(&loop_, &trim_timer_);
  trim_timer_.data = this;
  uv_timer_start(
      &trim_timer_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->trim(); }, 1000, 1000);
  uv_unref(reinterpret_cast<uv_handle_t*>(&trim_timer_));
  uv_timer_init(&loop_, &accept_timer_);
  accept_timer_.data = this;
  process_limit_ =
      first.process_limit != nullptr ? first.process_limit : std::make_shared<ConnectionLimit>();
  install(first);
}

Worker::~Worker() {
  // The loop was closed by run() after stop().
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
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
  // What was handed over last, then the exchanges kept for reuse (their timers close).
  deferred_->flush();
  exchanges_.reset();
  deadlines_.clear();
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

namespace {
// Objects freed by one trim() that make malloc_trim() worth its walk over malloc's free lists.
constexpr size_t kTrimMallocAfter = 64;
}  // namespace

// Every second: the read buffers, exchanges, parsers, outboxes and write requests that sat unused
// in their free lists for the whole second go back to the system. What lived in malloc's heap
// leaves holes there that malloc keeps; after a burst (many freed at once) malloc_trim() gives
// their pages back. The long-lived objects (connections, transports, their timers) are in slabs
// (proxy/slab.h), so those pages hold nothing else. Steady load frees nothing here: a free list
// that was drawn on keeps what it had at its lowest.
void Worker::trim() {
  buffers_.trim();
  size_t freed = exchanges_->trim() + request_parsers_.trim() + outboxes_.trim();
  if (freed >= kTrimMallocAfter) malloc_trim(0);
}

DeadlineList& Worker::deadlines(uint64_t duration_ms) {
  for (auto& d : deadlines_) {
    if (d->duration_ms() == duration_ms) return *d;
  }
  deadlines_.push_back(std::make_unique<DeadlineList>(&loop_, duration_ms));
  return *deadlines_.back();
}

void Worker::post(std::function<void()> fn) { tasks_.post(std::move(fn)); }

// ---------------------------------------------------------------------------------------------
// Generations.

void Worker::apply(std::shared_ptr<GenerationSpec> spec) {
  post([this, spec] {
    if (stopping_) {
      for (auto& [address, fd] : spec->new_listener_fds) ::close(fd);
      return;
    }
    install(*spec);
  });
}

void Worker::install(GenerationSpec& spec) {
  auto gen = std::make_unique<WorkerGen>();
  gen->number = spec.number;
  gen->config = spec.config;
  gen->stats = spec.stats;
  const config::Config& config = *spec.config;

  // Clusters and routes that stayed unchanged keep their worker-side objects (pools, waiters).
  for (size_t ci = 0; ci < config.clusters.size(); ++ci) {
    std::shared_ptr<WorkerCluster> kept;
    if (gen_ != nullptr) {
      for (auto& c : gen_->clusters) {
        if (&c->shared == spec.clusters[ci].get()) kept = c;
      }
    }
    if (kept == nullptr) {
      kept = std::make_shared<WorkerCluster>(*this, spec.clusters[ci], *spec.stats->clusters[ci]);
      kept->update(spec.clusters[ci]->endpoints());
    }
    gen->clusters.push_back(std::move(kept));
  }
  for (size_t li = 0; li < config.listeners.size(); ++li) {
    auto l = std::make_unique<ListenerContext>(
        *gen, config.listeners[li], li, *spec.stats->listeners[li],
        li < spec.listener_limits.size() ? spec.listener_limits[li]
                                         : std::make_shared<ConnectionLimit>());
    if (li < spec.listener_tls.size()) l->tls = spec.listener_tls[li];
    for (size_t ri = 0; ri < config.listeners[li].routes.size(); ++ri) {
      std::shared_ptr<WorkerRoute> kept;
      if (gen_ != nullptr) {
        for (auto& ol : gen_->listeners) {
          for (auto& r : ol->routes) {
            if (r->shared == spec.routes[li][ri]) kept = r;
          }
        }
      }
      if (kept == nullptr) {
        kept = std::make_shared<WorkerRoute>();
        kept->shared = spec.routes[li][ri];
        kept->stats = spec.stats->listeners[li]->routes[ri];
        kept->worker_id = id_;
        const auto& hedge = config.listeners[li].routes[ri].retry.hedge;
        if (hedge && hedge->auto_delay)
          kept->recent_latency = std::make_unique<filters::RecentLatency>();
      }
      l->routes.push_back(std::move(kept));
    }
    gen->listeners.push_back(std::move(l));
  }

  // New addresses first, then the sockets of addresses no listener has any more close.
  for (auto& [key, fd] : spec.new_listener_fds) open_acceptor(key, fd);
  std::vector<Acceptor*> gone;
  for (Acceptor* a : acceptors_) {
    if (gen->listener_at(a->key) == nullptr) gone.push_back(a);
  }
  for (Acceptor* a : gone) close_acceptor(a);

  const bool reload = gen_ != nullptr;
  if (reload) {
    if (gen_->users == 0) {
      free_generation(gen_.release());
    } else {
      old_.push_back(std::move(gen_));
    }
  }
  gen_ = std::move(gen);
  if (reload) {
    // Idle connections move now (or close, their listener gone), so old generations go soon.
    std::vector<ClientConnection*> all = connections_;
    for (ClientConnection* d : all) d->on_reload();
  }
}

void Worker::release(WorkerGen& gen) {
  --gen.users;
  if (&gen == gen_.get() || gen.users > 0) return;
  auto it = std::find_if(old_.begin(), old_.end(), [&](const auto& g) { return g.get() == &gen; });
  if (it == old_.end()) return;
  WorkerGen* done = it->release();
  old_.erase(it);
  free_generation(done);
}

void Worker::free_generation(WorkerGen* gen) {
  // A cluster no newer generation has (removed or changed) closes its connections; it is freed
  // once they are all closed.
  for (auto& c : gen->clusters) {
    if (c.use_count() > 1) continue;  // still in use by another generation
    c->close_idle();
    retired_clusters_.push_back(c);
  }
  delete gen;
  sweep_retired_clusters();
}

void Worker::sweep_retired_clusters() {
  retired_clusters_.erase(
      std::remove_if(retired_clusters_.begin(), retired_clusters_.end(),
                     [](const std::shared_ptr<WorkerCluster>& c) { return !c->has_connections(); }),
      retired_clusters_.end());
  if (retired_clusters_.empty()) {
    uv_timer_stop(&retire_timer_);
  } else if (!stopping_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(&retire_timer_))) {
    uv_timer_start(
        &retire_timer_,
        [](uv_timer_t* t) { static_cast<Worker*>(t->data)->sweep_retired_clusters(); }, 1000, 1000);
  }
}

std::vector<WorkerCluster*> Worker::all_clusters() {
  std::vector<WorkerCluster*> out;
  auto add = [&](WorkerGen& g) {
    for (auto& c : g.clusters) {
      if (std::find(out.begin(), out.end(), c.get()) == out.end()) out.push_back(c.get());
    }
  };
  add(*gen_);
  for (auto& g : old_) add(*g);
  return out;
}

std::vector<WorkerRoute*> Worker::all_routes() {
  std::vector<WorkerRoute*> out;
  auto add = [&](WorkerGen& g) {
    for (auto& l : g.listeners) {
      for (auto& r : l->routes) {
        if (std::find(out.begin(), out.end(), r.get()) == out.end()) out.push_back(r.get());
      }
    }
  };
  add(*gen_);
  for (auto& g : old_) add(*g);
  return out;
}

void Worker::update_endpoints(ClusterState* cluster, std::shared_ptr<const EndpointSet> set) {
  post([this, cluster, set = std::move(set)] {
    if (stopping_) return;
    for (WorkerCluster* c : all_clusters()) {
      if (&c->shared == cluster) c->update(set);
    }
  });
}

void Worker::wake_bulkhead_waiters(RouteState* route) {
  post([this, route] {
    if (stopping_) return;
    for (WorkerRoute* r : all_routes()) {
      if (r->shared.get() == route) r->dispatch();
    }
  });
}

void Worker::wake_pool_waiters(ClusterState* cluster) {
  post([this, cluster] {
    if (stopping_) return;
    for (WorkerCluster* c : all_clusters()) {
      if (&c->shared == cluster) c->on_remote_capacity();
    }
  });
}

void WorkerRoute::enqueue(BulkheadWaiter* w) {
  waiters.emplace_back(shared->next_ticket.fetch_add(1), w);
  if (waiters.size() == 1) publish_oldest();
}

void WorkerRoute::remove_waiter(BulkheadWaiter* w) {
  auto it = std::find_if(waiters.begin(), waiters.end(),
                         [w](const auto& entry) { return entry.second == w; });
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
    BulkheadWaiter* w = waiters.front().second;
    waiters.pop_front();
    publish_oldest();
    w->on_bulkhead_slot(std::move(slot));
  }
}

// ---------------------------------------------------------------------------------------------
// Listening sockets and client connections.

// A worker accepts on its own (accept4 on a poll handle, not a libuv listener): the connection's
// socket goes straight to its transport, and pausing at a connection limit is just not watching.
void Worker::open_acceptor(const std::string& key, int fd) {
  auto* a = new Acceptor();
  a->worker = this;
  a->key = key;
  a->fd = fd;
  a->poll.data = a;
  int flags = fcntl(fd, F_GETFL);
  int rc = flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ? -errno : 0;
  if (rc == 0 && ::listen(fd, 4096) != 0) rc = -errno;
  if (rc == 0) rc = uv_poll_init_socket(&loop_, &a->poll, fd);
  if (rc == 0) {
    a->watched = true;
    rc = uv_poll_start(&a->poll, UV_READABLE, &Worker::on_acceptor_poll);
  }
  if (rc != 0) {
    log::error("listener failed").str("listener", key).str("error", uv_strerror(rc));
  }
  acceptors_.push_back(a);
}

void Worker::close_acceptor(Acceptor* a) {
  acceptors_.erase(std::remove(acceptors_.begin(), acceptors_.end(), a), acceptors_.end());
  if (!a->watched) {
    ::close(a->fd);
    delete a;
    return;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&a->poll), [](uv_handle_t* h) {
    auto* acceptor = static_cast<Acceptor*>(h->data);
    ::close(acceptor->fd);
    delete acceptor;
  });
}

void Worker::on_acceptor_poll(uv_poll_t* h, int status, int) {
  auto* a = static_cast<Acceptor*>(h->data);
  if (status < 0) {
    // An error on the listening socket (libuv stopped watching it): looked at again every
    // 50 ms, as when paused at a limit.
    a->worker->on_accept_error(*a, status);
    a->worker->back_off_accepting(*a);
    return;
  }
  a->worker->on_accept(*a);
}

void Worker::start_accept_timer() {
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&accept_timer_))) {
    uv_timer_start(
        &accept_timer_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->resume_accepting(); },
        50, 50);
  }
}

void Worker::on_accept(Acceptor& a) {
  // At most 64 a wake-up: a flood on one listener does not hold up the loop's other work.
  for (int i = 0; i < 64; ++i) {
    if (!accept_one(a)) break;
  }
}

bool Worker::accept_one(Acceptor& a) {
  ListenerContext* l = gen_->listener_at(a.key);
  if (l == nullptr) return false;  // its listener is gone; the socket closes with this turn
  const char* limit = nullptr;
  if (!process_limit_->try_acquire()) {
    limit = "process";
  } else if (!l->limit->try_acquire()) {
    process_limit_->release();
    limit = "listener";
  }
  if (limit != nullptr) {
    pause_accepting(a, *l, limit);
    return false;
  }
  int fd;
  do {
    fd = accept4(a.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int error = errno;
    l->limit->release();
    process_limit_->release();
    switch (error) {
      case EAGAIN:
        return false;
      case ECONNABORTED:  // gone before we took it; and the network errors accept(2) says to
      case EPROTO:        // treat as EAGAIN by trying again
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
      case ENETDOWN:
        return true;
      case EMFILE:
      case ENFILE:
        shed_backlog(a);
        [[fallthrough]];
      default:
        // Out of descriptors or memory: the socket stays readable, so it is not watched for
        // 50 ms (the loop would spin on it otherwise).
        on_accept_error(a, -error);
        back_off_accepting(a);
        return false;
    }
  }
  // The connection owns both slots from here and gives them back when it closes.
  accept_http1_connection(*this, *l, fd);
  return true;
}

void Worker::back_off_accepting(Acceptor& a) {
  a.held_back = true;
  a.backing_off = true;
  if (!a.paused) {
    a.paused = true;
    if (a.watched) uv_poll_stop(&a.poll);
  }
  start_accept_timer();
}

void Worker::pause_accepting(Acceptor& a, ListenerContext& l, const char* limit) {
  a.held_back = true;
  a.backing_off = false;  // a limit holds it now: a closing connection may resume it
  if (a.paused) return;   // still at the limit: counted when it started
  // Not watching the socket leaves new connections in the kernel's backlog;
  // resume_accepting() goes on.
  a.paused = true;
  if (a.watched) uv_poll_stop(&a.poll);
  (limit[0] == 'p' ? l.stats.accept_paused_process : l.stats.accept_paused_listener)->inc();
  uint64_t now = uv_now(&loop_);
  if (last_accept_error_log_ms_ == 0 || now - last_accept_error_log_ms_ >= 10000) {
    last_accept_error_log_ms_ = now;
    log::warn("connection limit reached: new connections wait in the backlog")
        .str("listener", l.config.name)
        .str("limit", limit)
        .num("max", limit[0] == 'p' ? process_limit_->max() : l.limit->max());
  }
  start_accept_timer();
}

void Worker::resume_accepting(bool limits_only) {
  if (reserve_fd_ < 0) reserve_fd_ = ::open("/", O_RDONLY | O_CLOEXEC);
  bool still_paused = false;
  for (Acceptor* a : std::vector<Acceptor*>(acceptors_)) {
    if (!a->paused || stopping_) continue;
    if (limits_only && a->backing_off) {
      still_paused = true;
      continue;
    }
    a->held_back = false;
    on_accept(*a);  // while still paused: a limit or an error sets held_back again
    if (a->held_back) {
      still_paused = true;
      continue;
    }
    a->paused = false;
    a->backing_off = false;
    if (a->watched) uv_poll_start(&a->poll, UV_READABLE, &Worker::on_acceptor_poll);
  }
  if (!still_paused) uv_timer_stop(&accept_timer_);
}

void Worker::shed_backlog(Acceptor& a) {
  // Another worker may take the freed number before the open below: then there is no reserve
  // until resume_accepting() gets one back, and back_off_accepting() keeps the loop calm.
  if (reserve_fd_ < 0) return;
  ::close(reserve_fd_);
  for (int i = 0; i < 1024; ++i) {
    int fd = accept4(a.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) break;
    ::close(fd);
  }
  reserve_fd_ = ::open("/", O_RDONLY | O_CLOEXEC);
}

void Worker::on_accept_error(Acceptor& a, int status) {
  // EMFILE/ENFILE: shed_backlog() closed what waited, so the loop does not spin; count it and
  // say so now and then.
  if (ListenerContext* l = gen_->listener_at(a.key)) l->stats.accept_errors->inc();
  uint64_t now = uv_now(&loop_);
  if (last_accept_error_log_ms_ == 0 || now - last_accept_error_log_ms_ >= 10000) {
    last_accept_error_log_ms_ = now;
    log::warn("accepting a connection failed")
        .str("listener", a.key)
        .str("error", uv_strerror(status));
  }
}

void Worker::connection_opened(ClientConnection* d) {
  d->worker_slot = connections_.size();
  connections_.push_back(d);
}

void Worker::connection_closed(ClientConnection* d) {
  size_t slot = d->worker_slot;
  if (slot < connections_.size() && connections_[slot] == d) {
    connections_[slot] = connections_.back();
    connections_[slot]->worker_slot = slot;
    connections_.pop_back();
  }
  if (draining_) drain_step();
  // A connection slot came free: a listener paused at a limit goes on at once.
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&accept_timer_))) resume_accepting(true);
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
    uv_timer_start(
        &access_timer_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->flush_access_log(); },
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
  for (Acceptor* a : std::vector<Acceptor*>(acceptors_)) close_acceptor(a);
}

void Worker::begin_drain(bool everything) {
  post([this, everything] {
    if (draining_ || (inbound_draining_ && !everything)) return;
    inbound_draining_ = true;
    draining_ = everything;
    const auto outbound = [](const ListenerContext* l) {
      return l != nullptr && l->config.direction == config::ListenerDirection::kOutbound;
    };
    for (Acceptor* a : std::vector<Acceptor*>(acceptors_)) {
      if (everything || !outbound(gen_->listener_at(a->key))) close_acceptor(a);
    }
    // Idle connections close now; busy ones after their response (with Connection: close).
    std::vector<ClientConnection*> all = connections_;
    for (ClientConnection* d : all) {
      if (everything || !d->outbound) d->drain();
    }
    // Upstream connections stay while the app's outbound calls still use them.
    if (everything) {
      for (WorkerCluster* c : all_clusters()) c->close_idle();
    }
    drain_step();
  });
}

void Worker::drain_step() {
  if (draining_ && connections_.empty() && !drained_reported_ && !stopping_) {
    drained_reported_ = true;
    if (on_drained_) on_drained_();
  }
}

void Worker::stop() {
  post([this] {
    stopping_ = true;
    close_listeners();
    std::vector<ClientConnection*> all = connections_;
    for (ClientConnection* d : all) d->abort();
    for (WorkerCluster* c : all_clusters()) c->close_idle();
    for (auto& c : retired_clusters_) c->close_idle();
    flush_access_log();  // the lines of the requests just aborted too
    uv_close(reinterpret_cast<uv_handle_t*>(&access_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&retire_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&trim_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&accept_timer_), nullptr);
    pacer_->close();
    deferred_->close();
    tasks_.close();
  });
}

}  // namespace bulwark
