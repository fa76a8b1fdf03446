// The container image, checked without building it (scripts/test-image.sh builds and runs it,
// minutes; this is the quick part that runs with every test):
// - the Dockerfile's final stage starts FROM scratch, copies only the assembled root and the
//   default config, runs as 65532 and exposes the ports the default config listens on;
// - .dockerignore keeps local build trees and the like out of the build context, and keeps in
//   every file the build reads;
// - the default config, config/examples/container.yaml, run by the real binary (its ports
//   rewritten to 0, its application to a demo upstream), serves what a pod needs, where it should.

#include <doctest/doctest.h>
#include <fnmatch.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/harness.h"

using namespace bulwark::test;
namespace fs = std::filesystem;

namespace {

const std::string kSource = BULWARK_SOURCE_DIR;

int status_of(const std::optional<Response>& r) { return r ? r->status : -1; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The instructions of the Dockerfile's last stage, from its FROM line on: comments and blank
// lines left out, continuation lines joined.
std::vector<std::string> final_stage() {
  std::vector<std::string> stage;
  std::string pending;
  for (const std::string& line : lines_of(read_file(kSource + "/Dockerfile"))) {
    if (pending.empty() && (line.empty() || line[0] == '#')) continue;
    if (!line.empty() && line.back() == '\\') {
      pending += line.substr(0, line.size() - 1);
      continue;
    }
    std::string instruction = pending + line;
    pending.clear();
    if (instruction.rfind("FROM ", 0) == 0) stage.clear();
    stage.push_back(instruction);
  }
  return stage;
}

// Whether `path` (relative to the context root, '/'-separated) is left out of the build
// context by `patterns`, as docker and podman read .dockerignore: a pattern matches a path or
// any directory above it; a leading "**/" matches at any depth; the last matching line wins,
// and a line starting with '!' takes a path back in.
bool ignored(const std::vector<std::string>& patterns, const std::string& path) {
  // The path and every directory above it: "a", "a/b", "a/b/c".
  std::vector<std::string> prefixes;
  for (size_t end = path.find('/');; end = path.find('/', end + 1)) {
    prefixes.push_back(path.substr(0, end));
    if (end == std::string::npos) break;
  }
  // fnmatch with FNM_PATHNAME is Go's filepath.Match, which docker and podman use: '*' and '?'
  // do not match '/'.
  const auto match = [](const std::string& pattern, const std::string& name) {
    return fnmatch(pattern.c_str(), name.c_str(), FNM_PATHNAME) == 0;
  };
  const auto matches = [&](std::string pattern) {
    while (pattern.size() > 1 && pattern.back() == '/') pattern.pop_back();
    const bool any_depth = pattern.rfind("**/", 0) == 0;
    if (any_depth) pattern = pattern.substr(3);
    for (const std::string& prefix : prefixes) {
      if (match(pattern, prefix)) return true;
      if (!any_depth) continue;
      for (size_t slash = prefix.find('/'); slash != std::string::npos;
           slash = prefix.find('/', slash + 1)) {
        if (match(pattern, prefix.substr(slash + 1))) return true;
      }
    }
    return false;
  };
  bool result = false;
  for (const std::string& line : patterns) {
    if (line.empty() || line[0] == '#') continue;
    const bool negated = line[0] == '!';
    if (matches(negated ? line.substr(1) : line)) result = !negated;
  }
  return result;
}

// Replaces the one occurrence of `from` in `text` by `to`; fails the test unless there is
// exactly one.
void replace_once(std::string& text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "container.yaml no longer has " << from);
  REQUIRE_MESSAGE(text.find(from, at + 1) == std::string::npos,
                  "container.yaml has " << from << " more than once");
  text.replace(at, from.size(), to);
}

// The YAML without its comments: a '#' at the start of a line or after a space starts one (the
// file quotes no '#').
std::string without_comments(const std::string& yaml) {
  std::string out;
  for (const std::string& line : lines_of(yaml)) {
    size_t hash = line.find('#');
    while (hash != std::string::npos && hash > 0 && line[hash - 1] != ' ') {
      hash = line.find('#', hash + 1);
    }
    out += line.substr(0, hash) + "\n";
  }
  return out;
}

// The address bulwark says a listener is bound to, from its "listening" log line.
std::string listening_address(const BulwarkProcess& bulwark, const std::string& listener) {
  for (const std::string& line : bulwark.logs()) {
    if (line.find("\"msg\":\"listening\"") == std::string::npos) continue;
    if (line.find("\"listener\":\"" + listener + "\"") == std::string::npos) continue;
    const std::string key = "\"address\":\"";
    const size_t at = line.find(key);
    if (at == std::string::npos) continue;
    const size_t start = at + key.size();
    return line.substr(start, line.find('"', start) - start);
  }
  return "";
}

}  // namespace

