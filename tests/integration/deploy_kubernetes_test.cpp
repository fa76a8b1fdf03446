// deploy/kubernetes as a user takes it: the kustomize base and the transparent overlay render
// with `kubectl kustomize`, every object passes the Kubernetes schema (and the Prometheus
// Operator's, for PodMonitor and PrometheusRule), the base's Deployment is what `bulwark inject`
// makes of the app's, and its PrometheusRule holds the alerts of deploy/prometheus. (The bulwark
// configs in them are loaded by tests/unit/config/deploy_examples_test.cpp.)

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/integration/proxy_fixture.h"
#include "tests/integration/shell.h"

using namespace bulwark::test;

namespace {

const std::string kDeploy = std::string(BULWARK_SOURCE_DIR) + "/deploy/kubernetes";
const std::string kValidator = std::string(BULWARK_SOURCE_DIR) + "/tests/kubernetes";

// `text` without its leading comment lines.
std::string without_header(const std::string& text) {
  size_t at = 0;
  while (at < text.size() && text[at] == '#') at = text.find('\n', at) + 1;
  return text.substr(at);
}

}  // namespace

TEST_CASE("deploy/kubernetes: the base and the transparent overlay render and pass the schema") {
  if (shell("command -v kubectl").exit != 0) {
    MESSAGE("skipped: kubectl is not installed (scripts/install-deps.sh installs it where apt has "
            "it)");
    return;
  }
  REQUIRE_MESSAGE(std::filesystem::exists(kValidator + "/node_modules/kubernetes-models"),
                  "tests/kubernetes/node_modules is missing: run `npm ci --prefix tests/kubernetes`"
                  " (scripts/test.sh does it)");
  TempDir dir;
  for (const char* which : {"base", "overlays/transparent"}) {
    CAPTURE(which);
    const std::string out = dir.file(std::filesystem::path(which).filename().string() + ".yaml");
    ShellResult r = shell("kubectl kustomize " + kDeploy + "/" + which + " > " + out);
    REQUIRE_MESSAGE(r.exit == 0, r.err);
    r = shell("node " + kValidator + "/validate.js " + out);
    INFO(r.out << r.err);
    CHECK(r.exit == 0);
    for (const char* kind : {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget",
                             "NetworkPolicy", "PodMonitor", "PrometheusRule"}) {
      CHECK(r.out.find(std::string("(") + kind + " ") != std::string::npos);
    }
    const std::string rendered = read_file(out);
    // The generated ConfigMap's hashed name is what the pod mounts.
    CHECK(rendered.find("name: shop-bulwark-") != std::string::npos);
    CHECK(rendered.find("restartPolicy: Always") != std::string::npos);  // a native sidecar
    if (std::string(which) == "overlays/transparent") {
      // The rules are written before the bulwark sidecar starts.
      const size_t rules = rendered.find("name: bulwark-iptables\n");
      const size_t sidecar = rendered.find("        name: bulwark\n");
      REQUIRE(rules != std::string::npos);
      REQUIRE(sidecar != std::string::npos);
      CHECK(rules < sidecar);
      CHECK(rendered.find("- NET_ADMIN") != std::string::npos);
    }
  }
}

TEST_CASE("deploy/kubernetes: the base's Deployment is what bulwark inject makes of the app's") {
  ShellResult r = shell(std::string(BULWARK_BINARY) +
                        " inject --config-map shop-bulwark --ports 8080 -f " + kDeploy +
                        "/base/app-deployment.yaml");
  REQUIRE_MESSAGE(r.exit == 0, r.err);
  CHECK(without_header(read_file(kDeploy + "/base/deployment.yaml")) == r.out);
}

TEST_CASE("deploy/kubernetes: the PrometheusRule holds exactly the alerts of deploy/prometheus") {
  const std::string rules = read_file(std::string(BULWARK_SOURCE_DIR) +
                                      "/deploy/prometheus/bulwark-rules.yaml");
  const std::string crd = read_file(kDeploy + "/base/prometheusrule.yaml");
  const std::string groups = rules.substr(rules.find("groups:"));
  const std::string spec = crd.substr(crd.find("spec:\n") + 6);
  // spec: is groups: indented by two.
  std::string indented;
  std::istringstream lines(groups);
  for (std::string line; std::getline(lines, line);) {
    indented += (line.empty() ? "" : "  ") + line + "\n";
  }
  CHECK(spec == indented);
}
