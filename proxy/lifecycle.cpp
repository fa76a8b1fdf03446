// Server: the process's lifecycle (server.h): signals, the graceful drain, the end of the
// process, and what systemd is told along the way.

#include <algorithm>
#include <csignal>

#include "proxy/log.h"
#include "proxy/server.h"

namespace bulwark {

void Server::install_signal_handlers() {
  uv_signal_init(&loop_, &sigterm_);
  uv_signal_init(&loop_, &sigint_);
  sigterm_.data = sigint_.data = this;
  auto on_signal = [](uv_signal_t* s, int signum) {
    auto* self = static_cast<Server*>(s->data);
    ++self->signals_;
    self->begin_drain(signum == SIGTERM ? "SIGTERM" : "SIGINT");
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
  uv_signal_init(&loop_, &sighup_);
  sighup_.data = this;
  uv_signal_start(
      &sighup_,
      [](uv_signal_t* s, int) {
        std::string message;
        static_cast<Server*>(s->data)->reload("SIGHUP", &message);
      },
      SIGHUP);
}

void Server::init_drain_timers() {
  uv_timer_init(&loop_, &drain_delay_timer_);
  uv_timer_init(&loop_, &drain_timeout_timer_);
  drain_delay_timer_.data = drain_timeout_timer_.data = this;
}

void Server::begin_drain(const char* why, bool exit) {
  if (draining_) {
    if (exit && !exit_after_drain_) {
      // SIGTERM after POST /drain: the drain goes on, and now ends the process (at once when
      // drain_timeout has passed already).
      exit_after_drain_ = true;
      notify_stopping(why);
      log::info("exiting once drained").str("signal", why);
      if (drained_ || drain_timed_out_) finish();
      return;
    }
    if (!exit) return;  // POST /drain again
    if (signals_ < 2) {
      // The first signal, after POST /shutdown (the app is done, then the kubelet stops the
      // pod): the drain under way goes on.
      log::info("signal during the shutdown: the drain goes on").str("signal", why);
      return;
    }
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
      [](uv_timer_t* t) { static_cast<Server*>(t->data)->stop_accepting(); },
      static_cast<uint64_t>(config_->drain_delay.count()), 0);
}

bool Server::has_outbound_listeners() const {
  return std::any_of(config_->listeners.begin(), config_->listeners.end(), [](const auto& l) {
    return l.direction == config::ListenerDirection::kOutbound;
  });
}

void Server::stop_accepting() {
  uv_timer_stop(&drain_delay_timer_);
  // Leaving the process, outbound listeners keep carrying the app's calls while it finishes:
  // until POST /shutdown says the app is gone, or drain_timeout.
  const bool everything = shutdown_ || !exit_after_drain_ || !has_outbound_listeners();
  if (everything) {
    log::info("closing listeners; finishing in-flight requests");
  } else {
    log::info(
        "closing inbound listeners; outbound listeners serve the app until POST /shutdown or "
        "drain_timeout");
  }
  for (auto& w : workers_) w->begin_drain(everything);
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&drain_timeout_timer_))) return;
  uv_timer_start(
      &drain_timeout_timer_,
      [](uv_timer_t* t) {
        auto* server = static_cast<Server*>(t->data);
        if (!server->exit_after_drain_) {
          server->drain_timed_out_ = true;
          log::warn("drain timeout: connections still open are left to finish; SIGTERM stops");
          return;
        }
        log::warn("drain timeout: closing remaining connections");
        server->finish();
      },
      static_cast<uint64_t>(config_->drain_timeout.count()), 0);
}

bool Server::shutdown() {
  if (finished_) return false;
  const bool first = !shutdown_;
  shutdown_ = true;
  if (!draining_) {
    begin_drain("POST /shutdown");
  } else if (!exit_after_drain_) {
    exit_after_drain_ = true;  // after POST /drain: now the process ends once drained
    notify_stopping("POST /shutdown");
  }
  if (first) log::info("shutdown asked: the app is done; draining every listener now");
  if (drained_ || drain_timed_out_) {
    finish();
  } else {
    stop_accepting();  // at once: no drain_delay, outbound listeners too
  }
  return first;
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
  stop_tls_watch();
  uv_close(reinterpret_cast<uv_handle_t*>(&sighup_), nullptr);
  admin_.close();
  probes_.close();
  uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigusr1_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_delay_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timeout_timer_), nullptr);
  stop_watchdog();
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

void Server::start_watchdog() {
  watchdog_ = std::make_unique<LoopWatchdog>(
      &loop_, notifier_, workers_.size(),
      [this](size_t w, std::function<void()> fn) { workers_[w]->post(std::move(fn)); },
      config_->watchdog);
  watchdog_->start();
}

void Server::start_systemd_notify() {
  if (!notifier_.enabled()) return;
  std::string status = "serving: " + std::to_string(workers_.size()) + " workers, listeners";
  for (const auto& l : config_->listeners) status += " " + l.name;
  notifier_.ready(status);
}

void Server::notify_stopping(const char* why) {
  notifier_.stopping(std::string("draining after ") + why);
  // systemd stops watching once the service is stopping; the drain has its own timeouts. The
  // heartbeats go on: /healthz still tells a stuck loop.
  if (watchdog_) watchdog_->stop_pings();
}

void Server::stop_watchdog() {
  if (watchdog_) watchdog_->close();
}

void Server::notify_reloading() { notifier_.reloading("reloading the configuration"); }

void Server::notify_reloaded(std::string_view status) { notifier_.ready(status); }

// --- end of systemd notifications ----------------------------------------------------------------

}  // namespace bulwark
