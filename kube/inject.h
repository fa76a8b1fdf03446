#pragma once
// `bulwark inject`: adds bulwark to the pod templates of Kubernetes manifests, and takes it out
// again (--uninject).
//
// The input is a YAML stream (several documents, `kind: List` with `items`). Each pod template of
// a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and each Pod gets the bulwark
// container, its config volume, probes, resources, a restricted securityContext, Prometheus
// annotations and a long enough terminationGracePeriodSeconds; every other document passes
// through as yaml-cpp read it (key order kept, comments lost).
//
// What was added or changed is recorded in the pod template's annotation kInjectStatusAnnotation,
// so that uninjecting restores the template exactly, and injecting an injected template first
// takes the old injection out: injecting twice changes nothing, and a new image or flag replaces
// the old injection rather than adding a second one.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kube/iptables.h"

namespace bulwark::kube {

inline constexpr std::string_view kInjectStatusAnnotation = "bulwark.io/inject-status";
// "disabled" on a pod template leaves it alone; "enabled" is the default.
inline constexpr std::string_view kInjectAnnotation = "bulwark.io/inject";
// The label on a ConfigMap that --config-map-from made: uninject removes such ConfigMaps, and a
// second injection updates them instead of adding another.
inline constexpr std::string_view kManagedByLabel = "app.kubernetes.io/managed-by";
inline constexpr std::string_view kManagedByValue = "bulwark-inject";
// The probes listener (`probes:` in the bulwark config) that the kubelet's probes and
// Prometheus use; the admin listener stays on loopback.
inline constexpr uint16_t kProbesPort = 9902;

struct InjectOptions {
  bool uninject = false;
  bool classic = false;  // a plain container and preStop sleeps, not a native sidecar
  std::string image;     // empty: "bulwark:" + BULWARK_VERSION
  std::string config_map = "bulwark-config";
  // --config-map-from: a bulwark config file, checked by the real loader. Its listeners give
  // the ports, its drain_delay and drain_timeout the preStop sleep and grace period, and its
  // text a ConfigMap document written before the workloads.
  std::optional<std::string> config_file;
  std::vector<uint16_t> ports;  // --ports, without a config file
  // --transparent: an init container (bulwark-iptables, before the sidecar) writes the rules
  // that send the pod's TCP to bulwark's listeners on the redirect ports, which must read
  // original_destination. Its proxy_uid is the sidecar's; the probes port is never captured.
  std::optional<IptablesOptions> transparent;
  // Whether --inbound-ports was given; when it was not, each pod template's app containers'
  // declared TCP ports are captured inbound.
  bool inbound_ports_given = false;
  // The bulwark container's resources, Kubernetes quantities.
  std::string cpu_request = "100m";
  std::string memory_request = "64Mi";
  std::string memory_limit = "256Mi";
};

struct InjectResult {
  std::string output;                 // the whole YAML stream; empty when errors is not empty
  std::vector<std::string> errors;    // each names the document and field path
  std::vector<std::string> warnings;  // things left alone on purpose (a preStop already there)
  bool ok() const { return errors.empty(); }
};

// Injects (or uninjects) every document of `input`. `source` names the input in parse errors
// ("-" for stdin, else the file). Reads options.config_file when set; nothing else is touched.
InjectResult inject(std::string_view input, const InjectOptions& options,
                    const std::string& source = "-");

// The `bulwark inject ...` command: argv[0] is "inject". Writes the result to stdout only when
// every document succeeded; errors and warnings go to stderr. Returns 0, 1 (an input or config
// error) or 2 (a usage error).
int inject_main(int argc, char** argv);

}  // namespace bulwark::kube
