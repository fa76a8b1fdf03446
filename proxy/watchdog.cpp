#include "proxy/watchdog.h"

#include <algorithm>
#include <string>
#include <utility>

#include "proxy/log.h"

namespace bulwark {

// ---------------------------------------------------------------------------------------------
// WorkerHeartbeats

WorkerHeartbeats::WorkerHeartbeats(size_t workers)
    : answered_(new std::atomic<uint64_t>[workers]),
      posted_(workers, 0),
      posted_at_(workers, 0),
      missed_(workers, 0) {
  for (size_t w = 0; w < workers; ++w) answered_[w].store(0, std::memory_order_relaxed);
}

WorkerHeartbeats::Tick WorkerHeartbeats::tick(uint64_t now_ms) {
  Tick t;
  t.heartbeat = ++next_;
  for (size_t w = 0; w < posted_.size(); ++w) {
    if (answered_[w].load(std::memory_order_acquire) >= posted_[w]) {
      if (missed_[w] > 0) t.recovered.push_back({w, missed_[w]});
      missed_[w] = 0;
      posted_[w] = t.heartbeat;
      posted_at_[w] = now_ms;
      t.post_to.push_back(w);
    } else {
      t.all_answered = false;
      if (missed_[w]++ == 0) t.newly_stalled.push_back(w);
    }
  }
  return t;
}

void WorkerHeartbeats::answer(size_t worker, uint64_t heartbeat) {
  answered_[worker].store(heartbeat, std::memory_order_release);
}

std::optional<WorkerHeartbeats::Stall> WorkerHeartbeats::longest_stall(uint64_t now_ms) const {
  std::optional<Stall> longest;
  for (size_t w = 0; w < posted_.size(); ++w) {
    if (answered_[w].load(std::memory_order_acquire) >= posted_[w]) continue;
    const uint64_t ms = now_ms > posted_at_[w] ? now_ms - posted_at_[w] : 0;
    if (!longest || ms > longest->ms) longest = Stall{w, ms};
  }
  return longest;
}

// ---------------------------------------------------------------------------------------------
// LoopWatchdog

LoopWatchdog::LoopWatchdog(uv_loop_t* loop, SystemdNotifier& notifier, size_t workers,
                           PostFn post, std::chrono::milliseconds healthz_limit)
    : loop_(loop),
      notifier_(notifier),
      post_(std::move(post)),
      heartbeats_(std::make_shared<WorkerHeartbeats>(workers)),
      healthz_limit_(healthz_limit) {
  using std::chrono::milliseconds;
  if (notifier.watchdog_timeout().count() > 0) {
    systemd_ = true;
    auto timeout = std::chrono::duration_cast<milliseconds>(notifier.watchdog_timeout());
    interval_ = std::max(milliseconds(1), timeout / 2);
  }
  if (healthz_limit.count() > 0) {
    milliseconds quarter = std::max(milliseconds(1), healthz_limit / 4);
    interval_ = interval_.count() > 0 ? std::min(interval_, quarter) : quarter;
  }
}

void LoopWatchdog::start() {
  if (interval_.count() == 0 || closed_ || initialized_) return;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  initialized_ = true;
  post_heartbeats(heartbeats_->tick(now_ms()));
  auto ms = static_cast<uint64_t>(interval_.count());
  uv_timer_start(&timer_, &LoopWatchdog::on_timer, ms, ms);
  auto line = log::info("worker loop watchdog on");
  line.num("tick_ms", interval_.count());
  if (healthz_limit_.count() > 0) line.num("healthz_limit_ms", healthz_limit_.count());
  if (systemd_) line.num("systemd_watchdog_usec", notifier_.watchdog_timeout().count());
}

void LoopWatchdog::stop_pings() { systemd_ = false; }

void LoopWatchdog::close() {
  if (!initialized_ || closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

std::string LoopWatchdog::stalled_reason() const {
  if (healthz_limit_.count() == 0 || !initialized_ || closed_) return {};
  auto stall = heartbeats_->longest_stall(uv_now(loop_));
  if (!stall || stall->ms < static_cast<uint64_t>(healthz_limit_.count())) return {};
  return "worker " + std::to_string(stall->worker) + " loop has not turned for " +
         std::to_string(stall->ms) + " ms (watchdog " + std::to_string(healthz_limit_.count()) +
         " ms)";
}

void LoopWatchdog::on_timer(uv_timer_t* timer) { static_cast<LoopWatchdog*>(timer->data)->tick(); }

void LoopWatchdog::tick() {
  WorkerHeartbeats::Tick t = heartbeats_->tick(now_ms());
  for (size_t w : t.newly_stalled) {
    log::warn(systemd_ ? "worker loop did not answer its heartbeat: withholding systemd watchdog "
                         "pings"
                       : "worker loop did not answer its heartbeat")
        .num("worker", static_cast<int64_t>(w))
        .num("interval_ms", interval_.count());
  }
  for (const auto& r : t.recovered) {
    log::info("worker loop answers again")
        .num("worker", static_cast<int64_t>(r.worker))
        .num("stalled_ms", static_cast<int64_t>(r.missed_ticks) * interval_.count());
  }
  stalled_ = stalled_ + t.newly_stalled.size() - t.recovered.size();
  if (systemd_) {
    if (!t.newly_stalled.empty()) {
      notifier_.status("worker " + std::to_string(t.newly_stalled.front()) +
                       " not answering: watchdog pings withheld");
    } else if (!t.recovered.empty() && stalled_ == 0) {
      notifier_.status(notifier_.ready_status());
    }
    if (t.all_answered) notifier_.watchdog();
  }
  post_heartbeats(t);
}

void LoopWatchdog::post_heartbeats(const WorkerHeartbeats::Tick& t) {
  for (size_t w : t.post_to) {
    post_(w, [hb = heartbeats_, w, n = t.heartbeat] { hb->answer(w, n); });
  }
}

}  // namespace bulwark
