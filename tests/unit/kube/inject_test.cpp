// bulwark inject on the manifests of tests/data/kubernetes: what it adds, that a second run
// changes nothing, that --uninject gives back the original, and the errors a user sees.

#include "kube/inject.h"

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kube/yaml_emit.h"
#include "tests/support/kube_manifests.h"

namespace bulwark::kube {
namespace {

using test::manifests;
const std::string kDataDir = test::kKubeDataDir;
const std::string kConfigFile = kDataDir + "/config/bulwark.yaml";

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}


std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// The output of a run that must succeed.
std::string injected(const std::string& input, const InjectOptions& options = {}) {
  InjectResult result = inject(input, options);
  REQUIRE_MESSAGE(result.ok(), joined(result.errors));
  REQUIRE(!result.output.empty());
  return result.output;
}

InjectOptions uninject_options() {
  InjectOptions options;
  options.uninject = true;
  return options;
}

// The input as bulwark writes any YAML back (comments gone): what an uninjection must equal.
std::string reemitted(const std::string& input) { return injected(input, uninject_options()); }

struct Mode {
  std::string name;
  InjectOptions options;
};

std::vector<Mode> modes() {
  InjectOptions classic;
  classic.classic = true;
  InjectOptions config;
  config.config_file = kConfigFile;
  InjectOptions classic_config = config;
  classic_config.classic = true;
  InjectOptions ports;
  ports.ports = {8080, 8443};
  InjectOptions transparent;
  transparent.transparent.emplace().outbound_ports = {80};
  InjectOptions classic_transparent = transparent;
  classic_transparent.classic = true;
  return {{"native", {}},
          {"classic", classic},
          {"config-map-from", config},
          {"classic config-map-from", classic_config},
          {"ports", ports},
          {"transparent", transparent},
          {"classic transparent", classic_transparent}};
}

std::vector<YAML::Node> documents(const std::string& text) { return YAML::LoadAll(text); }

// The documents of a stream with those of each List flattened in.
std::vector<YAML::Node> objects(const std::string& text) {
  std::vector<YAML::Node> out;
  for (const YAML::Node& doc : documents(text)) {
    if (doc["kind"].as<std::string>("") == "List") {
      for (const YAML::Node& item : doc["items"]) out.push_back(item);
    } else {
      out.push_back(doc);
    }
  }
  return out;
}

YAML::Node pod_template(const YAML::Node& object) {
  std::string kind = object["kind"].as<std::string>();
  if (kind == "Pod") return object;
  if (kind == "CronJob") return object["spec"]["jobTemplate"]["spec"]["template"];
  return object["spec"]["template"];
}

YAML::Node find_named(const YAML::Node& list, const std::string& name) {
  for (const YAML::Node& entry : list) {
    if (entry["name"].as<std::string>() == name) return entry;
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

// Checks the bulwark container the way the kubelet and Pod Security "restricted" would read it.
void check_container(const YAML::Node& c, bool native) {
  CHECK(c["name"].as<std::string>() == "bulwark");
  CHECK(c["image"].as<std::string>() == std::string("bulwark:") + BULWARK_VERSION);
  CHECK(c["imagePullPolicy"].as<std::string>() == "IfNotPresent");
  CHECK(c["restartPolicy"].IsDefined() == native);
  if (native) CHECK(c["restartPolicy"].as<std::string>() == "Always");
  CHECK(c["args"][0].as<std::string>() == "--config");
  CHECK(c["args"][1].as<std::string>() == "/etc/bulwark/bulwark.yaml");
  YAML::Node probes_port = find_named(c["ports"], "bulwark-probes");
  REQUIRE(probes_port.IsDefined());
  CHECK(probes_port["containerPort"].as<int>() == 9902);
  CHECK(c["startupProbe"]["httpGet"]["path"].as<std::string>() == "/ready");
  CHECK(c["startupProbe"]["httpGet"]["port"].as<int>() == 9902);
  CHECK(c["startupProbe"]["periodSeconds"].as<int>() == 1);
  CHECK(c["startupProbe"]["failureThreshold"].as<int>() == 60);
  CHECK(c["readinessProbe"]["httpGet"]["path"].as<std::string>() == "/ready");
  CHECK(c["livenessProbe"]["httpGet"]["path"].as<std::string>() == "/healthz");
  CHECK(c["livenessProbe"]["periodSeconds"].as<int>() == 10);
  CHECK(c["livenessProbe"]["failureThreshold"].as<int>() == 3);
  CHECK(c["resources"]["requests"]["cpu"].as<std::string>() == "100m");
  CHECK(c["resources"]["requests"]["memory"].as<std::string>() == "64Mi");
  CHECK(c["resources"]["limits"]["memory"].as<std::string>() == "256Mi");
  YAML::Node sc = c["securityContext"];
  CHECK(sc["runAsNonRoot"].as<bool>());
  CHECK(sc["runAsUser"].as<int>() == 65532);
  CHECK(sc["runAsGroup"].as<int>() == 65532);
  CHECK(sc["readOnlyRootFilesystem"].as<bool>());
  CHECK_FALSE(sc["allowPrivilegeEscalation"].as<bool>());
  CHECK(sc["capabilities"]["drop"][0].as<std::string>() == "ALL");
  CHECK(sc["seccompProfile"]["type"].as<std::string>() == "RuntimeDefault");
  CHECK(c["volumeMounts"][0]["name"].as<std::string>() == "bulwark-config");
  CHECK(c["volumeMounts"][0]["mountPath"].as<std::string>() == "/etc/bulwark");
  CHECK(c["volumeMounts"][0]["readOnly"].as<bool>());
}

TEST_CASE("every workload fixture gets bulwark as a native sidecar, first of its initContainers") {
  int templates = 0;
  for (const auto& file : manifests()) {
    if (file.find("opt-out") != std::string::npos) continue;
    CAPTURE(file);
    std::string out = injected(read(file));
    for (const YAML::Node& object : objects(out)) {
      std::string kind = object["kind"].as<std::string>();
      if (kind == "Service" || kind == "ConfigMap") continue;
      ++templates;
      YAML::Node pod = pod_template(object);
      YAML::Node spec = pod["spec"];
      check_container(spec["initContainers"][0], true);
      CHECK_FALSE(find_named(spec["containers"], "bulwark").IsDefined());
      YAML::Node volume = find_named(spec["volumes"], "bulwark-config");
      REQUIRE(volume.IsDefined());
      CHECK(volume["configMap"]["name"].as<std::string>() == "bulwark-config");
      YAML::Node annotations = pod["metadata"]["annotations"];
      CHECK(annotations["prometheus.io/scrape"].as<std::string>() == "true");
      CHECK(annotations["prometheus.io/path"].as<std::string>() == "/metrics");
      CHECK(annotations["bulwark.io/inject-status"].IsScalar());
      // Never lowered below what the pod had, and at least 5 + 20 + 5 s (the kubelet's 30 when
      // absent).
      CHECK(spec["terminationGracePeriodSeconds"].as<int>(30) >= 30);
    }
  }
  CHECK(templates == 7);
}

TEST_CASE("a Job and a ReplicaSet are injected, other kinds with a pod template pass through") {
  std::string pod_spec =
      "  template:\n    spec:\n      restartPolicy: Never\n      containers:\n"
      "        - {name: main, image: registry.example.com/main:1}\n";
  std::string input =
      "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec:\n" + pod_spec +
      "---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\nspec:\n" + pod_spec +
      "---\napiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\n"
      "spec:\n" +
      pod_spec;
  std::string out = injected(input);
  std::vector<YAML::Node> docs = documents(out);
  REQUIRE(docs.size() == 3);
  CHECK(docs[0]["spec"]["template"]["spec"]["initContainers"][0]["name"].as<std::string>() ==
        "bulwark");
  CHECK(docs[1]["spec"]["template"]["spec"]["initContainers"][0]["name"].as<std::string>() ==
        "bulwark");
  CHECK(emit_stream({docs[2]}) == emit_stream({documents(input)[2]}));
  CHECK(injected(out, uninject_options()) == reemitted(input));
}

TEST_CASE("annotations stay strings: the user's are kept and ours are quoted in the YAML text") {
  std::string out = injected(read(kDataDir + "/deployment.yaml"));
  // "true" unquoted would be a boolean, which Kubernetes refuses as an annotation value.
  CHECK(out.find("prometheus.io/scrape: \"true\"") != std::string::npos);
  CHECK(out.find("prometheus.io/port: \"8081\"") != std::string::npos);  // the user's, kept
  CHECK(out.find("prometheus.io/port: \"9902\"") == std::string::npos);
  CHECK(out.find("value: \"true\"") != std::string::npos);  // the app's env var, still a string
  YAML::Node pod = pod_template(documents(out)[0]);
  CHECK(pod["spec"]["terminationGracePeriodSeconds"].as<int>() == 30);  // was 10
  // The app's containers are untouched.
  YAML::Node original = pod_template(documents(read(kDataDir + "/deployment.yaml"))[0]);
  CHECK(pod["spec"]["containers"].size() == 2);
  CHECK(emit_stream({pod["spec"]["containers"]}) == emit_stream({original["spec"]["containers"]}));
}

TEST_CASE("the grace period is never lowered and an existing initContainer comes after bulwark") {
  YAML::Node daemon = documents(injected(read(kDataDir + "/daemonset.yaml")))[0];
  CHECK(daemon["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as<int>() == 120);
  CHECK(daemon["spec"]["template"]["metadata"]["annotations"]["bulwark.io/inject-status"]
            .as<std::string>()
            .find("terminationGracePeriodSeconds") == std::string::npos);
  YAML::Node stateful = documents(injected(read(kDataDir + "/statefulset.yaml")))[0];
  YAML::Node init = stateful["spec"]["template"]["spec"]["initContainers"];
  REQUIRE(init.size() == 2);
  CHECK(init[0]["name"].as<std::string>() == "bulwark");
  CHECK(init[1]["name"].as<std::string>() == "fix-permissions");
  CHECK(stateful["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as<std::string>() ==
        "data");
}

TEST_CASE("injecting an injected stream changes nothing, byte for byte, in every mode") {
  for (const auto& mode : modes()) {
    for (const auto& file : manifests()) {
      CAPTURE(mode.name);
      CAPTURE(file);
      std::string once = injected(read(file), mode.options);
      std::string twice = injected(once, mode.options);
      CHECK(once == twice);
    }
  }
}

TEST_CASE("uninject gives back the original document, byte for byte, in every mode") {
  for (const auto& mode : modes()) {
    for (const auto& file : manifests()) {
      CAPTURE(mode.name);
      CAPTURE(file);
      std::string original = read(file);
      std::string out = injected(original, mode.options);
      if (file.find("opt-out") == std::string::npos) CHECK(out != reemitted(original));
      CHECK(injected(out, uninject_options()) == reemitted(original));
    }
  }
}

TEST_CASE("uninject puts back the grace period it raised, unless the user changed it since") {
  std::string out = injected(read(kDataDir + "/deployment.yaml"));
  YAML::Node status = YAML::Load(
      pod_template(documents(out)[0])["metadata"]["annotations"]["bulwark.io/inject-status"]
          .as<std::string>());
  CHECK(status["terminationGracePeriodSeconds"]["set"].as<int>() == 30);
  CHECK(status["terminationGracePeriodSeconds"]["previous"].as<std::string>() == "10");
  CHECK(status["sidecar"].as<std::string>() == "initContainers");
  CHECK(status["version"].as<std::string>() == BULWARK_VERSION);

  YAML::Node back = documents(injected(out, uninject_options()))[0];
  CHECK(back["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as<int>() == 10);

  // Quoted, it comes back quoted.
  std::string quoted = read(kDataDir + "/deployment.yaml");
  quoted.replace(quoted.find("terminationGracePeriodSeconds: 10"), 33,
                 "terminationGracePeriodSeconds: \"10\"");
  CHECK(injected(injected(quoted), uninject_options()) == reemitted(quoted));
  CHECK(reemitted(quoted).find("terminationGracePeriodSeconds: \"10\"") != std::string::npos);

  std::string edited = out;
  edited.replace(edited.find("terminationGracePeriodSeconds: 30"), 33,
                 "terminationGracePeriodSeconds: 45");
  back = documents(injected(edited, uninject_options()))[0];
  CHECK(back["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as<int>() == 45);
  CHECK_FALSE(back["spec"]["template"]["spec"]["initContainers"].IsDefined());
}

TEST_CASE("the bulwark container's resources can be changed") {
  InjectOptions options;
  options.cpu_request = "250m";
  options.memory_request = "128Mi";
  options.memory_limit = "1Gi";
  YAML::Node c =
      documents(injected(read(kDataDir + "/pod.yaml"), options))[0]["spec"]["initContainers"][0];
  CHECK(c["resources"]["requests"]["cpu"].as<std::string>() == "250m");
  CHECK(c["resources"]["requests"]["memory"].as<std::string>() == "128Mi");
  CHECK(c["resources"]["limits"]["memory"].as<std::string>() == "1Gi");
}

TEST_CASE("a port bulwark listens on that an app container declares too is warned about") {
  InjectOptions options;
  options.ports = {8081};
  InjectResult result = inject(read(kDataDir + "/deployment.yaml"), options);
  REQUIRE(result.ok());
  REQUIRE(result.warnings.size() == 1);
  CHECK(result.warnings[0] ==
        "document 1 (Deployment web): spec.template.spec.containers[0] declares port 8081, which "
        "bulwark listens on (bulwark-8081); the app must listen on another port, or on 127.0.0.1 "
        "only");
}

TEST_CASE("injecting again with another image replaces the earlier injection") {
  std::string first = injected(read(kDataDir + "/pod.yaml"));
  InjectOptions options;
  options.image = "registry.example.com/bulwark:9.9.9";
  options.classic = true;
  YAML::Node pod = documents(injected(first, options))[0];
  CHECK_FALSE(pod["spec"]["initContainers"].IsDefined());
  REQUIRE(pod["spec"]["containers"].size() == 2);
  CHECK(pod["spec"]["containers"][0]["image"].as<std::string>() ==
        "registry.example.com/bulwark:9.9.9");
  CHECK(pod["spec"]["volumes"].size() == 1);
  CHECK(pod["metadata"]["annotations"]["owner"].as<std::string>() == "team-payments");
}

TEST_CASE("--classic adds a first container and a preStop sleep where the app has none") {
  InjectOptions options;
  options.classic = true;
  YAML::Node web = documents(injected(read(kDataDir + "/deployment.yaml"), options))[0];
  YAML::Node spec = web["spec"]["template"]["spec"];
  CHECK_FALSE(spec["initContainers"].IsDefined());
  check_container(spec["containers"][0], false);
  for (const char* name : {"app", "log-shipper"}) {
    CAPTURE(name);
    YAML::Node c = find_named(spec["containers"], name);
    CHECK(c["lifecycle"]["preStop"]["sleep"]["seconds"].as<int>() == 5);
  }
  // kubectl logs and exec pick the app, not bulwark, though bulwark comes first.
  CHECK(
      web["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
          .as<std::string>() == "app");

  InjectResult daemon = inject(read(kDataDir + "/daemonset.yaml"), options);
  REQUIRE(daemon.ok());
  YAML::Node agent =
      find_named(pod_template(documents(daemon.output)[0])["spec"]["containers"], "agent");
  CHECK(agent["lifecycle"]["preStop"]["exec"]["command"][1].as<std::string>() == "drain");
  CHECK_FALSE(agent["lifecycle"]["preStop"]["sleep"].IsDefined());
  REQUIRE(daemon.warnings.size() == 1);
  CHECK(daemon.warnings[0] ==
        "document 1 (DaemonSet node-agent): container 'agent' already has a preStop hook; left as "
        "it is (it should wait about 5 s so the pod leaves the Service before the app stops)");

  // A postStart hook stays beside the preStop that is added to the same lifecycle.
  YAML::Node api = documents(injected(read(kDataDir + "/multi-document.yaml"), options))[2];
  YAML::Node lifecycle = api["spec"]["template"]["spec"]["containers"][1]["lifecycle"];
  CHECK(lifecycle["postStart"]["exec"]["command"][0].as<std::string>() == "/bin/warm-cache");
  CHECK(lifecycle["preStop"]["sleep"]["seconds"].as<int>() == 5);

  InjectResult cron = inject(read(kDataDir + "/cronjob.yaml"), options);
  REQUIRE(cron.ok());
  REQUIRE(cron.warnings.size() == 1);
  CHECK(cron.warnings[0].find("document 1 (CronJob nightly-report): --classic: the bulwark "
                              "container keeps running") == 0);
}

TEST_CASE("--config-map-from writes the ConfigMap first and takes ports and drain times from it") {
  InjectOptions options;
  options.config_map = "web-bulwark";
  options.config_file.emplace(kConfigFile);
  std::string out =
      injected(read(kDataDir + "/deployment.yaml") + "---\n" +
                   read(kDataDir + "/statefulset.yaml") + "---\n" + read(kDataDir + "/pod.yaml"),
               options);
  std::vector<YAML::Node> docs = documents(out);
  // One ConfigMap for each namespace with an injected workload, in the order first seen.
  REQUIRE(docs.size() == 6);
  const char* namespaces[] = {"shop", "data", ""};
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(docs[i]["kind"].as<std::string>() == "ConfigMap");
    CHECK(docs[i]["metadata"]["name"].as<std::string>() == "web-bulwark");
    CHECK(docs[i]["metadata"]["namespace"].as<std::string>("") == namespaces[i]);
    CHECK(docs[i]["metadata"]["labels"]["app.kubernetes.io/managed-by"].as<std::string>() ==
          "bulwark-inject");
    CHECK(docs[i]["data"]["bulwark.yaml"].as<std::string>() == read(kConfigFile));
  }
  CHECK(out.find("  bulwark.yaml: |\n    # The bulwark config") != std::string::npos);
  YAML::Node spec = docs[3]["spec"]["template"]["spec"];
  YAML::Node ports = spec["initContainers"][0]["ports"];
  // The loopback listener (outbound) has no pod port; a long name is cut to 15 characters.
  REQUIRE(ports.size() == 3);
  CHECK(ports[0]["name"].as<std::string>() == "bulwark-inbound");
  CHECK(ports[0]["containerPort"].as<int>() == 8080);
  CHECK(ports[1]["name"].as<std::string>() == "bulwark-public");
  CHECK(ports[1]["containerPort"].as<int>() == 8443);
  CHECK(ports[2]["name"].as<std::string>() == "bulwark-probes");
  CHECK(find_named(spec["volumes"], "bulwark-config")["configMap"]["name"].as<std::string>() ==
        "web-bulwark");
  // drain_delay 10s + drain_timeout 40s + 5 s.
  CHECK(spec["terminationGracePeriodSeconds"].as<int>() == 55);

  options.classic = true;
  YAML::Node classic = documents(injected(read(kDataDir + "/pod.yaml"), options))[1];
  CHECK(classic["spec"]["containers"][1]["lifecycle"]["preStop"]["sleep"]["seconds"].as<int>() ==
        10);
}

std::vector<std::string> strings(const YAML::Node& list) {
  std::vector<std::string> out;
  for (const YAML::Node& s : list) out.push_back(s.as<std::string>());
  return out;
}

// A pod whose app declares TCP 8080, UDP 5353 and TCP 9090 (twice, in two containers).
const char* const kPodWithPorts =
    "apiVersion: v1\nkind: Pod\nmetadata: {name: shop}\nspec:\n  containers:\n"
    "    - name: shop\n      image: shop:1\n"
    "      ports: [{containerPort: 8080}, {containerPort: 5353, protocol: UDP}, "
    "{containerPort: 9090, protocol: TCP}]\n"
    "    - name: metrics\n      image: exporter:1\n      ports: [{containerPort: 9090}]\n";

TEST_CASE("--transparent writes the rules in an init container before the sidecar") {
  InjectOptions options;
  options.transparent.emplace().outbound_ports = {80, 8080};
  YAML::Node pod = documents(injected(kPodWithPorts, options))[0];
  YAML::Node spec = pod["spec"];
  REQUIRE(spec["initContainers"].size() == 2);
  YAML::Node rules = spec["initContainers"][0];
  CHECK(rules["name"].as<std::string>() == "bulwark-iptables");
  CHECK(rules["image"].as<std::string>() == std::string("bulwark:") + BULWARK_VERSION);
  CHECK_FALSE(rules["restartPolicy"].IsDefined());  // runs once, before the sidecar starts
  // The app's declared TCP ports, each once; UDP is not captured.
  CHECK(strings(rules["args"]) ==
        std::vector<std::string>{"iptables", "--inbound-ports", "8080,9090",
                                 "--inbound-redirect-port", "15006", "--outbound", "80,8080",
                                 "--outbound-redirect-port", "15001", "--proxy-uid", "65532"});
  YAML::Node sc = rules["securityContext"];
  CHECK(sc["runAsUser"].as<int>() == 0);
  CHECK_FALSE(sc["runAsNonRoot"].as<bool>());
  CHECK(strings(sc["capabilities"]["add"]) == std::vector<std::string>{"NET_ADMIN", "NET_RAW"});
  CHECK(strings(sc["capabilities"]["drop"]) == std::vector<std::string>{"ALL"});
  CHECK(sc["readOnlyRootFilesystem"].as<bool>());
  CHECK(rules["volumeMounts"][0]["name"].as<std::string>() == "bulwark-iptables-run");
  CHECK(rules["volumeMounts"][0]["mountPath"].as<std::string>() == "/run");
  check_container(spec["initContainers"][1], true);
  CHECK(find_named(spec["volumes"], "bulwark-iptables-run")["emptyDir"].IsMap());
  YAML::Node status = YAML::Load(
      pod["metadata"]["annotations"]["bulwark.io/inject-status"].as<std::string>());
  CHECK(status["iptables"].as<bool>());

  // '*' captures every port but the probes port; the given lists replace the declared ports.
  options.transparent->inbound_all = true;
  options.transparent->outbound_ports.clear();
  options.inbound_ports_given = true;
  spec = documents(injected(kPodWithPorts, options))[0]["spec"];
  CHECK(strings(spec["initContainers"][0]["args"]) ==
        std::vector<std::string>{"iptables", "--inbound-ports", "*", "--exclude-inbound-ports",
                                 "9902", "--inbound-redirect-port", "15006", "--outbound", "",
                                 "--outbound-redirect-port", "15001", "--proxy-uid", "65532"});

  // --classic: the sidecar is a container, the rules still an init container (made here), and
  // uninject takes out both and the list it made.
  options.classic = true;
  std::string classic = injected(kPodWithPorts, options);
  spec = documents(classic)[0]["spec"];
  REQUIRE(spec["initContainers"].size() == 1);
  CHECK(spec["initContainers"][0]["name"].as<std::string>() == "bulwark-iptables");
  check_container(spec["containers"][0], false);
  CHECK(injected(classic, uninject_options()) == reemitted(kPodWithPorts));

  // Injected again without --transparent: the rules go, the sidecar stays.
  std::string plain = injected(injected(kPodWithPorts, options), InjectOptions{});
  spec = documents(plain)[0]["spec"];
  REQUIRE(spec["initContainers"].size() == 1);
  CHECK(spec["initContainers"][0]["name"].as<std::string>() == "bulwark");
  CHECK_FALSE(find_named(spec["volumes"], "bulwark-iptables-run").IsDefined());
  CHECK(plain == injected(kPodWithPorts, InjectOptions{}));
}

TEST_CASE("--transparent refuses what would capture nothing, loop, or miss bulwark's listeners") {
  InjectOptions options;
  options.transparent.emplace();
  // Nothing declared, nothing asked for outbound: the sidecar without rules, and a warning.
  InjectResult result = inject(read(kDataDir + "/pod.yaml"), options);
  REQUIRE(result.ok());
  REQUIRE(result.warnings.size() == 1);
  CHECK(result.warnings[0] ==
        "document 1 (Pod debug-client): --transparent: no container declares a TCP port to "
        "capture inbound, and no --outbound-ports: injected without the bulwark-iptables init "
        "container");
  CHECK(result.output.find("bulwark-iptables") == std::string::npos);
  // The probes port is bulwark's own; a redirect port captured would loop.
  options.transparent->inbound_ports = {8080, 9902};
  options.inbound_ports_given = true;
  result = inject(kPodWithPorts, options);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "--transparent: --inbound-ports: 9902 is bulwark's probes port, which is never captured");
  options.transparent->inbound_ports = {15006};
  result = inject(kPodWithPorts, options);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "--transparent: a redirect port is among the ports it captures: connections would loop");
  // A declared port that is the redirect port: named with the document.
  options.inbound_ports_given = false;
  options.transparent->inbound_ports.clear();
  options.transparent->outbound_ports = {80};
  result = inject("kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: a\n"
                  "      ports: [{containerPort: 80}, {containerPort: 15006}]\n",
                  options);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "document 1 (Pod p): spec.containers[0].ports[1].containerPort: 15006 is where bulwark "
        "takes the connections iptables redirects (--inbound-redirect-port, "
        "--outbound-redirect-port): the app and bulwark cannot both listen there");

  // With a config file, its listeners must take the redirected connections.
  options.config_file = kConfigFile;
  result = inject(kPodWithPorts, options);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] == "--transparent: inbound connections are redirected to port 15006, but "
                            "no listener of " + kConfigFile +
                                " with original_destination: true listens there on a pod "
                                "address (0.0.0.0)");
  options.config_file = std::string(BULWARK_SOURCE_DIR) +
                        "/deploy/kubernetes/overlays/transparent/bulwark.yaml";
  CHECK(inject(kPodWithPorts, options).ok());
  options.transparent->outbound_redirect_port = 15009;
  result = inject(kPodWithPorts, options);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].find("--transparent: outbound connections are redirected to port 15009") ==
        0);
}

TEST_CASE("--transparent: excluded ports, native sidecars' ports, and what it warns about") {
  InjectOptions options;
  options.transparent.emplace().outbound_ports = {80};
  // --exclude-inbound-ports takes ports out of the declared ones; an app's own native sidecar
  // (an init container that keeps running) declares ports too, a plain init container not.
  options.transparent->exclude_inbound_ports = {9090};
  std::string pod = std::string(kPodWithPorts) +
                    "  initContainers:\n"
                    "    - {name: proxy, image: p:1, restartPolicy: Always, ports: [{containerPort: 7070}]}\n"
                    "    - {name: setup, image: s:1, ports: [{containerPort: 6060}]}\n";
  YAML::Node spec = documents(injected(pod, options))[0]["spec"];
  std::vector<std::string> args = strings(spec["initContainers"][0]["args"]);
  REQUIRE(args.size() > 3);
  CHECK(args[2] == "8080,7070");
  CHECK(std::find(args.begin(), args.end(), "--exclude-inbound-ports") == args.end());

  // An app running as bulwark's uid is let through by the rules: a warning says so. So do the
  // user's init containers with --classic, which run after the rules and before bulwark.
  options.transparent->exclude_inbound_ports.clear();
  options.classic = true;
  InjectResult result = inject(
      "kind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsUser: 65532}\n"
      "  initContainers: [{name: fetch, image: curl}]\n"
      "  containers:\n    - {name: a, image: a, ports: [{containerPort: 8080}]}\n"
      "    - {name: b, image: b, securityContext: {runAsUser: 1000}}\n",
      options);
  REQUIRE(result.ok());
  REQUIRE(result.warnings.size() == 2);
  CHECK(result.warnings[0] ==
        "document 1 (Pod p): --transparent: container 'a' runs as uid 65532, bulwark's, whose "
        "connections the rules let through: its calls out are not captured; run it as another "
        "uid");
  CHECK(result.warnings[1].find("--classic --transparent: init container 'fetch' runs after the "
                                "capture rules") != std::string::npos);

  // hostNetwork in any spelling YAML 1.1 reads as true is refused: the rules would be the node's.
  for (const char* yes : {"true", "True", "yes", "on"}) {
    CAPTURE(yes);
    result = inject(std::string("kind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: ") + yes +
                        "\n  containers: [{name: a, image: a}]\n",
                    options);
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].find("spec.hostNetwork: " + std::string(yes) + ": not injected") !=
          std::string::npos);
  }

  // A record whose "iptables" is not a boolean is not ours: refused, not half removed.
  std::string injected_pod = injected(kPodWithPorts, InjectOptions{});
  size_t at = injected_pod.find("\"sidecar\":\"initContainers\"");
  REQUIRE(at != std::string::npos);
  injected_pod.insert(at, "\"iptables\":1,");
  result = inject(injected_pod, uninject_options());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].find("not the record bulwark inject writes (\"iptables\" is not true or "
                              "false)") != std::string::npos);
}

