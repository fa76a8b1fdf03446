#include "proxy/cpus.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>
#include <thread>

namespace bulwark {

namespace {

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool has_token(std::string_view list, std::string_view token) {
  for (std::string_view t : split(list, ','))
    if (t == token) return true;
  return false;
}

// A positive decimal integer and nothing else.
std::optional<uint64_t> positive(std::string_view text) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n == 0) return std::nullopt;
  return n;
}

// quota/period rounded up; nullopt when either is not a positive number (-1, "max", garbage).
std::optional<uint64_t> quota_cpus(std::string_view quota, std::string_view period) {
  auto q = positive(trim(quota));
  auto p = positive(trim(period));
  if (!q || !p) return std::nullopt;
  return std::max<uint64_t>(1, (*q + *p - 1) / *p);
}

// The directory of `cgroup` (a path in the hierarchy) under a mount of it at `mount_point` whose
// root is `mount_root`, then each ancestor up to the mount point. None when the mount does not
// contain the cgroup, or the path climbs out of the namespace ("/..").
void add_dirs(std::string_view cgroup, std::string_view mount_root, std::string_view mount_point,
              bool v2, std::vector<CgroupCpuDir>& dirs) {
  if (cgroup.empty() || cgroup.front() != '/' || cgroup.find("/..") != std::string_view::npos)
    return;
  if (mount_root != "/") {
    const bool inside = cgroup.substr(0, mount_root.size()) == mount_root &&
                        (cgroup.size() == mount_root.size() || cgroup[mount_root.size()] == '/');
    if (!inside) return;
    cgroup.remove_prefix(mount_root.size());
  }
  std::string dir = std::string(mount_point) + std::string(cgroup);
  while (dir.size() > mount_point.size() && dir.back() == '/') dir.pop_back();
  while (true) {
    dirs.push_back({dir, v2});
    if (dir.size() <= mount_point.size()) return;
    dir.resize(dir.rfind('/'));
    if (dir.size() < mount_point.size()) return;
  }
}

std::optional<std::string> read_small_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

uint32_t affinity_cpus() {
  // The mask may be wider than cpu_set_t's 1024 CPUs: grow it until the kernel takes it.
  for (int cpus = 1024; cpus <= (1 << 16); cpus *= 2) {
    cpu_set_t* set = CPU_ALLOC(cpus);
    if (set == nullptr) break;
    const size_t size = CPU_ALLOC_SIZE(cpus);
    const int rc = sched_getaffinity(0, size, set);
    const int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    const int error = errno;
    CPU_FREE(set);
    if (rc == 0) return static_cast<uint32_t>(std::max(1, count));
    if (error != EINVAL) break;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

const char* to_string(CpuSource source) {
  switch (source) {
    case CpuSource::kAffinity:
      return "affinity";
    case CpuSource::kCgroupV2Quota:
      return "cgroup v2 quota";
    case CpuSource::kCgroupV1Quota:
      return "cgroup v1 quota";
  }
  return "affinity";
}

std::vector<CgroupCpuDir> cgroup_cpu_dirs(std::string_view proc_self_cgroup,
                                          std::string_view mountinfo) {
  // /proc/self/cgroup: "0::/path" for v2, "N:cpu,cpuacct:/path" for a v1 hierarchy.
  std::optional<std::string_view> v2_cgroup, v1_cgroup;
  for (std::string_view line : split(proc_self_cgroup, '\n')) {
    const size_t first = line.find(':');
    const size_t second = line.find(':', first == std::string_view::npos ? line.size() : first + 1);
    if (second == std::string_view::npos) continue;
    const std::string_view id = line.substr(0, first);
    const std::string_view controllers = line.substr(first + 1, second - first - 1);
    const std::string_view path = line.substr(second + 1);
    if (id == "0" && controllers.empty()) {
      v2_cgroup = path;
    } else if (has_token(controllers, "cpu")) {
      v1_cgroup = path;
    }
  }
  // mountinfo: "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER".
  std::vector<CgroupCpuDir> dirs;
  bool v2_done = false, v1_done = false;
  for (std::string_view line : split(mountinfo, '\n')) {
    const size_t dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    const std::vector<std::string_view> fields = split(line.substr(0, dash), ' ');
    const std::vector<std::string_view> tail = split(line.substr(dash + 3), ' ');
    if (fields.size() < 5 || tail.size() < 3) continue;
    if (tail[0] == "cgroup2" && v2_cgroup && !v2_done) {
      add_dirs(*v2_cgroup, fields[3], fields[4], true, dirs);
      v2_done = true;
    } else if (tail[0] == "cgroup" && v1_cgroup && !v1_done && has_token(tail[2], "cpu")) {
      add_dirs(*v1_cgroup, fields[3], fields[4], false, dirs);
      v1_done = true;
    }
  }
  return dirs;
}

UsableCpus usable_cpus(uint32_t affinity_cpus, const std::vector<CgroupCpuQuota>& quotas) {
  UsableCpus best{std::max(1u, affinity_cpus), CpuSource::kAffinity};
  for (const CgroupCpuQuota& q : quotas) {
    std::optional<uint64_t> cpus;
    if (q.v2 && q.cpu_max) {
      const std::vector<std::string_view> parts = split(trim(*q.cpu_max), ' ');
      if (parts.size() == 2) cpus = quota_cpus(parts[0], parts[1]);
    } else if (!q.v2 && q.cfs_quota && q.cfs_period) {
      cpus = quota_cpus(*q.cfs_quota, *q.cfs_period);
    }
    if (cpus && *cpus < best.count) {
      best = {static_cast<uint32_t>(*cpus),
              q.v2 ? CpuSource::kCgroupV2Quota : CpuSource::kCgroupV1Quota};
    }
  }
  return best;
}

UsableCpus read_usable_cpus() {
  std::vector<CgroupCpuQuota> quotas;
  const auto cgroup = read_small_file("/proc/self/cgroup");
  const auto mountinfo = read_small_file("/proc/self/mountinfo");
  if (cgroup && mountinfo) {
    for (const CgroupCpuDir& dir : cgroup_cpu_dirs(*cgroup, *mountinfo)) {
      CgroupCpuQuota& q = quotas.emplace_back();
      q.v2 = dir.v2;
      if (dir.v2) {
        q.cpu_max = read_small_file(dir.path + "/cpu.max");
      } else {
        q.cfs_quota = read_small_file(dir.path + "/cpu.cfs_quota_us");
        q.cfs_period = read_small_file(dir.path + "/cpu.cfs_period_us");
      }
    }
  }
  return usable_cpus(affinity_cpus(), quotas);
}

}  // namespace bulwark
