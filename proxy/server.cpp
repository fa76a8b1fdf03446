#include "proxy/server.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <ctime>
#include <thread>

#include "config/json.h"
#include "config/loader.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/net.h"

namespace bulwark {

Server::Server(std::shared_ptr<const config::Config> config)
    : config_(std::move(config)),
      admin_(&loop_, [this](const AdminRequest& r, std::function<void(AdminResponse)> respond) {
        handle_admin(r, std::move(respond));
      }) {
  uv_loop_init(&loop_);
  tasks_.init(&loop_);
}

Server::~Server() {
  // run() may have returned early (a listener it could not bind, say) with the clusters' handles
  // open: the health checkers close theirs as they go, and one more turn of the loop runs the
  // close callbacks that free them.
  for (auto& c : clusters_) {
    if (c->resolver != nullptr) c->resolver->stop();
  }
  clusters_.clear();
  uv_run(&loop_, UV_RUN_NOWAIT);
  uv_loop_close(&loop_);
}

Server::ClusterRuntime* Server::runtime_of(const ClusterState* state) {
  for (auto& c : clusters_) {
    if (c->state.get() == state) return c.get();
  }
  for (auto& c : retired_clusters_) {
    if (c->state.get() == state) return c.get();
  }
  return nullptr;
}

void Server::publish_endpoints(ClusterState& cluster, std::shared_ptr<EndpointSet> next) {
  ClusterRuntime* runtime = runtime_of(&cluster);
  if (runtime == nullptr) return;
  std::shared_ptr<const EndpointSet> set = runtime->health->adopt(std::move(next));
  cluster.set_endpoints(set);
  for (auto& w : workers_) w->update_endpoints(&cluster, set);
}

bool Server::bind_new_listeners(const config::Config& config,
                                std::vector<std::vector<std::pair<std::string, int>>>* fds) {
  fds->assign(config.workers, {});
  auto close_all = [&] {
    for (auto& worker : *fds) {
      for (auto& [address, fd] : worker) ::close(fd);
    }
    fds->clear();
  };
  for (const auto& l : config.listeners) {
    const std::string address = l.address.text();
    const std::string key = listener_key(l);
    if (std::find(bound_.begin(), bound_.end(), key) != bound_.end())
      continue;  // already listening: the socket stays
    sockaddr_storage addr{};
    if (to_sockaddr(l.address, &addr) != 0) {
      log::error("invalid listener address").str("listener", l.name).str("address", address);
      close_all();
      return false;
    }
    for (size_t w = 0; w < config.workers; ++w) {
      std::string step;
      int fd = open_reuseport_listener(addr, 4096, &step);
      if (fd < 0) {
        log::error("cannot listen")
            .str("listener", l.name)
            .str("address", address)
            .str("step", step)
            .str("error", strerror(-fd));
        close_all();
        return false;
      }
      (*fds)[w].emplace_back(key, fd);
      if (w == 0) {
        // With port 0 the kernel picked one; the other workers join that port.
        socklen_t len = sizeof addr;
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
        log::info("listening").str("listener", l.name).str("address", format_sockaddr(addr));
      }
    }
  }
  return true;
}

std::vector<std::unique_ptr<Server::ClusterRuntime>> Server::build_clusters(
    const std::shared_ptr<const config::Config>& config) {
  std::vector<std::unique_ptr<ClusterRuntime>> out;
  for (size_t i = 0; i < config->clusters.size(); ++i) {
    const config::ClusterConfig& cc = config->clusters[i];
    std::string settings = config::to_json(cc);
    // Unchanged: the same state goes on (circuit, endpoints, health, pools).
    auto same = std::find_if(clusters_.begin(), clusters_.end(), [&](const auto& c) {
      return c != nullptr && c->settings == settings;
    });
    if (same != clusters_.end()) {
      out.push_back(std::move(*same));
      continue;
    }
    auto runtime = std::make_unique<ClusterRuntime>();
    runtime->settings = std::move(settings);
    // The same cluster before its settings changed: its endpoints' health and ejections carry
    // on, and its circuit breaker when the breaker's settings are the same.
    ClusterRuntime* previous = nullptr;
    for (auto& old : clusters_) {
      if (old != nullptr && old->state->config.name == cc.name) previous = old.get();
    }
    const ClusterState* previous_state = previous != nullptr ? previous->state.get() : nullptr;
    auto c = std::make_shared<ClusterState>(config, cc, i, clock_, previous_state);
    if (c->circuit && !c->kept_circuit_of(previous_state)) {
      c->circuit->set_transition_hook([name = cc.name, cb = c->circuit.get()](
                                          filters::CircuitState from, filters::CircuitState to) {
        log::warn("circuit breaker changed state")
            .str("cluster", name)
            .str("from", filters::to_string(from))
            .str("to", filters::to_string(to))
            .num("open_duration_ms", cb->open_duration() / 1000);
      });
    }
    ClusterState* raw = c.get();
    c->on_ejection = [this, raw] {
      tasks_.post([this, raw] {
        if (ClusterRuntime* r = runtime_of(raw)) r->health->on_ejection();
      });
    };
    c->wake_other_workers = [this, raw](size_t from) {
      for (auto& w : workers_) {
        if (w->id() != from) w->wake_pool_waiters(raw);
      }
    };
    runtime->health = std::make_unique<HealthChecker>(&loop_, *c, clock_);
    if (previous != nullptr) runtime->health->inherit(*previous->health);
    runtime->state = std::move(c);
    runtime->resolver = std::make_unique<ClusterResolver>(
        &loop_, cc,
        [this, raw](std::shared_ptr<EndpointSet> set) { publish_endpoints(*raw, std::move(set)); });
    out.push_back(std::move(runtime));
  }
  return out;
}

std::vector<std::vector<std::shared_ptr<RouteState>>> Server::build_routes(
    const std::shared_ptr<const config::Config>& config) {
  std::vector<std::vector<std::shared_ptr<RouteState>>> out;
  for (size_t li = 0; li < config->listeners.size(); ++li) {
    const config::ListenerConfig& l = config->listeners[li];
    out.emplace_back();
    for (const config::RouteConfig& route : l.routes) {
      // An unchanged route (same listener, same settings) keeps its state: budget, bulkhead
      // slots and queue, rate limit tokens.
      std::shared_ptr<RouteState> kept;
      const std::string settings = config::to_json(route);
      for (size_t oli = 0; oli < routes_.size() && kept == nullptr; ++oli) {
        if (config_->listeners[oli].name != l.name) continue;
        for (const auto& r : routes_[oli]) {
          if (r->config.name == route.name && config::to_json(r->config) == settings) kept = r;
        }
      }
      if (kept == nullptr) {
        kept = std::make_shared<RouteState>(config, route, clock_, config->workers);
        RouteState* raw = kept.get();
        // Runs on a worker thread: workers_ does not change after start.
        kept->wake_worker = [this, raw](size_t w) { workers_[w]->wake_bulkhead_waiters(raw); };
      }
      out.back().push_back(std::move(kept));
    }
  }
  return out;
}

namespace {

// Raises the soft limit on open files to the hard one (as Go's runtime and HAProxy do): a proxy
// needs two descriptors per proxied connection. Returns the soft limit in force.
uint64_t raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      log::info("raised the open file limit")
          .num("from", static_cast<int64_t>(limit.rlim_cur))
          .num("to", static_cast<int64_t>(raised.rlim_cur));
      limit = raised;
    }
  }
  return limit.rlim_cur == RLIM_INFINITY ? uint64_t{1} << 20
                                         : static_cast<uint64_t>(limit.rlim_cur);
}