TEST_CASE("--config-map-from refuses an invalid config with the loader's errors") {
  InjectOptions options;
  options.config_file = kDataDir + "/config/invalid.yaml";
  InjectResult result = inject(read(kDataDir + "/pod.yaml"), options);
  CHECK(result.output.empty());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].find(kDataDir + "/config/invalid.yaml:6:") == 0);
  CHECK(result.errors[0].find("nowhere") != std::string::npos);

  // A config whose probes the kubelet could not reach.
  options.config_file = kDataDir + "/config/no-probes.yaml";
  result = inject(read(kDataDir + "/pod.yaml"), options);
  CHECK(result.output.empty());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        kDataDir + "/config/no-probes.yaml: the injected pod is probed on port 9902, but the "
                   "config has no probes listener there: add probes: {address: 0.0.0.0:9902}");

  options.config_file = kDataDir + "/config/absent.yaml";
  result = inject(read(kDataDir + "/pod.yaml"), options);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].find(kDataDir + "/config/absent.yaml") == 0);
}

TEST_CASE("--config-map-from does not replace a ConfigMap of the same name that it did not make") {
  InjectOptions options;
  options.config_file = kConfigFile;
  options.config_map = "api-settings";
  InjectResult result = inject(read(kDataDir + "/multi-document.yaml"), options);
  CHECK(result.output.empty());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "ConfigMap api-settings: already in the input, not made by bulwark inject (no label "
        "app.kubernetes.io/managed-by: bulwark-inject); --config-map-from would replace it: name "
        "another with --config-map");
}

