#include "proxy/server.h"

#include <netdb.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <ctime>
#include <thread>

#include "config/json.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/net.h"

namespace bulwark {

// Keeps one cluster's endpoint set current: IP literals are used as they are; DNS names are
// resolved with uv_getaddrinfo (on libuv's thread pool, never blocking a loop) at start and
// every dns_refresh, and a changed answer is published to the workers.
class ClusterResolver {
 public:
  ClusterResolver(Server& server, uv_loop_t* loop, ClusterState& cluster)
      : server_(server), loop_(loop), cluster_(cluster) {
    const auto& eps = cluster.config.endpoints;
    answers_.resize(eps.size());
    for (size_t i = 0; i < eps.size(); ++i) {
      if (!eps[i].address.is_ip) {
        has_names_ = true;
        continue;
      }
      Endpoint e;
      e.name = eps[i].address.text();
      to_sockaddr(eps[i].address, &e.sockaddr);
      e.address = format_sockaddr(e.sockaddr);
      e.weight = eps[i].weight;
      e.priority = eps[i].priority;
      answers_[i].push_back(e);
    }
    uv_timer_init(loop, &timer_);
    timer_.data = this;
  }

  // Publishes the IP literals now and starts resolving names.
  void start() {
    publish();
    if (has_names_) resolve_all();
  }

  void stop() {
    stopped_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  }

 private:
  struct Lookup {
    uv_getaddrinfo_t req;
    ClusterResolver* self;
    size_t index;
  };

  void resolve_all() {
    const auto& eps = cluster_.config.endpoints;
    for (size_t i = 0; i < eps.size(); ++i) {
      if (eps[i].address.is_ip) continue;
      auto* l = new Lookup{{}, this, i};
      l->req.data = l;
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      ++outstanding_;
      int rc = uv_getaddrinfo(loop_, &l->req, &ClusterResolver::on_resolved, eps[i].address.host.c_str(),
                              std::to_string(eps[i].address.port).c_str(), &hints);
      if (rc != 0) {
        --outstanding_;
        log::warn("dns lookup failed").str("cluster", cluster_.config.name).str("name", eps[i].address.text())
            .str("error", uv_strerror(rc));
        delete l;
      }
    }
    if (outstanding_ == 0) schedule();
  }

  static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    auto* l = static_cast<Lookup*>(req->data);
    ClusterResolver* self = l->self;
    size_t i = l->index;
    delete l;
    const config::EndpointConfig& ep = self->cluster_.config.endpoints[i];
    if (status == 0) {
      std::vector<Endpoint> found;
      for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
        Endpoint e;
        e.name = ep.address.text();
        std::memcpy(&e.sockaddr, a->ai_addr, a->ai_addrlen);
        e.address = format_sockaddr(e.sockaddr);
        e.weight = ep.weight;
        e.priority = ep.priority;
        bool dup = std::any_of(found.begin(), found.end(), [&](const Endpoint& f) { return f.address == e.address; });
        if (!dup) found.push_back(e);
      }
      self->answers_[i] = std::move(found);
    } else {
      // Keep the last good answer.
      log::warn("dns lookup failed").str("cluster", self->cluster_.config.name).str("name", ep.address.text())
          .str("error", uv_strerror(status));
    }
    uv_freeaddrinfo(res);
    if (--self->outstanding_ == 0 && !self->stopped_) {
      self->publish();
      self->schedule();
    }
  }

  void schedule() {
    if (stopped_) return;
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<ClusterResolver*>(t->data)->resolve_all(); },
                   static_cast<uint64_t>(std::max<int64_t>(1000, cluster_.config.dns_refresh.count())), 0);
  }

  void publish() {
    auto set = std::make_shared<EndpointSet>();
    for (const auto& a : answers_) set->endpoints.insert(set->endpoints.end(), a.begin(), a.end());
    std::vector<std::string> now;
    for (const Endpoint& e : set->endpoints) {
      now.push_back(e.address + "/" + std::to_string(e.weight) + "/" + std::to_string(e.priority));
    }
    if (published_ && now == last_) return;
    if (published_) {
      log::info("cluster endpoints changed").str("cluster", cluster_.config.name).num("endpoints", static_cast<int64_t>(now.size()));
    }
    published_ = true;
    last_ = std::move(now);
    server_.publish_endpoints(cluster_.index, std::move(set));
  }

  Server& server_;
  uv_loop_t* loop_;
  ClusterState& cluster_;
  uv_timer_t timer_;
  std::vector<std::vector<Endpoint>> answers_;  // per configured endpoint
  std::vector<std::string> last_;
  int outstanding_ = 0;
  bool has_names_ = false;
  bool published_ = false;
  bool stopped_ = false;
};