// max_connections: 0 = half the descriptors (a proxied connection takes two), less a reserve for
// listeners, health checks, logs and the admin API.
uint64_t process_connection_limit(const config::Config& config, uint64_t fd_limit) {
  if (config.max_connections != 0) return config.max_connections;
  constexpr uint64_t kReserve = 128;
  return fd_limit > 2 * kReserve ? (fd_limit - kReserve) / 2 : std::max<uint64_t>(fd_limit / 4, 8);
}

}  // namespace

std::vector<std::shared_ptr<ConnectionLimit>> Server::apply_connection_limits(
    const config::Config& config) {
  static const uint64_t fd_limit = raise_fd_limit();
  process_limit_->set_max(process_connection_limit(config, fd_limit));
  std::map<std::string, std::shared_ptr<ConnectionLimit>, std::less<>> kept;
  std::vector<std::shared_ptr<ConnectionLimit>> out;
  for (const auto& l : config.listeners) {
    auto it = listener_limits_.find(l.name);
    auto limit = it != listener_limits_.end() ? it->second : std::make_shared<ConnectionLimit>();
    limit->set_max(l.max_connections);
    kept[l.name] = limit;
    out.push_back(std::move(limit));
  }
  listener_limits_ = std::move(kept);
  return out;
}

int Server::run() {
  signal(SIGPIPE, SIG_IGN);
  start_time_ms_ = uv_now(&loop_);
  last_reload_success_s_ = static_cast<double>(time(nullptr));
  clusters_ = build_clusters(config_);
  routes_ = build_routes(config_);
  if (config_->access_log) {
    std::string error;
    access_log_ = AccessLog::open(*config_->access_log, &error);
    if (access_log_ == nullptr) {
      log::error("cannot open the access log")
          .str("path", config_->access_log->path)
          .str("error", error);
      return 1;
    }
  }
  std::vector<std::vector<std::pair<std::string, int>>> fds;
  if (!bind_new_listeners(*config_, &fds)) return 1;
  for (const auto& l : config_->listeners) bound_.push_back(listener_key(l));
  std::string admin_address;
  int rc = admin_.listen(config_->admin.address, &admin_address);
  if (rc != 0) {
    log::error("cannot listen")
        .str("listener", "admin")
        .str("address", config_->admin.address.text())
        .str("error", uv_strerror(rc));
    return 1;
  }
  log::info("listening").str("listener", "admin").str("address", admin_address);
  const std::string& admin_host = config_->admin.address.host;
  if (admin_host.rfind("127.", 0) != 0 && admin_host != "::1") {
    log::warn(
        "the admin listener is reachable from other hosts; it can drain bulwark and fail "
        "its readiness: bind it to 127.0.0.1 unless a firewall guards it")
        .str("address", admin_address);
  }

  // Endpoints known now (IP literals) go in before the workers start.
  for (auto& c : clusters_) c->resolver->start();
  std::vector<std::shared_ptr<ConnectionLimit>> listener_limits = apply_connection_limits(*config_);
  for (size_t w = 0; w < config_->workers; ++w) {
    stats_.push_back(std::make_shared<WorkerStats>(*config_));
    GenerationSpec spec;
    spec.number = generation_;
    spec.config = config_;
    for (auto& c : clusters_) spec.clusters.push_back(c->state);
    spec.routes = routes_;
    spec.stats = stats_.back();
    spec.new_listener_fds = std::move(fds[w]);
    spec.process_limit = process_limit_;
    spec.listener_limits = listener_limits;
    workers_.push_back(std::make_unique<Worker>(
        w, std::move(spec), [this] { tasks_.post([this] { on_worker_drained(); }); }));
  }
  for (auto& w : workers_) {
    w->set_access_log(access_log_.get());
    w->start();
  }

  uv_signal_init(&loop_, &sigterm_);
  uv_signal_init(&loop_, &sigint_);
  sigterm_.data = sigint_.data = this;
  auto on_signal = [](uv_signal_t* s, int signum) {
    static_cast<Server*>(s->data)->begin_drain(signum == SIGTERM ? "SIGTERM" : "SIGINT");
  };
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_init(&loop_, &sigusr1_);
  sigusr1_.data = this;
  uv_signal_start(
      &sigusr1_,
      [](uv_signal_t* s, int) {
        auto* self = static_cast<Server*>(s->data);
        if (self->access_log_ != nullptr) self->access_log_->reopen();
      },
      SIGUSR1);
  uv_timer_init(&loop_, &drain_delay_timer_);
  uv_timer_init(&loop_, &drain_timeout_timer_);
  drain_delay_timer_.data = drain_timeout_timer_.data = this;
  uv_signal_init(&loop_, &sighup_);
  sighup_.data = this;
  uv_signal_start(
      &sighup_,
      [](uv_signal_t* s, int) {
        std::string message;
        static_cast<Server*>(s->data)->reload("SIGHUP", &message);
      },
      SIGHUP);
  if (config_->watch_config) start_config_watch();

  log::info("started")
      .num("workers", static_cast<int64_t>(config_->workers))
      .str("version", BULWARK_VERSION)
      .str("config", config_->source_file);
  start_systemd_notify();
  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  log::info("stopped");
  return 0;
}

