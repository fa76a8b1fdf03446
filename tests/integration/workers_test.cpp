// `workers` left out: bulwark runs one worker per CPU it may use, and says at start what decided.
// The real binary under taskset (an affinity mask of one CPU) and, where the test may make one, in
// a cgroup of its own with a CPU quota of one CPU.

#include <doctest/doctest.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

// proxy_config() without its `workers` line.
std::string config_without_workers(const std::string& endpoint) {
  std::string yaml = proxy_config(endpoint);
  REQUIRE(yaml.rfind("workers: ", 0) == 0);
  return yaml.substr(yaml.find('\n') + 1);
}

// A shell script that runs `setup` (shell lines), then becomes bulwark run by `runner` (a command
// that takes a command, or nothing) with the script's arguments: a stand-in binary for
// BulwarkProcess.
std::string wrapper(const TempDir& dir, const std::string& setup, const std::string& runner) {
  const std::string path = dir.file("bulwark-wrapper.sh");
  write_file(path, "#!/bin/sh\nset -e\n" + setup + "exec " + runner + BULWARK_BINARY + " \"$@\"\n");
  REQUIRE(::chmod(path.c_str(), 0755) == 0);
  return path;
}

std::string started_line(const BulwarkProcess& bulwark) {
  for (const std::string& line : bulwark.logs())
    if (line.find("\"msg\":\"started\"") != std::string::npos) return line;
  return "";
}

int affinity_cpus() {
  cpu_set_t set;
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  return CPU_COUNT(&set);
}

// A CPU this test may run on (CPU 0 may not be one, in a cpuset).
int first_allowed_cpu() {
  cpu_set_t set;
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &set)) return cpu;
  FAIL("an empty affinity mask");
  return 0;
}

// A fresh cgroup with a quota of one CPU (100 ms of run time per 100 ms), removed when destroyed
// (after the processes in it have exited). empty() when this machine does not let the test make
// one; why() says what failed.
class OneCpuCgroup {
 public:
  OneCpuCgroup() {
    const std::string name = "bulwark-test-" + std::to_string(::getpid());
    // cgroup v2 where its cpu controller is enabled, else cgroup v1's cpu controller.
    std::ifstream mountinfo("/proc/self/mountinfo");
    std::string line, v2_mount, v1_mount;
    while (std::getline(mountinfo, line)) {
      std::istringstream fields(line);
      std::string id, parent, dev, root, mount_point, word;
      fields >> id >> parent >> dev >> root >> mount_point;
      while (fields >> word && word != "-") {
      }
      std::string fstype, source, options;
      fields >> fstype >> source >> options;
      if (fstype == "cgroup2" && v2_mount.empty()) v2_mount = mount_point;
      if (fstype == "cgroup" && ("," + options + ",").find(",cpu,") != std::string::npos)
        v1_mount = mount_point;
    }
    if (!v2_mount.empty() && try_make(v2_mount + "/" + name, "cpu.max", "100000 100000")) return;
    if (!v1_mount.empty() && try_make(v1_mount + "/" + name, "cpu.cfs_period_us", "100000") &&
        write(dir_ + "/cpu.cfs_quota_us", "100000")) {
      v2_ = false;
      return;
    }
    remove();
    if (why_.empty()) why_ = "no cgroup v2 or v1 cpu controller is mounted";
  }
  ~OneCpuCgroup() { remove(); }
  OneCpuCgroup(const OneCpuCgroup&) = delete;
  OneCpuCgroup& operator=(const OneCpuCgroup&) = delete;

  bool empty() const { return dir_.empty(); }
  bool v2() const { return v2_; }
  const std::string& dir() const { return dir_; }
  const std::string& why() const { return why_; }

 private:
  bool try_make(const std::string& dir, const std::string& file, const std::string& value) {
    remove();
    if (::mkdir(dir.c_str(), 0755) != 0) {
      why_ += "mkdir " + dir + ": " + std::strerror(errno) + "; ";
      return false;
    }
    dir_ = dir;
    if (!write(dir + "/" + file, value)) {
      remove();
      return false;
    }
    return true;
  }
  bool write(const std::string& path, const std::string& value) {
    std::ofstream out(path);
    out << value << std::flush;
    if (out) return true;
    why_ += "cannot write " + path + "; ";
    return false;
  }
  void remove() {
    if (!dir_.empty()) ::rmdir(dir_.c_str());
    dir_.clear();
  }

  std::string dir_;
  std::string why_;
  bool v2_ = true;
};

}  // namespace

TEST_CASE("workers left out: one CPU in the affinity mask (taskset -c 0) gives one worker") {
  TempDir dir;
  TestUpstream upstream;
  const std::string cpu = std::to_string(first_allowed_cpu());
  BulwarkProcess bulwark(wrapper(dir, "", "/usr/bin/taskset -c " + cpu + " "));
  bulwark.start(config_without_workers(upstream.address()));
  const std::string started = started_line(bulwark);
  INFO(bulwark.logs_text());
  CHECK(started.find("\"workers\":1,") != std::string::npos);
  CHECK(started.find("\"workers_from\":\"affinity\"") != std::string::npos);
  // And it serves.
  auto response = http_get(bulwark.port("inbound"), "/one-worker");
  REQUIRE(response);
  CHECK(response->status == 200);
}

TEST_CASE("workers set in the config: that many, whatever the CPUs") {
  TestUpstream upstream;
  BulwarkProcess bulwark;
  ProxyOptions options;
  options.workers = 3;
  bulwark.start(proxy_config(upstream.address(), options));
  const std::string started = started_line(bulwark);
  INFO(bulwark.logs_text());
  CHECK(started.find("\"workers\":3,") != std::string::npos);
  CHECK(started.find("\"workers_from\":\"config\"") != std::string::npos);
}

TEST_CASE("workers left out: a cgroup CPU quota of one CPU gives one worker") {
  if (affinity_cpus() < 2) {
    MESSAGE(
        "skipped: this machine lets the test use one CPU only, so a quota of one changes nothing");
    return;
  }
  OneCpuCgroup cgroup;
  if (cgroup.empty()) {
    MESSAGE("skipped: cannot make a cgroup with a CPU quota here (" << cgroup.why() << ")");
    return;
  }
  TempDir dir;
  TestUpstream upstream;
  {
    // The wrapper moves itself into the cgroup, then becomes bulwark.
    BulwarkProcess bulwark(wrapper(dir, "echo $$ > " + cgroup.dir() + "/cgroup.procs\n", ""));
    bulwark.start(config_without_workers(upstream.address()));
    const std::string started = started_line(bulwark);
    INFO(bulwark.logs_text());
    CHECK(started.find("\"workers\":1,") != std::string::npos);
    CHECK(started.find(cgroup.v2() ? "\"workers_from\":\"cgroup v2 quota\""
                                   : "\"workers_from\":\"cgroup v1 quota\"") != std::string::npos);
    auto response = http_get(bulwark.port("inbound"), "/quota");
    REQUIRE(response);
    CHECK(response->status == 200);
    // The cgroup can go only once bulwark has exited.
    REQUIRE(bulwark.signal(SIGTERM));
    CHECK(bulwark.wait_exit() == 0);
  }
}
