#pragma once
// The main thread: owns the config, the listener sockets, the shared cluster state, the workers,
// the admin listener, DNS refresh, signals and the graceful drain.
//
// Server's member functions are defined by job: server.cpp (construction, start, and the state
// the admin API reads), reload.cpp (applying a new config), lifecycle.cpp (signals, drain,
// systemd). The admin API (admin_api.h) and DNS (resolver.h) are classes of their own.

#include <uv.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "filters/clock.h"
#include "proxy/access_log.h"
#include "proxy/admin.h"
#include "proxy/admin_api.h"
#include "proxy/cluster.h"
#include "proxy/connection_limit.h"
#include "proxy/health_checker.h"
#include "proxy/resolver.h"
#include "proxy/route_state.h"
#include "proxy/sd_notify.h"
#include "proxy/task_queue.h"
#include "proxy/tls_contexts.h"
#include "proxy/watchdog.h"
#include "proxy/worker.h"

namespace bulwark {

// AdminTarget is a private base: the admin API the Server owns (admin_api_) is the one reader
// of that view.
class Server : private AdminTarget {
 public:
  explicit Server(std::shared_ptr<const config::Config> config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, starts the workers and runs until drained. Returns the process exit code.
  int run();

  // Reads the config file again and applies it (main thread): SIGHUP, POST /reload, or a change
  // of the file with watch_config. An invalid file changes nothing. Returns false, with the
  // errors in *message, when the new config was refused; else `done` runs once every worker
  // runs the new config.
  bool reload(const char* trigger, std::string* message, std::function<void()> done = {}) override;

 private:
  // The shared and main-thread state of one cluster. A reload keeps it when the cluster's
  // settings did not change (so its circuit, endpoints, health and pools carry on).
  struct ClusterRuntime {
    std::shared_ptr<ClusterState> state;
    std::unique_ptr<HealthChecker> health;
    std::unique_ptr<ClusterResolver> resolver;
    std::string settings;  // config::to_json of its ClusterConfig
  };
  using ListenerFds = std::vector<std::vector<std::pair<std::string, int>>>;  // [worker]
  using PoolsByAddress = std::vector<std::pair<std::string, ClusterStatus::Pools>>;

  // --- Start and state (server.cpp) ---
  bool open_access_log();
  void warn_unverified_tls() const;  // a cluster with tls.verify false gets a warning
  // The admin listener and, when configured, the probes listener.
  bool listen_admin();
  // admin.token_file must hold a token at start (afterwards it is read at each use).
  bool check_admin_token() const;
  // Starts one worker per config_->workers, each with its listening sockets from `fds`.
  void start_workers(ListenerFds fds);
  // Publishes a cluster's new endpoint set to every worker (main thread), after its health
  // checker gave the endpoints that stayed their health state.
  void publish_endpoints(ClusterState& cluster, std::shared_ptr<EndpointSet> set);
  ClusterRuntime* runtime_of(const ClusterState* state);
  SharedGauges shared_gauges() const;
  // The statuses of clusters_, with `pools` ([cluster] address -> counts) matched by address.
  std::vector<ClusterStatus> cluster_statuses(const std::vector<PoolsByAddress>& pools) const;

  // AdminTarget (server.cpp).
  const config::Config& current_config() const override { return *config_; }
  std::string metrics_text() const override;
  bool draining() const override { return draining_; }
  bool serving() const override { return serving_; }
  std::string worker_stall() const override {
    return watchdog_ ? watchdog_->stalled_reason() : std::string();
  }
  std::string clusters_not_ready() const override;
  void drain() override { begin_drain("POST /drain", false); }
  bool shutdown() override;
  void cluster_status(std::function<void(std::vector<ClusterStatus>)> done) override;

  // --- Reload (reload.cpp) ---
  // Counts a refused reload and says why: in *message, the log and systemd. Returns false.
  bool refuse_reload(const char* trigger, const std::string& path, std::string why,
                     std::string* message);
  // `loaded` with what only a restart can change (workers, admin.address, access_log) set back
  // to the running values, each change logged.
  std::shared_ptr<const config::Config> keep_restart_settings(const config::Config& loaded) const;
  // Puts `config` in force: what it keeps carries its state on, the rest retires, and each
  // worker is handed the new generation with its new listening sockets from `fds`.
  void install_config(std::shared_ptr<const config::Config> config, ListenerFds fds);
  // Listening sockets for the addresses of `config` not bound yet: [worker] (address, fd).
  // False (nothing kept open) when one cannot be bound.
  bool bind_new_listeners(const config::Config& config, ListenerFds* fds);
  // The shared state for `config`, taking over what is unchanged from the current state.
  std::vector<std::unique_ptr<ClusterRuntime>> build_clusters(
      const std::shared_ptr<const config::Config>& config);
  std::vector<std::vector<std::shared_ptr<RouteState>>> build_routes(
      const std::shared_ptr<const config::Config>& config);
  // Sets the limits of `config` and returns the listeners' (index as config.listeners).
  std::vector<std::shared_ptr<ConnectionLimit>> apply_connection_limits(
      const config::Config& config);
  // What one worker needs to run the config in force as generation_: `stats` its counters,
  // `fds` its listening sockets not handed to it yet.
  GenerationSpec generation_spec(const std::vector<std::shared_ptr<ConnectionLimit>>& limits,
                                 std::shared_ptr<WorkerStats> stats,
                                 std::vector<std::pair<std::string, int>> fds) const;
  // Runs `fn` on the main thread once every worker has run what was posted to it before.
  void after_workers_applied(std::function<void()> fn);
  // Once every worker runs `generation`: counts the reload, logs it, tells systemd, runs `done`.
  void on_reload_applied(const std::string& trigger, const std::string& path, uint64_t generation,
                         const std::function<void()>& done);
  void start_config_watch();
  // Certificate rotation: watches the directories of every TLS file (inotify, which sees a
  // Kubernetes Secret's ..data symlink swap) and polls them every 10 s as well; a change
  // re-reads them a moment later (TlsContexts::rotate). Called again after each reload.
  void watch_tls_files();
  void rotate_certificates(const char* trigger);
  void stop_tls_watch();

  // --- Lifecycle (lifecycle.cpp) ---
  // SIGTERM and SIGINT drain, SIGUSR1 reopens the access log, SIGHUP reloads.
  void install_signal_handlers();
  void init_drain_timers();
  // Stops taking traffic: /ready 503 at once, listeners close after drain_delay, in-flight
  // requests finish. `exit`: end the process once drained (signals); else keep running with the
  // admin listener up (POST /drain).
  void begin_drain(const char* why, bool exit = true);
  // drain_delay is over (or POST /shutdown): the workers stop accepting and finish what is in
  // flight, on inbound listeners only while outbound ones still carry the app's calls (exiting,
  // with outbound listeners, before POST /shutdown); drain_timeout starts.
  void stop_accepting();
  bool has_outbound_listeners() const;
  void on_worker_drained();
  void finish();
  // The worker loop watchdog (watchdog.h) for /healthz and systemd, closed at finish.
  void start_watchdog();
  void stop_watchdog();
  // systemd (sd_notify.h): READY=1 once serving, STOPPING=1 when the drain begins.
  void start_systemd_notify();
  void notify_stopping(const char* why);
  // systemd notifications around a configuration reload (main thread): notify_reloading() when
  // the reload starts (RELOADING=1 with MONOTONIC_USEC), notify_reloaded() when it is over,
  // applied or rejected (READY=1 with `status`). No-ops without NOTIFY_SOCKET.
  void notify_reloading();
  void notify_reloaded(std::string_view status);

  // What set the number of workers: "config", or a CpuSource (proxy/cpus.h) when it was left out.
  // Before config_, which is initialized with it.
  std::string workers_from_;
  std::shared_ptr<const config::Config> config_;
  uv_loop_t loop_;
  TaskQueue tasks_;
  uv_signal_t sigterm_, sigint_;
  uv_signal_t sigusr1_;                    // reopens the access log
  std::unique_ptr<AccessLog> access_log_;  // null when off; outlives the workers
  uv_timer_t drain_delay_timer_, drain_timeout_timer_;
  AdminApi admin_api_{*this};
  AdminServer admin_;   // answers with admin_api_
  AdminServer probes_;  // answers with admin_api_ too; listening only with config_->probes
  filters::MonotonicClock clock_;
  std::vector<std::unique_ptr<ClusterRuntime>> clusters_;  // index as config_->clusters
  // Clusters a reload removed or changed: stopped, kept until exit (their callbacks may run).
  std::vector<std::unique_ptr<ClusterRuntime>> retired_clusters_;
  std::vector<std::vector<std::shared_ptr<RouteState>>> routes_;  // [listener][route]
  TlsContexts tls_;  // the TLS contexts of the config in force
  // Open client connections against max_connections: the process's, and each listener's by
  // name (kept across reloads, so connections opened before one still count).
  std::shared_ptr<ConnectionLimit> process_limit_ = std::make_shared<ConnectionLimit>();
  std::map<std::string, std::shared_ptr<ConnectionLimit>, std::less<>> listener_limits_;
  std::vector<std::shared_ptr<WorkerStats>> stats_;  // [worker], shaped as config_
  std::vector<std::string> bound_;                   // listener_key()s listening now
  std::vector<std::unique_ptr<Worker>> workers_;
  uint64_t generation_ = 1;          // the newest config handed to the workers
  uint64_t applied_generation_ = 1;  // the newest every worker runs
  uint64_t reloads_ok_ = 0, reloads_failed_ = 0;
  double last_reload_success_s_ = 0;  // since the epoch; the start counts as one
  uv_fs_poll_t config_watch_;         // watch_config
  bool watching_ = false;
  std::vector<uv_fs_event_t*> tls_dir_watches_;  // one per directory holding a TLS file
  std::vector<std::string> tls_dirs_;            // those directories, "DIR\0RESOLVED"
  uv_timer_t tls_poll_timer_;                    // every 10 s
  uv_timer_t tls_settle_timer_;                  // a moment after a file event
  uv_timer_t tls_retry_timer_;                   // when a refused certificate becomes valid
  bool tls_timers_ = false;
  uv_signal_t sighup_;
  size_t workers_drained_ = 0;
  bool draining_ = false;
  bool shutdown_ = false;  // POST /shutdown: the app is gone, drain everything now and exit
  unsigned signals_ = 0;   // SIGTERM and SIGINT received: a second one stops at once
  bool drain_timed_out_ = false;  // drain_timeout passed while draining without exiting
  bool serving_ = false;  // every worker has run its first config
  bool exit_after_drain_ = true;  // false after POST /drain: keep running once drained
  bool drained_ = false;
  bool finished_ = false;
  SystemdNotifier notifier_ = SystemdNotifier::from_environment();
  std::unique_ptr<LoopWatchdog> watchdog_;  // uses notifier_
};

}  // namespace bulwark
