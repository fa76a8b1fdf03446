#pragma once
// The process's own resource use, read from /proc at scrape time (main thread, never on a worker
// loop) for the standard process_* metrics.

#include <cstdint>

namespace bulwark {

struct ProcessStats {
  double cpu_seconds = 0;         // user + system
  double start_time_seconds = 0;  // since the Unix epoch
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;
  bool ok = false;  // false when /proc could not be read
};

ProcessStats read_process_stats();

}  // namespace bulwark