TEST_CASE("--ports names each port after its number") {
  InjectOptions options;
  options.ports = {8080, 8443};
  YAML::Node pod = documents(injected(read(kDataDir + "/pod.yaml"), options))[0];
  YAML::Node ports = pod["spec"]["initContainers"][0]["ports"];
  REQUIRE(ports.size() == 3);
  CHECK(ports[0]["name"].as<std::string>() == "bulwark-8080");
  CHECK(ports[1]["name"].as<std::string>() == "bulwark-8443");

  options.ports = {9902};
  InjectResult result = inject(read(kDataDir + "/pod.yaml"), options);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "--ports: 9902 is the probes port, which bulwark inject always exposes");
}

TEST_CASE("other documents pass through and a List has each item injected") {
  std::string input = read(kDataDir + "/multi-document.yaml");
  std::vector<YAML::Node> out = documents(injected(input));
  REQUIRE(out.size() == 3);  // the empty document between two "---" is dropped
  std::vector<YAML::Node> in = documents(input);
  CHECK(emit_stream({out[0]}) == emit_stream({in[0]}));
  CHECK(emit_stream({out[1]}) == emit_stream({in[1]}));
  // The ConfigMap's strings are still strings, and its block still a block.
  CHECK(out[1]["data"]["ENABLE_CACHE"].Tag() == "!");
  CHECK(out[1]["data"]["MAX_BODY"].Tag() == "!");
  CHECK(out[1]["data"]["settings.ini"].as<std::string>() ==
        "[server]\nlisten = 127.0.0.1:9000\ntimeout = 30\n");

  YAML::Node list = documents(injected(read(kDataDir + "/list.yaml")))[0];
  CHECK(
      list["items"][0]["spec"]["template"]["spec"]["initContainers"][0]["name"].as<std::string>() ==
      "bulwark");
  CHECK(list["items"][1]["kind"].as<std::string>() == "Service");
}

