#pragma once
// ThreadStopper: stops a process's worker threads for real, as a stuck loop would stop turning.

#include <dirent.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace bulwark::test {

// Stops every thread of a process except its main one with ptrace (PTRACE_SEIZE, then
// PTRACE_INTERRUPT), the way a stuck loop stops turning, and lets them run again (PTRACE_DETACH)
// when destroyed. Call it from the thread that will destroy it: ptrace ties a tracee to the
// tracing thread. Stop threads while they are idle, so none holds a lock the main thread needs.
class ThreadStopper {
 public:
  ThreadStopper() = default;
  ThreadStopper(const ThreadStopper&) = delete;
  ThreadStopper& operator=(const ThreadStopper&) = delete;
  ~ThreadStopper() {
    for (pid_t tid : stopped_) ::ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
  }

  // Returns "" when every thread but `pid` itself is stopped, else what failed.
  std::string stop_all_but_main(pid_t pid) {
    const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
    DIR* dir = ::opendir(tasks.c_str());
    if (dir == nullptr) return "cannot list " + tasks + ": " + std::strerror(errno);
    std::vector<pid_t> tids;
    while (const dirent* entry = ::readdir(dir)) {
      pid_t tid = static_cast<pid_t>(std::atoi(entry->d_name));
      if (tid > 0 && tid != pid) tids.push_back(tid);
    }
    ::closedir(dir);
    if (tids.empty()) return "no thread besides the main one in " + tasks;
    for (pid_t tid : tids) {
      if (::ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
        return "ptrace(PTRACE_SEIZE) of thread " + std::to_string(tid) + ": " +
               std::strerror(errno) + " (the test needs ptrace on its child)";
      }
      stopped_.push_back(tid);
      int status = 0;
      if (::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0 ||
          ::waitpid(tid, &status, __WALL) != tid || !WIFSTOPPED(status)) {
        return "cannot stop thread " + std::to_string(tid) + ": " + std::strerror(errno);
      }
    }
    return "";
  }

 private:
  std::vector<pid_t> stopped_;
};

}  // namespace bulwark::test
