#pragma once
// The admin API: what each path of the admin listener (admin.h) answers. GET /healthz /ready
// /metrics /config /clusters read the process's state; POST /reload /healthcheck/fail
// /healthcheck/ok /drain act on it, and answer only to a peer on loopback or to the bearer token
// of admin.token_file. The probes listener answers GET /healthz /ready /metrics and nothing else.

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/admin.h"
#include "proxy/health_view.h"

namespace bulwark {

// One cluster as GET /clusters shows it, taken on the main thread.
struct ClusterStatus {
  // The workers' pools to one endpoint, summed over the workers.
  struct Pools {
    int64_t active_requests = 0, connections = 0, idle = 0;
  };
  struct Circuit {
    const char* state = "";  // filters::to_string(CircuitState)
    int64_t open_duration_ms = 0;
  };
  const config::ClusterConfig* config = nullptr;  // valid while the status is being written
  uint64_t connections = 0, pending = 0;          // the cluster's, across workers
  std::optional<Circuit> circuit;                 // none without a circuit breaker
  struct Adaptive {
    uint32_t limit = 0, in_flight = 0;
    int64_t min_rtt_us = 0;  // 0 before the first measurement
    bool measuring = false;
    uint64_t rejected = 0;
  };
  std::optional<Adaptive> adaptive;  // none without adaptive_concurrency
  ClusterHealthView health;
  std::vector<Pools> pools;  // index as health.endpoints
};

// The token of admin.token_file `path`: its contents without surrounding whitespace (a Secret's
// file often ends in a newline). Empty, with *error, when it cannot be read, is not a regular
// file, is larger than kMaxAdminTokenFile, or holds no token.
inline constexpr size_t kMaxAdminTokenFile = 4096;
std::string read_admin_token(const std::string& path, std::string* error);

// What the admin API reads of the process and asks of it (main thread). The Server implements
// it. The admin API sees this much and no more, so admin_api.cpp does not include server.h: the
// admin job and the server's jobs (reload, lifecycle) do not depend on each other's code, and
// a test can stand in for the server.
class AdminTarget {
 public:
  virtual const config::Config& current_config() const = 0;
  // GET /metrics: the Prometheus text exposition.
  virtual std::string metrics_text() const = 0;
  virtual bool draining() const = 0;
  // Every worker runs the config it started with (so the listeners it was given accept).
  virtual bool serving() const = 0;
  // Why /healthz fails: a worker loop that has not turned for `watchdog`; empty when all turn.
  virtual std::string worker_stall() const = 0;
  // Why a cluster that readiness.require_healthy names keeps /ready at 503; empty when none does.
  virtual std::string clusters_not_ready() const = 0;
  // Server::reload: false, with the errors in *message, when the new config was refused; else
  // `done` runs once every worker runs the new config.
  virtual bool reload(const char* trigger, std::string* message, std::function<void()> done) = 0;
  // Starts the drain of POST /drain, which keeps the process running once drained.
  virtual void drain() = 0;
  // POST /shutdown: the app is done; every listener, outbound ones too, drains now and the
  // process exits once drained (or at drain_timeout). False when it was asked before.
  virtual bool shutdown() = 0;
  // Calls `done` on the main thread, later, with the state of every cluster in force then
  // (index as config().clusters), once each worker has added its pools' counts.
  virtual void cluster_status(std::function<void(std::vector<ClusterStatus>)> done) = 0;

 protected:
  ~AdminTarget() = default;
};

// Answers the admin listener's requests (main thread). It holds the one piece of state that is
// the admin API's own: whether readiness was failed on purpose (POST /healthcheck/fail).
class AdminApi {
 public:
  // `target` must outlive the AdminApi.
  explicit AdminApi(AdminTarget& target) : target_(target) {}
  AdminApi(const AdminApi&) = delete;
  AdminApi& operator=(const AdminApi&) = delete;

  // AdminHandlers (admin.h): `respond` is called exactly once, now or later. handle() serves
  // the admin listener, handle_probe() the probes listener.
  void handle(const AdminRequest& req, std::function<void(AdminResponse)> respond);
  void handle_probe(const AdminRequest& req, std::function<void(AdminResponse)> respond);

  // Why /ready is 503; empty when ready.
  std::string not_ready_reason() const;
  // Refused state-changing requests by reason, for bulwark_admin_requests_refused_total.
  std::vector<std::pair<const char*, uint64_t>> refusals() const;

 private:
  enum Refusal { kBrowser, kNotLoopback, kBadToken, kRefusals };
  // Answers GET /healthz /ready /metrics (true), or does nothing (false) for any other request.
  bool answer_probe(const AdminRequest& req, std::function<void(AdminResponse)>& respond);
  // Empty when `req` may change state, else why not (and the refusal is counted and logged).
  std::string refuse_change(const AdminRequest& req);
  void set_failed_on_purpose(bool fail);
  void reload(std::function<void(AdminResponse)> respond);

  AdminTarget& target_;
  bool failed_on_purpose_ = false;  // POST /healthcheck/fail, until POST /healthcheck/ok
  std::array<uint64_t, kRefusals> refused_{};
};

// The body of GET /clusters: one line of JSON, ending in a newline.
std::string clusters_json(const std::vector<ClusterStatus>& clusters);

}  // namespace bulwark
