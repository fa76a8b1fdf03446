#include "proxy/server.h"

#include <algorithm>
#include <csignal>
#include <ctime>

#include "proxy/cpus.h"
#include "proxy/log.h"
#include "proxy/metrics.h"

namespace bulwark {

namespace {

// `workers: 0` (left out) becomes the CPUs the process may use; *from says what decided.
std::shared_ptr<const config::Config> with_workers(std::shared_ptr<const config::Config> config,
                                                   std::string* from) {
  *from = "config";
  if (config->workers != 0) return config;
  const UsableCpus cpus = read_usable_cpus();
  auto resolved = std::make_shared<config::Config>(*config);
  resolved->workers = cpus.count;
  *from = to_string(cpus.source);
  return resolved;
}

}  // namespace

Server::Server(std::shared_ptr<const config::Config> config)
    : config_(with_workers(std::move(config), &workers_from_)),
      admin_(&loop_,
             [this](const AdminRequest& r, std::function<void(AdminResponse)> respond) {
               admin_api_.handle(r, std::move(respond));
             }),
      probes_(&loop_, [this](const AdminRequest& r, std::function<void(AdminResponse)> respond) {
        admin_api_.handle_probe(r, std::move(respond));
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

int Server::run() {
  signal(SIGPIPE, SIG_IGN);
  last_reload_success_s_ = static_cast<double>(time(nullptr));
  std::vector<std::string> tls_errors;
  if (!tls_.prepare(*config_, &tls_errors)) {
    for (const std::string& e : tls_errors) log::error("cannot load TLS files").str("error", e);
    return 1;
  }
  tls_.commit();
  warn_unverified_tls();
  clusters_ = build_clusters(config_);
  routes_ = build_routes(config_);
  if (!open_access_log()) return 1;
  ListenerFds fds;
  if (!bind_new_listeners(*config_, &fds)) return 1;
  for (const auto& l : config_->listeners) bound_.push_back(listener_key(l));
  if (!check_admin_token() || !listen_admin()) return 1;
  start_workers(std::move(fds));
  install_signal_handlers();
  init_drain_timers();
  if (config_->watch_config) start_config_watch();
  watch_tls_files();
  start_watchdog();
  // Serving once every worker loop has turned with its config: only then is /ready 200, the
  // log says "started" and systemd hears READY=1.
  after_workers_applied([this] {
    serving_ = true;
    log::info("started")
        .num("workers", static_cast<int64_t>(config_->workers))
        .str("workers_from", workers_from_)
        .str("version", BULWARK_VERSION)
        .str("config", config_->source_file);
    if (!draining_) start_systemd_notify();  // a SIGTERM that came first said STOPPING=1
  });
  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  log::info("stopped");
  return 0;
}

void Server::warn_unverified_tls() const {
  for (const auto& c : config_->clusters) {
    if (c.tls && !c.tls->verify) {
      log::warn("TLS verification is off for a cluster: any server certificate is accepted")
          .str("cluster", c.name);
    } else if (c.tls && !c.tls->verify_hostname && c.tls->allowed_server_sans.empty()) {
      log::warn(
          "TLS verify_hostname is off for a cluster without allowed_server_sans: any certificate "
          "its CA signed, for any name, is accepted (set allowed_server_sans)")
          .str("cluster", c.name)
          .str("ca", c.tls->ca.empty() ? "the system trust store" : c.tls->ca);
    }
  }
}

bool Server::open_access_log() {
  if (!config_->access_log) return true;
  std::string error;
  access_log_ = AccessLog::open(*config_->access_log, &error);
  if (access_log_ == nullptr) {
    log::error("cannot open the access log")
        .str("path", config_->access_log->path)
        .str("error", error);
    return false;
  }
  return true;
}

bool Server::check_admin_token() const {
  const config::AdminConfig& admin = config_->admin;
  if (admin.token_file.empty()) return true;
  std::string error;
  if (read_admin_token(admin.token_file, &error).empty()) {
    log::error("admin.token_file holds no usable token").str("error", error);
    return false;
  }
  return true;
}

bool Server::listen_admin() {
  const bool probes = config_->probes.has_value();
  for (AdminServer* server : {&admin_, &probes_}) {
    if (server == &probes_ && !probes) break;
    const char* name = server == &admin_ ? "admin" : "probes";
    const config::SocketAddress& address =
        server == &admin_ ? config_->admin.address : config_->probes->address;
    std::string bound;
    int rc = server->listen(address, &bound);
    if (rc != 0) {
      log::error("cannot listen")
          .str("listener", name)
          .str("address", address.text())
          .str("error", uv_strerror(rc));
      return false;
    }
    log::info("listening").str("listener", name).str("address", bound);
  }
  const std::string& admin_host = config_->admin.address.host;
  if (admin_host.rfind("127.", 0) != 0 && admin_host != "::1") {
    log::warn(
        "the admin listener is reachable from other hosts: its reads (/config, /clusters) are "
        "open to them, and its POSTs answer them only with admin.token_file's token; set "
        "probes.address for the kubelet and Prometheus and keep admin on 127.0.0.1")
        .str("address", config_->admin.address.text());
  }
  return true;
}

void Server::start_workers(ListenerFds fds) {
  // Endpoints known now (IP literals) go in before the workers start.
  for (auto& c : clusters_) c->resolver->start();
  std::vector<std::shared_ptr<ConnectionLimit>> listener_limits = apply_connection_limits(*config_);
  for (size_t w = 0; w < config_->workers; ++w) {
    stats_.push_back(std::make_shared<WorkerStats>(*config_));
    workers_.push_back(std::make_unique<Worker>(
        w, generation_spec(listener_limits, stats_.back(), std::move(fds[w])),
        [this] { tasks_.post([this] { on_worker_drained(); }); }));
  }
  for (auto& w : workers_) {
    w->set_access_log(access_log_.get());
    w->start();
  }
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

SharedGauges Server::shared_gauges() const {
  SharedGauges g;
  for (TlsContexts::View& v : tls_.views()) {
    g.tls.push_back({v.side, std::move(v.name), std::move(v.stats), std::move(v.certificates)});
  }
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
    SharedGauges::Adaptive adaptive;
    if (c.adaptive) {
      adaptive.enabled = true;
      adaptive.limit = c.adaptive->limit();
      adaptive.in_flight = c.adaptive->in_flight();
      adaptive.rejected = c.adaptive_rejected_before + c.adaptive->rejected();
      adaptive.min_rtt_s = static_cast<double>(c.adaptive->min_rtt()) / 1e6;
    }
    g.adaptive.push_back(adaptive);
    g.health.push_back(runtime->health->view());
  }
  g.admin_refused = admin_api_.refusals();
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

// --- What the admin API reads (AdminTarget) -----------------------------------------------------

std::string Server::metrics_text() const {
  std::vector<const WorkerStats*> stats;
  for (auto& w : stats_) stats.push_back(w.get());
  return render_metrics(*config_, stats, shared_gauges());
}

std::string Server::clusters_not_ready() const {
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

namespace {

// One worker's pools by cluster state: the worker may be on another generation than the main
// thread.
using WorkerPools = std::vector<
    std::pair<const ClusterState*, std::vector<std::pair<std::string, ClusterStatus::Pools>>>>;

// Runs on the worker's thread.
WorkerPools pools_of(Worker& worker) {
  WorkerPools mine;
  for (const auto& c : worker.current().clusters) {
    mine.emplace_back(&c->shared, std::vector<std::pair<std::string, ClusterStatus::Pools>>());
    for (const auto& p : c->pools()) {
      mine.back().second.push_back(
          {p->endpoint.address,
           {p->active_requests, p->connections, static_cast<int64_t>(p->idle.size())}});
    }
  }
  return mine;
}

// Adds `pools` to `into`, by endpoint address.
void add_pools(const std::vector<std::pair<std::string, ClusterStatus::Pools>>& pools,
               std::vector<std::pair<std::string, ClusterStatus::Pools>>& into) {
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

}  // namespace

// The endpoint list and health come from the main thread's health checkers; each worker adds
// its own pools' counts (on its own thread), and the answer is put together on the main thread
// once all have answered.
void Server::cluster_status(std::function<void(std::vector<ClusterStatus>)> done) {
  struct Gather {
    std::vector<PoolsByAddress> clusters;  // index as clusters_ when the gathering began
    size_t waiting = 0;
    std::function<void(std::vector<ClusterStatus>)> done;
  };
  auto g = std::make_shared<Gather>();
  g->clusters.resize(clusters_.size());
  g->done = std::move(done);
  g->waiting = workers_.size();
  auto complete = [this, g] { g->done(cluster_statuses(g->clusters)); };
  if (workers_.empty()) {
    complete();
    return;
  }
  for (auto& w : workers_) {
    Worker* worker = w.get();
    worker->post([this, worker, g, complete] {
      tasks_.post([this, g, mine = pools_of(*worker), complete] {
        for (const auto& [state, pools] : mine) {
          size_t ci = 0;
          while (ci < clusters_.size() && clusters_[ci]->state.get() != state) ++ci;
          if (ci == clusters_.size() || ci >= g->clusters.size()) continue;
          add_pools(pools, g->clusters[ci]);
        }
        if (--g->waiting == 0) complete();
      });
    });
  }
}

std::vector<ClusterStatus> Server::cluster_statuses(
    const std::vector<PoolsByAddress>& pools) const {
  std::vector<ClusterStatus> out;
  for (size_t ci = 0; ci < clusters_.size(); ++ci) {
    const ClusterState& state = *clusters_[ci]->state;
    ClusterStatus& status = out.emplace_back();
    status.config = &state.config;
    status.connections = state.connections.load();
    status.pending = state.pending.load();
    if (const filters::CircuitBreaker* circuit = state.circuit.get()) {
      status.circuit = ClusterStatus::Circuit{filters::to_string(circuit->state()),
                                              circuit->open_duration() / 1000};
    }
    if (const filters::AdaptiveConcurrency* adaptive = state.adaptive.get()) {
      status.adaptive = ClusterStatus::Adaptive{adaptive->limit(), adaptive->in_flight(),
                                                adaptive->min_rtt(), adaptive->measuring(),
                                                state.adaptive_rejected_before + adaptive->rejected()};
    }
    status.health = clusters_[ci]->health->view();
    status.pools.resize(status.health.endpoints.size());
    if (ci >= pools.size()) continue;  // a reload may have added clusters since
    for (size_t i = 0; i < status.health.endpoints.size(); ++i) {
      for (const auto& [address, counts] : pools[ci]) {
        if (address == status.health.endpoints[i].address) status.pools[i] = counts;
      }
    }
  }
  return out;
}

}  // namespace bulwark
