#pragma once
// The access log: one line per request, written without blocking a worker loop.
//
// Each worker formats its lines into a buffer of its own (no lock, no allocation per line) and
// hands the whole buffer to the writer thread when it holds 32 KiB or 50 ms after its first line
// (Worker::flush_access_log). Handing over takes a mutex for a vector push; only the writer
// thread calls write(2). If the file cannot keep up and 16 MiB wait, further buffers are dropped
// and counted (bulwark_access_log_dropped_lines_total), so a slow disk never stalls traffic.
// reopen() (SIGUSR1) makes the writer reopen the path before its next write, for log rotation.
//
// "-" and "/dev/stdout" write to the standard output bulwark inherited, "/dev/stderr" to its
// standard error, whatever they are: opening /dev/stdout fails (ENXIO) when it is a socket, as
// under journald and some container runtimes. Reopening them does nothing.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"

namespace bulwark {

// What one access log line says. Views into the exchange's own storage; empty = none.
struct AccessRecord {
  int64_t start_unix_us = 0;  // when the request head was complete
  std::string_view request_id;
  std::string_view listener, route, cluster;
  std::string_view request;  // "METHOD TARGET" as received
  bool http10 = false;
  int status = 0;            // 0: no response was sent
  uint64_t duration_us = 0;  // request head to the end of the response (or of the exchange)
  int64_t upstream_us = -1;  // the last try's time to its response head; -1: none
  uint64_t bytes_in = 0, bytes_out = 0;  // request and response body bytes
  std::string_view upstream;             // the last try's endpoint
  std::string_view failed_tries;         // "ENDPOINT OUTCOME" of each retried try, joined by ", "
  std::string_view last_try;             // "ENDPOINT OUTCOME" of the last try
  uint32_t attempts = 0;                 // tries made
  std::string_view reason;               // the x-bulwark-reason token of a local reply
  std::string_view flags;                // response flags, joined by ","
  // The client's TLS session; tls_version empty: the request came in plaintext.
  std::string_view tls_version, tls_cipher, tls_sni, tls_peer;
  bool tls_resumed = false;
};

// The inherited descriptor `path` names: 1 for "-" and /dev/stdout, 2 for /dev/stderr; -1 for a
// file to open.
int inherited_log_fd(const std::string& path);

// Appends one line (with its newline) in the given format.
void format_access_line(const AccessRecord& r, config::AccessLogFormat format, std::string& out);

class AccessLog {
 public:
  // Opens the file (appending; created 0644 if missing), or duplicates the inherited descriptor,
  // and starts the writer thread. Null with *error set when the file cannot be opened.
  static std::unique_ptr<AccessLog> open(const config::AccessLogConfig& config, std::string* error);
  ~AccessLog();  // writes what was handed over, then stops the writer
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  const config::AccessLogConfig& config() const { return config_; }
  // Hands a buffer of whole lines to the writer. Any thread; never waits for I/O.
  void submit(std::string lines);
  // Any thread: the writer reopens the path before its next write (not stdout or stderr).
  void reopen();
  uint64_t dropped_lines() const { return dropped_lines_.load(std::memory_order_relaxed); }

  static constexpr size_t kFlushBytes = 32 * 1024;
  static constexpr uint64_t kFlushDelayMs = 50;
  static constexpr size_t kMaxQueuedBytes = 16 * 1024 * 1024;

 private:
  AccessLog(const config::AccessLogConfig& config, int fd);
  void run();
  void write_all(const std::string& lines);

  const config::AccessLogConfig config_;
  int fd_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::string> queue_;
  size_t queued_bytes_ = 0;
  bool reopen_ = false;
  size_t reopen_at_ = 0;  // lines queued before the reopen go to the old file
  bool stop_ = false;
  std::atomic<uint64_t> dropped_lines_{0};
  std::thread writer_;
};

}  // namespace bulwark
