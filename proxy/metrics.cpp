#include "proxy/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>

namespace bulwark {

void LocalHistogram::observe_us(uint64_t micros) {
  size_t i = 0;
  // Bounds are in seconds; compare in microseconds.
  static constexpr auto kBoundsUs = [] {
    std::array<uint64_t, kBounds.size()> us{};
    for (size_t k = 0; k < kBounds.size(); ++k)
      us[k] = static_cast<uint64_t>(kBounds[k] * 1e6 + 0.5);
    return us;
  }();
  while (i < kBoundsUs.size() && micros > kBoundsUs[i]) ++i;
  buckets_[i].inc();
  sum_us_.inc(micros);
}

WorkerStats::WorkerStats(const config::Config& config, const config::Config* previous_config,
                         const WorkerStats* previous)
    : local_replies_owner(previous != nullptr ? previous->local_replies_owner
                                              : std::make_shared<LocalReplyCounters>()),
      local_replies(*local_replies_owner) {
  const bool carry = previous != nullptr && previous_config != nullptr;
  for (const auto& l : config.listeners) {
    auto ls = std::make_shared<ListenerStats>();
    const config::ListenerConfig* old_config = nullptr;
    const ListenerStats* old_stats = nullptr;
    if (carry) {
      for (size_t i = 0; i < previous_config->listeners.size(); ++i) {
        if (previous_config->listeners[i].name != l.name) continue;
        old_config = &previous_config->listeners[i];
        old_stats = previous->listeners[i].get();
        ls->connections = old_stats->connections;
        ls->accept_paused_listener = old_stats->accept_paused_listener;
        ls->accept_paused_process = old_stats->accept_paused_process;
        ls->accept_errors = old_stats->accept_errors;
      }
    }
    for (const auto& r : l.routes) {
      std::shared_ptr<RouteStats> kept;
      if (old_config != nullptr) {
        for (size_t i = 0; i < old_config->routes.size(); ++i) {
          if (old_config->routes[i].name == r.name) kept = old_stats->routes[i];
        }
      }
      ls->routes.push_back(kept != nullptr ? kept : std::make_shared<RouteStats>());
    }
    listeners.push_back(std::move(ls));
  }
  for (const auto& c : config.clusters) {
    std::shared_ptr<ClusterStats> kept;
    if (carry) {
      for (size_t i = 0; i < previous_config->clusters.size(); ++i) {
        if (previous_config->clusters[i].name == c.name) kept = previous->clusters[i];
      }
    }
    clusters.push_back(kept != nullptr ? kept : std::make_shared<ClusterStats>());
  }
}

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(const char* name, const char* help, MetricType type) {
  MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

ClientMetric labelled(std::vector<prometheus::ClientMetric::Label> labels) {
  ClientMetric m;
  m.label = std::move(labels);
  return m;
}

void add_counter(MetricFamily& f, std::vector<ClientMetric::Label> labels, uint64_t value) {
  ClientMetric m = labelled(std::move(labels));
  m.counter.value = static_cast<double>(value);
  f.metric.push_back(std::move(m));
}

void add_gauge(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m = labelled(std::move(labels));
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

void add_counter_value(MetricFamily& f, double value) {
  ClientMetric m;
  m.counter.value = value;
  f.metric.push_back(std::move(m));
}

std::string code_label(int code) { return code == 0 ? "none" : std::to_string(code); }

uint64_t sum_over(const std::vector<const WorkerStats*>& workers, size_t li, size_t ri,
                  const LocalCounter RouteStats::*counter) {
  uint64_t n = 0;
  for (const WorkerStats* w : workers) n += (w->listeners[li]->routes[ri].get()->*counter).value();
  return n;
}

// Every group of families below keeps its families in the order they are exposed in, and
// move_to() appends them to the scrape in that order.

struct ListenerFamilies {
  MetricFamily requests =
      family("bulwark_requests_total",
             "Downstream requests by listener, route and response status.", MetricType::Counter);
  MetricFamily duration =
      family("bulwark_request_duration_seconds",
             "Time from the request head to the end of the response.", MetricType::Histogram);
  MetricFamily downstream = family("bulwark_downstream_connections",
                                   "Open client connections by listener.", MetricType::Gauge);
  MetricFamily limit_reached =
      family("bulwark_downstream_connection_limit_reached_total",
             "Times a worker stopped accepting on a listener because a connection limit "
             "(max_connections of the listener or of the process) was reached; new connections "
             "then wait in the kernel's backlog.",
             MetricType::Counter);
  MetricFamily accept_errors =
      family("bulwark_downstream_accept_errors_total",
             "Errors accepting a client connection (out of file descriptors or memory: "
             "the connections waiting then are closed, and accepting pauses 50 ms). "
             "max_connections (by default half the descriptor limit) keeps bulwark below that.",
             MetricType::Counter);
  MetricFamily connection_limit =
      family("bulwark_downstream_connection_limit",
             "The connection limit in force (max_connections; 0 = none).", MetricType::Gauge);

  void move_to(std::vector<MetricFamily>& out) {
    for (auto* f :
         {&requests, &duration, &downstream, &limit_reached, &accept_errors, &connection_limit}) {
      out.push_back(std::move(*f));
    }
  }
};

// A listener's connections, connection limit and accept errors.
void add_listener_metrics(ListenerFamilies& f, const config::ListenerConfig& l, size_t li,
                          const std::vector<const WorkerStats*>& workers) {
  int64_t conns = 0;
  uint64_t paused_listener = 0, paused_process = 0, errors = 0;
  for (const WorkerStats* w : workers) {
    conns += w->listeners[li]->connections->value();
    paused_listener += w->listeners[li]->accept_paused_listener->value();
    paused_process += w->listeners[li]->accept_paused_process->value();
    errors += w->listeners[li]->accept_errors->value();
  }
  add_gauge(f.downstream, {{"listener", l.name}}, static_cast<double>(conns));
  add_counter(f.limit_reached, {{"listener", l.name}, {"limit", "listener"}}, paused_listener);
  add_counter(f.limit_reached, {{"listener", l.name}, {"limit", "process"}}, paused_process);
  add_counter(f.accept_errors, {{"listener", l.name}}, errors);
  add_gauge(f.connection_limit, {{"listener", l.name}}, static_cast<double>(l.max_connections));
}

// A route's requests by status code (only the codes seen) and its duration histogram (always).
void add_route_metrics(ListenerFamilies& f, const std::string& listener, const std::string& route,
                       size_t li, size_t ri, const std::vector<const WorkerStats*>& workers) {
  for (int code = 0; code < StatusCounters::kMax; ++code) {
    uint64_t n = 0;
    for (const WorkerStats* w : workers)
      n += w->listeners[li]->routes[ri]->requests.codes[code].value();
    if (n > 0)
      add_counter(f.requests,
                  {{"listener", listener}, {"route", route}, {"code", code_label(code)}}, n);
  }
  ClientMetric h = labelled({{"listener", listener}, {"route", route}});
  uint64_t cumulative = 0;
  uint64_t sum_us = 0;
  for (size_t b = 0; b <= LocalHistogram::kBounds.size(); ++b) {
    for (const WorkerStats* w : workers)
      cumulative += w->listeners[li]->routes[ri]->duration.bucket(b);
    if (b < LocalHistogram::kBounds.size()) {
      h.histogram.bucket.push_back({cumulative, LocalHistogram::kBounds[b]});
    } else {
      h.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
    }
  }
  for (const WorkerStats* w : workers) sum_us += w->listeners[li]->routes[ri]->duration.sum_us();
  h.histogram.sample_count = cumulative;
  h.histogram.sample_sum = static_cast<double>(sum_us) / 1e6;
  f.duration.metric.push_back(std::move(h));
}

struct RoutePolicyFamilies {
  MetricFamily retries =
      family("bulwark_retries_total", "Retries by route and reason.", MetricType::Counter);
  MetricFamily budget_exhausted =
      family("bulwark_retry_budget_exhausted_total",
             "Retries not made because the route's retry budget was spent.", MetricType::Counter);
  MetricFamily hedges = family(
      "bulwark_hedges_total",
      "Hedged tries by route and outcome: won (its response went to the client), lost (another "
      "try answered first), failed, cancelled (the request ended another way).",
      MetricType::Counter);
  MetricFamily bulkhead_rejections =
      family("bulwark_bulkhead_rejections_total",
             "Requests refused by the route's bulkhead, by reason.", MetricType::Counter);
  MetricFamily bulkhead_queued =
      family("bulwark_bulkhead_queued", "Requests waiting for a bulkhead slot of the route.",
             MetricType::Gauge);
  MetricFamily rate_limited =
      family("bulwark_rate_limited_total", "Requests refused by the route's rate limit.",
             MetricType::Counter);
  MetricFamily faults = family("bulwark_faults_injected_total",
                               "Injected faults by route and kind.", MetricType::Counter);

  void move_to(std::vector<MetricFamily>& out) {
    for (auto* f : {&retries, &budget_exhausted, &hedges, &bulkhead_rejections, &bulkhead_queued,
                    &rate_limited, &faults}) {
      out.push_back(std::move(*f));
    }
  }
};

// Only the policies a route has get series, so a dashboard does not show a bulkhead that is not
// there. Retries exist on every route. Labels are listener and route, as for
// bulwark_requests_total (route names are unique only within a listener).
void add_route_policy_metrics(RoutePolicyFamilies& f, const std::string& listener,
                              const config::RouteConfig& route, size_t li, size_t ri,
                              const std::vector<const WorkerStats*>& workers,
                              const SharedGauges& shared) {
  const std::string& name = route.name;
  for (size_t k = 0; k < static_cast<size_t>(filters::RetryReason::kCount); ++k) {
    uint64_t n = 0;
    for (const WorkerStats* w : workers) n += w->listeners[li]->routes[ri]->retries[k].value();
    add_counter(f.retries,
                {{"listener", listener},
                 {"route", name},
                 {"reason", std::string(filters::to_string(static_cast<filters::RetryReason>(k)))}},
                n);
  }
  add_counter(f.budget_exhausted, {{"listener", listener}, {"route", name}},
              sum_over(workers, li, ri, &RouteStats::retry_budget_exhausted));
  if (route.retry.hedge) {
    static constexpr std::string_view kOutcomes[] = {"won", "lost", "failed", "cancelled"};
    for (size_t k = 0; k < std::size(kOutcomes); ++k) {
      uint64_t n = 0;
      for (const WorkerStats* w : workers) n += w->listeners[li]->routes[ri]->hedges[k].value();
      add_counter(f.hedges,
                  {{"listener", listener}, {"route", name}, {"outcome", std::string(kOutcomes[k])}},
                  n);
    }
  }
  if (route.bulkhead) {
    add_counter(f.bulkhead_rejections,
                {{"listener", listener}, {"route", name}, {"reason", "bulkhead_full"}},
                sum_over(workers, li, ri, &RouteStats::bulkhead_full));
    add_counter(f.bulkhead_rejections,
                {{"listener", listener}, {"route", name}, {"reason", "queue_timeout"}},
                sum_over(workers, li, ri, &RouteStats::queue_timeout));
    if (li < shared.bulkhead_queued.size() && ri < shared.bulkhead_queued[li].size()) {
      add_gauge(f.bulkhead_queued, {{"listener", listener}, {"route", name}},
                static_cast<double>(shared.bulkhead_queued[li][ri]));
    }
  }
  if (route.rate_limit)
    add_counter(f.rate_limited, {{"listener", listener}, {"route", name}},
                sum_over(workers, li, ri, &RouteStats::rate_limited));
  if (route.fault) {
    add_counter(f.faults, {{"listener", listener}, {"route", name}, {"kind", "delay"}},
                sum_over(workers, li, ri, &RouteStats::fault_delays));
    add_counter(f.faults, {{"listener", listener}, {"route", name}, {"kind", "abort"}},
                sum_over(workers, li, ri, &RouteStats::fault_aborts));
  }
}

// The listeners and their routes: connections, requests, durations and route policies. The
// process-wide connection limit comes first, with an empty listener label.
void add_listener_and_route_metrics(ListenerFamilies& f, RoutePolicyFamilies& policy,
                                    const config::Config& config,
                                    const std::vector<const WorkerStats*>& workers,
                                    const SharedGauges& shared) {
  add_gauge(f.connection_limit, {{"listener", ""}},
            static_cast<double>(shared.process_connection_limit));
  for (size_t li = 0; li < config.listeners.size(); ++li) {
    const auto& l = config.listeners[li];
    add_listener_metrics(f, l, li, workers);
    for (size_t ri = 0; ri < l.routes.size(); ++ri) {
      add_route_metrics(f, l.name, l.routes[ri].name, li, ri, workers);
      add_route_policy_metrics(policy, l.name, l.routes[ri], li, ri, workers, shared);
    }
  }
}

struct ClusterFamilies {
  MetricFamily upstream =
      family("bulwark_upstream_requests_total",
             "Requests sent upstream by cluster and response status (none: no response).",
             MetricType::Counter);
  MetricFamily connections =
      family("bulwark_upstream_connections", "Upstream connections by cluster and state.",
             MetricType::Gauge);
  MetricFamily active = family("bulwark_upstream_active_requests",
                               "Requests in flight to the cluster.", MetricType::Gauge);
  MetricFamily connect_failures =
      family("bulwark_upstream_connect_failures_total", "Upstream connection attempts that failed.",
             MetricType::Counter);
  MetricFamily circuit_state =
      family("bulwark_circuit_state",
             "Circuit breaker state by cluster: 0 closed, 1 open, 2 half-open.", MetricType::Gauge);
  MetricFamily circuit_transitions =
      family("bulwark_circuit_transitions_total",
             "Circuit breaker state changes by cluster and new state.", MetricType::Counter);
  MetricFamily adaptive_limit =
      family("bulwark_adaptive_concurrency_limit",
             "The cluster's adaptive limit of requests in flight.", MetricType::Gauge);
  MetricFamily adaptive_in_flight =
      family("bulwark_adaptive_concurrency_in_flight",
             "Requests of the cluster holding a place under its adaptive limit.",
             MetricType::Gauge);
  MetricFamily adaptive_rejected =
      family("bulwark_adaptive_concurrency_rejected_total",
             "Requests refused by the cluster's adaptive concurrency limit.", MetricType::Counter);
  MetricFamily adaptive_min_rtt =
      family("bulwark_adaptive_concurrency_min_rtt_seconds",
             "The cluster's minimum latency as last measured (0 before).", MetricType::Gauge);

  void move_to(std::vector<MetricFamily>& out) {
    for (auto* f : {&upstream, &connections, &active, &connect_failures, &circuit_state,
                    &circuit_transitions, &adaptive_limit, &adaptive_in_flight, &adaptive_rejected,
                    &adaptive_min_rtt}) {
      out.push_back(std::move(*f));
    }
  }
};

// A cluster's upstream connections, requests in flight, connect failures, and requests by
// status code (only the codes seen).
void add_cluster_metrics(ClusterFamilies& f, const std::string& name, size_t ci,
                         const std::vector<const WorkerStats*>& workers) {
  int64_t act = 0, idle = 0, reqs = 0;
  uint64_t failures = 0;
  for (const WorkerStats* w : workers) {
    act += w->clusters[ci]->active_connections.value();
    idle += w->clusters[ci]->idle_connections.value();
    reqs += w->clusters[ci]->active_requests.value();
    failures += w->clusters[ci]->connect_failures.value();
  }
  add_gauge(f.connections, {{"cluster", name}, {"state", "active"}}, static_cast<double>(act));
  add_gauge(f.connections, {{"cluster", name}, {"state", "idle"}}, static_cast<double>(idle));
  add_gauge(f.active, {{"cluster", name}}, static_cast<double>(reqs));
  add_counter(f.connect_failures, {{"cluster", name}}, failures);
  for (int code = 0; code < StatusCounters::kMax; ++code) {
    uint64_t n = 0;
    for (const WorkerStats* w : workers)
      n += w->clusters[ci]->upstream_requests.codes[code].value();
    if (n > 0) add_counter(f.upstream, {{"cluster", name}, {"code", code_label(code)}}, n);
  }
}

void add_circuit_metrics(ClusterFamilies& f, const std::string& name,
                         const SharedGauges::Circuit& c) {
  add_gauge(f.circuit_state, {{"cluster", name}}, c.state);
  static constexpr const char* kStates[] = {"closed", "open", "half_open"};
  for (size_t s = 0; s < c.transitions.size(); ++s) {
    add_counter(f.circuit_transitions, {{"cluster", name}, {"to", kStates[s]}}, c.transitions[s]);
  }
}

struct HealthFamilies {
  MetricFamily routable = family("bulwark_cluster_routable_endpoints",
                                 "Endpoints of the cluster that take traffic: their health checks "
                                 "pass (or are pending) and they are not ejected.",
                                 MetricType::Gauge);
  MetricFamily panic = family("bulwark_cluster_panic",
                              "1 while the cluster is in panic mode (too few routable endpoints: "
                              "traffic goes to all of them).",
                              MetricType::Gauge);
  MetricFamily healthy =
      family("bulwark_endpoint_healthy",
             "1 while the endpoint's active health checks pass (or none finished yet).",
             MetricType::Gauge);
  MetricFamily checks = family("bulwark_health_checks_total",
                               "Active health checks by endpoint and result.", MetricType::Counter);
  MetricFamily ejected =
      family("bulwark_endpoint_ejected", "1 while outlier detection keeps the endpoint out.",
             MetricType::Gauge);
  MetricFamily ejections =
      family("bulwark_outlier_ejections_total", "Ejections of the endpoint by outlier detection.",
             MetricType::Counter);

  void move_to(std::vector<MetricFamily>& out) {
    for (auto* f : {&routable, &panic, &healthy, &checks, &ejected, &ejections}) {
      out.push_back(std::move(*f));
    }
  }
};

// Endpoint series exist only where the cluster has health checks (healthy, checks) or outlier
// detection (ejected, ejections); the cluster series always.
void add_health_metrics(HealthFamilies& f, const std::string& cluster, const ClusterHealthView& v) {
  add_gauge(f.routable, {{"cluster", cluster}}, static_cast<double>(v.routable));
  add_gauge(f.panic, {{"cluster", cluster}}, v.panic ? 1 : 0);
  for (const EndpointHealthView& e : v.endpoints) {
    if (v.checks) {
      add_gauge(f.healthy, {{"cluster", cluster}, {"endpoint", e.address}},
                std::string_view(e.state) != "unhealthy" ? 1 : 0);
      for (size_t r = 0; r < e.checks.size(); ++r) {
        add_counter(f.checks,
                    {{"cluster", cluster},
                     {"endpoint", e.address},
                     {"result", to_string(static_cast<CheckResult>(r))}},
                    e.checks[r]);
      }
    }
    if (v.outlier) {
      add_gauge(f.ejected, {{"cluster", cluster}, {"endpoint", e.address}}, e.ejected ? 1 : 0);
      add_counter(f.ejections, {{"cluster", cluster}, {"endpoint", e.address}}, e.ejections_total);
    }
  }
}

// The clusters: upstream traffic, circuit breakers (only where a cluster has one) and endpoint
// health (only for the clusters `shared` has a view of).
void add_cluster_and_health_metrics(ClusterFamilies& f, HealthFamilies& health,
                                    const config::Config& config,
                                    const std::vector<const WorkerStats*>& workers,
                                    const SharedGauges& shared) {
  for (size_t ci = 0; ci < config.clusters.size(); ++ci) {
    const std::string& name = config.clusters[ci].name;
    if (ci < shared.health.size()) add_health_metrics(health, name, shared.health[ci]);
    add_cluster_metrics(f, name, ci, workers);
    if (ci < shared.circuits.size() && shared.circuits[ci].enabled) {
      add_circuit_metrics(f, name, shared.circuits[ci]);
    }
    if (ci < shared.adaptive.size() && shared.adaptive[ci].enabled) {
      const SharedGauges::Adaptive& a = shared.adaptive[ci];
      add_gauge(f.adaptive_limit, {{"cluster", name}}, a.limit);
      add_gauge(f.adaptive_in_flight, {{"cluster", name}}, a.in_flight);
      add_counter(f.adaptive_rejected, {{"cluster", name}}, a.rejected);
      add_gauge(f.adaptive_min_rtt, {{"cluster", name}}, a.min_rtt_s);
    }
  }
}

// Every reason token has a series, seen or not.
MetricFamily local_reply_metrics(const std::vector<const WorkerStats*>& workers) {
  auto local = family("bulwark_local_replies_total",
                      "Replies bulwark generated itself, by reason token.", MetricType::Counter);
  for (size_t r = 0; r < static_cast<size_t>(LocalReason::kCount); ++r) {
    uint64_t n = 0;
    for (const WorkerStats* w : workers) n += w->local_replies[r].value();
    add_counter(local, {{"reason", std::string(kLocalReasons[r].token)}}, n);
  }
  return local;
}

// The binary and the config in force.
struct BuildAndConfigFamilies {
  MetricFamily build = family("bulwark_build_info", "Always 1; the version of the running binary.",
                              MetricType::Gauge);
  MetricFamily reloads =
      family("bulwark_config_reloads_total", "Config reloads by result (success, failure).",
             MetricType::Counter);
  MetricFamily generation = family(
      "bulwark_config_generation",
      "The config in force: 1 at start, one more for each applied reload.", MetricType::Gauge);
  MetricFamily last_reload = family("bulwark_config_last_reload_success_timestamp_seconds",
                                    "When the config in force was loaded (start or reload), since "
                                    "the Unix epoch.",
                                    MetricType::Gauge);
  MetricFamily admin_refused =
      family("bulwark_admin_requests_refused_total",
             "State-changing admin requests refused, by reason (browser: sent by a web page; "
             "not_loopback: from another host without a token; bad_token: a wrong token).",
             MetricType::Counter);

  void move_to(std::vector<MetricFamily>& out) {
    for (auto* f : {&build, &reloads, &generation, &last_reload, &admin_refused}) {
      out.push_back(std::move(*f));
    }
  }
};

void add_build_and_config_metrics(BuildAndConfigFamilies& f, const SharedGauges& shared) {
  add_gauge(f.build, {{"version", BULWARK_VERSION}}, 1);
  add_counter(f.reloads, {{"result", "success"}}, shared.reloads_ok);
  add_counter(f.reloads, {{"result", "failure"}}, shared.reloads_failed);
  add_gauge(f.generation, {}, static_cast<double>(shared.generation));
  add_gauge(f.last_reload, {}, shared.last_reload_success_s);
  for (const auto& [reason, count] : shared.admin_refused) {
    add_counter(f.admin_refused, {{"reason", reason}}, count);
  }
}

// The standard process metrics, named as the Prometheus client libraries name them. Without
// process stats (/proc unreadable) the families are there, with no series.
struct ProcessFamilies {
  MetricFamily cpu = family("process_cpu_seconds_total",
                            "User and system CPU time spent, in seconds.", MetricType::Counter);
  MetricFamily rss =
      family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge);
  MetricFamily vsz =
      family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge);
  MetricFamily fds = family("process_open_fds", "Open file descriptors.", MetricType::Gauge);
  MetricFamily max_fds =
      family("process_max_fds", "The limit of open file descriptors.", MetricType::Gauge);
  MetricFamily start =
      family("process_start_time_seconds",
             "Start time of the process since the Unix epoch, in seconds.", MetricType::Gauge);

  void move_to(std::vector<MetricFamily>& out) {
    for (auto* f : {&cpu, &rss, &vsz, &fds, &max_fds, &start}) out.push_back(std::move(*f));
  }
};

void add_process_metrics(ProcessFamilies& f, const ProcessStats& p) {
  if (!p.ok) return;
  add_counter_value(f.cpu, p.cpu_seconds);
  add_gauge(f.rss, {}, static_cast<double>(p.resident_bytes));
  add_gauge(f.vsz, {}, static_cast<double>(p.virtual_bytes));
  add_gauge(f.fds, {}, static_cast<double>(p.open_fds));
  add_gauge(f.max_fds, {}, static_cast<double>(p.max_fds));
  add_gauge(f.start, {}, p.start_time_seconds);
}

// TLS handshakes, their failures by reason, certificate expiry: per listener or cluster.
void add_tls_metrics(const std::vector<SharedGauges::Tls>& all, std::vector<MetricFamily>& out) {
  if (all.empty()) return;  // no TLS anywhere: no families without series
  auto handshakes = family("bulwark_tls_handshakes_total",
                           "TLS handshakes completed, by version and whether the session resumed.",
                           MetricType::Counter);
  auto errors = family("bulwark_tls_handshake_errors_total",
                       "TLS handshakes that failed, by reason.", MetricType::Counter);
  auto expiry =
      family("bulwark_tls_certificate_expiry_timestamp_seconds",
             "When each certificate in use expires, since the Unix epoch.", MetricType::Gauge);
  auto reload_errors = family(
      "bulwark_tls_certificate_reload_errors_total",
      "Changed certificate files that could not be used (the old ones stay).", MetricType::Counter);
  static const char* const kVersions[] = {"TLSv1.2", "TLSv1.3"};
  for (const SharedGauges::Tls& t : all) {
    for (size_t v = 0; v < 2; ++v) {
      for (size_t r = 0; r < 2; ++r) {
        add_counter(handshakes,
                    {{"side", t.side},
                     {"name", t.name},
                     {"version", kVersions[v]},
                     {"resumed", r == 1 ? "true" : "false"}},
                    t.stats->handshakes[v][r].load(std::memory_order_relaxed));
      }
    }
    for (size_t e = 0; e < static_cast<size_t>(TlsError::kCount); ++e) {
      uint64_t n = t.stats->errors[e].load(std::memory_order_relaxed);
      if (n == 0) continue;  // a series per reason that happened, not per reason there is
      add_counter(errors,
                  {{"side", t.side},
                   {"name", t.name},
                   {"reason", tls_error_name(static_cast<TlsError>(e))}},
                  n);
    }
    for (const CertificateFacts& c : t.certificates) {
      add_gauge(expiry, {{"side", t.side}, {"name", t.name}, {"path", c.path}},
                static_cast<double>(c.not_after));
    }
    add_counter(reload_errors, {{"side", t.side}, {"name", t.name}},
                t.stats->reload_errors.load(std::memory_order_relaxed));
  }
  for (auto* f : {&handshakes, &errors, &expiry, &reload_errors}) {
    if (!f->metric.empty()) out.push_back(std::move(*f));  // no family without series
  }
}

}  // namespace

