#include "tests/integration/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "tests/support/harness.h"

namespace bulwark::test {

std::string find_tool(const std::string& tool) {
  const char* path = std::getenv("PATH");
  const std::string dirs =
      std::string(path != nullptr ? path : "/usr/bin:/bin") + ":/usr/sbin:/sbin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string candidate = dirs.substr(start, end - start) + "/" + tool;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return {};
}

int run_tool(std::vector<std::string> argv, std::string* output) {
  if (argv[0].find('/') == std::string::npos) argv[0] = find_tool(argv[0]);
  if (argv[0].empty()) return -1;
  Subprocess p;
  p.start(argv);
  const int code = p.wait_exit(Millis{10000}).value_or(-1);
  p.wait_streams_closed();
  if (output != nullptr) {
    *output = p.text(Subprocess::Stream::kStdout) + p.text(Subprocess::Stream::kStderr);
  }
  return code;
}

std::string run_tools(const std::vector<std::vector<std::string>>& commands) {
  for (const auto& command : commands) {
    std::string out;
    if (run_tool(command, &out) != 0) {
      std::string line;
      for (const auto& word : command) line += (line.empty() ? "" : " ") + word;
      return line + ": " + out;
    }
  }
  return {};
}

std::string enter_pod_namespace(const std::vector<std::string>& tools) {
  if (::geteuid() != 0) return "not root";
  for (const std::string& tool : tools) {
    if (find_tool(tool).empty()) return tool + " is not installed";
  }
  if (::unshare(CLONE_NEWNET) != 0) {
    return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
  }
  return run_tools({{"ip", "link", "set", "lo", "up"}, {"iptables-save", "-t", "nat"}});
}

std::string enter_named_namespace(const std::string& name) {
  const std::string path = "/var/run/netns/" + name;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "open " + path + ": " + std::strerror(errno);
  const int rc = ::setns(fd, CLONE_NEWNET);
  const int error = errno;
  ::close(fd);
  return rc == 0 ? std::string() : "setns " + path + ": " + std::strerror(error);
}

NamedNamespace::NamedNamespace(std::string name) : name_(std::move(name)) {
  error_ = run_tools({{"ip", "netns", "add", name_}, exec({"ip", "link", "set", "lo", "up"})});
}

NamedNamespace::~NamedNamespace() { run_tool({"ip", "netns", "del", name_}); }

std::vector<std::string> NamedNamespace::exec(std::vector<std::string> argv) const {
  argv.insert(argv.begin(), {find_tool("ip"), "netns", "exec", name_});
  return argv;
}

}  // namespace bulwark::test