SharedGauges Server::shared_gauges() const {
  SharedGauges g;
  g.process_connection_limit = process_limit_->max();
  for (const auto& runtime : clusters_) {
    const ClusterState& c = *runtime->state;
    SharedGauges::Circuit circuit;
    if (c.circuit) {
      circuit.enabled = true;
      circuit.state = static_cast<int>(c.circuit->state());
      for (size_t s = 0; s < circuit.transitions.size(); ++s) {
        circuit.transitions[s] =
            c.transitions_before[s] + c.circuit->transitions(static_cast<filters::CircuitState>(s));
      }
    }
    g.circuits.push_back(circuit);
    g.health.push_back(runtime->health->view());
  }
  g.reloads_ok = reloads_ok_;
  g.reloads_failed = reloads_failed_;
  g.generation = applied_generation_;
  g.last_reload_success_s = last_reload_success_s_;
  g.process = read_process_stats();
  if (access_log_ != nullptr)
    g.access_log_dropped = static_cast<int64_t>(access_log_->dropped_lines());
  for (const auto& l : routes_) {
    g.bulkhead_queued.emplace_back();
    for (const auto& r : l)
      g.bulkhead_queued.back().push_back(r->bulkhead ? static_cast<int64_t>(r->bulkhead->queued())
                                                     : -1);
  }
  return g;
}

