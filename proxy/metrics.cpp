#include "proxy/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

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

struct RoutePolicyFamilies {
  MetricFamily retries =
      family("bulwark_retries_total", "Retries by route and reason.", MetricType::Counter);
  MetricFamily budget_exhausted =
      family("bulwark_retry_budget_exhausted_total",
             "Retries not made because the route's retry budget was spent.", MetricType::Counter);
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

}  // namespace

std::string render_metrics(const config::Config& config,
                           const std::vector<const WorkerStats*>& workers,
                           const SharedGauges& shared) {
  std::vector<MetricFamily> out;

  auto requests =
      family("bulwark_requests_total",
             "Downstream requests by listener, route and response status.", MetricType::Counter);
  auto duration =
      family("bulwark_request_duration_seconds",
             "Time from the request head to the end of the response.", MetricType::Histogram);
  auto downstream = family("bulwark_downstream_connections", "Open client connections by listener.",
                           MetricType::Gauge);
  auto limit_reached =
      family("bulwark_downstream_connection_limit_reached_total",
             "Times a worker stopped accepting on a listener because a connection limit "
             "(max_connections of the listener or of the process) was reached; new connections "
             "then wait in the kernel's backlog.",
             MetricType::Counter);
  auto accept_errors =
      family("bulwark_downstream_accept_errors_total",
             "Errors accepting a client connection. Out of file descriptors, libuv "
             "closes the connection at once instead, uncounted: max_connections "
             "(by default half the descriptor limit) keeps bulwark below that.",
             MetricType::Counter);
  auto connection_limit =
      family("bulwark_downstream_connection_limit",
             "The connection limit in force (max_connections; 0 = none).", MetricType::Gauge);
  add_gauge(connection_limit, {{"listener", ""}},
            static_cast<double>(shared.process_connection_limit));
  RoutePolicyFamilies policy;
  for (size_t li = 0; li < config.listeners.size(); ++li) {
    const auto& l = config.listeners[li];
    int64_t conns = 0;
    uint64_t paused_listener = 0, paused_process = 0, errors = 0;
    for (const WorkerStats* w : workers) {
      conns += w->listeners[li]->connections->value();
      paused_listener += w->listeners[li]->accept_paused_listener->value();
      paused_process += w->listeners[li]->accept_paused_process->value();
      errors += w->listeners[li]->accept_errors->value();
    }
    add_gauge(downstream, {{"listener", l.name}}, static_cast<double>(conns));
    add_counter(limit_reached, {{"listener", l.name}, {"limit", "listener"}}, paused_listener);
    add_counter(limit_reached, {{"listener", l.name}, {"limit", "process"}}, paused_process);
    add_counter(accept_errors, {{"listener", l.name}}, errors);
    add_gauge(connection_limit, {{"listener", l.name}}, static_cast<double>(l.max_connections));
    for (size_t ri = 0; ri < l.routes.size(); ++ri) {
      const auto& r = l.routes[ri];
      for (int code = 0; code < StatusCounters::kMax; ++code) {
        uint64_t n = 0;
        for (const WorkerStats* w : workers)
          n += w->listeners[li]->routes[ri]->requests.codes[code].value();
        if (n > 0)
          add_counter(requests,
                      {{"listener", l.name}, {"route", r.name}, {"code", code_label(code)}}, n);
      }
      ClientMetric h = labelled({{"listener", l.name}, {"route", r.name}});
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
      for (const WorkerStats* w : workers)
        sum_us += w->listeners[li]->routes[ri]->duration.sum_us();
      h.histogram.sample_count = cumulative;
      h.histogram.sample_sum = static_cast<double>(sum_us) / 1e6;
      duration.metric.push_back(std::move(h));
      add_route_policy_metrics(policy, l.name, r, li, ri, workers, shared);
    }
  }

  auto upstream =
      family("bulwark_upstream_requests_total",
             "Requests sent upstream by cluster and response status (none: no response).",
             MetricType::Counter);
  auto connections = family("bulwark_upstream_connections",
                            "Upstream connections by cluster and state.", MetricType::Gauge);
  auto active = family("bulwark_upstream_active_requests", "Requests in flight to the cluster.",
                       MetricType::Gauge);
  auto connect_failures = family("bulwark_upstream_connect_failures_total",
                                 "Upstream connection attempts that failed.", MetricType::Counter);
  auto circuit_state =
      family("bulwark_circuit_state",
             "Circuit breaker state by cluster: 0 closed, 1 open, 2 half-open.", MetricType::Gauge);
  auto circuit_transitions =
      family("bulwark_circuit_transitions_total",
             "Circuit breaker state changes by cluster and new state.", MetricType::Counter);
  HealthFamilies health;
  for (size_t ci = 0; ci < config.clusters.size(); ++ci) {
    const std::string& name = config.clusters[ci].name;
    if (ci < shared.health.size()) add_health_metrics(health, name, shared.health[ci]);
    int64_t act = 0, idle = 0, reqs = 0;
    uint64_t failures = 0;
    for (const WorkerStats* w : workers) {
      act += w->clusters[ci]->active_connections.value();
      idle += w->clusters[ci]->idle_connections.value();
      reqs += w->clusters[ci]->active_requests.value();
      failures += w->clusters[ci]->connect_failures.value();
    }
    add_gauge(connections, {{"cluster", name}, {"state", "active"}}, static_cast<double>(act));
    add_gauge(connections, {{"cluster", name}, {"state", "idle"}}, static_cast<double>(idle));
    add_gauge(active, {{"cluster", name}}, static_cast<double>(reqs));
    add_counter(connect_failures, {{"cluster", name}}, failures);
    if (ci < shared.circuits.size() && shared.circuits[ci].enabled) {
      const SharedGauges::Circuit& c = shared.circuits[ci];
      add_gauge(circuit_state, {{"cluster", name}}, c.state);
      static constexpr const char* kStates[] = {"closed", "open", "half_open"};
      for (size_t s = 0; s < c.transitions.size(); ++s) {
        add_counter(circuit_transitions, {{"cluster", name}, {"to", kStates[s]}}, c.transitions[s]);
      }
    }
    for (int code = 0; code < StatusCounters::kMax; ++code) {
      uint64_t n = 0;
      for (const WorkerStats* w : workers)
        n += w->clusters[ci]->upstream_requests.codes[code].value();
      if (n > 0) add_counter(upstream, {{"cluster", name}, {"code", code_label(code)}}, n);
    }
  }

  auto local = family("bulwark_local_replies_total",
                      "Replies bulwark generated itself, by reason token.", MetricType::Counter);
  for (size_t r = 0; r < static_cast<size_t>(LocalReason::kCount); ++r) {
    uint64_t n = 0;
    for (const WorkerStats* w : workers) n += w->local_replies[r].value();
    add_counter(local, {{"reason", std::string(kLocalReasons[r].token)}}, n);
  }

  auto build = family("bulwark_build_info", "Always 1; the version of the running binary.",
                      MetricType::Gauge);
  add_gauge(build, {{"version", BULWARK_VERSION}}, 1);
  auto reloads = family("bulwark_config_reloads_total",
                        "Config reloads by result (success, failure).", MetricType::Counter);
  add_counter(reloads, {{"result", "success"}}, shared.reloads_ok);
  add_counter(reloads, {{"result", "failure"}}, shared.reloads_failed);
  auto generation = family("bulwark_config_generation",
                           "The config in force: 1 at start, one more for each applied reload.",
                           MetricType::Gauge);
  add_gauge(generation, {}, static_cast<double>(shared.generation));
  auto last_reload = family("bulwark_config_last_reload_success_timestamp_seconds",
                            "When the config in force was loaded (start or reload), since the "
                            "Unix epoch.",
                            MetricType::Gauge);
  add_gauge(last_reload, {}, shared.last_reload_success_s);
  auto dropped =
      family("bulwark_access_log_dropped_lines_total",
             "Access log lines dropped because the file could not keep up.", MetricType::Counter);
  if (shared.access_log_dropped >= 0) {
    add_counter(dropped, {}, static_cast<uint64_t>(shared.access_log_dropped));
    out.push_back(std::move(dropped));  // only with an access log
  }
  // The standard process metrics, named as the Prometheus client libraries name them.
  auto cpu = family("process_cpu_seconds_total", "User and system CPU time spent, in seconds.",
                    MetricType::Counter);
  auto rss =
      family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge);
  auto vsz =
      family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge);
  auto fds = family("process_open_fds", "Open file descriptors.", MetricType::Gauge);
  auto max_fds =
      family("process_max_fds", "The limit of open file descriptors.", MetricType::Gauge);
  auto start =
      family("process_start_time_seconds",
             "Start time of the process since the Unix epoch, in seconds.", MetricType::Gauge);
  if (shared.process.ok) {
    const ProcessStats& p = shared.process;
    add_counter_value(cpu, p.cpu_seconds);
    add_gauge(rss, {}, static_cast<double>(p.resident_bytes));
    add_gauge(vsz, {}, static_cast<double>(p.virtual_bytes));
    add_gauge(fds, {}, static_cast<double>(p.open_fds));
    add_gauge(max_fds, {}, static_cast<double>(p.max_fds));
    add_gauge(start, {}, p.start_time_seconds);
  }

  for (auto* f : {&build,
                  &reloads,
                  &generation,
                  &last_reload,
                  &cpu,
                  &rss,
                  &vsz,
                  &fds,
                  &max_fds,
                  &start,
                  &requests,
                  &duration,
                  &downstream,
                  &limit_reached,
                  &accept_errors,
                  &connection_limit,
                  &policy.retries,
                  &policy.budget_exhausted,
                  &policy.bulkhead_rejections,
                  &policy.bulkhead_queued,
                  &policy.rate_limited,
                  &policy.faults,
                  &upstream,
                  &connections,
                  &active,
                  &connect_failures,
                  &circuit_state,
                  &circuit_transitions,
                  &health.routable,
                  &health.panic,
                  &health.healthy,
                  &health.checks,
                  &health.ejected,
                  &health.ejections,
                  &local}) {
    out.push_back(std::move(*f));
  }
  return prometheus::TextSerializer().Serialize(out);
}

}  // namespace bulwark