Server::Server(std::shared_ptr<const config::Config> config)
    : config_(std::move(config)), admin_(&loop_, [this](const AdminRequest& r, std::function<void(AdminResponse)> respond) {
        handle_admin(r, std::move(respond));
      }) {
  uv_loop_init(&loop_);
  tasks_.init(&loop_);
}

Server::~Server() { uv_loop_close(&loop_); }

void Server::publish_endpoints(size_t cluster, std::shared_ptr<EndpointSet> next) {
  std::shared_ptr<const EndpointSet> set = health_[cluster]->adopt(std::move(next));
  clusters_[cluster]->set_endpoints(set);
  for (auto& w : workers_) w->update_endpoints(cluster, set);
}

bool Server::open_listeners() {
  size_t n_workers = config_->workers;
  listener_fds_.assign(n_workers, std::vector<int>(config_->listeners.size(), -1));
  for (size_t li = 0; li < config_->listeners.size(); ++li) {
    const auto& l = config_->listeners[li];
    sockaddr_storage addr{};
    if (to_sockaddr(l.address, &addr) != 0) {
      log::error("invalid listener address").str("listener", l.name).str("address", l.address.text());
      return false;
    }
    for (size_t w = 0; w < n_workers; ++w) {
      std::string step;
      int fd = open_reuseport_listener(addr, 4096, &step);
      if (fd < 0) {
        log::error("cannot listen").str("listener", l.name).str("address", l.address.text())
            .str("step", step).str("error", strerror(-fd));
        return false;
      }
      listener_fds_[w][li] = fd;
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

int Server::run() {
  signal(SIGPIPE, SIG_IGN);
  start_time_ms_ = uv_now(&loop_);
  create_policy_state();
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
  if (!open_listeners()) return 1;
  std::string admin_address;
  int rc = admin_.listen(config_->admin.address, &admin_address);
  if (rc != 0) {
    log::error("cannot listen").str("listener", "admin").str("address", config_->admin.address.text())
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
  for (auto& c : clusters_) resolvers_.push_back(std::make_unique<ClusterResolver>(*this, &loop_, *c));
  for (auto& r : resolvers_) r->start();
  for (size_t w = 0; w < config_->workers; ++w) {
    std::vector<ClusterState*> shared;
    for (auto& c : clusters_) shared.push_back(c.get());
    std::vector<std::vector<RouteState*>> routes;
    for (auto& l : routes_) {
      routes.emplace_back();
      for (auto& r : l) routes.back().push_back(r.get());
    }
    workers_.push_back(
        std::make_unique<Worker>(w, config_, shared, routes, listener_fds_[w],
                                 [this] { tasks_.post([this] { on_worker_drained(); }); }));
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

  log::info("started").num("workers", static_cast<int64_t>(config_->workers)).str("version", BULWARK_VERSION)
      .str("config", config_->source_file);
  start_systemd_notify();
  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  log::info("stopped");
  return 0;
}

void Server::create_policy_state() {
  for (size_t i = 0; i < config_->clusters.size(); ++i) {
    auto c = std::make_unique<ClusterState>(config_->clusters[i], i, clock_);
    if (c->circuit) {
      c->circuit->set_transition_hook([name = c->config.name, cb = c->circuit.get()](
                                          filters::CircuitState from, filters::CircuitState to) {
        log::warn("circuit breaker changed state")
            .str("cluster", name)
            .str("from", filters::to_string(from))
            .str("to", filters::to_string(to))
            .num("open_duration_ms", cb->open_duration() / 1000);
      });
    }
    c->on_ejection = [this, i] { tasks_.post([this, i] { health_[i]->on_ejection(); }); };
    health_.push_back(std::make_unique<HealthChecker>(&loop_, *c, clock_));
    c->wake_other_workers = [this, i](size_t from) {
      for (auto& w : workers_) {
        if (w->id() != from) w->wake_pool_waiters(i);
      }
    };
    clusters_.push_back(std::move(c));
  }
  for (size_t li = 0; li < config_->listeners.size(); ++li) {
    routes_.emplace_back();
    for (size_t ri = 0; ri < config_->listeners[li].routes.size(); ++ri) {
      auto r =
          std::make_unique<RouteState>(config_->listeners[li].routes[ri], clock_, config_->workers);
      // Workers are created after this; the hook reads workers_ when it runs.
      r->wake_worker = [this, li, ri](size_t w) { workers_[w]->wake_bulkhead_waiters(li, ri); };
      routes_[li].push_back(std::move(r));
    }
  }
}

SharedGauges Server::shared_gauges() const {
  SharedGauges g;
  for (const auto& c : clusters_) {
    SharedGauges::Circuit circuit;
    if (c->circuit) {
      circuit.enabled = true;
      circuit.state = static_cast<int>(c->circuit->state());
      for (size_t s = 0; s < circuit.transitions.size(); ++s) {
        circuit.transitions[s] = c->circuit->transitions(static_cast<filters::CircuitState>(s));
      }
    }
    g.circuits.push_back(circuit);
  }
  for (const auto& h : health_) g.health.push_back(h->view());
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

std::string Server::not_ready_reason() const {
  if (draining_) return "draining";
  if (healthcheck_failed_)
    return "failed on purpose (POST /healthcheck/fail; POST /healthcheck/ok to undo)";
  for (size_t ci : config_->readiness.cluster_indexes) {
    const std::string& name = config_->clusters[ci].name;
    if (!health_[ci]->first_round_done()) {
      return "cluster " + name + ": waiting for the first round of health checks";
    }
    if (health_[ci]->view().routable == 0) return "cluster " + name + ": no routable endpoint";
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
  log::info("draining").str("signal", why).num("drain_delay_ms", config_->drain_delay.count())
      .num("drain_timeout_ms", config_->drain_timeout.count());
  // /ready is 503 from now on. Listeners keep accepting for drain_delay, so load balancers and
  // Kubernetes endpoints can catch up before we stop taking connections.
  uv_timer_start(&drain_delay_timer_, [](uv_timer_t* t) {
    auto* self = static_cast<Server*>(t->data);
    log::info("closing listeners; finishing in-flight requests");
    for (auto& w : self->workers_) w->begin_drain();
    uv_timer_start(
        &self->drain_timeout_timer_,
        [](uv_timer_t* t2) {
          auto* server = static_cast<Server*>(t2->data);
          if (!server->exit_after_drain_) {
            log::warn("drain timeout: connections still open are left to finish; SIGTERM stops");
            return;
          }
          log::warn("drain timeout: closing remaining connections");
          server->finish();
        },
        static_cast<uint64_t>(self->config_->drain_timeout.count()), 0);
  }, static_cast<uint64_t>(config_->drain_delay.count()), 0);
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
  for (auto& r : resolvers_) r->stop();
  for (auto& h : health_) h->stop();
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
  uv_walk(&loop_, [](uv_handle_t* h, void*) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
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
    for (auto& w : workers_) stats.push_back(&w->stats());
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
  } else if (req.path == "/drain") {
    const bool started = !draining_;
    begin_drain("POST /drain", false);
    respond(
        {200, kText,
         started ? "draining; the process keeps running until SIGTERM\n" : "already draining\n"});
  } else {
    respond({404, kText,
             "not found; try GET /healthz /ready /metrics /config /clusters, "
             "POST /healthcheck/fail /healthcheck/ok /drain\n"});
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
      const auto& cc = clusters_[ci]->config;
      const ClusterHealthView health = health_[ci]->view();
      if (ci > 0) out += ',';
      out += "{\"name\":";
      config::append_json_string(out, cc.name);
      out += ",\"lb\":";
      config::append_json_string(out, config::to_string(cc.lb));
      out += ",\"connections\":" + std::to_string(clusters_[ci]->connections.load());
      out += ",\"max_connections\":" + std::to_string(cc.pool.max_connections);
      out += ",\"pending\":" + std::to_string(clusters_[ci]->pending.load());
      out += ",\"routable_endpoints\":" + std::to_string(health.routable);
      out += std::string(",\"panic\":") + (health.panic ? "true" : "false");
      if (const filters::CircuitBreaker* circuit = clusters_[ci]->circuit.get()) {
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
        for (const auto& [address, c] : g->clusters[ci]) {
          if (address == e.address) counts = c;
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
      Counts mine(g->clusters.size());
      for (size_t ci = 0; ci < worker->clusters().size(); ++ci) {
        for (const auto& p : worker->clusters()[ci]->pools()) {
          mine[ci].push_back(
              {p->endpoint.address,
               {p->active_requests, p->connections, static_cast<int64_t>(p->idle.size())}});
        }
      }
      tasks_.post([g, mine = std::move(mine), complete] {
        for (size_t ci = 0; ci < mine.size(); ++ci) {
          auto& into = g->clusters[ci];
          for (const auto& [address, c] : mine[ci]) {
            auto it = std::find_if(into.begin(), into.end(),
                                   [&](const auto& x) { return x.first == address; });
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