std::string render_metrics(const config::Config& config,
                           const std::vector<const WorkerStats*>& workers,
                           const SharedGauges& shared) {
  ListenerFamilies listeners;
  RoutePolicyFamilies policies;
  add_listener_and_route_metrics(listeners, policies, config, workers, shared);
  ClusterFamilies clusters;
  HealthFamilies health;
  add_cluster_and_health_metrics(clusters, health, config, workers, shared);

  // The scrape's order: the access log's family (when there is one), build and config, process,
  // listeners and routes, route policies, clusters, endpoint health, local replies.
  std::vector<MetricFamily> out;
  if (shared.access_log_dropped >= 0) {  // only with an access log
    auto dropped =
        family("bulwark_access_log_dropped_lines_total",
               "Access log lines dropped because the file could not keep up.", MetricType::Counter);
    add_counter(dropped, {}, static_cast<uint64_t>(shared.access_log_dropped));
    out.push_back(std::move(dropped));
  }
  BuildAndConfigFamilies build_and_config;
  add_build_and_config_metrics(build_and_config, shared);
  build_and_config.move_to(out);
  ProcessFamilies process;
  add_process_metrics(process, shared.process);
  process.move_to(out);
  listeners.move_to(out);
  policies.move_to(out);
  clusters.move_to(out);
  health.move_to(out);
  add_tls_metrics(shared.tls, out);
  out.push_back(local_reply_metrics(workers));
  return prometheus::TextSerializer().Serialize(out);
}

}  // namespace bulwark
