#pragma once
// Running a shell command from a test, for the tests that drive command-line tools (bulwark
// inject, kubectl, node) the way a user types them.

#include <doctest/doctest.h>

#include <optional>
#include <string>

#include "tests/support/harness.h"

namespace bulwark::test {

struct ShellResult {
  int exit = -1;
  std::string out;  // stdout, lines joined
  std::string err;
};

// Runs `command` with /bin/sh and waits for it (and its output) to end; fails the test when it
// is still running after a minute.
inline ShellResult shell(const std::string& command) {
  Subprocess p;
  p.start({"/bin/sh", "-c", command});
  std::optional<int> code = p.wait_exit(Millis{60000});
  REQUIRE_MESSAGE(code.has_value(), "still running after 60 s: " << command);
  p.wait_streams_closed();
  return {*code, p.text(Subprocess::Stream::kStdout), p.text(Subprocess::Stream::kStderr)};
}

}  // namespace bulwark::test
