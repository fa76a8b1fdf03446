#pragma once
// The TLS contexts of every listener and cluster of the config in force, kept by the main thread.
//
// Each listener or cluster with `tls` has a slot (TlsContextSlot) that workers take contexts
// from; a slot, its statistics and a listener's ticket keys are kept by name across reloads, so
// counters go on and tickets stay valid. prepare() builds every context a config needs (loading
// and checking the files) without touching the slots; commit() then publishes them. A config
// whose files cannot be used is refused as a whole, before anything changes.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/tls.h"

namespace bulwark {

class TlsContexts {
 public:
  // What one listener or cluster has.
  template <class Slot>
  struct Entry {
    std::shared_ptr<Slot> slot;
    std::shared_ptr<TlsStats> stats;
    std::string fingerprint;  // of its files when its context was built (file_fingerprint)
    // New files that failed only for a certificate not valid yet: when to try them again.
    int64_t retry_at_s = 0;
  };

  // Builds the contexts of `config`. False with `errors` (one per file that cannot be used,
  // each "FILE:LINE:COL: what") when any fails, counted in the reload_errors of the listener or
  // cluster it belongs to; nothing is published either way.
  bool prepare(const config::Config& config, std::vector<std::string>* errors);
  // Publishes what the last successful prepare() built.
  void commit();

  // Certificate rotation: re-reads the files of every listener and cluster whose files changed
  // since their context was built (a file replaced, rewritten, or a symlink pointing elsewhere,
  // as a Kubernetes Secret volume's ..data swap does). Each gets a new context that new
  // handshakes take; one whose new files cannot be used keeps its context, and the error (with
  // the path) goes into `errors` and its reload_errors counter; files refused for a certificate
  // not valid yet are tried again once it is. Returns the contexts replaced.
  size_t rotate(std::vector<std::string>* errors);
  // The earliest time (seconds since the epoch) rotate() has files to try again for a
  // certificate that was not valid yet; 0 when none.
  int64_t next_retry_s() const;
  // Every file the contexts in force were built from (to watch).
  std::vector<std::string> files() const;

  // The slot of listener / cluster i of the committed config (null: plain).
  std::shared_ptr<TlsServerSlot> listener(size_t i) const;
  std::shared_ptr<TlsClientSlot> cluster(size_t i) const;

  // Statistics by name, for metrics: side, name, stats, certificates in force.
  struct View {
    const char* side;  // "listener" | "cluster"
    std::string name;
    std::shared_ptr<TlsStats> stats;
    std::vector<CertificateFacts> certificates;
  };
  std::vector<View> views() const;

 private:
  struct Built {
    std::vector<std::shared_ptr<const TlsServerContext>> listeners;  // index as config
    std::vector<std::shared_ptr<const TlsClientContext>> clusters;
    std::vector<std::string> listener_names, cluster_names;
    std::vector<std::shared_ptr<TlsStats>> listener_stats, cluster_stats;
    std::vector<std::string> listener_prints, cluster_prints;
  };
  std::map<std::string, Entry<TlsServerSlot>> listeners_;  // by name, kept across reloads
  std::map<std::string, Entry<TlsClientSlot>> clusters_;
  std::map<std::string, std::shared_ptr<TicketKeys>> ticket_keys_;
  std::vector<std::shared_ptr<TlsServerSlot>> listener_slots_;  // index as the committed config
  std::vector<std::shared_ptr<TlsClientSlot>> cluster_slots_;
  Built built_;
};

// What identifies the current content of these files without reading them: device, inode, size,
// modification and change time of each (following symlinks; the change time moves with any
// write, even one that keeps the size and sets the old mtime back), or stat()'s error.
std::string file_fingerprint(const std::vector<std::string>& paths);
// The files a listener's or cluster's TLS settings name.
std::vector<std::string> tls_files(const config::ListenerTlsConfig& c);
std::vector<std::string> tls_files(const config::ClusterTlsConfig& c);

// --check: builds every TLS context of `config` (so every file is read and checked) and reports
// certificates (and configured CA files) that expire within 30 days as warnings. False when any
// context cannot be built.
bool check_tls(const config::Config& config, std::vector<std::string>* errors,
               std::vector<std::string>* warnings);

}  // namespace bulwark