TEST_CASE("a pod template annotated bulwark.io/inject disabled is left alone") {
  std::string input = read(kDataDir + "/opt-out.yaml");
  CHECK(injected(input) == reemitted(input));

  std::string typo = input;
  typo.replace(typo.find("\"disabled\""), 10, "\"off\"");
  InjectResult result = inject(typo, {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "document 1 (Deployment legacy): spec.template.metadata.annotations[\"bulwark.io/inject\"]"
        ": 'off' is neither \"enabled\" nor \"disabled\"");
}

TEST_CASE("errors name the document and the field, and nothing is written") {
  InjectResult result = inject(read(kDataDir + "/invalid/containers-map.yaml"), {});
  CHECK(result.output.empty());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "document 2 (Deployment web): spec.template.spec.containers: not a sequence (it is a map)");

  result = inject(read(kDataDir + "/invalid/not-a-map.yaml"), {});
  CHECK(result.output.empty());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] == "document 2: not a map (it is a sequence)");

  // A pod in the node's network namespace: bulwark would take the node's ports, and its admin
  // listener would obey every process of the node.
  result = inject(read(kDataDir + "/invalid/host-network.yaml"), {});
  CHECK(result.output.empty());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].find("(DaemonSet node-agent): spec.template.spec.hostNetwork: true: not "
                              "injected") != std::string::npos);

  // An alias inside the node it names (a cycle), and an alias bomb: refused, not walked.
  for (const char* text :
       {"kind: Deployment\nspec:\n  template: &t\n    spec: {containers: [*t]}\n",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"}) {
    CAPTURE(text);
    result = inject(text, {});
    CHECK(result.output.empty());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].find("document 1: nested deeper than 64 levels or larger than") == 0);
  }

  // A key that is a list or a map is no JSON key, and yaml-cpp writes it back in a form that
  // reads back as something else (found by fuzz_inject: "[]: x" came back as two documents).
  for (const char* text : {"kind: Pod\nmetadata: {name: p}\n---\n[]: ::Pod\nmetadata:\n  name: p\n",
                           "kind: Service\nmetadata:\n  {a: b}: c\n",
                           "kind: Service\nspec:\n  ports:\n    - ? [80]\n      : x\n"}) {
    CAPTURE(text);
    result = inject(text, {});
    CHECK(result.output.empty());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].find(": a map key that is a list or a map") != std::string::npos);
  }

  // A key twice in one map: Kubernetes refuses it, and yaml-cpp would keep both, so the record
  // could be read from one copy and written to the other.
  result = inject("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    a: \"1\"\n    a: \"2\"\n",
                  {}, "app.yaml");
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] == "app.yaml:6:5: document 1: the key 'a' appears twice in one map "
                            "(Kubernetes refuses duplicate keys)");
  result = inject("kind: Service\n---\nkind: Pod\nspec: {containers: [{name: a, name: b}]}\n", {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].find("stdin:4:") == 0);
  CHECK(result.errors[0].find("document 2: the key 'name' appears twice") != std::string::npos);

  // The flow sequence opened on line 8 is never closed: the parser stops at the next "---".
  result = inject(read(kDataDir + "/invalid/broken.yaml"), {}, "broken.yaml");
  CHECK(result.output.empty());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].find("broken.yaml:9:") == 0);
  CHECK(result.errors[0].find("invalid YAML") != std::string::npos);

  // yaml-cpp's LoadAll alone would loop for ever on these (jbeder/yaml-cpp#1040).
  result = inject(",\n", {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] == "stdin:1:1: invalid YAML: no document can start here");
  result = inject("kind: Service\n---\n, x\n", {}, "app.yaml");
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] == "app.yaml:3:1: invalid YAML: no document can start here");

  result = inject("kind: Pod\nmetadata: {name: caf\xe9}\n", {}, "app.yaml");
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] == "app.yaml:2:21: not UTF-8 (byte 0xe9)");
  result = inject(std::string("kind: Pod\nmetadata: {name: a\0b}\n", 32), {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "stdin:2:19: a control character, which YAML allows only escaped in \"...\" (byte 0x00)");

  result = inject("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n", {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "document 1 (Pod p): spec.containers: missing or empty: a pod needs "
        "a container");

  result =
      inject("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a}, {image: x}]\n", {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] == "document 1 (Pod p): spec.containers[1].name: missing");
  result =
      inject("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a}, {name: a}]\n", {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "document 1 (Pod p): spec.containers[1].name: 'a' again, as spec.containers[0] is named");

  result = inject("kind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n", {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] == "document 1 (Deployment d): spec.template: missing");

  result = inject(
      "kind: List\nitems:\n  - kind: Pod\n    metadata: {name: p}\n    spec:\n"
      "      containers: [{name: bulwark, image: x}]\n",
      {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0] ==
        "document 1 (List), items[0] (Pod p): spec.containers[0]: already named 'bulwark', a name "
        "bulwark inject gives what it adds, and not recorded as added in bulwark.io/inject-status; "
        "rename it or remove it");

  result = inject(
      "kind: Pod\nmetadata:\n  name: p\n  annotations:\n"
      "    bulwark.io/inject-status: '{\"sidecar\": \"sidecars\"}'\n"
      "spec: {containers: [{name: a}]}\n",
      {});
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].find("document 1 (Pod p): metadata.annotations[\"bulwark.io/"
                              "inject-status\"]: not the record bulwark inject writes") == 0);
}

