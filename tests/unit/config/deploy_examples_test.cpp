// The configs shipped in deploy/ must load: a user copies them as they are.

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "config/loader.h"

namespace {

// The block scalar under "bulwark.yaml: |" in a Kubernetes ConfigMap, dedented.
std::string configmap_block(const std::string& path) {
  std::ifstream in(path);
  std::string line, out;
  size_t indent = std::string::npos;
  bool inside = false;
  while (std::getline(in, line)) {
    if (!inside) {
      inside = line.find("bulwark.yaml: |") != std::string::npos;
      continue;
    }
    size_t first = line.find_first_not_of(' ');
    if (first == std::string::npos) {
      out += "\n";
      continue;
    }
    if (indent == std::string::npos) indent = first;
    if (first < indent) break;
    out += line.substr(indent) + "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("the Kubernetes sidecar example's bulwark.yaml is a valid config") {
  const std::string path =
      std::string(BULWARK_SOURCE_DIR) + "/deploy/kubernetes/sidecar-example.yaml";
  std::string yaml = configmap_block(path);
  REQUIRE_FALSE(yaml.empty());
  auto result = bulwark::config::load_config_string(yaml, path);
  for (const auto& e : result.errors) INFO(e.to_string());
  REQUIRE(result.ok());
  CHECK(result.config->listeners.at(0).address.port == 8080);
  CHECK(result.config->clusters.at(0).endpoints.at(0).address.text() == "127.0.0.1:9000");
}
