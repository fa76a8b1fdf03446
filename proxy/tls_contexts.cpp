#include "proxy/tls_contexts.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace bulwark {

bool TlsContexts::prepare(const config::Config& config, std::vector<std::string>* errors) {
  Built built;
  bool ok = true;
  for (const config::ListenerConfig& l : config.listeners) {
    built.listener_names.push_back(l.name);
    if (!l.tls) {
      built.listeners.push_back(nullptr);
      built.listener_stats.push_back(nullptr);
      built.listener_prints.emplace_back();
      continue;
    }
    auto it = listeners_.find(l.name);
    std::shared_ptr<TlsStats> stats =
        it != listeners_.end() ? it->second.stats : std::make_shared<TlsStats>();
    std::shared_ptr<TicketKeys>& keys = ticket_keys_[l.name];
    if (keys == nullptr) keys = std::make_shared<TicketKeys>();
    std::string error;
    built.listener_stats.push_back(stats);
    built.listener_prints.push_back(file_fingerprint(tls_files(*l.tls)));  // before reading
    auto c = TlsServerContext::build(*l.tls, l.name, stats, keys, &error);
    if (c == nullptr) {
      stats->reload_errors.fetch_add(1, std::memory_order_relaxed);
      errors->push_back(error);
      ok = false;
    }
    built.listeners.push_back(std::move(c));
  }
  for (const config::ClusterConfig& cc : config.clusters) {
    built.cluster_names.push_back(cc.name);
    if (!cc.tls) {
      built.clusters.push_back(nullptr);
      built.cluster_stats.push_back(nullptr);
      built.cluster_prints.emplace_back();
      continue;
    }
    auto it = clusters_.find(cc.name);
    std::shared_ptr<TlsStats> stats =
        it != clusters_.end() ? it->second.stats : std::make_shared<TlsStats>();
    std::string error;
    built.cluster_stats.push_back(stats);
    built.cluster_prints.push_back(file_fingerprint(tls_files(*cc.tls)));
    auto c = TlsClientContext::build(*cc.tls, cc.name, stats, &error);
    if (c == nullptr) {
      stats->reload_errors.fetch_add(1, std::memory_order_relaxed);
      errors->push_back(error);
      ok = false;
    }
    built.clusters.push_back(std::move(c));
  }
  if (ok) built_ = std::move(built);
  return ok;
}

void TlsContexts::commit() {
  std::map<std::string, Entry<TlsServerSlot>> listeners;
  std::map<std::string, Entry<TlsClientSlot>> clusters;
  listener_slots_.clear();
  cluster_slots_.clear();
  for (size_t i = 0; i < built_.listeners.size(); ++i) {
    auto& c = built_.listeners[i];
    if (c == nullptr) {
      listener_slots_.push_back(nullptr);
      continue;
    }
    const std::string& name = built_.listener_names[i];
    auto it = listeners_.find(name);
    Entry<TlsServerSlot> e;
    if (it != listeners_.end()) {
      e = it->second;
      e.slot->set(c);
    } else {
      e.slot = std::make_shared<TlsServerSlot>(c);
      e.stats = built_.listener_stats[i];
    }
    e.fingerprint = built_.listener_prints[i];
    e.retry_at_s = 0;
    listener_slots_.push_back(e.slot);
    listeners[name] = e;
  }
  for (size_t i = 0; i < built_.clusters.size(); ++i) {
    auto& c = built_.clusters[i];
    if (c == nullptr) {
      cluster_slots_.push_back(nullptr);
      continue;
    }
    const std::string& name = built_.cluster_names[i];
    auto it = clusters_.find(name);
    Entry<TlsClientSlot> e;
    if (it != clusters_.end()) {
      e = it->second;
      e.slot->set(c);
    } else {
      e.slot = std::make_shared<TlsClientSlot>(c);
      e.stats = built_.cluster_stats[i];
    }
    e.fingerprint = built_.cluster_prints[i];
    e.retry_at_s = 0;
    cluster_slots_.push_back(e.slot);
    clusters[name] = e;
  }
  // Listeners and clusters gone from the config lose their slots and counters; their keys too.
  for (auto it = ticket_keys_.begin(); it != ticket_keys_.end();) {
    it = listeners.count(it->first) != 0 ? std::next(it) : ticket_keys_.erase(it);
  }
  listeners_ = std::move(listeners);
  clusters_ = std::move(clusters);
  built_ = Built();
}

std::shared_ptr<TlsServerSlot> TlsContexts::listener(size_t i) const {
  return i < listener_slots_.size() ? listener_slots_[i] : nullptr;
}

std::shared_ptr<TlsClientSlot> TlsContexts::cluster(size_t i) const {
  return i < cluster_slots_.size() ? cluster_slots_[i] : nullptr;
}

std::vector<TlsContexts::View> TlsContexts::views() const {
  std::vector<View> out;
  for (const auto& [name, e] : listeners_) {
    out.push_back({"listener", name, e.stats, e.slot->get()->certificates()});
  }
  for (const auto& [name, e] : clusters_) {
    out.push_back({"cluster", name, e.stats, e.slot->get()->certificates()});
  }
  return out;
}