bool Server::reload(const char* trigger, std::string* message, std::function<void()> done) {
  if (draining_ || finished_) {
    *message = "not reloading: the proxy is draining";
    log::warn("config reload ignored: the proxy is draining").str("trigger", trigger);
    return false;
  }
  notify_reloading();
  const std::string& path = config_->source_file;
  config::LoadResult result = config::load_config_file(path);
  auto refuse = [&](std::string why) {
    ++reloads_failed_;
    *message = std::move(why);
    log::error("config reload failed; the running config stays")
        .str("trigger", trigger)
        .str("config", path)
        .str("error", *message);
    notify_reloaded("reload refused; the previous config still serves");
    return false;
  };
  if (result.config == nullptr) {
    std::string all;
    for (const auto& e : result.errors) all += e.to_string() + "\n";
    if (!all.empty()) all.pop_back();
    return refuse(all);
  }
  auto next = std::make_shared<config::Config>(*result.config);
  // What only a restart can change: keep the running values, and say so.
  if (next->workers == 0) next->workers = std::max(1u, std::thread::hardware_concurrency());
  if (next->workers != config_->workers) {
    log::warn("workers changes at the next restart; keeping the running number")
        .num("running", static_cast<int64_t>(config_->workers))
        .num("configured", static_cast<int64_t>(next->workers));
    next->workers = config_->workers;
  }
  if (next->admin.address.text() != config_->admin.address.text()) {
    log::warn("admin.address changes at the next restart")
        .str("running", config_->admin.address.text());
    next->admin = config_->admin;
  }
  if ((next->access_log.has_value() != config_->access_log.has_value()) ||
      (next->access_log &&
       (next->access_log->path != config_->access_log->path ||
        next->access_log->format != config_->access_log->format ||
        next->access_log->sample_percent != config_->access_log->sample_percent))) {
    log::warn("access_log changes at the next restart");
    next->access_log = config_->access_log;
  }
  std::shared_ptr<const config::Config> config = std::move(next);

  // Bind the new listening addresses first: if one cannot be bound, nothing changes.
  std::vector<std::vector<std::pair<std::string, int>>> fds;
  if (!bind_new_listeners(*config, &fds))
    return refuse("cannot listen on a new listener address (see the log)");

  std::vector<std::unique_ptr<ClusterRuntime>> clusters = build_clusters(config);
  std::vector<std::vector<std::shared_ptr<RouteState>>> routes = build_routes(config);
  // What build_clusters did not take over is removed or changed: it stops, and its requests
  // still running finish on it.
  for (auto& old : clusters_) {
    if (old == nullptr) continue;
    old->resolver->stop();
    old->health->stop();
    retired_clusters_.push_back(std::move(old));
  }
  const std::shared_ptr<const config::Config> previous = config_;
  clusters_ = std::move(clusters);
  routes_ = std::move(routes);
  config_ = config;
  ++generation_;
  // New clusters resolve and publish their endpoints before the workers build on them.
  for (auto& c : clusters_) {
    if (!c->resolver->started()) c->resolver->start();
  }
  std::vector<std::shared_ptr<ConnectionLimit>> listener_limits = apply_connection_limits(*config_);
  for (size_t w = 0; w < workers_.size(); ++w) {
    auto spec = std::make_shared<GenerationSpec>();
    spec->process_limit = process_limit_;
    spec->listener_limits = listener_limits;
    spec->number = generation_;
    spec->config = config_;
    for (auto& c : clusters_) spec->clusters.push_back(c->state);
    spec->routes = routes_;
    spec->stats = std::make_shared<WorkerStats>(*config_, previous.get(), stats_[w].get());
    spec->new_listener_fds = std::move(fds[w]);
    stats_[w] = spec->stats;
    workers_[w]->apply(std::move(spec));
  }
  bound_.clear();
  for (const auto& l : config_->listeners) bound_.push_back(listener_key(l));
  *message = "reloaded: generation " + std::to_string(generation_);
  // Done once every worker runs the new config: then the metrics, the log line and systemd
  // say so, and POST /reload answers; a request sent after that sees the new config.
  const uint64_t generation = generation_;
  after_workers_applied([this, generation, trigger = std::string(trigger), path, done] {
    ++reloads_ok_;
    applied_generation_ = generation;
    last_reload_success_s_ = static_cast<double>(time(nullptr));
    log::info("config reloaded")
        .str("trigger", trigger)
        .str("config", path)
        .num("generation", static_cast<int64_t>(generation))
        .num("listeners", static_cast<int64_t>(config_->listeners.size()))
        .num("clusters", static_cast<int64_t>(config_->clusters.size()));
    notify_reloaded("serving config generation " + std::to_string(generation));
    if (done) done();
  });
  return true;
}

