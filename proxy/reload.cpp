// Server: putting a config in force, at start and on reload (server.h).

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "config/json.h"
#include "config/loader.h"
#include "proxy/cpus.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/server.h"

namespace bulwark {

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

bool Server::reload(const char* trigger, std::string* message, std::function<void()> done) {
  if (draining_ || finished_) {
    *message = "not reloading: the proxy is draining";
    log::warn("config reload ignored: the proxy is draining").str("trigger", trigger);
    return false;
  }
  notify_reloading();
  const std::string path = config_->source_file;
  config::LoadResult result = config::load_config_file(path);
  if (result.config == nullptr) {
    std::string all;
    for (const auto& e : result.errors) all += e.to_string() + "\n";
    if (!all.empty()) all.pop_back();
    return refuse_reload(trigger, path, std::move(all), message);
  }
  std::shared_ptr<const config::Config> config = keep_restart_settings(*result.config);
  // Certificates and keys are read and checked before anything changes.
  std::vector<std::string> tls_errors;
  if (!tls_.prepare(*config, &tls_errors)) {
    std::string all;
    for (const auto& e : tls_errors) all += e + "\n";
    all.pop_back();
    return refuse_reload(trigger, path, std::move(all), message);
  }
  // Bind the new listening addresses first: if one cannot be bound, nothing changes.
  ListenerFds fds;
  if (!bind_new_listeners(*config, &fds)) {
    return refuse_reload(trigger, path, "cannot listen on a new listener address (see the log)",
                         message);
  }
  install_config(std::move(config), std::move(fds));
  *message = "reloaded: generation " + std::to_string(generation_);
  // Done once every worker runs the new config: then the metrics, the log line and systemd
  // say so, and POST /reload answers; a request sent after that sees the new config.
  after_workers_applied([this, generation = generation_, trigger = std::string(trigger), path,
                         done] { on_reload_applied(trigger, path, generation, done); });
  return true;
}

bool Server::refuse_reload(const char* trigger, const std::string& path, std::string why,
                           std::string* message) {
  ++reloads_failed_;
  *message = std::move(why);
  log::error("config reload failed; the running config stays")
      .str("trigger", trigger)
      .str("config", path)
      .str("error", *message);
  notify_reloaded("reload refused; the previous config still serves");
  return false;
}

std::shared_ptr<const config::Config> Server::keep_restart_settings(
    const config::Config& loaded) const {
  auto next = std::make_shared<config::Config>(loaded);
  if (next->workers == 0) next->workers = read_usable_cpus().count;
  if (next->workers != config_->workers) {
    log::warn("workers changes at the next restart; keeping the running number")
        .num("running", static_cast<int64_t>(config_->workers))
        .num("configured", static_cast<int64_t>(next->workers));
    next->workers = config_->workers;
  }
  if (next->admin.address.text() != config_->admin.address.text()) {
    log::warn("admin.address changes at the next restart")
        .str("running", config_->admin.address.text());
    next->admin.address = config_->admin.address;
  }
  // The token file is read at each request that needs it: a change applies at once.
  const std::string probes_before = config_->probes ? config_->probes->address.text() : "none";
  const std::string probes_after = next->probes ? next->probes->address.text() : "none";
  if (probes_after != probes_before) {
    log::warn("probes.address changes at the next restart").str("running", probes_before);
    next->probes = config_->probes;
  }
  if (next->watchdog != config_->watchdog) {
    log::warn("watchdog changes at the next restart")
        .num("running_ms", static_cast<int64_t>(config_->watchdog.count()));
    next->watchdog = config_->watchdog;
  }
  if ((next->access_log.has_value() != config_->access_log.has_value()) ||
      (next->access_log &&
       (next->access_log->path != config_->access_log->path ||
        next->access_log->format != config_->access_log->format ||
        next->access_log->sample_percent != config_->access_log->sample_percent))) {
    log::warn("access_log changes at the next restart");
    next->access_log = config_->access_log;
  }
  return next;
}

void Server::install_config(std::shared_ptr<const config::Config> config, ListenerFds fds) {
  tls_.commit();
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
  config_ = std::move(config);
  ++generation_;
  // New clusters resolve and publish their endpoints before the workers build on them.
  for (auto& c : clusters_) {
    if (!c->resolver->started()) c->resolver->start();
  }
  std::vector<std::shared_ptr<ConnectionLimit>> listener_limits = apply_connection_limits(*config_);
  for (size_t w = 0; w < workers_.size(); ++w) {
    stats_[w] = std::make_shared<WorkerStats>(*config_, previous.get(), stats_[w].get());
    workers_[w]->apply(std::make_shared<GenerationSpec>(
        generation_spec(listener_limits, stats_[w], std::move(fds[w]))));
  }
  bound_.clear();
  for (const auto& l : config_->listeners) bound_.push_back(listener_key(l));
  warn_unverified_tls();
  watch_tls_files();
}

void Server::on_reload_applied(const std::string& trigger, const std::string& path,
                               uint64_t generation, const std::function<void()>& done) {
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
}

bool Server::bind_new_listeners(const config::Config& config, ListenerFds* fds) {
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
      int fd = open_listener(addr, 4096, /*reuseport=*/true, &step);
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
    c->tls = tls_.cluster(i);
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
    c->init_adaptive_queue(config->workers);
    c->wake_worker = [this, raw](size_t w) { workers_[w]->wake_pool_waiters(raw); };
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

GenerationSpec Server::generation_spec(const std::vector<std::shared_ptr<ConnectionLimit>>& limits,
                                       std::shared_ptr<WorkerStats> stats,
                                       std::vector<std::pair<std::string, int>> fds) const {
  GenerationSpec spec;
  spec.number = generation_;
  spec.config = config_;
  for (auto& c : clusters_) spec.clusters.push_back(c->state);
  spec.routes = routes_;
  spec.stats = std::move(stats);
  spec.new_listener_fds = std::move(fds);
  spec.process_limit = process_limit_;
  spec.listener_limits = limits;
  for (size_t i = 0; i < config_->listeners.size(); ++i)
    spec.listener_tls.push_back(tls_.listener(i));
  return spec;
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

namespace {

std::string parent_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// The directories to watch for `file`, each with what it resolves to now: the file's own
// directory, and the parent of each symlinked directory on its path (swapping such a symlink
// shows in its parent, not in the directory it pointed to). Kubernetes' ..data swap happens in
// the file's own directory.
void add_watch_dirs(const std::string& file, std::vector<std::string>* dirs) {
  auto add = [dirs](const std::string& dir) {
    char resolved[PATH_MAX];
    std::string key = dir + '\0' + (::realpath(dir.c_str(), resolved) ? resolved : "");
    if (std::find(dirs->begin(), dirs->end(), key) == dirs->end()) dirs->push_back(key);
  };
  std::string dir = parent_of(file);
  add(dir);
  for (int depth = 0; depth < 16 && dir != "/" && dir != "."; ++depth) {
    struct stat st {};
    if (::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) add(parent_of(dir));
    dir = parent_of(dir);
  }
}

}  // namespace

void Server::watch_tls_files() {
  std::vector<std::string> dirs;  // "DIR\0RESOLVED"
  for (const std::string& f : tls_.files()) add_watch_dirs(f, &dirs);
  if (!tls_timers_ && !dirs.empty()) {
    tls_timers_ = true;
    uv_timer_init(&loop_, &tls_poll_timer_);
    uv_timer_init(&loop_, &tls_settle_timer_);
    uv_timer_init(&loop_, &tls_retry_timer_);
    tls_poll_timer_.data = tls_settle_timer_.data = tls_retry_timer_.data = this;
    uv_timer_start(
        &tls_poll_timer_,
        [](uv_timer_t* t) { static_cast<Server*>(t->data)->rotate_certificates("poll"); }, 10000,
        10000);
    uv_unref(reinterpret_cast<uv_handle_t*>(&tls_poll_timer_));
    uv_unref(reinterpret_cast<uv_handle_t*>(&tls_retry_timer_));
  }
  // A watch follows the directory it was started on: watch again when any resolves elsewhere.
  if (dirs == tls_dirs_) return;
  for (uv_fs_event_t* w : tls_dir_watches_) {
    uv_close(reinterpret_cast<uv_handle_t*>(w),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
  }
  tls_dir_watches_.clear();
  tls_dirs_ = dirs;
  for (const std::string& key : dirs) {
    const std::string dir = key.substr(0, key.find('\0'));
    auto* w = new uv_fs_event_t;
    uv_fs_event_init(&loop_, w);
    w->data = this;
    int rc = uv_fs_event_start(
        w,
        [](uv_fs_event_t* h, const char*, int, int) {
          // Files change in steps (a key, then its certificate): read them once things settle.
          auto* self = static_cast<Server*>(h->data);
          uv_timer_start(
              &self->tls_settle_timer_,
              [](uv_timer_t* t) { static_cast<Server*>(t->data)->rotate_certificates("file"); },
              200, 0);
        },
        dir.c_str(), 0);
    if (rc != 0) {
      log::warn("cannot watch a TLS file directory; changes are seen within 10 s")
          .str("directory", dir)
          .str("error", uv_strerror(rc));
      uv_close(reinterpret_cast<uv_handle_t*>(w),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
      continue;
    }
    uv_unref(reinterpret_cast<uv_handle_t*>(w));
    tls_dir_watches_.push_back(w);
  }
}

void Server::rotate_certificates(const char* trigger) {
  if (finished_) return;
  std::vector<std::string> errors;
  size_t replaced = tls_.rotate(&errors);
  // Watching the directories the files resolve to now comes first: a change made as soon as
  // the log says the last one was taken is seen.
  watch_tls_files();
  for (const std::string& e : errors) {
    log::error("cannot use new TLS files; the previous ones stay").str("error", e);
  }
  if (replaced > 0) {
    log::info("TLS certificates reloaded")
        .str("trigger", trigger)
        .num("contexts", static_cast<int64_t>(replaced));
  }
  // New files refused only because a certificate is not valid yet: try them when it is.
  if (const int64_t at = tls_.next_retry_s(); at != 0 && tls_timers_) {
    const int64_t now = static_cast<int64_t>(time(nullptr));
    const uint64_t delay_ms = at > now ? static_cast<uint64_t>(at - now) * 1000 + 500 : 500;
    uv_timer_start(
        &tls_retry_timer_,
        [](uv_timer_t* t) { static_cast<Server*>(t->data)->rotate_certificates("valid_from"); },
        delay_ms, 0);
  }
}

void Server::stop_tls_watch() {
  for (uv_fs_event_t* w : tls_dir_watches_) {
    uv_close(reinterpret_cast<uv_handle_t*>(w),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
  }
  tls_dir_watches_.clear();
  tls_dirs_.clear();
  if (tls_timers_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&tls_poll_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tls_settle_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tls_retry_timer_), nullptr);
    tls_timers_ = false;
  }
}

}  // namespace bulwark