namespace {

// Whether an entry's files are to be read again: they changed since its context was built, or
// they were refused only for a certificate that has become valid since.
template <class Slot>
bool due(TlsContexts::Entry<Slot>& e, const std::string& print, int64_t now_s) {
  if (print != e.fingerprint) return true;
  return e.retry_at_s != 0 && now_s >= e.retry_at_s;
}

// After an attempt: files are tried once per change (a bad file is not re-read every poll),
// unless only time stands in their way.
template <class Slot, class Context>
bool settle(TlsContexts::Entry<Slot>& e, std::string print, std::shared_ptr<const Context> c,
            int64_t valid_from, int64_t now_s) {
  e.fingerprint = std::move(print);
  e.retry_at_s = c == nullptr && valid_from > now_s ? valid_from : 0;
  if (c == nullptr) {
    e.stats->reload_errors.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  e.slot->set(std::move(c));
  return true;
}

}  // namespace

size_t TlsContexts::rotate(std::vector<std::string>* errors) {
  const int64_t now_s = static_cast<int64_t>(time(nullptr));
  size_t replaced = 0;
  for (auto& [name, e] : listeners_) {
    std::shared_ptr<const TlsServerContext> old = e.slot->get();
    std::string print = file_fingerprint(tls_files(old->config()));
    if (!due(e, print, now_s)) continue;
    std::string error;
    int64_t valid_from = 0;
    auto c = TlsServerContext::build(old->config(), name, e.stats, ticket_keys_[name], &error,
                                     &valid_from);
    if (!settle(e, std::move(print), std::move(c), valid_from, now_s)) {
      errors->push_back("listener " + name + ": " + error);
      continue;
    }
    ++replaced;
  }
  for (auto& [name, e] : clusters_) {
    std::shared_ptr<const TlsClientContext> old = e.slot->get();
    std::string print = file_fingerprint(tls_files(old->config()));
    if (!due(e, print, now_s)) continue;
    std::string error;
    int64_t valid_from = 0;
    auto c = TlsClientContext::build(old->config(), name, e.stats, &error, &valid_from);
    if (!settle(e, std::move(print), std::move(c), valid_from, now_s)) {
      errors->push_back("cluster " + name + ": " + error);
      continue;
    }
    ++replaced;
  }
  return replaced;
}

int64_t TlsContexts::next_retry_s() const {
  int64_t next = 0;
  auto consider = [&next](int64_t at) {
    if (at != 0 && (next == 0 || at < next)) next = at;
  };
  for (const auto& [name, e] : listeners_) consider(e.retry_at_s);
  for (const auto& [name, e] : clusters_) consider(e.retry_at_s);
  return next;
}

std::vector<std::string> TlsContexts::files() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : listeners_) {
    for (std::string& f : tls_files(e.slot->get()->config())) out.push_back(std::move(f));
  }
  for (const auto& [name, e] : clusters_) {
    for (std::string& f : tls_files(e.slot->get()->config())) out.push_back(std::move(f));
  }
  return out;
}

std::string file_fingerprint(const std::vector<std::string>& paths) {
  std::string out;
  for (const std::string& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
      out += p + ":error " + std::to_string(errno) + "\n";
      continue;
    }
    out += p + ":" + std::to_string(st.st_dev) + "," + std::to_string(st.st_ino) + "," +
           std::to_string(st.st_size) + "," + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec) + "," + std::to_string(st.st_ctim.tv_sec) + "." +
           std::to_string(st.st_ctim.tv_nsec) + "\n";
  }
  return out;
}

std::vector<std::string> tls_files(const config::ListenerTlsConfig& c) {
  std::vector<std::string> out;
  for (const auto& cert : c.certificates) {
    out.push_back(cert.cert);
    out.push_back(cert.key);
  }
  if (!c.client_ca.empty()) out.push_back(c.client_ca);
  return out;
}

std::vector<std::string> tls_files(const config::ClusterTlsConfig& c) {
  std::vector<std::string> out;
  if (!c.ca.empty()) out.push_back(c.ca);
  if (!c.cert.empty()) {
    out.push_back(c.cert);
    out.push_back(c.key);
  }
  return out;
}

bool check_tls(const config::Config& config, std::vector<std::string>* errors,
               std::vector<std::string>* warnings) {
  TlsContexts contexts;
  if (!contexts.prepare(config, errors)) return false;
  contexts.commit();
  const int64_t soon = static_cast<int64_t>(time(nullptr)) + 30 * 86400;
  for (const TlsContexts::View& v : contexts.views()) {
    for (const CertificateFacts& c : v.certificates) {
      if (c.not_after < soon) {
        const int64_t days = (c.not_after - static_cast<int64_t>(time(nullptr))) / 86400;
        warnings->push_back(std::string(v.side) + " " + v.name + ": " +
                            (c.ca ? "the last certificate of CA file " : "certificate ") + c.path +
                            " expires in " + std::to_string(days) + " days");
      }
    }
  }
  return true;
}

}  // namespace bulwark