void Server::after_workers_applied(std::function<void()> fn) {
  struct Countdown {
    size_t left;
    std::function<void()> fn;
  };
  auto c = std::make_shared<Countdown>(Countdown{workers_.size(), std::move(fn)});
  if (c->left == 0) {
    c->fn();
    return;
  }
  // Each worker's task queue is in order: this runs after the config posted before it.
  for (auto& w : workers_) {
    w->post([this, c] {
      tasks_.post([c] {
        if (--c->left == 0) c->fn();
      });
    });
  }
}

void Server::start_config_watch() {
  // Polling stat() follows what editors and Kubernetes do (write a new file and rename it, or
  // swap a symlink), which inotify on the old inode would miss.
  uv_fs_poll_init(&loop_, &config_watch_);
  config_watch_.data = this;
  int rc = uv_fs_poll_start(
      &config_watch_,
      [](uv_fs_poll_t* h, int status, const uv_stat_t*, const uv_stat_t*) {
        if (status != 0) return;  // missing for now: the next change reloads
        std::string message;
        static_cast<Server*>(h->data)->reload("watch_config", &message);
      },
      config_->source_file.c_str(), 1000);
  if (rc != 0) {
    log::warn("cannot watch the config file")
        .str("config", config_->source_file)
        .str("error", uv_strerror(rc));
  }
  watching_ = true;
}

std::string Server::not_ready_reason() const {
  if (draining_) return "draining";
  if (healthcheck_failed_)
    return "failed on purpose (POST /healthcheck/fail; POST /healthcheck/ok to undo)";
  for (size_t ci : config_->readiness.cluster_indexes) {
    const std::string& name = config_->clusters[ci].name;
    const HealthChecker& health = *clusters_[ci]->health;
    if (!health.first_round_done()) {
      return "cluster " + name + ": waiting for the first round of health checks";
    }
    if (health.view().routable == 0) return "cluster " + name + ": no routable endpoint";
  }
  return {};
}

