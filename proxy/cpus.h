#pragma once
// How many CPUs this process may use: the default number of workers (`workers` left out).
//
// A container or a systemd unit rarely gets the whole node. The kernel says what it may use in
// two ways, and the smaller one decides:
// - the sched affinity mask (taskset, cpuset, Kubernetes' static CPU manager): whole CPUs;
// - a CFS bandwidth quota (Kubernetes' CPU limit, systemd's CPUQuota=): run time per period,
//   in cgroup v2's cpu.max ("QUOTA PERIOD", or "max") or cgroup v1's cpu.cfs_quota_us and
//   cpu.cfs_period_us (-1: none), in the process's cgroup or any of its ancestors. A quota of
//   1.5 CPUs gives 2 workers: rounded up, so that the quota, not a missing worker, is the limit.
//
// The parsing is pure (file contents in, a number out) so that a unit test can feed it every
// layout; read_usable_cpus() reads the real files.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bulwark {

enum class CpuSource { kAffinity, kCgroupV2Quota, kCgroupV1Quota };
// "affinity", "cgroup v2 quota", "cgroup v1 quota": the started log line's workers_from.
const char* to_string(CpuSource source);

struct UsableCpus {
  uint32_t count = 1;  // at least 1
  CpuSource source = CpuSource::kAffinity;
};

// A cgroup directory whose CPU quota applies to this process: its own, or an ancestor's.
struct CgroupCpuDir {
  std::string path;  // e.g. /sys/fs/cgroup/kubepods.slice/...
  bool v2 = true;    // cpu.max (v2) or cpu.cfs_quota_us and cpu.cfs_period_us (v1)
};

// The process's cgroup directories that may hold a CPU quota, the process's own first, then each
// ancestor up to the mount's root, for the v2 hierarchy and the v1 cpu controller, from the
// contents of /proc/self/cgroup and /proc/self/mountinfo. A hierarchy that is not mounted, or whose
// mount does not contain the process's cgroup (another cgroup namespace), gives none.
std::vector<CgroupCpuDir> cgroup_cpu_dirs(std::string_view proc_self_cgroup,
                                          std::string_view mountinfo);

// The quota files of one directory above; nullopt: the file could not be read.
struct CgroupCpuQuota {
  bool v2 = true;
  std::optional<std::string> cpu_max;                // v2
  std::optional<std::string> cfs_quota, cfs_period;  // v1
};

// The CPUs of the affinity mask, capped by the smallest quota (rounded up, at least 1). A missing
// file, "max", -1 or text that is not a quota sets no limit. Affinity wins a tie.
UsableCpus usable_cpus(uint32_t affinity_cpus, const std::vector<CgroupCpuQuota>& quotas);

// The same from the running process: sched_getaffinity, /proc/self/cgroup, /proc/self/mountinfo
// and the quota files. Small reads of /proc and /sys: call at start or reload, not on a worker.
UsableCpus read_usable_cpus();

}  // namespace bulwark
