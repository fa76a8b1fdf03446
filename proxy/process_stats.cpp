#include "proxy/process_stats.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace bulwark {

namespace {

// The system's boot time (seconds since the epoch), from /proc/stat's btime.
double boot_time() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime" && in >> value) return value;
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

}  // namespace

ProcessStats read_process_stats() {
  ProcessStats s;
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (!std::getline(stat, line)) return s;
  // Fields after the command name, which is in parentheses and may hold spaces.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return s;
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  // fields[0] is field 3 (state); utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
  unsigned long long utime = 0, stime = 0, starttime = 0, vsize = 0;
  long long rss = 0;
  for (int i = 3; fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
    if (i == 22) starttime = std::stoull(field);
    if (i == 23) vsize = std::stoull(field);
    if (i == 24) {
      rss = std::stoll(field);
      break;
    }
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const long page = sysconf(_SC_PAGESIZE);
  s.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  s.start_time_seconds = boot_time() + static_cast<double>(starttime) / ticks;
  s.virtual_bytes = vsize;
  s.resident_bytes = rss > 0 ? static_cast<uint64_t>(rss) * static_cast<uint64_t>(page) : 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++s.open_fds;
    }
    closedir(d);
    if (s.open_fds > 0) --s.open_fds;  // the directory's own descriptor
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) s.max_fds = limit.rlim_cur;
  s.ok = true;
  return s;
}

}  // namespace bulwark