void Server::begin_drain(const char* why, bool exit) {
  if (draining_) {
    if (exit && !exit_after_drain_) {
      // SIGTERM after POST /drain: the drain goes on, and now ends the process.
      exit_after_drain_ = true;
      notify_stopping(why);
      log::info("exiting once drained").str("signal", why);
      if (drained_) finish();
      return;
    }
    if (!exit) return;  // POST /drain again
    log::warn("second signal during drain: stopping now").str("signal", why);
    finish();
    return;
  }
  draining_ = true;
  exit_after_drain_ = exit;
  if (exit) notify_stopping(why);
  log::info("draining")
      .str("signal", why)
      .num("drain_delay_ms", config_->drain_delay.count())
      .num("drain_timeout_ms", config_->drain_timeout.count());
  // /ready is 503 from now on. Listeners keep accepting for drain_delay, so load balancers and
  // Kubernetes endpoints can catch up before we stop taking connections.
  uv_timer_start(
      &drain_delay_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<Server*>(t->data);
        log::info("closing listeners; finishing in-flight requests");
        for (auto& w : self->workers_) w->begin_drain();
        uv_timer_start(
            &self->drain_timeout_timer_,
            [](uv_timer_t* t2) {
              auto* server = static_cast<Server*>(t2->data);
              if (!server->exit_after_drain_) {
                log::warn(
                    "drain timeout: connections still open are left to finish; SIGTERM stops");
                return;
              }
              log::warn("drain timeout: closing remaining connections");
              server->finish();
            },
            static_cast<uint64_t>(self->config_->drain_timeout.count()), 0);
      },
      static_cast<uint64_t>(config_->drain_delay.count()), 0);
}

void Server::on_worker_drained() {
  if (++workers_drained_ == workers_.size()) {
    drained_ = true;
    if (exit_after_drain_) {
      log::info("drained");
      finish();
    } else {
      uv_timer_stop(&drain_timeout_timer_);
      log::info("drained; still running (POST /drain): the admin listener answers until SIGTERM");
    }
  }
}

void Server::finish() {
  if (finished_) return;
  finished_ = true;
  for (auto& w : workers_) w->stop();
  for (auto* list : {&clusters_, &retired_clusters_}) {
    for (auto& c : *list) {
      c->resolver->stop();
      c->health->stop();
    }
  }
  if (watching_) uv_close(reinterpret_cast<uv_handle_t*>(&config_watch_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sighup_), nullptr);
  admin_.close();
  uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigusr1_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_delay_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timeout_timer_), nullptr);
  stop_systemd_notify();
  tasks_.close();
  // Admin client connections still open would keep the loop alive; the process exits right
  // after, so their objects are not freed.
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
}

// --- systemd notifications (sd_notify.h) ---------------------------------------------------------

void Server::start_systemd_notify() {
  if (!notifier_.enabled()) return;
  std::string status = "serving: " + std::to_string(workers_.size()) + " workers, listeners";
  for (const auto& l : config_->listeners) status += " " + l.name;
  notifier_.ready(status);
  watchdog_ = std::make_unique<SystemdWatchdog>(
      &loop_, notifier_, workers_.size(),
      [this](size_t w, std::function<void()> fn) { workers_[w]->post(std::move(fn)); });
  watchdog_->start();
}

void Server::notify_stopping(const char* why) {
  notifier_.stopping(std::string("draining after ") + why);
  // systemd stops watching once the service is stopping; the drain has its own timeouts.
  if (watchdog_) watchdog_->stop();
}

void Server::stop_systemd_notify() {
  if (watchdog_) watchdog_->close();
}

void Server::notify_reloading() { notifier_.reloading("reloading the configuration"); }

void Server::notify_reloaded(std::string_view status) { notifier_.ready(status); }

// --- end of systemd notifications ----------------------------------------------------------------

