// The default number of workers from the file contents the kernel shows a process: cgroup v2 and
// v1 layouts as Kubernetes, Docker and systemd make them, quotas, "max", missing files and odd
// values.

#include "proxy/cpus.h"

#include <doctest/doctest.h>
#include <sched.h>

#include <string>
#include <vector>

namespace bulwark {
namespace {

// A v2-only node (Debian 12, recent Kubernetes): the unified hierarchy at /sys/fs/cgroup.
constexpr const char* kV2Mountinfo =
    "22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw\n"
    "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";

// A hybrid node (cgroup v1 controllers, the unified hierarchy on the side, as on this CI machine).
constexpr const char* kV1Mountinfo =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

CgroupCpuQuota v2(std::optional<std::string> cpu_max) {
  CgroupCpuQuota q;
  q.v2 = true;
  q.cpu_max = std::move(cpu_max);
  return q;
}

CgroupCpuQuota v1(std::optional<std::string> quota, std::optional<std::string> period) {
  CgroupCpuQuota q;
  q.v2 = false;
  q.cfs_quota = std::move(quota);
  q.cfs_period = std::move(period);
  return q;
}

std::vector<std::string> paths(const std::vector<CgroupCpuDir>& dirs) {
  std::vector<std::string> out;
  for (const auto& d : dirs) out.push_back(d.path + (d.v2 ? " v2" : " v1"));
  return out;
}

}  // namespace

TEST_CASE("cgroup v2: the process's cgroup and each ancestor up to the mount") {
  auto dirs = cgroup_cpu_dirs("0::/kubepods.slice/pod1/cri-abc\n", kV2Mountinfo);
  CHECK(paths(dirs) == std::vector<std::string>{
                           "/sys/fs/cgroup/kubepods.slice/pod1/cri-abc v2",
                           "/sys/fs/cgroup/kubepods.slice/pod1 v2",
                           "/sys/fs/cgroup/kubepods.slice v2",
                           "/sys/fs/cgroup v2",
                       });
}

TEST_CASE("cgroup v2 in its own namespace: the container's cgroup is the mount's root") {
  auto dirs = cgroup_cpu_dirs("0::/\n", kV2Mountinfo);
  CHECK(paths(dirs) == std::vector<std::string>{"/sys/fs/cgroup v2"});
}

TEST_CASE("a cgroup mounted from below its root (a container without a cgroup namespace)") {
  const char* mountinfo = "30 22 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
  CHECK(paths(cgroup_cpu_dirs("0::/docker/abc\n", mountinfo)) ==
        std::vector<std::string>{"/sys/fs/cgroup v2"});
  CHECK(paths(cgroup_cpu_dirs("0::/docker/abc/inner\n", mountinfo)) ==
        std::vector<std::string>{"/sys/fs/cgroup/inner v2", "/sys/fs/cgroup v2"});
  // Not under the mount's root, or out of the namespace: no directory to read.
  CHECK(cgroup_cpu_dirs("0::/docker/abcdef\n", mountinfo).empty());
  CHECK(cgroup_cpu_dirs("0::/../../other\n", kV2Mountinfo).empty());
}

TEST_CASE("cgroup v1: the cpu controller's mount, and the unified hierarchy beside it") {
  const char* cgroup =
      "12:cpuset:/\n"
      "4:cpu,cpuacct:/docker/abc\n"
      "1:name=systemd:/docker/abc\n"
      "0::/docker/abc\n";
  CHECK(paths(cgroup_cpu_dirs(cgroup, kV1Mountinfo)) ==
        std::vector<std::string>{
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc v1",
            "/sys/fs/cgroup/cpu,cpuacct/docker v1",
            "/sys/fs/cgroup/cpu,cpuacct v1",
            "/sys/fs/cgroup/unified/docker/abc v2",
            "/sys/fs/cgroup/unified/docker v2",
            "/sys/fs/cgroup/unified v2",
        });
  // A controller named cpuacct or cpuset is not cpu.
  CHECK(paths(cgroup_cpu_dirs("3:cpuset:/a\n2:cpuacct:/a\n", kV1Mountinfo)).empty());
}

TEST_CASE("no cgroup files at all: affinity alone") {
  CHECK(cgroup_cpu_dirs("", "").empty());
  CHECK(cgroup_cpu_dirs("0::/a\n", "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n").empty());
  UsableCpus cpus = usable_cpus(8, {});
  CHECK(cpus.count == 8);
  CHECK(cpus.source == CpuSource::kAffinity);
  CHECK(usable_cpus(0, {}).count == 1);
}

TEST_CASE("cgroup v2 cpu.max: quota over period rounded up, at least 1") {
  struct Case {
    const char* cpu_max;
    uint32_t count;
  };
  const Case cases[] = {
      {"150000 100000\n", 2}, {"50000 100000\n", 1}, {"100000 100000\n", 1},
      {"200000 100000\n", 2}, {"400000 100000", 4},  {"1 1000000\n", 1},
  };
  for (const Case& c : cases) {
    CAPTURE(c.cpu_max);
    UsableCpus cpus = usable_cpus(8, {v2(c.cpu_max)});
    CHECK(cpus.count == c.count);
    CHECK(cpus.source == CpuSource::kCgroupV2Quota);
  }
}

TEST_CASE("cgroup v2 cpu.max that sets no limit") {
  for (const char* text : {"max 100000\n", "max\n", "", "0 100000\n", "100000 0\n", "-1 100000\n",
                           "1.5 1\n", "abc def\n", "100000 100000 7\n"}) {
    CAPTURE(text);
    UsableCpus cpus = usable_cpus(8, {v2(std::string(text))});
    CHECK(cpus.count == 8);
    CHECK(cpus.source == CpuSource::kAffinity);
  }
  CHECK(usable_cpus(8, {v2(std::nullopt)}).count == 8);  // the file is missing
}

TEST_CASE("cgroup v1 CFS quota") {
  UsableCpus cpus = usable_cpus(8, {v1("150000\n", "100000\n")});
  CHECK(cpus.count == 2);
  CHECK(cpus.source == CpuSource::kCgroupV1Quota);
  CHECK(usable_cpus(8, {v1("50000\n", "100000\n")}).count == 1);
  CHECK(usable_cpus(8, {v1("-1\n", "100000\n")}).count == 8);
  CHECK(usable_cpus(8, {v1("150000\n", std::nullopt)}).count == 8);
  CHECK(usable_cpus(8, {v1(std::nullopt, "100000\n")}).count == 8);
}

TEST_CASE("the smallest limit decides, and affinity wins a tie") {
  // An ancestor's quota (a systemd slice's CPUQuota=) caps a container without one of its own.
  UsableCpus cpus = usable_cpus(8, {v2("max 100000\n"), v2("300000 100000\n"), v2(std::nullopt)});
  CHECK(cpus.count == 3);
  CHECK(cpus.source == CpuSource::kCgroupV2Quota);
  // taskset -c 0 under a 2-CPU quota: affinity.
  cpus = usable_cpus(1, {v2("200000 100000\n")});
  CHECK(cpus.count == 1);
  CHECK(cpus.source == CpuSource::kAffinity);
  cpus = usable_cpus(2, {v1("200000\n", "100000\n")});
  CHECK(cpus.count == 2);
  CHECK(cpus.source == CpuSource::kAffinity);
  cpus = usable_cpus(4, {v1("300000\n", "100000\n"), v2("150000 100000\n")});
  CHECK(cpus.count == 2);
  CHECK(cpus.source == CpuSource::kCgroupV2Quota);
  CHECK(std::string(to_string(CpuSource::kCgroupV1Quota)) == "cgroup v1 quota");
}

TEST_CASE("read_usable_cpus on this machine: at least 1, at most the affinity mask") {
  UsableCpus cpus = read_usable_cpus();
  CHECK(cpus.count >= 1);
  cpu_set_t set;
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  CHECK(cpus.count <= static_cast<uint32_t>(CPU_COUNT(&set)));
}

}  // namespace bulwark
