#pragma once
// Statistics. Each worker owns its own counters (created when the config is applied, reached
// by pointer on the request path, never looked up by label), and only that worker writes them:
// an increment is a relaxed load and store, no lock and no contended cache line. The admin
// listener sums the workers' values when Prometheus scrapes, and serialises them with
// prometheus-cpp's TextSerializer.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "filters/retry.h"
#include "proxy/health_view.h"
#include "proxy/process_stats.h"
#include "proxy/reasons.h"
#include "proxy/tls.h"

namespace bulwark {

// Written by one thread, read by any.
class LocalCounter {
 public:
  void inc(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class LocalGauge {
 public:
  void add(int64_t n) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  int64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

// One unit of a gauge held while something lasts (a request in flight): given back by release()
// or at destruction, once.
class GaugeHold {
 public:
  GaugeHold() = default;
  GaugeHold(const GaugeHold&) = delete;
  GaugeHold& operator=(const GaugeHold&) = delete;
  ~GaugeHold() { release(); }
  void hold(LocalGauge& gauge) {
    release();
    gauge_ = &gauge;
    gauge.add(1);
  }
  void release() {
    if (gauge_ != nullptr) gauge_->add(-1);
    gauge_ = nullptr;
  }

 private:
  LocalGauge* gauge_ = nullptr;
};

// Request durations from 0.5 ms to 30 s.
class LocalHistogram {
 public:
  static constexpr std::array<double, 15> kBounds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  void observe_us(uint64_t micros);
  uint64_t bucket(size_t i) const { return buckets_[i].value(); }  // not cumulative; i <= 15
  uint64_t sum_us() const { return sum_us_.value(); }

 private:
  std::array<LocalCounter, kBounds.size() + 1> buckets_;  // last: +Inf
  LocalCounter sum_us_;
};

// Responses by exact status code 100..599 (anything else counts as 0: "no response").
struct StatusCounters {
  static constexpr int kMax = 600;
  void inc(int status) { codes[status >= 100 && status < kMax ? status : 0].inc(); }
  std::array<LocalCounter, kMax> codes;
};

struct RouteStats {
  StatusCounters requests;
  LocalHistogram duration;
  // Policies (filters/).
  std::array<LocalCounter, static_cast<size_t>(filters::RetryReason::kCount)> retries;
  LocalCounter retry_budget_exhausted;
  std::array<LocalCounter, 4> hedges;  // by Exchange::HedgeOutcome: won, lost, failed, cancelled
  LocalCounter bulkhead_full;
  LocalCounter queue_timeout;
  LocalCounter rate_limited;
  LocalCounter fault_delays;
  LocalCounter fault_aborts;
};

struct ClusterStats {
  StatusCounters upstream_requests;
  LocalGauge active_connections;
  LocalGauge idle_connections;
  LocalGauge active_requests;
  LocalCounter connect_failures;
};

struct ListenerStats {
  // Open client connections; kept across reloads with the listener's name.
  std::shared_ptr<LocalGauge> connections = std::make_shared<LocalGauge>();
  // Times a worker stopped accepting on this listener at a connection limit, and accept errors
  // (EMFILE, ENFILE); kept across reloads like `connections`.
  std::shared_ptr<LocalCounter> accept_paused_listener = std::make_shared<LocalCounter>();
  std::shared_ptr<LocalCounter> accept_paused_process = std::make_shared<LocalCounter>();
  std::shared_ptr<LocalCounter> accept_errors = std::make_shared<LocalCounter>();
  std::vector<std::shared_ptr<RouteStats>> routes;  // index as ListenerConfig::routes
};

struct LocalReplyCounters {
  std::array<LocalCounter, static_cast<size_t>(LocalReason::kCount)> counts;
  LocalCounter& operator[](size_t i) { return counts[i]; }
  const LocalCounter& operator[](size_t i) const { return counts[i]; }
};

// Everything one worker counts, shaped like the config it was created for. After a reload the
// new shape takes over the objects of the listeners, routes and clusters that kept their names
// (`previous`, shaped like `previous_config`), so their counters go on; requests still running
// on the old config count into the same objects.
struct WorkerStats {
  explicit WorkerStats(const config::Config& config,
                       const config::Config* previous_config = nullptr,
                       const WorkerStats* previous = nullptr);
  std::vector<std::shared_ptr<ListenerStats>> listeners;  // index as Config::listeners
  std::vector<std::shared_ptr<ClusterStats>> clusters;    // index as Config::clusters
  std::shared_ptr<LocalReplyCounters> local_replies_owner;
  LocalReplyCounters& local_replies;  // *local_replies_owner
};

// Values kept in shared policy state rather than in per-worker counters, read at scrape time.
// Empty vectors leave those metrics out.
struct SharedGauges {
  struct Circuit {
    bool enabled = false;
    int state = 0;                          // 0 closed, 1 open, 2 half-open
    std::array<uint64_t, 3> transitions{};  // into closed, open, half-open
  };
  std::vector<Circuit> circuits;                      // index as Config::clusters
  struct Adaptive {
    bool enabled = false;
    uint32_t limit = 0;
    uint32_t in_flight = 0;
    uint64_t rejected = 0;
    double min_rtt_s = 0;  // 0 until measured
  };
  std::vector<Adaptive> adaptive;  // index as Config::clusters
  std::vector<ClusterHealthView> health;              // index as Config::clusters
  ProcessStats process;                               // process_* metrics (when ok)
  int64_t access_log_dropped = -1;                    // -1: no access log
  uint64_t reloads_ok = 0, reloads_failed = 0;        // config reloads
  uint64_t generation = 0;                            // the config in force: 1 at start
  double last_reload_success_s = 0;                   // since the epoch
  std::vector<std::vector<int64_t>> bulkhead_queued;  // [listener][route]; -1: no bulkhead
  uint64_t process_connection_limit = 0;              // max_connections in force (0: none)
  // State-changing admin requests refused, by reason (AdminApi::refusals()).
  std::vector<std::pair<const char*, uint64_t>> admin_refused;
  // TLS of each listener and cluster that has it (TlsContexts::views()).
  struct Tls {
    const char* side;  // "listener" | "cluster"
    std::string name;
    std::shared_ptr<const TlsStats> stats;
    std::vector<CertificateFacts> certificates;
  };
  std::vector<Tls> tls;
};

// Prometheus text exposition of the sum over `workers`, and of `shared`.
std::string render_metrics(const config::Config& config,
                           const std::vector<const WorkerStats*>& workers,
                           const SharedGauges& shared = {});

}  // namespace bulwark