void Server::handle_admin(const AdminRequest& req, std::function<void(AdminResponse)> respond) {
  constexpr const char* kText = "text/plain; charset=utf-8";
  // What each path answers, and the one method it takes (HEAD goes with GET).
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool post = req.method == "POST";
  const bool reads = req.path == "/healthz" || req.path == "/ready" || req.path == "/metrics" ||
                     req.path == "/config" || req.path == "/clusters";
  const bool mutates =
      req.path == "/healthcheck/fail" || req.path == "/healthcheck/ok" || req.path == "/drain";
  if ((reads && !get) || (mutates && !post)) {
    respond(
        {405, kText, std::string("method not allowed: use ") + (reads ? "GET" : "POST") + "\n"});
    return;
  }
  if (req.path == "/healthz") {
    respond({200, kText, "ok\n"});
  } else if (req.path == "/ready") {
    std::string why = not_ready_reason();
    if (!why.empty()) {
      respond({503, kText, why + "\n"});
    } else {
      respond({200, kText, "ready\n"});
    }
  } else if (req.path == "/metrics") {
    std::vector<const WorkerStats*> stats;
    for (auto& w : stats_) stats.push_back(w.get());
    respond({200, "text/plain; version=0.0.4; charset=utf-8",
             render_metrics(*config_, stats, shared_gauges())});
  } else if (req.path == "/config") {
    respond({200, "application/json", config::to_json(*config_) + "\n"});
  } else if (req.path == "/clusters") {
    clusters_json(std::move(respond));
  } else if (req.path == "/healthcheck/fail" || req.path == "/healthcheck/ok") {
    const bool fail = req.path == "/healthcheck/fail";
    if (fail != healthcheck_failed_) {
      healthcheck_failed_ = fail;
      if (fail) {
        log::warn(
            "readiness failed on purpose (POST /healthcheck/fail): /ready is 503 until "
            "POST /healthcheck/ok");
      } else {
        log::info("readiness restored (POST /healthcheck/ok)");
      }
    }
    respond({200, kText,
             fail ? "/ready now fails on purpose\n" : "/ready follows the proxy's state again\n"});
  } else if (req.path == "/reload") {
    auto message = std::make_shared<std::string>();
    auto answer = std::make_shared<std::function<void(AdminResponse)>>(std::move(respond));
    const bool ok = reload("POST /reload", message.get(), [message, answer] {
      (*answer)({200, kText, *message + "\n"});
    });
    if (!ok) (*answer)({400, kText, *message + "\n"});
  } else if (req.path == "/drain") {
    const bool started = !draining_;
    begin_drain("POST /drain", false);
    respond(
        {200, kText,
         started ? "draining; the process keeps running until SIGTERM\n" : "already draining\n"});
  } else {
    respond({404, kText,
             "not found; try GET /healthz /ready /metrics /config /clusters, "
             "POST /reload /healthcheck/fail /healthcheck/ok /drain\n"});
  }
}

namespace {

std::string iso_time(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char out[40];
  size_t n = strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &utc);
  snprintf(out + n, sizeof out - n, ".%03dZ", static_cast<int>(unix_ms % 1000));
  return out;
}

void append_endpoint_health(std::string& out, const ClusterHealthView& cluster,
                            const EndpointHealthView& e) {
  out += ",\"priority\":" + std::to_string(e.priority);
  out += ",\"weight\":" + std::to_string(e.weight);
  out += std::string(",\"routable\":") + (e.routable ? "true" : "false");
  if (cluster.checks) {
    out += ",\"health\":{\"state\":";
    config::append_json_string(out, e.state);
    out += ",\"last_result\":";
    if (e.has_result) {
      config::append_json_string(out, to_string(e.last_result));
      out += ",\"last_detail\":";
      config::append_json_string(out, e.last_detail);
      out += ",\"last_check\":\"" + iso_time(e.last_check_unix_ms) + "\"";
    } else {
      out += "null,\"last_detail\":null,\"last_check\":null";
    }
    out += ",\"consecutive_failures\":" + std::to_string(e.consecutive_failures);
    out += ",\"consecutive_successes\":" + std::to_string(e.consecutive_successes) + "}";
  }
  if (cluster.outlier) {
    out += std::string(",\"outlier\":{\"ejected\":") + (e.ejected ? "true" : "false");
    out += ",\"ejected_until\":";
    out += e.ejected ? "\"" + iso_time(e.ejected_until_unix_ms) + "\"" : std::string("null");
    out += ",\"times_ejected\":" + std::to_string(e.times_ejected);
    out += ",\"consecutive_5xx\":" + std::to_string(e.consecutive_5xx);
    out += ",\"consecutive_gateway_failures\":" + std::to_string(e.consecutive_gateway_failures);
    out += ",\"consecutive_local_origin_failures\":" +
           std::to_string(e.consecutive_local_origin_failures);
    out += ",\"ejections_total\":" + std::to_string(e.ejections_total) + "}";
  }
}

}  // namespace