TEST_CASE("the YAML writer keeps quoted strings quoted and block text a block") {
  std::string text =
      "a: \"true\"\nb: \"9902\"\nc: plain\nd: {x: \"1\", y: [a, 'no']}\ne: |\n  one\n  two\n"
      "f: 7\ng: true\n";
  std::string out = emit_stream(YAML::LoadAll(text));
  CHECK(out ==
        "a: \"true\"\nb: \"9902\"\nc: plain\nd: {x: \"1\", y: [a, \"no\"]}\ne: |\n  one\n"
        "  two\nf: 7\ng: true\n");
  CHECK(emit_stream(YAML::LoadAll(out)) == out);
  // Control characters are escaped in double quotes wherever they stand: raw, a NUL would cut
  // the text short and a carriage return would be read as a line break.
  YAML::Node odd;
  odd["nul"] = string_node(std::string("{\"a\x00\": 1}", 9));
  odd["block"] = string_node("a\x1d\nb\n");
  odd["plain"] = YAML::Node("x\r");
  out = emit_stream({odd});
  CHECK(out == "nul: \"{\\\"a\\x00\\\": 1}\"\nblock: \"a\\x1d\\nb\\n\"\nplain: \"x\\r\"\n");
  CHECK(emit_stream(YAML::LoadAll(out)) == out);
  CHECK(YAML::Load(out)["nul"].as<std::string>() == std::string("{\"a\x00\": 1}", 9));

  YAML::Node made;
  made["s"] = string_node("yes");
  made["m"] = string_node("64Mi");
  made["p"] = string_node("/metrics");
  CHECK(emit_stream({made}) == "s: \"yes\"\nm: \"64Mi\"\np: /metrics\n");
}

}  // namespace
}  // namespace bulwark::kube