TEST_CASE("the image's final stage is FROM scratch and holds only the assembled root") {
  const std::vector<std::string> stage = final_stage();
  REQUIRE(!stage.empty());
  CHECK(stage[0] == "FROM scratch");
  std::vector<std::string> copies;
  for (const std::string& instruction : stage) {
    CAPTURE(instruction);
    // No RUN: there is no shell to run it with.
    CHECK(instruction.rfind("RUN ", 0) != 0);
    if (instruction.rfind("COPY ", 0) == 0 || instruction.rfind("ADD ", 0) == 0) {
      copies.push_back(instruction);
    }
  }
  // The root assembled in the build stage (binary, ldd's libraries and the loader, the CA
  // bundle, passwd/group, /tmp), and the default config; scripts/test-image.sh lists the files.
  CHECK(copies ==
        std::vector<std::string>{"COPY --from=build /rootfs/ /",
                                 "COPY config/examples/container.yaml /etc/bulwark/bulwark.yaml"});
  const auto has = [&](const std::string& instruction) {
    return std::find(stage.begin(), stage.end(), instruction) != stage.end();
  };
  CHECK(has("USER 65532:65532"));
  // `bulwark iptables` finds iptables-restore on this PATH: the image has no shell to search.
  CHECK(has("ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin"));
  // The inbound and probes ports of container.yaml (the test below checks they are the ones it
  // listens on); admin stays on loopback and is not exposed.
  CHECK(has("EXPOSE 8080 9902"));
  CHECK(has("ENTRYPOINT [\"/usr/local/bin/bulwark\"]"));
  CHECK(has("CMD [\"--config\", \"/etc/bulwark/bulwark.yaml\"]"));

  // The build stage writes the user the final stage runs as.
  const std::string dockerfile = read_file(kSource + "/Dockerfile");
  CHECK(dockerfile.find("nonroot:x:65532:65532:") != std::string::npos);
  CHECK(dockerfile.find("nonroot:x:65532:\\n") != std::string::npos);
  CHECK(dockerfile.find("chmod 1777 /rootfs/tmp") != std::string::npos);
}

TEST_CASE(".dockerignore leaves build trees out and every file the build reads in") {
  const std::vector<std::string> patterns = lines_of(read_file(kSource + "/.dockerignore"));

  // What a local build, git, an editor, a benchmark or npm leave behind.
  for (const char* path :
       {"build/CMakeCache.txt", "build-fuzz/CMakeCache.txt", "build-dev/bulwark", ".git/HEAD",
        ".git", "loadtest/results/run-1/summary.json", "node_modules/x/index.js",
        "deploy/kubernetes/node_modules/x/index.js", "proxy/server.cpp.swp", "proxy/server.cpp~",
        "compile_commands.json",
        // Files the build does not read: editing them must not make the engine compile again.
        "README.md", "deploy/systemd/README.md", "scripts/test.sh",
        "tests/integration/proxy_basic_test.cpp", "tests/fuzz/corpus/request/seed-1"}) {
    const std::string left_out = path;
    CAPTURE(left_out);
    CHECK(ignored(patterns, left_out));
  }

  // Everything `cmake --build build --target bulwark` reads: the CMake files and the C and C++
  // sources of the libraries, the binary and the targets CMakeLists.txt defines next to it;
  // and the config the final stage copies.
  std::vector<std::string> needed = {"CMakeLists.txt", "config/examples/container.yaml"};
  for (const char* dir : {"config", "filters", "proxy", "loadtest", "tests/support"}) {
    for (const auto& entry : fs::recursive_directory_iterator(kSource + "/" + dir)) {
      const fs::path& file = entry.path();
      const std::string extension = file.extension().string();
      if (!entry.is_regular_file() || (file.filename() != "CMakeLists.txt" && extension != ".cpp" &&
                                       extension != ".h" && extension != ".c")) {
        continue;
      }
      needed.push_back(fs::relative(file, kSource).generic_string());
    }
  }
  CHECK(needed.size() > 50);
  for (const std::string& path : needed) {
    CAPTURE(path);
    CHECK_FALSE(ignored(patterns, path));
  }
  // And the matcher above is no pushover.
  CHECK(ignored({"**/*.swp"}, "a/b/c.swp"));
  CHECK_FALSE(ignored({"build*/", "!build-keep"}, "build-keep/x"));
  CHECK_FALSE(ignored({"build*/"}, "scripts/build-image.sh"));
}

TEST_CASE(
    "the image's default config serves a sidecar: public inbound and probes, admin on loopback") {
  DemoUpstreamProcess app;
  app.start("app");

  // The real file, with its fixed ports made free ones and its application the demo upstream.
  std::string yaml = without_comments(read_file(kSource + "/config/examples/container.yaml"));
  replace_once(yaml, "0.0.0.0:8080", "0.0.0.0:0");
  replace_once(yaml, "0.0.0.0:9902", "0.0.0.0:0");
  replace_once(yaml, "127.0.0.1:9901", "127.0.0.1:0");
  replace_once(yaml, "127.0.0.1:8081", "127.0.0.1:" + std::to_string(app.port()));

  BulwarkProcess bulwark;
  bulwark.start(yaml);
  const uint16_t probes = bulwark.port("probes");
  const uint16_t inbound = bulwark.port("inbound");
  CHECK(listening_address(bulwark, "inbound") == "0.0.0.0:" + std::to_string(inbound));
  CHECK(listening_address(bulwark, "probes") == "0.0.0.0:" + std::to_string(probes));
  CHECK(listening_address(bulwark, "admin") == "127.0.0.1:" + std::to_string(bulwark.admin_port()));

  CHECK(status_of(http_get(probes, "/healthz")) == 200);
  // /ready waits for the application's TCP health check (every 2 s).
  CHECK(eventually([&] { return status_of(http_get(probes, "/ready")) == 200; }, Millis{8000},
                   Millis{100}));
  auto proxied = http_get(inbound, "/hello");
  REQUIRE(proxied);
  CHECK(proxied->status == 200);
  CHECK(proxied->body == "hello from app: GET /hello\n");
  // The access log goes to standard output, where `kubectl logs` reads it.
  CHECK(eventually(
      [&] { return bulwark.stdout_text().find("\"path\":\"/hello\"") != std::string::npos; }));

  // Only the probe paths on the public probes port; the rest on the admin port.
  CHECK(status_of(http_get(probes, "/config")) == 404);
  CHECK(status_of(http_request(probes, "POST", "/drain")) == 404);
  CHECK(status_of(http_get(bulwark.admin_port(), "/config")) == 200);
}