// The endpoint list and health come from the main thread's health checkers; each worker adds
// its own pools' counts (on its own thread), and the answer is put together on the main thread
// once all have answered.
void Server::clusters_json(std::function<void(AdminResponse)> respond) {
  struct PoolCounts {
    int64_t active_requests = 0, connections = 0, idle = 0;
  };
  // [cluster] address -> counts, summed over workers.
  using Counts = std::vector<std::vector<std::pair<std::string, PoolCounts>>>;
  struct Gather {
    Counts clusters;
    size_t waiting = 0;
    std::function<void(AdminResponse)> respond;
  };
  auto g = std::make_shared<Gather>();
  g->clusters.resize(clusters_.size());
  g->respond = std::move(respond);
  g->waiting = workers_.size();
  auto complete = [this, g] {
    std::string out = "{\"clusters\":[";
    for (size_t ci = 0; ci < clusters_.size(); ++ci) {
      const ClusterState& state = *clusters_[ci]->state;
      const auto& cc = state.config;
      const ClusterHealthView health = clusters_[ci]->health->view();
      if (ci > 0) out += ',';
      out += "{\"name\":";
      config::append_json_string(out, cc.name);
      out += ",\"lb\":";
      config::append_json_string(out, config::to_string(cc.lb));
      out += ",\"connections\":" + std::to_string(state.connections.load());
      out += ",\"max_connections\":" + std::to_string(cc.pool.max_connections);
      out += ",\"pending\":" + std::to_string(state.pending.load());
      out += ",\"routable_endpoints\":" + std::to_string(health.routable);
      out += std::string(",\"panic\":") + (health.panic ? "true" : "false");
      if (const filters::CircuitBreaker* circuit = state.circuit.get()) {
        out += ",\"circuit\":{\"state\":";
        config::append_json_string(out, filters::to_string(circuit->state()));
        out += ",\"open_duration_ms\":" + std::to_string(circuit->open_duration() / 1000) + "}";
      }
      out += ",\"endpoints\":[";
      bool first = true;
      for (const EndpointHealthView& e : health.endpoints) {
        if (!first) out += ',';
        first = false;
        PoolCounts counts;
        if (ci < g->clusters.size()) {  // a reload may have added clusters since
          for (const auto& [address, c] : g->clusters[ci]) {
            if (address == e.address) counts = c;
          }
        }
        out += "{\"name\":";
        config::append_json_string(out, e.name);
        out += ",\"address\":";
        config::append_json_string(out, e.address);
        append_endpoint_health(out, health, e);
        out += ",\"active_requests\":" + std::to_string(counts.active_requests);
        out += ",\"connections\":" + std::to_string(counts.connections);
        out += ",\"idle_connections\":" + std::to_string(counts.idle) + "}";
      }
      out += "]}";
    }
    out += "]}\n";
    g->respond({200, "application/json", out});
  };
  if (workers_.empty()) {
    complete();
    return;
  }
  for (auto& w : workers_) {
    Worker* worker = w.get();
    worker->post([this, worker, g, complete] {
      // By cluster state: the worker may be on another generation than the main thread.
      std::vector<std::pair<const ClusterState*, std::vector<std::pair<std::string, PoolCounts>>>>
          mine;
      for (const auto& c : worker->current().clusters) {
        mine.emplace_back(&c->shared, std::vector<std::pair<std::string, PoolCounts>>());
        for (const auto& p : c->pools()) {
          mine.back().second.push_back(
              {p->endpoint.address,
               {p->active_requests, p->connections, static_cast<int64_t>(p->idle.size())}});
        }
      }
      tasks_.post([this, g, mine = std::move(mine), complete] {
        for (const auto& [state, pools] : mine) {
          size_t ci = 0;
          while (ci < clusters_.size() && clusters_[ci]->state.get() != state) ++ci;
          if (ci == clusters_.size() || ci >= g->clusters.size()) continue;
          auto& into = g->clusters[ci];
          for (const auto& [address, c] : pools) {
            // Named, not captured: clang before 16 cannot capture a structured binding.
            auto it = std::find_if(into.begin(), into.end(),
                                   [&name = address](const auto& x) { return x.first == name; });
            if (it == into.end()) {
              into.push_back({address, c});
            } else {
              it->second.active_requests += c.active_requests;
              it->second.connections += c.connections;
              it->second.idle += c.idle;
            }
          }
        }
        if (--g->waiting == 0) complete();
      });
    });
  }
}

}  // namespace bulwark
