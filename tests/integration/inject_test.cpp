// `bulwark inject` as a user runs it: the real binary on the manifests of tests/data/kubernetes,
// piped into itself; its exit codes; its output checked against the Kubernetes OpenAPI schema
// (node and the npm package kubernetes-models, tests/kubernetes) and rendered by
// `kubectl kustomize`.

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/integration/shell.h"
#include "tests/support/harness.h"
#include "tests/support/kube_manifests.h"

namespace bulwark::test {
namespace {

const std::string kDataDir = kKubeDataDir;
const std::string kValidatorDir = std::string(BULWARK_SOURCE_DIR) + "/tests/kubernetes";
const std::string kBulwark = BULWARK_BINARY;

std::string quote(const std::string& s) { return "'" + s + "'"; }


const std::vector<std::string> kModes{
    "", "--classic", "--config-map-from " + kDataDir + "/config/bulwark.yaml",
    "--classic --config-map-from " + kDataDir + "/config/bulwark.yaml",
    "--transparent --outbound-ports 80 --config-map-from " + std::string(BULWARK_SOURCE_DIR) +
        "/deploy/kubernetes/overlays/transparent/bulwark.yaml",
    "--classic --transparent --inbound-ports '*' --outbound-ports ''"};

TEST_CASE("bulwark inject -f FILE piped into bulwark inject writes the same bytes again") {
  TempDir dir;
  for (const auto& mode : kModes) {
    for (const auto& file : manifests()) {
      CAPTURE(mode);
      CAPTURE(file);
      std::string once = dir.file("once.yaml");
      std::string twice = dir.file("twice.yaml");
      ShellResult r = shell(kBulwark + " inject " + mode + " -f " + quote(file) + " > " + once +
                            " && " + kBulwark + " inject " + mode + " < " + once + " > " + twice);
      REQUIRE_MESSAGE(r.exit == 0, r.err);
      bool opted_out = file.find("opt-out") != std::string::npos;
      CHECK((read_file(once).find("name: bulwark") != std::string::npos) != opted_out);
      CHECK(read_file(once) == read_file(twice));

      // And --uninject gives back the input as bulwark writes it.
      std::string back = dir.file("back.yaml");
      std::string plain = dir.file("plain.yaml");
      r = shell(kBulwark + " inject --uninject -f " + once + " > " + back + " && " + kBulwark +
                " inject --uninject -f - < " + quote(file) + " > " + plain);
      REQUIRE_MESSAGE(r.exit == 0, r.err);
      CHECK(read_file(back) == read_file(plain));
    }
  }
}

TEST_CASE("bulwark inject exits 1 on an invalid document, 2 on a wrong argument, and says why") {
  ShellResult r = shell(kBulwark + " inject -f " + kDataDir + "/invalid/containers-map.yaml");
  CHECK(r.exit == 1);
  CHECK(r.out.empty());
  CHECK(r.err ==
        "bulwark inject: document 2 (Deployment web): spec.template.spec.containers: not a "
        "sequence (it is a map)\n");

  r = shell(kBulwark + " inject < " + kDataDir + "/invalid/broken.yaml");
  CHECK(r.exit == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("bulwark inject: stdin:9:") == 0);

  r = shell(kBulwark + " inject -f " + kDataDir + "/absent.yaml");
  CHECK(r.exit == 1);
  CHECK(r.err == "bulwark inject: " + kDataDir +
                     "/absent.yaml: cannot read it: No such file or "
                     "directory\n");

  r = shell(kBulwark + " inject --config-map-from " + kDataDir + "/config/invalid.yaml -f " +
            kDataDir + "/pod.yaml");
  CHECK(r.exit == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("bulwark inject: " + kDataDir + "/config/invalid.yaml:6:") == 0);

  r = shell(kBulwark + " inject --replicas 3 < /dev/null");
  CHECK(r.exit == 2);
  CHECK(r.err.find("bulwark inject: unknown argument '--replicas'\nusage: bulwark inject") == 0);
  r = shell(kBulwark + " inject --ports 80,http < /dev/null");
  CHECK(r.exit == 2);
  r = shell(kBulwark + " inject --ports 8080,8080 < /dev/null");
  CHECK(r.exit == 2);
  CHECK(r.err.find("bulwark inject: --ports '8080,8080': not a list of different ports") == 0);
  r = shell(kBulwark + " inject --uninject --classic < /dev/null");
  CHECK(r.exit == 2);
  r = shell(kBulwark + " inject --outbound-ports 80 < /dev/null");
  CHECK(r.exit == 2);
  CHECK(r.err.find("bulwark inject: --outbound-ports shapes the rules of --transparent, which is "
                   "not given") == 0);
  r = shell(kBulwark + " inject --transparent --inbound-ports 80,http < /dev/null");
  CHECK(r.exit == 2);
  CHECK(r.err.find("bulwark inject: --inbound-ports: 'http' is not a port (1..65535)") == 0);
  r = shell(kBulwark + " inject --uninject --transparent < /dev/null");
  CHECK(r.exit == 2);
  r = shell(kBulwark + " inject --config-map Bad_Name < /dev/null");
  CHECK(r.exit == 2);
  r = shell(kBulwark + " inject --memory-limit 256MB < /dev/null");
  CHECK(r.exit == 2);
  CHECK(r.err.find("bulwark inject: --memory-limit '256MB': not a Kubernetes quantity") == 0);
  r = shell(kBulwark + " inject --cpu-request 0.25 --memory-request 1.5Gi -f " + kDataDir +
            "/pod.yaml");
  CHECK(r.exit == 0);
  CHECK(r.out.find("requests:\n          cpu: \"0.25\"\n          memory: \"1.5Gi\"\n") !=
        std::string::npos);

  r = shell(kBulwark + " inject --help");
  CHECK(r.exit == 0);
  CHECK(r.out.find("usage: bulwark inject") == 0);
  r = shell(kBulwark + " --help");
  CHECK(r.out.find("bulwark inject") != std::string::npos);

  // A warning (a preStop left alone) goes to stderr; the output is still written.
  r = shell(kBulwark + " inject --classic -f " + kDataDir + "/daemonset.yaml");
  CHECK(r.exit == 0);
  CHECK(r.err.find("bulwark inject: warning: document 1 (DaemonSet node-agent): container 'agent' "
                   "already has a preStop hook") == 0);
  CHECK(r.out.find("kind: DaemonSet") != std::string::npos);
}

TEST_CASE("the injected output of every manifest passes the Kubernetes OpenAPI schema") {
  // Installed by scripts/test.sh; without it this test would prove nothing, so it fails.
  REQUIRE_MESSAGE(std::filesystem::exists(kValidatorDir + "/node_modules/kubernetes-models"),
                  "tests/kubernetes/node_modules is missing: run `npm ci --prefix tests/kubernetes`"
                  " (scripts/test.sh does it)");
  ShellResult node = shell("command -v node");
  REQUIRE_MESSAGE(node.exit == 0, "node is not installed: run scripts/install-deps.sh");

  TempDir dir;
  // The validator can fail: a containers map is refused.
  ShellResult bad =
      shell("node " + kValidatorDir + "/validate.js " + kDataDir + "/invalid/containers-map.yaml");
  CHECK(bad.exit == 1);
  CHECK(bad.out.find("containers must be array") != std::string::npos);

  // And a container that Pod Security "restricted" would refuse is refused.
  std::string privileged = dir.file("privileged.yaml");
  ShellResult r =
      shell(kBulwark + " inject -f " + kDataDir + "/pod.yaml | sed " +
            "'s/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/' > " + privileged);
  REQUIRE_MESSAGE(r.exit == 0, r.err);
  bad = shell("node " + kValidatorDir + "/validate.js " + privileged);
  CHECK(bad.exit == 1);
  CHECK(bad.out.find("container bulwark: Pod Security restricted: allowPrivilegeEscalation must be "
                     "false") != std::string::npos);

  std::vector<std::string> outputs;
  for (size_t m = 0; m < kModes.size(); ++m) {
    for (const auto& file : manifests()) {
      std::string out = dir.file("out-" + std::to_string(m) + "-" +
                                 std::filesystem::path(file).filename().string());
      r = shell(kBulwark + " inject " + kModes[m] + " -f " + quote(file) + " > " + out);
      REQUIRE_MESSAGE(r.exit == 0, r.err);
      outputs.push_back(out);
    }
  }
  std::string command = "node " + kValidatorDir + "/validate.js";
  for (const auto& out : outputs) command += " " + out;
  r = shell(command);
  CHECK_MESSAGE(r.exit == 0, r.out << r.err);
  // Every document of every output was looked at (the opt-out one and the ConfigMaps too).
  size_t ok_lines = 0;
  for (size_t at = r.out.find(": ok"); at != std::string::npos; at = r.out.find(": ok", at + 1))
    ++ok_lines;
  CHECK(ok_lines >= outputs.size());
  CHECK(r.out.find("(ConfigMap bulwark-config): ok") != std::string::npos);
}

TEST_CASE("kubectl kustomize renders injected output and renames its ConfigMap reference") {
  if (shell("command -v kubectl").exit != 0) {
    MESSAGE("kubectl is not installed: skipped (scripts/install-deps.sh installs it)");
    return;
  }
  TempDir dir;
  ShellResult r =
      shell(kBulwark + " inject --config-map-from " + kDataDir + "/config/bulwark.yaml -f " +
            kDataDir + "/multi-document.yaml > " + dir.file("injected.yaml"));
  REQUIRE_MESSAGE(r.exit == 0, r.err);
  write_file(dir.file("kustomization.yaml"),
             "apiVersion: kustomize.config.k8s.io/v1beta1\n"
             "kind: Kustomization\n"
             "namePrefix: staging-\n"
             "resources: [injected.yaml]\n");
  r = shell("kubectl kustomize " + dir.path());
  REQUIRE_MESSAGE(r.exit == 0, r.err);
  // kustomize knows the pod template's volume names the ConfigMap, and renames both.
  CHECK(r.out.find("name: staging-bulwark-config\n") != std::string::npos);
  CHECK(r.out.find("configMap:\n          name: staging-bulwark-config") != std::string::npos);
  CHECK(r.out.find("name: bulwark\n") != std::string::npos);
  CHECK(r.out.find("restartPolicy: Always") != std::string::npos);
}

}  // namespace
}  // namespace bulwark::test
