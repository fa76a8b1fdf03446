#pragma once
// The main thread: owns the config, the listener sockets, the shared cluster state, the workers,
// the admin listener, DNS refresh, signals and the graceful drain.

#include <uv.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "filters/clock.h"
#include "proxy/access_log.h"
#include "proxy/admin.h"
#include "proxy/cluster.h"
#include "proxy/health_checker.h"
#include "proxy/route_state.h"
#include "proxy/sd_notify.h"
#include "proxy/task_queue.h"
#include "proxy/worker.h"

namespace bulwark {

class ClusterResolver;

class Server {
 public:
  explicit Server(std::shared_ptr<const config::Config> config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, starts the workers and runs until drained. Returns the process exit code.
  int run();

  // Publishes a cluster's new endpoint set to every worker (main thread), after its health
  // checker gave the endpoints that stayed their health state.
  void publish_endpoints(size_t cluster, std::shared_ptr<EndpointSet> set);

  // systemd notifications around a configuration reload (main thread): notify_reloading() when
  // the reload starts (RELOADING=1 with MONOTONIC_USEC), notify_reloaded() when it is over,
  // applied or rejected (READY=1 with `status`). No-ops without NOTIFY_SOCKET.
  void notify_reloading();
  void notify_reloaded(std::string_view status);

 private:
  bool open_listeners();
  void handle_admin(const AdminRequest& req, std::function<void(AdminResponse)> respond);
  void clusters_json(std::function<void(AdminResponse)> respond);
  void create_policy_state();
  SharedGauges shared_gauges() const;
  // Why /ready is 503 (empty: ready).
  std::string not_ready_reason() const;
  // Stops taking traffic: /ready 503 at once, listeners close after drain_delay, in-flight
  // requests finish. `exit`: end the process once drained (signals); else keep running with the
  // admin listener up (POST /drain).
  void begin_drain(const char* why, bool exit = true);
  void on_worker_drained();
  void finish();
  // systemd (sd_notify.h): READY=1 and the watchdog once serving, STOPPING=1 when the drain
  // begins, the watchdog timer closed at finish.
  void start_systemd_notify();
  void notify_stopping(const char* why);
  void stop_systemd_notify();

  std::shared_ptr<const config::Config> config_;
  uv_loop_t loop_;
  TaskQueue tasks_;
  uv_signal_t sigterm_, sigint_;
  uv_signal_t sigusr1_;                    // reopens the access log
  std::unique_ptr<AccessLog> access_log_;  // null when off; outlives the workers
  uv_timer_t drain_delay_timer_, drain_timeout_timer_;
  AdminServer admin_;
  filters::MonotonicClock clock_;
  std::vector<std::unique_ptr<ClusterState>> clusters_;
  std::vector<std::unique_ptr<HealthChecker>> health_;            // index as clusters_
  std::vector<std::vector<std::unique_ptr<RouteState>>> routes_;  // [listener][route]
  std::vector<std::unique_ptr<ClusterResolver>> resolvers_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::vector<int>> listener_fds_;  // [worker][listener]
  size_t workers_drained_ = 0;
  bool draining_ = false;
  bool exit_after_drain_ = true;  // false after POST /drain: keep running once drained
  bool drained_ = false;
  bool healthcheck_failed_ = false;  // POST /healthcheck/fail
  bool finished_ = false;
  uint64_t start_time_ms_ = 0;
  SystemdNotifier notifier_ = SystemdNotifier::from_environment();
  std::unique_ptr<SystemdWatchdog> watchdog_;  // uses notifier_
};

}  // namespace bulwark
