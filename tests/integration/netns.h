#pragma once
// Network namespaces as pods, for the tests of transparent mode: the test process moves into a
// namespace of its own (ctest runs each test case in a process of its own, so the namespace ends
// with the test), and named namespaces (`ip netns`) linked to it by veth pairs stand for other
// pods. Needs root; the callers skip, saying why, when a privilege or a tool is missing.

#include <string>
#include <vector>

namespace bulwark::test {

// Where executable `tool` is on PATH or in the sbin directories; empty when nowhere.
std::string find_tool(const std::string& tool);

// Runs a command (argv[0] looked up with find_tool() unless it holds a '/') for at most 10 s;
// its exit code, or -1 when it could not run or did not finish. Stdout and stderr go to *output.
int run_tool(std::vector<std::string> argv, std::string* output = nullptr);

// Runs each command in turn; the first failure's command and output, or "" when all succeeded.
std::string run_tools(const std::vector<std::vector<std::string>>& commands);

// Moves this process into a new network namespace with loopback up (threads started later
// inherit it). Returns why it cannot (not root, a tool of `tools` missing, unshare refused),
// or "" once it has.
std::string enter_pod_namespace(const std::vector<std::string>& tools);

// Moves the calling thread (only) into the named namespace of `ip netns`. "" or why not.
std::string enter_named_namespace(const std::string& name);

// A named namespace (`ip netns add`), deleted with the object; its processes should be gone by
// then (a process still inside keeps the namespace alive, unnamed).
class NamedNamespace {
 public:
  // Makes it; `error()` says why it could not.
  explicit NamedNamespace(std::string name);
  ~NamedNamespace();
  NamedNamespace(const NamedNamespace&) = delete;
  NamedNamespace& operator=(const NamedNamespace&) = delete;

  const std::string& name() const { return name_; }
  const std::string& error() const { return error_; }
  // argv prefixed with `ip netns exec NAME`.
  std::vector<std::string> exec(std::vector<std::string> argv) const;

 private:
  std::string name_;
  std::string error_;
};

}  // namespace bulwark::test
