#include "kube/inject.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "config/json_writer.h"
#include "config/loader.h"
#include "config/yaml_path.h"
#include "kube/iptables.h"
#include "kube/yaml_emit.h"

namespace bulwark::kube {

namespace {

constexpr std::string_view kContainerName = "bulwark";
constexpr std::string_view kVolumeName = "bulwark-config";
// --transparent: the init container that writes the iptables rules, and the emptyDir it
// mounts on /run for iptables' lock file (the root filesystem is read-only).
constexpr std::string_view kIptablesContainerName = "bulwark-iptables";
constexpr std::string_view kIptablesVolumeName = "bulwark-iptables-run";
// Declared ports captured one by one: more make an argument the kernel may refuse.
constexpr size_t kMaxDeclaredPorts = 256;
// Every name bulwark adds, so a user's container or volume of that name is never taken for ours.
constexpr std::array<std::string_view, 4> kOurNames{kContainerName, kIptablesContainerName,
                                                    kVolumeName, kIptablesVolumeName};
constexpr std::string_view kConfigDir = "/etc/bulwark";
constexpr std::string_view kConfigKey = "bulwark.yaml";
constexpr std::string_view kProbesPortName = "bulwark-probes";
constexpr std::string_view kPortNamePrefix = "bulwark-";
constexpr size_t kMaxPortNameLength = 15;  // IANA service names, which Kubernetes port names are
constexpr int kNonRootId = 65532;          // the image's user and group ("nonroot" in distroless)
constexpr int kStartupPeriodSeconds = 1;
constexpr int kStartupFailureThreshold = 60;  // a minute to load the config and bind
constexpr int kReadinessPeriodSeconds = 2;
constexpr int kLivenessPeriodSeconds = 10;
constexpr int kLivenessFailureThreshold = 3;
// The kubelet's default when a pod template does not say.
constexpr int kDefaultGraceSeconds = 30;
// Beyond drain_delay + drain_timeout: time to flush the logs and exit after the drain.
constexpr int kGraceMarginSeconds = 5;

// Pod template annotations added when absent; the user's own values are never replaced.
const std::vector<std::pair<std::string, std::string>> kScrapeAnnotations{
    {"prometheus.io/scrape", "true"},
    {"prometheus.io/port", std::to_string(kProbesPort)},
    {"prometheus.io/path", "/metrics"},
};
// With --classic bulwark is the first container, which `kubectl logs` and `exec` would pick.
constexpr std::string_view kDefaultContainerAnnotation = "kubectl.kubernetes.io/default-container";

// An error in one object: where (a field path inside it) and what is wrong. Thrown inside this
// file only, caught per document and turned into a message that names the document.
struct FieldError {
  std::string path;
  std::string message;
};

[[noreturn]] void fail(std::string path, std::string message) {
  throw FieldError{std::move(path), std::move(message)};
}

using config::child_path;
using config::item_path;

const char* type_name(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Scalar:
      return "a scalar";
    default:
      return "null";
  }
}

YAML::Node undefined() { return YAML::Node(YAML::NodeType::Undefined); }

// The value under `key`, or an undefined node when there is none (or `parent` is no map).
// Reads through the const operator[], which does not insert the key; what that returns for a
// missing key throws on anything but IsDefined(), so it never leaves this function.
YAML::Node child(const YAML::Node& parent, std::string_view key) {
  if (!parent.IsMap()) return undefined();
  YAML::Node value = parent[std::string(key)];
  return value.IsDefined() ? value : undefined();
}

bool present(const YAML::Node& node) { return node.IsDefined() && !node.IsNull(); }

// Whether a scalar reads as true in YAML 1.1, as Kubernetes' decoder reads it (True, yes, on...).
bool yaml_true(const YAML::Node& node) {
  if (!node.IsScalar()) return false;
  std::string lower = node.Scalar();
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower == "true" || lower == "yes" || lower == "on" || lower == "y";
}

// The map under `key`: undefined when absent (or null); fails when it is something else.
YAML::Node optional_map(const YAML::Node& parent, std::string_view key, const std::string& path) {
  YAML::Node node = child(parent, key);
  if (!present(node)) return undefined();
  if (!node.IsMap())
    fail(child_path(path, key), std::string("not a map (it is ") + type_name(node) + ")");
  return node;
}

YAML::Node required_map(const YAML::Node& parent, std::string_view key, const std::string& path) {
  YAML::Node node = optional_map(parent, key, path);
  if (!node.IsDefined()) fail(child_path(path, key), "missing");
  return node;
}

YAML::Node optional_sequence(const YAML::Node& parent, std::string_view key,
                             const std::string& path) {
  YAML::Node node = child(parent, key);
  if (!present(node)) return undefined();
  if (!node.IsSequence())
    fail(child_path(path, key), std::string("not a sequence (it is ") + type_name(node) + ")");
  return node;
}

// A scalar's text, or "" when absent; fails when present and not a scalar.
std::string optional_string(const YAML::Node& parent, std::string_view key,
                            const std::string& path) {
  YAML::Node node = child(parent, key);
  if (!present(node)) return "";
  if (!node.IsScalar())
    fail(child_path(path, key), std::string("not a string (it is ") + type_name(node) + ")");
  return node.Scalar();
}

bool named_one_of(const YAML::Node& entry, const std::vector<std::string_view>& names) {
  return entry.IsMap() && child(entry, "name").IsScalar() &&
         std::find(names.begin(), names.end(), child(entry, "name").Scalar()) != names.end();
}

// The items of `list` with `first` in front and those named in `drop` left out; same flow/block
// style as `list`, so a round trip writes it as it was.
YAML::Node rebuilt(const YAML::Node& list, const std::vector<YAML::Node>& first,
                   const std::vector<std::string_view>& drop) {
  YAML::Node out(YAML::NodeType::Sequence);
  out.SetStyle(list.Style());
  for (const YAML::Node& entry : first) out.push_back(entry);
  for (const YAML::Node& entry : list) {
    if (!named_one_of(entry, drop)) out.push_back(entry);
  }
  return out;
}

YAML::Node int_node(int64_t value) { return YAML::Node(std::to_string(value)); }

YAML::Node string_list(const std::vector<std::string>& values) {
  YAML::Node out(YAML::NodeType::Sequence);
  for (const auto& v : values) out.push_back(string_node(v));
  return out;
}

int seconds_rounded_up(config::Duration d) { return static_cast<int>((d.count() + 999) / 1000); }

// ---- What goes into every pod template, worked out once from the options ----

struct SidecarPort {
  std::string name;
  uint16_t port = 0;
};

struct Sidecar {
  std::string image;
  std::string config_map;
  bool classic = false;
  std::vector<SidecarPort> ports;  // the listeners', then the probes port
  int pre_stop_seconds = 0;        // --classic: the app containers sleep this long on SIGTERM
  int min_grace_seconds = 0;
  std::optional<std::string> config_text;  // --config-map-from: the ConfigMap's bulwark.yaml
  std::string cpu_request;
  std::string memory_request;
  std::string memory_limit;
  // --transparent: the rules' options. No inbound ports given: each pod template's app
  // containers' declared TCP ports.
  std::optional<IptablesOptions> iptables;
  bool inbound_ports_given = false;
};

// "bulwark-" + the listener's name as Kubernetes takes a port name: lowercase letters, digits
// and single dashes, at most 15 characters, no dash at either end.
std::string port_name(std::string_view listener) {
  std::string name(kPortNamePrefix);
  for (unsigned char c : listener) {
    char lower = static_cast<char>(std::tolower(c));
    bool ok = (lower >= 'a' && lower <= 'z') || (lower >= '0' && lower <= '9');
    if (ok) {
      name += lower;
    } else if (name.back() != '-') {
      name += '-';
    }
  }
  if (name.size() > kMaxPortNameLength) name.resize(kMaxPortNameLength);
  while (name.back() == '-') name.pop_back();
  return name;
}

bool is_loopback(const config::SocketAddress& address) {
  return address.is_ip && (address.host.rfind("127.", 0) == 0 || address.host == "::1");
}

void add_port(Sidecar* sidecar, std::string name, uint16_t port) {
  auto taken = [sidecar](const std::string& n) {
    return n == kProbesPortName || std::any_of(sidecar->ports.begin(), sidecar->ports.end(),
                                               [&n](const SidecarPort& p) { return p.name == n; });
  };
  // Two listener names can shorten to the same port name: the port number tells them apart.
  if (taken(name)) name = std::string(kPortNamePrefix) + std::to_string(port);
  sidecar->ports.push_back({std::move(name), port});
}

bool read_text_file(const std::string& path, std::string* text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  text->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

bool has(const std::vector<uint16_t>& ports, uint16_t port) {
  return std::find(ports.begin(), ports.end(), port) != ports.end();
}

// Whether the config has a listener that takes connections redirected to `port`: one reading
// original_destination, on a pod address for inbound (PREROUTING's REDIRECT goes to the
// interface's address), on any for outbound (OUTPUT's goes to 127.0.0.1).
bool takes_redirect(const config::Config& config, uint16_t port, bool inbound) {
  return std::any_of(config.listeners.begin(), config.listeners.end(), [&](const auto& l) {
    return l.original_destination && l.address.port == port && !(inbound && is_loopback(l.address));
  });
}

// --transparent: the rules' options, checked, into sidecar->iptables. Returns what is wrong, or
// "" when nothing is.
// `config` is the --config-map-from file's, or null.
std::string transparent_rules(const InjectOptions& options, const config::Config* config,
                              Sidecar* sidecar) {
  IptablesOptions rules = *options.transparent;
  rules.proxy_uid = kNonRootId;
  // The kubelet's probes and Prometheus reach bulwark itself, never a redirect.
  if (has(rules.inbound_ports, kProbesPort))
    return "--inbound-ports: " + std::to_string(kProbesPort) +
           " is bulwark's probes port, which is never captured";
  if (rules.inbound_redirect_port == kProbesPort || rules.outbound_redirect_port == kProbesPort)
    return "a redirect port is " + std::to_string(kProbesPort) + ", bulwark's probes port";
  if (rules.inbound_all && !has(rules.exclude_inbound_ports, kProbesPort))
    rules.exclude_inbound_ports.push_back(kProbesPort);
  if (std::string why = check_iptables_options(rules); !why.empty()) return why;
  if (config != nullptr) {
    bool inbound =
        rules.inbound_all || !rules.inbound_ports.empty() || !options.inbound_ports_given;
    bool outbound = rules.outbound_all || !rules.outbound_ports.empty();
    for (bool in : {true, false}) {
      uint16_t port = in ? rules.inbound_redirect_port : rules.outbound_redirect_port;
      if ((in ? inbound : outbound) && !takes_redirect(*config, port, in))
        return std::string(in ? "inbound" : "outbound") + " connections are redirected to port " +
               std::to_string(port) + ", but no listener of " + *options.config_file +
               " with original_destination: true listens there" +
               (in ? " on a pod address (0.0.0.0)" : "");
    }
  }
  sidecar->iptables = std::move(rules);
  sidecar->inbound_ports_given = options.inbound_ports_given;
  return "";
}

std::optional<Sidecar> make_sidecar(const InjectOptions& options,
                                    std::vector<std::string>* errors) {
  Sidecar sidecar;
  sidecar.image = options.image.empty() ? std::string("bulwark:") + BULWARK_VERSION : options.image;
  sidecar.config_map = options.config_map;
  sidecar.classic = options.classic;
  sidecar.cpu_request = options.cpu_request;
  sidecar.memory_request = options.memory_request;
  sidecar.memory_limit = options.memory_limit;
  config::Config defaults;
  config::Duration drain_delay = defaults.drain_delay;
  config::Duration drain_timeout = defaults.drain_timeout;
  config::LoadResult loaded;
  if (options.config_file) {
    const std::string& file = *options.config_file;
    loaded = config::load_config_file(file);
    for (const auto& e : loaded.errors) errors->push_back(e.to_string());
    if (!loaded.ok()) return std::nullopt;
    std::string text;
    if (!read_text_file(file, &text)) {
      errors->push_back(file + ": cannot read it again after loading it");
      return std::nullopt;
    }
    // The kubelet probes the pod on kProbesPort: the config must serve its probes there.
    const auto& probes = loaded.config->probes;
    if (!probes || probes->address.port != kProbesPort || is_loopback(probes->address)) {
      errors->push_back(file + ": the injected pod is probed on port " +
                        std::to_string(kProbesPort) +
                        ", but the config has no probes listener there: add probes: {address: "
                        "0.0.0.0:" +
                        std::to_string(kProbesPort) + "}");
      return std::nullopt;
    }
    sidecar.config_text = std::move(text);
    drain_delay = loaded.config->drain_delay;
    drain_timeout = loaded.config->drain_timeout;
    for (const auto& listener : loaded.config->listeners) {
      // A loopback listener (an outbound one, for the app's own calls) is no pod port.
      if (is_loopback(listener.address) || listener.address.port == 0) continue;
      if (listener.address.port == kProbesPort) {
        errors->push_back(file + ": listener '" + listener.name + "' uses port " +
                          std::to_string(kProbesPort) +
                          ", the port of the probes listener that bulwark inject exposes");
        return std::nullopt;
      }
      add_port(&sidecar, port_name(listener.name), listener.address.port);
    }
  } else {
    for (uint16_t port : options.ports) {
      if (port == kProbesPort) {
        errors->push_back("--ports: " + std::to_string(port) +
                          " is the probes port, which bulwark inject always exposes");
        return std::nullopt;
      }
      add_port(&sidecar, std::string(kPortNamePrefix) + std::to_string(port), port);
    }
  }
  sidecar.ports.push_back({std::string(kProbesPortName), kProbesPort});
  if (options.transparent) {
    std::string why = transparent_rules(options, loaded.config.get(), &sidecar);
    if (!why.empty()) {
      errors->push_back("--transparent: " + why);
      return std::nullopt;
    }
  }
  sidecar.pre_stop_seconds = std::max(1, seconds_rounded_up(drain_delay));
  sidecar.min_grace_seconds = seconds_rounded_up(drain_delay + drain_timeout) + kGraceMarginSeconds;
  return sidecar;
}

YAML::Node http_probe(std::string_view path, int period, int failure_threshold) {
  YAML::Node probe;
  probe["httpGet"]["path"] = string_node(path);
  probe["httpGet"]["port"] = int_node(kProbesPort);
  probe["periodSeconds"] = int_node(period);
  if (failure_threshold > 0) probe["failureThreshold"] = int_node(failure_threshold);
  return probe;
}

YAML::Node sidecar_container(const Sidecar& sidecar) {
  YAML::Node c;
  c["name"] = string_node(kContainerName);
  c["image"] = string_node(sidecar.image);
  c["imagePullPolicy"] = string_node("IfNotPresent");
  // A native sidecar (Kubernetes 1.29+): an init container that keeps running, started before
  // the app's containers and stopped after them.
  if (!sidecar.classic) c["restartPolicy"] = string_node("Always");
  c["args"] = string_list({"--config", std::string(kConfigDir) + "/" + std::string(kConfigKey)});
  YAML::Node ports(YAML::NodeType::Sequence);
  for (const auto& p : sidecar.ports) {
    YAML::Node port;
    port["name"] = string_node(p.name);
    port["containerPort"] = int_node(p.port);
    ports.push_back(port);
  }
  c["ports"] = ports;
  c["startupProbe"] = http_probe("/ready", kStartupPeriodSeconds, kStartupFailureThreshold);
  c["readinessProbe"] = http_probe("/ready", kReadinessPeriodSeconds, 0);
  c["livenessProbe"] = http_probe("/healthz", kLivenessPeriodSeconds, kLivenessFailureThreshold);
  c["resources"]["requests"]["cpu"] = string_node(sidecar.cpu_request);
  c["resources"]["requests"]["memory"] = string_node(sidecar.memory_request);
  c["resources"]["limits"]["memory"] = string_node(sidecar.memory_limit);
  // What Pod Security "restricted" asks of a container.
  YAML::Node security;
  security["runAsNonRoot"] = YAML::Node("true");
  security["runAsUser"] = int_node(kNonRootId);
  security["runAsGroup"] = int_node(kNonRootId);
  security["readOnlyRootFilesystem"] = YAML::Node("true");
  security["allowPrivilegeEscalation"] = YAML::Node("false");
  security["capabilities"]["drop"] = string_list({"ALL"});
  security["seccompProfile"]["type"] = string_node("RuntimeDefault");
  c["securityContext"] = security;
  YAML::Node mount;
  mount["name"] = string_node(kVolumeName);
  mount["mountPath"] = string_node(kConfigDir);
  mount["readOnly"] = YAML::Node("true");
  c["volumeMounts"].push_back(mount);
  return c;
}

// --transparent: writes the rules once, as root with NET_ADMIN (and NET_RAW, which iptables asks
// for), then exits; the sidecar and the app start after it.
YAML::Node iptables_container(const Sidecar& sidecar, const IptablesOptions& rules) {
  YAML::Node c;
  c["name"] = string_node(kIptablesContainerName);
  c["image"] = string_node(sidecar.image);
  c["imagePullPolicy"] = string_node("IfNotPresent");
  c["args"] = string_list(iptables_args(rules));
  c["resources"]["requests"]["cpu"] = string_node("10m");
  c["resources"]["requests"]["memory"] = string_node("16Mi");
  c["resources"]["limits"]["memory"] = string_node("64Mi");
  YAML::Node security;
  security["runAsUser"] = int_node(0);
  security["runAsNonRoot"] = YAML::Node("false");
  security["readOnlyRootFilesystem"] = YAML::Node("true");
  security["allowPrivilegeEscalation"] = YAML::Node("false");
  security["capabilities"]["drop"] = string_list({"ALL"});
  security["capabilities"]["add"] = string_list({"NET_ADMIN", "NET_RAW"});
  security["seccompProfile"]["type"] = string_node("RuntimeDefault");
  c["securityContext"] = security;
  YAML::Node mount;
  mount["name"] = string_node(kIptablesVolumeName);
  mount["mountPath"] = string_node("/run");  // iptables' lock file
  c["volumeMounts"].push_back(mount);
  return c;
}

YAML::Node iptables_volume() {
  YAML::Node volume;
  volume["name"] = string_node(kIptablesVolumeName);
  volume["emptyDir"] = YAML::Node(YAML::NodeType::Map);
  return volume;
}

YAML::Node config_volume(const Sidecar& sidecar) {
  YAML::Node volume;
  volume["name"] = string_node(kVolumeName);
  volume["configMap"]["name"] = string_node(sidecar.config_map);
  return volume;
}

// ---- The record in kInjectStatusAnnotation ----

// What an injection added to one pod template, and what it changed, so uninject can take
// exactly that out. Paths are relative to the pod template.
struct InjectStatus {
  std::string sidecar_list;          // "initContainers" or "containers"
  bool iptables = false;             // --transparent: the bulwark-iptables init container
  std::vector<std::string> created;  // maps and lists made: "metadata.annotations", ...
  // Of those (and of terminationGracePeriodSeconds), the ones that stood as an explicit null,
  // which uninject puts back in place rather than removing the key.
  std::vector<std::string> nulls;
  std::vector<std::string> annotations;
  struct PreStop {
    std::string container;
    bool lifecycle_created = false;
  };
  std::vector<PreStop> pre_stops;
  // terminationGracePeriodSeconds: what was set, and what it was before as YAML ("10", or
  // "\"10\"" when it was quoted), so it comes back written the same; none: absent or null.
  std::optional<int64_t> grace_set;
  std::optional<std::string> grace_previous;

  bool was_created(std::string_view what) const {
    return std::find(created.begin(), created.end(), what) != created.end();
  }
  bool was_null(std::string_view what) const {
    return std::find(nulls.begin(), nulls.end(), what) != nulls.end();
  }
  // Notes that `parent[key]`, called `what` here, is about to be made.
  void note_made(const YAML::Node& parent, std::string_view key, std::string what) {
    if (child(parent, key).IsDefined()) nulls.push_back(what);  // there, so an explicit null
    created.push_back(std::move(what));
  }
};

// The map under `key`, made (in place of a null, or appended to `parent`) when absent, and
// noted as made in `status`.
YAML::Node ensure_map(YAML::Node parent, std::string_view key, const std::string& path,
                      std::string what, InjectStatus* status) {
  YAML::Node node = optional_map(parent, key, path);
  if (node.IsDefined()) return node;
  status->note_made(parent, key, std::move(what));
  parent[std::string(key)] = YAML::Node(YAML::NodeType::Map);
  return child(parent, key);
}

// Takes out what an injection made: back to the null it replaced, or the key removed.
void unmake(YAML::Node parent, const std::string& key, std::string_view what,
            const InjectStatus& status) {
  if (status.was_null(what)) {
    parent[key] = YAML::Node(YAML::NodeType::Null);
  } else {
    parent.remove(key);
  }
}

std::string to_json(const InjectStatus& status) {
  config::JsonWriter w;
  w.begin_object();
  w.member("version", BULWARK_VERSION);
  w.member("sidecar", status.sidecar_list);
  if (status.iptables) w.member("iptables", true);
  w.key("created");
  w.begin_array();
  for (const auto& c : status.created) w.string(c);
  w.end_array();
  if (!status.nulls.empty()) {
    w.key("nulls");
    w.begin_array();
    for (const auto& n : status.nulls) w.string(n);
    w.end_array();
  }
  w.key("annotations");
  w.begin_array();
  for (const auto& a : status.annotations) w.string(a);
  w.end_array();
  w.key("preStops");
  w.begin_array();
  for (const auto& p : status.pre_stops) {
    w.begin_object();
    w.member("container", p.container);
    w.member("lifecycleCreated", p.lifecycle_created);
    w.end_object();
  }
  w.end_array();
  if (status.grace_set) {
    w.key("terminationGracePeriodSeconds");
    w.begin_object();
    w.member("set", *status.grace_set);
    w.key("previous");
    if (status.grace_previous) {
      w.string(*status.grace_previous);
    } else {
      w.null();
    }
    w.end_object();
  }
  w.end_object();
  return w.take();
}

// Reads the annotation back. JSON is YAML, so yaml-cpp parses it.
InjectStatus parse_status(const std::string& text, const std::string& path) {
  auto bad = [&path](const std::string& why) {
    fail(path, "not the record bulwark inject writes (" + why +
                   "); remove the annotation and the "
                   "bulwark container by hand");
  };
  YAML::Node root;
  try {
    root.reset(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    bad(e.msg);
  }
  if (!root.IsMap()) bad("not a JSON object");
  InjectStatus status;
  YAML::Node list = child(root, "sidecar");
  if (!list.IsScalar() || (list.Scalar() != "initContainers" && list.Scalar() != "containers"))
    bad("\"sidecar\" is not \"initContainers\" or \"containers\"");
  status.sidecar_list = list.Scalar();
  YAML::Node iptables = child(root, "iptables");
  if (iptables.IsDefined() &&
      (!iptables.IsScalar() || (iptables.Scalar() != "true" && iptables.Scalar() != "false")))
    bad("\"iptables\" is not true or false");
  status.iptables = iptables.IsDefined() && iptables.Scalar() == "true";
  auto strings = [&bad](const YAML::Node& node, const char* name) {
    std::vector<std::string> out;
    if (!node.IsDefined()) return out;
    if (!node.IsSequence()) bad(std::string("\"") + name + "\" is not an array");
    for (const YAML::Node& s : node) {
      if (!s.IsScalar()) bad(std::string("\"") + name + "\" holds a non-string");
      out.push_back(s.Scalar());
    }
    return out;
  };
  status.created = strings(child(root, "created"), "created");
  status.nulls = strings(child(root, "nulls"), "nulls");
  status.annotations = strings(child(root, "annotations"), "annotations");
  YAML::Node pre_stops = child(root, "preStops");
  if (pre_stops.IsDefined()) {
    if (!pre_stops.IsSequence()) bad("\"preStops\" is not an array");
    for (const YAML::Node& p : pre_stops) {
      if (!p.IsMap() || !child(p, "container").IsScalar()) bad("a preStop without a container");
      status.pre_stops.push_back(
          {child(p, "container").Scalar(), child(p, "lifecycleCreated").IsScalar() &&
                                               child(p, "lifecycleCreated").Scalar() == "true"});
    }
  }
  YAML::Node grace = child(root, "terminationGracePeriodSeconds");
  if (grace.IsDefined()) {
    if (!grace.IsMap() || !child(grace, "set").IsScalar()) bad("no grace period \"set\"");
    try {
      status.grace_set = child(grace, "set").as<int64_t>();
    } catch (const YAML::Exception&) {
      bad("the grace period \"set\" is not a number");
    }
    YAML::Node previous = child(grace, "previous");
    if (previous.IsScalar()) status.grace_previous = previous.Scalar();
  }
  return status;
}

// ---- Injecting and uninjecting one pod template ----

// How InjectStatus::nulls names a container's lifecycle.
std::string lifecycle_path(const std::string& container) {
  return "spec.containers[" + container + "].lifecycle";
}

const std::map<std::string, std::string, std::less<>> kPodTemplatePaths{
    {"Deployment", "spec.template"},
    {"StatefulSet", "spec.template"},
    {"DaemonSet", "spec.template"},
    {"ReplicaSet", "spec.template"},
    {"Job", "spec.template"},
    {"CronJob", "spec.jobTemplate.spec.template"},
    {"Pod", ""},
};

class Injector {
 public:
  Injector(const Sidecar& sidecar, bool uninject) : sidecar_(sidecar), uninject_(uninject) {}

  // Injects or uninjects the pod template of one object, if its kind has one. Returns whether
  // the object holds a pod template that was injected (so needs the config ConfigMap).
  bool process(YAML::Node object, const std::string& kind, const std::string& label) {
    auto found = kPodTemplatePaths.find(kind);
    if (found == kPodTemplatePaths.end()) return false;
    label_ = label;
    kind_ = kind;
    YAML::Node pod = object;
    std::string path;
    std::string rest = found->second;
    while (!rest.empty()) {
      size_t dot = rest.find('.');
      std::string key = rest.substr(0, dot);
      pod.reset(required_map(pod, key, path));
      path = child_path(path, key);
      rest = dot == std::string::npos ? "" : rest.substr(dot + 1);
    }
    return process_template(pod, path);
  }

  std::vector<std::string> take_warnings() { return std::move(warnings_); }

 private:
  void warn(const std::string& message) { warnings_.push_back(label_ + ": " + message); }

  bool process_template(YAML::Node pod, const std::string& path) {
    std::string meta_path = child_path(path, "metadata");
    YAML::Node metadata = optional_map(pod, "metadata", path);
    std::string annotations_path = child_path(meta_path, "annotations");
    YAML::Node annotations = optional_map(metadata, "annotations", meta_path);
    std::string opt = "";
    std::string status_text;
    if (annotations.IsDefined()) {
      opt = optional_string(annotations, kInjectAnnotation, annotations_path);
      status_text = optional_string(annotations, kInjectStatusAnnotation, annotations_path);
    }
    if (!opt.empty() && opt != "enabled" && opt != "disabled")
      fail(child_path(annotations_path, kInjectAnnotation),
           "'" + opt + "' is neither \"enabled\" nor \"disabled\"");
    bool disabled = opt == "disabled";
    if (disabled && !uninject_) return false;
    if (!status_text.empty()) {
      remove_sidecar(
          pod, path,
          parse_status(status_text, child_path(annotations_path, kInjectStatusAnnotation)));
    }
    if (uninject_ || disabled) return false;
    add_sidecar(pod, path);
    return true;
  }

  // Fails when an entry has no name or the name of another (Kubernetes refuses both, and uninject
  // finds containers by name), or when a container or volume of ours is already there without
  // our record: injecting would make a second one, and uninjecting would remove the user's.
  void check_names(const YAML::Node& list, const std::string& path) {
    std::vector<std::string> seen;
    for (size_t i = 0; i < list.size(); ++i) {
      YAML::Node entry = list[i];
      if (!entry.IsMap())
        fail(item_path(path, i), std::string("not a map (it is ") + type_name(entry) + ")");
      std::string name = optional_string(entry, "name", item_path(path, i));
      if (name.empty()) fail(child_path(item_path(path, i), "name"), "missing");
      auto earlier = std::find(seen.begin(), seen.end(), name);
      if (earlier != seen.end())
        fail(child_path(item_path(path, i), "name"),
             "'" + name + "' again, as " + item_path(path, earlier - seen.begin()) + " is named");
      seen.push_back(name);
      if (std::find(kOurNames.begin(), kOurNames.end(), name) != kOurNames.end())
        fail(item_path(path, i),
             "already named '" + name +
                 "', a name bulwark inject gives what it adds, and not recorded "
                 "as added in bulwark.io/inject-status; rename it or remove it");
    }
  }

  void add_sidecar(YAML::Node pod, const std::string& path) {
    InjectStatus status;
    std::string spec_path = child_path(path, "spec");
    YAML::Node spec = required_map(pod, "spec", path);
    // In the node's network namespace bulwark's listeners would be the node's, and every
    // process of the node (every hostNetwork pod too) a loopback peer its admin listener obeys.
    YAML::Node host_network = child(spec, "hostNetwork");
    if (yaml_true(host_network))
      fail(
          child_path(spec_path, "hostNetwork"),
          host_network.Scalar() +
              ": not injected: bulwark's ports would be the node's, and every process on the node "
              "could drain or reload it through its loopback admin listener (annotate the template "
              "bulwark.io/inject: \"disabled\" to pass it through)");
    std::string containers_path = child_path(spec_path, "containers");
    YAML::Node containers = optional_sequence(spec, "containers", spec_path);
    if (!containers.IsDefined() || containers.size() == 0)
      fail(containers_path, "missing or empty: a pod needs a container");
    check_names(containers, containers_path);
    YAML::Node init = optional_sequence(spec, "initContainers", spec_path);
    if (init.IsDefined()) check_names(init, child_path(spec_path, "initContainers"));
    YAML::Node volumes = optional_sequence(spec, "volumes", spec_path);
    if (volumes.IsDefined()) check_names(volumes, child_path(spec_path, "volumes"));
    warn_port_clashes(containers, containers_path);

    // Init containers run in order: the rules are written before the sidecar starts.
    std::vector<YAML::Node> first_inits;
    std::optional<IptablesOptions> rules;
    if (sidecar_.iptables) rules = capture_rules(spec, spec_path);
    if (rules) {
      first_inits.push_back(iptables_container(sidecar_, *rules));
      status.iptables = true;
      warn_uncaptured(spec, spec_path, *rules);
    }
    YAML::Node container = sidecar_container(sidecar_);
    if (!sidecar_.classic) first_inits.push_back(container);
    if (!first_inits.empty()) {
      if (!init.IsDefined()) {
        status.note_made(spec, "initContainers", "spec.initContainers");
        init.reset(YAML::Node(YAML::NodeType::Sequence));
      }
      spec["initContainers"] = rebuilt(init, first_inits, {});
    }
    if (sidecar_.classic) {
      status.sidecar_list = "containers";
      if (kind_ == "Job" || kind_ == "CronJob")
        warn(
            "--classic: the bulwark container keeps running after the job's containers end, so "
            "the Job never completes; the native sidecar (without --classic) stops with them");
      add_pre_stops(containers, containers_path, &status);
      std::string first_app = optional_string(containers[0], "name", item_path(containers_path, 0));
      spec["containers"] = rebuilt(containers, {container}, {});
      if (!first_app.empty())
        add_annotation_if_absent(pod, path, kDefaultContainerAnnotation, first_app, &status);
    } else {
      status.sidecar_list = "initContainers";
    }
    bool made_volumes = !volumes.IsDefined();
    if (made_volumes) {
      status.note_made(spec, "volumes", "spec.volumes");
      volumes.reset(YAML::Node(YAML::NodeType::Sequence));
    }
    volumes.push_back(config_volume(sidecar_));
    if (rules) volumes.push_back(iptables_volume());
    if (made_volumes) spec["volumes"] = volumes;
    raise_grace_period(spec, spec_path, &status);
    for (const auto& [name, value] : kScrapeAnnotations)
      add_annotation_if_absent(pod, path, name, value, &status);
    // Last, so the record is complete: it lists the annotations above, not itself.
    YAML::Node annotations = annotations_map(pod, path, &status);
    annotations[std::string(kInjectStatusAnnotation)] = string_node(to_json(status));
  }

  // --transparent: the rules for this pod template, or none (with a warning) when it has nothing
  // to capture. Without --inbound-ports, the TCP ports its app containers (and its own native
  // sidecars) declare are captured inbound (the ones a Service can target), less
  // --exclude-inbound-ports.
  std::optional<IptablesOptions> capture_rules(const YAML::Node& spec,
                                               const std::string& spec_path) {
    IptablesOptions rules = *sidecar_.iptables;
    if (!sidecar_.inbound_ports_given) {
      for (const char* list_name : {"containers", "initContainers"}) {
        std::string list_path = child_path(spec_path, list_name);
        YAML::Node list = optional_sequence(spec, list_name, spec_path);
        for (size_t i = 0; list.IsDefined() && i < list.size(); ++i) {
          if (std::string_view(list_name) == "initContainers" &&
              optional_string(list[i], "restartPolicy", item_path(list_path, i)) != "Always")
            continue;  // runs to completion before the app: serves no one
          add_declared_ports(list[i], item_path(list_path, i), &rules);
        }
      }
      rules.exclude_inbound_ports.clear();  // applied above; the rules capture a list
    }
    bool outbound = rules.outbound_all || !rules.outbound_ports.empty();
    if (rules.inbound_ports.empty() && !rules.inbound_all && !outbound) {
      warn(
          "--transparent: no container declares a TCP port to capture inbound, and no "
          "--outbound-ports: injected without the bulwark-iptables init container");
      return std::nullopt;
    }
    if (std::string why = check_iptables_options(rules); !why.empty())
      fail(child_path(spec_path, "containers"), "--transparent: " + why);
    return rules;
  }

  // The TCP ports `container` declares, into rules->inbound_ports (each once).
  void add_declared_ports(const YAML::Node& container, const std::string& path,
                          IptablesOptions* rules) {
    std::string ports_path = child_path(path, "ports");
    YAML::Node ports = optional_sequence(container, "ports", path);
    for (size_t j = 0; ports.IsDefined() && j < ports.size(); ++j) {
      YAML::Node port = ports[j];
      if (!port.IsMap()) continue;
      YAML::Node protocol = child(port, "protocol");
      if (protocol.IsScalar() && protocol.Scalar() != "TCP") continue;
      YAML::Node number = child(port, "containerPort");
      int value = 0;
      if (number.IsScalar()) {
        try {
          value = number.as<int>();
        } catch (const YAML::Exception&) {
        }
      }
      if (value < 1 || value > 65535) continue;  // the API server refuses it
      auto p = static_cast<uint16_t>(value);
      if (p == kProbesPort || has(rules->exclude_inbound_ports, p) || has(rules->inbound_ports, p))
        continue;
      if (p == rules->inbound_redirect_port || p == rules->outbound_redirect_port)
        fail(child_path(item_path(ports_path, j), "containerPort"),
             std::to_string(p) +
                 " is where bulwark takes the connections iptables redirects "
                 "(--inbound-redirect-port, --outbound-redirect-port): the app and bulwark "
                 "cannot both listen there");
      if (rules->inbound_ports.size() == kMaxDeclaredPorts)
        fail(path, "--transparent: more than " + std::to_string(kMaxDeclaredPorts) +
                       " declared ports to capture: name them with --inbound-ports, or '*'");
      rules->inbound_ports.push_back(p);
    }
  }

  // Connections that the rules do not capture although the user may expect them to.
  void warn_uncaptured(const YAML::Node& spec, const std::string& spec_path,
                       const IptablesOptions& rules) {
    if (!rules.outbound_all && rules.outbound_ports.empty()) return;
    // The rules let bulwark's uid through, so an app running as that uid is never captured.
    auto runs_as_bulwark = [](const YAML::Node& owner) {
      YAML::Node context = child(owner, "securityContext");
      YAML::Node uid = child(context, "runAsUser");
      return uid.IsScalar() && uid.Scalar() == std::to_string(kNonRootId);
    };
    bool pod_uid = runs_as_bulwark(spec);
    YAML::Node containers = child(spec, "containers");
    for (const YAML::Node& c : containers) {
      YAML::Node uid = child(child(c, "securityContext"), "runAsUser");
      if (runs_as_bulwark(c) || (pod_uid && !uid.IsDefined()))
        warn("--transparent: container '" + optional_string(c, "name", spec_path) +
             "' runs as uid " + std::to_string(kNonRootId) +
             ", bulwark's, whose connections the rules let through: its calls out are not "
             "captured; run it as another uid");
    }
    // --classic: the user's init containers run after the rules, before bulwark listens.
    YAML::Node init = child(spec, "initContainers");
    if (!sidecar_.classic || !init.IsSequence()) return;
    for (const YAML::Node& c : init) {
      std::string name = optional_string(c, "name", spec_path);
      if (name == kIptablesContainerName) continue;
      warn("--classic --transparent: init container '" + name +
           "' runs after the capture rules and before bulwark starts, so its connections to "
           "captured ports fail; the native sidecar (without --classic) starts before it");
    }
  }

  YAML::Node annotations_map(YAML::Node pod, const std::string& path, InjectStatus* status) {
    YAML::Node metadata = ensure_map(pod, "metadata", path, "metadata", status);
    return ensure_map(metadata, "annotations", child_path(path, "metadata"), "metadata.annotations",
                      status);
  }

  void add_annotation_if_absent(YAML::Node pod, const std::string& path, std::string_view name,
                                std::string_view value, InjectStatus* status) {
    YAML::Node annotations = annotations_map(pod, path, status);
    if (child(annotations, name).IsDefined()) return;
    annotations[std::string(name)] = string_node(value);
    status->annotations.emplace_back(name);
  }

  // --classic: each app container sleeps drain_delay on SIGTERM (Kubernetes' own sleep action,
  // no binary needed in the app's image), so it keeps serving while the endpoints controller
  // takes the pod out of the Service, as bulwark does.
  void add_pre_stops(const YAML::Node& containers, const std::string& path, InjectStatus* status) {
    for (size_t i = 0; i < containers.size(); ++i) {
      YAML::Node c = containers[i];
      std::string c_path = item_path(path, i);
      std::string name = optional_string(c, "name", c_path);
      YAML::Node lifecycle = optional_map(c, "lifecycle", c_path);
      if (lifecycle.IsDefined() && present(child(lifecycle, "preStop"))) {
        warn("container '" + name + "' already has a preStop hook; left as it is (it should " +
             "wait about " + std::to_string(sidecar_.pre_stop_seconds) +
             " s so the pod leaves the Service before the app stops)");
        continue;
      }
      bool created = !lifecycle.IsDefined();
      if (created) {
        if (child(c, "lifecycle").IsDefined()) status->nulls.push_back(lifecycle_path(name));
        c["lifecycle"] = YAML::Node(YAML::NodeType::Map);
        lifecycle.reset(child(c, "lifecycle"));
      }
      if (child(lifecycle, "preStop").IsDefined())  // there, so an explicit null
        status->nulls.push_back(lifecycle_path(name) + ".preStop");
      lifecycle["preStop"]["sleep"]["seconds"] = int_node(sidecar_.pre_stop_seconds);
      status->pre_stops.push_back({name, created});
    }
  }

  void raise_grace_period(YAML::Node spec, const std::string& spec_path, InjectStatus* status) {
    std::string text = optional_string(spec, "terminationGracePeriodSeconds", spec_path);
    int64_t current = kDefaultGraceSeconds;
    if (!text.empty()) {
      try {
        current = child(spec, "terminationGracePeriodSeconds").as<int64_t>();
      } catch (const YAML::Exception&) {
        fail(child_path(spec_path, "terminationGracePeriodSeconds"),
             "'" + text + "' is not a whole number of seconds");
      }
    }
    if (current >= sidecar_.min_grace_seconds) return;
    status->grace_set = sidecar_.min_grace_seconds;
    if (!text.empty()) {
      std::string yaml = emit_stream({child(spec, "terminationGracePeriodSeconds")});
      status->grace_previous = yaml.substr(0, yaml.size() - 1);  // without the stream's newline
    } else if (child(spec, "terminationGracePeriodSeconds").IsDefined()) {
      status->nulls.emplace_back("spec.terminationGracePeriodSeconds");
    }
    spec["terminationGracePeriodSeconds"] = int_node(sidecar_.min_grace_seconds);
  }

  // A port that bulwark listens on must not be the app's: two processes of a pod share its
  // network namespace, so one of them would fail to bind.
  void warn_port_clashes(const YAML::Node& containers, const std::string& path) {
    for (size_t i = 0; i < containers.size(); ++i) {
      YAML::Node ports = optional_sequence(containers[i], "ports", item_path(path, i));
      if (!ports.IsDefined()) continue;
      for (const YAML::Node& port : ports) {
        YAML::Node number = port.IsMap() ? child(port, "containerPort") : YAML::Node();
        if (!number.IsScalar()) continue;
        for (const auto& ours : sidecar_.ports) {
          if (number.Scalar() == std::to_string(ours.port))
            warn(item_path(path, i) + " declares port " + number.Scalar() +
                 ", which bulwark listens on (" + ours.name +
                 "); the app must listen on another port, or on 127.0.0.1 only");
        }
      }
    }
  }

  // The grace period the status recorded, read back as YAML.
  static YAML::Node previous_grace(const std::string& yaml, const std::string& path) {
    try {
      YAML::Node node = YAML::Load(yaml);
      if (node.IsScalar()) return node;
    } catch (const YAML::Exception&) {
    }
    fail(child_path(child_path(child_path(path, "metadata"), "annotations"),
                    kInjectStatusAnnotation),
         "the previous terminationGracePeriodSeconds '" + yaml + "' is not a YAML scalar");
  }

  void remove_sidecar(YAML::Node pod, const std::string& path, const InjectStatus& status) {
    std::string spec_path = child_path(path, "spec");
    YAML::Node spec = required_map(pod, "spec", path);
    auto take_out = [&](const std::string& key, const std::vector<std::string_view>& names) {
      YAML::Node list = optional_sequence(spec, key, spec_path);
      if (!list.IsDefined()) return;
      YAML::Node kept = rebuilt(list, {}, names);
      std::string what = "spec." + key;
      if (kept.size() == 0 && status.was_created(what)) {
        unmake(spec, key, what, status);
      } else {
        spec[key] = kept;
      }
    };
    if (status.sidecar_list == "initContainers") {
      std::vector<std::string_view> names{kContainerName};
      if (status.iptables) names.push_back(kIptablesContainerName);
      take_out("initContainers", names);
    } else {
      take_out("containers", {kContainerName});
      if (status.iptables) take_out("initContainers", {kIptablesContainerName});
    }
    std::vector<std::string_view> volumes{kVolumeName};
    if (status.iptables) volumes.push_back(kIptablesVolumeName);
    take_out("volumes", volumes);
    YAML::Node containers = optional_sequence(spec, "containers", spec_path);
    for (const auto& pre_stop : status.pre_stops) {
      if (!containers.IsDefined()) break;
      for (YAML::Node c : containers) {
        if (!c.IsMap() || !child(c, "name").IsScalar() ||
            child(c, "name").Scalar() != pre_stop.container)
          continue;
        YAML::Node lifecycle = child(c, "lifecycle");
        if (!lifecycle.IsMap()) continue;
        YAML::Node hook = child(lifecycle, "preStop");
        if (hook.IsMap() && child(hook, "sleep").IsDefined())
          unmake(lifecycle, "preStop", lifecycle_path(pre_stop.container) + ".preStop", status);
        if (pre_stop.lifecycle_created && lifecycle.size() == 0)
          unmake(c, "lifecycle", lifecycle_path(pre_stop.container), status);
      }
    }
    if (status.grace_set) {
      YAML::Node grace = child(spec, "terminationGracePeriodSeconds");
      // Put back only what we set: a value changed since is the user's.
      if (grace.IsScalar() && grace.Scalar() == std::to_string(*status.grace_set)) {
        if (status.grace_previous) {
          spec["terminationGracePeriodSeconds"] = previous_grace(*status.grace_previous, path);
        } else {
          unmake(spec, "terminationGracePeriodSeconds", "spec.terminationGracePeriodSeconds",
                 status);
        }
      }
    }
    YAML::Node metadata = child(pod, "metadata");
    YAML::Node annotations = child(metadata, "annotations");
    if (!annotations.IsMap()) return;
    for (const auto& name : status.annotations) annotations.remove(name);
    annotations.remove(std::string(kInjectStatusAnnotation));
    if (annotations.size() == 0 && status.was_created("metadata.annotations"))
      unmake(metadata, "annotations", "metadata.annotations", status);
    if (metadata.size() == 0 && status.was_created("metadata"))
      unmake(pod, "metadata", "metadata", status);
  }

  const Sidecar& sidecar_;
  bool uninject_;
  std::string label_;
  std::string kind_;
  std::vector<std::string> warnings_;
};

// ---- The stream ----

std::string describe(const YAML::Node& object) {
  std::string kind =
      object.IsMap() && child(object, "kind").IsScalar() ? child(object, "kind").Scalar() : "";
  YAML::Node metadata = object.IsMap() ? child(object, "metadata") : YAML::Node();
  std::string name = metadata.IsMap() && child(metadata, "name").IsScalar()
                         ? child(metadata, "name").Scalar()
                         : "";
  if (kind.empty() && name.empty()) return "";
  if (name.empty()) return " (" + kind + ")";
  return " (" + kind + " " + name + ")";
}

std::string kind_of(const YAML::Node& object) {
  YAML::Node kind = child(object, "kind");
  return kind.IsScalar() ? kind.Scalar() : "";
}

std::string namespace_of(const YAML::Node& object) {
  YAML::Node metadata = child(object, "metadata");
  if (!metadata.IsMap()) return "";
  YAML::Node ns = child(metadata, "namespace");
  return ns.IsScalar() ? ns.Scalar() : "";
}

bool made_by_inject(const YAML::Node& object) {
  if (kind_of(object) != "ConfigMap") return false;
  YAML::Node metadata = child(object, "metadata");
  YAML::Node labels = metadata.IsMap() ? child(metadata, "labels") : YAML::Node();
  YAML::Node label = labels.IsMap() ? child(labels, kManagedByLabel) : YAML::Node();
  return label.IsScalar() && label.Scalar() == kManagedByValue;
}

std::string name_of(const YAML::Node& object) {
  YAML::Node metadata = child(object, "metadata");
  YAML::Node name = metadata.IsMap() ? child(metadata, "name") : YAML::Node();
  return name.IsScalar() ? name.Scalar() : "";
}

YAML::Node config_map_document(const Sidecar& sidecar, const std::string& ns) {
  YAML::Node doc;
  doc["apiVersion"] = string_node("v1");
  doc["kind"] = string_node("ConfigMap");
  doc["metadata"]["name"] = string_node(sidecar.config_map);
  if (!ns.empty()) doc["metadata"]["namespace"] = string_node(ns);
  doc["metadata"]["labels"][std::string(kManagedByLabel)] = string_node(kManagedByValue);
  doc["data"][std::string(kConfigKey)] = string_node(*sidecar.config_text);
  return doc;
}

// Follows a YAML stream's documents to see that each starts further on than the one before.
// yaml-cpp 0.7's YAML::LoadAll loops for ever, adding a null document a turn, when the parser
// stops advancing (a stream starting with ',', jbeder/yaml-cpp#1040); this tells first.
class StuckParserCheck : public YAML::EventHandler {
 public:
  bool stuck = false;
  YAML::Mark where;

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (started_ && mark.pos == previous_.pos) {
      stuck = true;
      where = mark;
    }
    started_ = true;
    previous_ = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

 private:
  bool started_ = false;
  YAML::Mark previous_;
};

// A byte that a YAML stream may not hold: where it is, and what is wrong with it.
struct UnreadableByte {
  size_t offset = 0;
  const char* why = "";
};

// The first byte that is not part of valid UTF-8, or is a control character other than tab,
// line feed and carriage return, which YAML does not allow raw (a value can still hold one,
// escaped in double quotes). Kubernetes reads manifests as UTF-8; yaml-cpp would write such bytes
// back differently from how it read them (it takes NULs for a sign of UTF-16).
std::optional<UnreadableByte> find_unreadable_byte(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    auto byte = static_cast<unsigned char>(text[i]);
    if ((byte < 0x20 && byte != '\t' && byte != '\n' && byte != '\r') || byte == 0x7f)
      return UnreadableByte{i, "a control character, which YAML allows only escaped in \"...\""};
    size_t length = byte < 0x80           ? 1
                    : (byte >> 5) == 0x6  ? 2
                    : (byte >> 4) == 0xe  ? 3
                    : (byte >> 3) == 0x1e ? 4
                                          : 0;
    const UnreadableByte not_utf8{i, "not UTF-8"};
    if (length == 0 || i + length > text.size()) return not_utf8;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) >> 6) != 0x2) return not_utf8;
    }
    uint32_t cp = length == 1 ? byte : byte & (0x7f >> length);
    for (size_t k = 1; k < length; ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3f);
    const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[length] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return not_utf8;
    i += length;
  }
  return std::nullopt;
}

// The 1-based line and column of byte `offset`.
std::pair<size_t, size_t> line_and_column(std::string_view text, size_t offset) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return {line, column};
}

// Every document of the stream (empty ones left out). Throws YAML::Exception on invalid YAML.
std::vector<YAML::Node> load_documents(const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  StuckParserCheck check;
  while (parser.HandleNextDocument(check)) {
    if (check.stuck) throw YAML::ParserException(check.where, "no document can start here");
  }
  std::vector<YAML::Node> documents;
  for (YAML::Node& doc : YAML::LoadAll(text)) {
    if (!doc.IsNull()) documents.push_back(doc);  // an empty document, as between "---" "---"
  }
  return documents;
}

}  // namespace

// What check_shape() found wrong with a document: where, and what.
struct ShapeProblem {
  YAML::Mark mark;  // null when the node has no place in the text (an alias expanded)
  std::string what;
};

// Whether `node` is at most kMaxDepth deep and, aliases expanded, at most *budget nodes. An
// alias inside the node it names makes a cycle (yaml-cpp builds it), infinitely deep; aliases of
// aliases multiply (an alias bomb). Either would run the walks below out of stack or time.
// Every map key must be a scalar, and no key may appear twice in one map: Kubernetes objects
// are JSON, whose keys are strings, and its decoder refuses a duplicate key. yaml-cpp keeps
// both, so the record or a container of ours could be read from one copy and written to the
// other; a key that is a list or a map ([]: x) would be written back in a form that does not
// read back.
constexpr int kMaxDepth = 64;
constexpr size_t kMaxNodes = 1'000'000;
std::optional<ShapeProblem> check_shape(const YAML::Node& node, int depth, size_t* budget) {
  if (depth > kMaxDepth || *budget == 0) {
    return ShapeProblem{YAML::Mark::null_mark(),
                        "nested deeper than " + std::to_string(kMaxDepth) +
                            " levels or larger than " + std::to_string(kMaxNodes) +
                            " nodes once its aliases are expanded (an alias inside the node it "
                            "names, or aliases of aliases)"};
  }
  --*budget;
  if (node.IsMap()) {
    std::set<std::string, std::less<>> keys;
    for (const auto& entry : node) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar() && !key.IsNull())
        return ShapeProblem{key.Mark(),
                            "a map key that is a list or a map (Kubernetes objects are JSON, "
                            "whose keys are strings)"};
      std::string text = key.IsNull() ? "~" : key.Scalar();
      if (!keys.insert(text).second)
        return ShapeProblem{key.Mark(), "the key '" + text +
                                            "' appears twice in one map (Kubernetes refuses "
                                            "duplicate keys)"};
      if (auto problem = check_shape(entry.second, depth + 1, budget)) return problem;
    }
  } else if (node.IsSequence()) {
    for (const auto& entry : node) {
      if (auto problem = check_shape(entry, depth + 1, budget)) return problem;
    }
  }
  return std::nullopt;
}

InjectResult inject(std::string_view input, const InjectOptions& options,
                    const std::string& source) {
  InjectResult result;
  std::optional<Sidecar> sidecar = make_sidecar(options, &result.errors);
  if (!sidecar) return result;

  std::string where = source == "-" ? "stdin" : source;
  if (std::optional<UnreadableByte> bad = find_unreadable_byte(input)) {
    std::pair<size_t, size_t> at = line_and_column(input, bad->offset);
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(input[bad->offset]));
    result.errors.push_back(where + ":" + std::to_string(at.first) + ":" +
                            std::to_string(at.second) + ": " + bad->why + " (byte " + byte + ")");
    return result;
  }
  std::vector<YAML::Node> documents;
  try {
    documents = load_documents(std::string(input));
  } catch (const YAML::Exception& e) {
    result.errors.push_back(where + ":" + std::to_string(e.mark.line + 1) + ":" +
                            std::to_string(e.mark.column + 1) + ": invalid YAML: " + e.msg);
    return result;
  }
  size_t budget = kMaxNodes;
  for (size_t d = 0; d < documents.size(); ++d) {
    if (auto problem = check_shape(documents[d], 0, &budget)) {
      std::string at = problem->mark.is_null()
                           ? ""
                           : where + ":" + std::to_string(problem->mark.line + 1) + ":" +
                                 std::to_string(problem->mark.column + 1) + ": ";
      result.errors.push_back(at + "document " + std::to_string(d + 1) + ": " + problem->what);
      return result;
    }
  }

  Injector injector(*sidecar, options.uninject);
  // Namespaces whose workloads were injected, in the order first seen: each needs the ConfigMap.
  std::vector<std::string> namespaces;
  // ConfigMaps already in the stream with the --config-map name, by namespace.
  std::map<std::string, YAML::Node> config_maps;
  std::vector<YAML::Node> kept;

  auto handle = [&](YAML::Node object, const std::string& label) -> bool {  // false: drop it
    try {
      if (!object.IsMap()) fail("", std::string("not a map (it is ") + type_name(object) + ")");
      if (options.uninject && made_by_inject(object)) return false;
      if (kind_of(object) == "ConfigMap" && name_of(object) == sidecar->config_map)
        config_maps.emplace(namespace_of(object), object);
      if (injector.process(object, kind_of(object), label)) {
        std::string ns = namespace_of(object);
        if (std::find(namespaces.begin(), namespaces.end(), ns) == namespaces.end())
          namespaces.push_back(ns);
      }
    } catch (const FieldError& e) {
      result.errors.push_back(label + ": " + (e.path.empty() ? "" : e.path + ": ") + e.message);
    }
    return true;
  };

  for (size_t d = 0; d < documents.size(); ++d) {
    YAML::Node doc = documents[d];
    std::string label = "document " + std::to_string(d + 1) + describe(doc);
    if (doc.IsMap() && kind_of(doc) == "List") {
      YAML::Node items;
      try {
        items.reset(optional_sequence(doc, "items", ""));
      } catch (const FieldError& e) {
        result.errors.push_back(label + ": " + e.path + ": " + e.message);
        continue;
      }
      if (items.IsDefined()) {
        YAML::Node remaining(YAML::NodeType::Sequence);
        remaining.SetStyle(items.Style());
        for (size_t i = 0; i < items.size(); ++i) {
          if (handle(items[i], label + ", " + item_path("items", i) + describe(items[i])))
            remaining.push_back(items[i]);
        }
        if (remaining.size() != items.size()) doc["items"] = remaining;
      }
      kept.push_back(doc);
    } else if (handle(doc, label)) {
      kept.push_back(doc);
    }
  }

  // --config-map-from: the ConfigMap of each namespace is updated when an earlier injection made
  // it, and otherwise written before the workloads.
  std::vector<YAML::Node> output;
  if (sidecar->config_text && !options.uninject) {
    for (const auto& ns : namespaces) {
      auto found = config_maps.find(ns);
      if (found == config_maps.end()) {
        output.push_back(config_map_document(*sidecar, ns));
      } else if (made_by_inject(found->second)) {
        found->second["data"][std::string(kConfigKey)] = string_node(*sidecar->config_text);
      } else {
        result.errors.push_back(
            "ConfigMap " + sidecar->config_map + (ns.empty() ? "" : " in namespace " + ns) +
            ": already in the input, not made by bulwark inject (no label " +
            std::string(kManagedByLabel) + ": " + std::string(kManagedByValue) +
            "); --config-map-from would replace it: name another with --config-map");
      }
    }
  }
  result.warnings = injector.take_warnings();
  if (!result.errors.empty()) return result;
  output.insert(output.end(), kept.begin(), kept.end());
  result.output = emit_stream(output);
  return result;
}

// ---- The command ----

namespace {

constexpr const char* kInjectUsage =
    "usage: bulwark inject [-f FILE|-] [--image IMAGE] [--config-map NAME]\n"
    "                      [--config-map-from FILE | --ports PORT,...] [--classic]\n"
    "                      [--transparent [--inbound-ports PORTS] [--outbound-ports PORTS]\n"
    "                       [--exclude-inbound-ports PORTS] [--exclude-outbound-ports PORTS]\n"
    "                       [--inbound-redirect-port P] [--outbound-redirect-port P]]\n"
    "       bulwark inject --uninject [-f FILE|-]\n"
    "\n"
    "Reads Kubernetes YAML (several documents, or a List) and writes it to stdout with bulwark\n"
    "added to the pod template of each Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,\n"
    "CronJob and Pod. Other documents pass through. The YAML is written again by bulwark: key\n"
    "order and values are kept, comments and anchors are not.\n"
    "\n"
    "  -f, --filename FILE     the input; - (the default) is stdin\n"
    "      --image IMAGE       the bulwark image (default bulwark:" BULWARK_VERSION
    ")\n"
    "      --config-map NAME   the ConfigMap holding bulwark.yaml, mounted at /etc/bulwark\n"
    "                          (default bulwark-config)\n"
    "      --config-map-from FILE\n"
    "                          check FILE with bulwark's config loader, write it as that "
    "ConfigMap\n"
    "                          before the workloads, and take from it the listener ports,\n"
    "                          drain_delay and drain_timeout\n"
    "      --ports P,...       the ports bulwark listens on, without --config-map-from\n"
    "      --cpu-request Q     the bulwark container's CPU request (default 100m)\n"
    "      --memory-request Q  its memory request (default 64Mi)\n"
    "      --memory-limit Q    its memory limit (default 256Mi)\n"
    "      --classic           a plain container plus a preStop sleep of drain_delay on each app\n"
    "                          container, instead of a native sidecar (an init container with\n"
    "                          restartPolicy Always, Kubernetes 1.29+)\n"
    "      --transparent       also capture the pod's TCP with iptables (an init container,\n"
    "                          bulwark-iptables, with NET_ADMIN, before the sidecar): inbound to\n"
    "                          the listener on port 15006, outbound to the one on 15001; both\n"
    "                          need original_destination: true (checked with --config-map-from).\n"
    "                          IPv4 only: bulwark iptables --ipv6 is not wired in\n"
    "      --inbound-ports P,...|*   the pod's ports captured inbound (default: the TCP ports\n"
    "                          the app containers declare; '' for none; never 9902)\n"
    "      --outbound-ports P,...|*  destination ports of the pod's own connections captured\n"
    "                          (default none: '*' would capture the app's database too)\n"
    "      --exclude-inbound-ports P,...\n"
    "                          left alone inbound, from '*' or the declared ports\n"
    "      --exclude-outbound-ports P,...\n"
    "                          left alone outbound, from '*'\n"
    "      --inbound-redirect-port P   --outbound-redirect-port P\n"
    "                          bulwark's listeners for captured traffic (15006, 15001)\n"
    "      --uninject          remove what an earlier `bulwark inject` added, as recorded in each\n"
    "                          pod template's bulwark.io/inject-status annotation\n"
    "  -h, --help              this text\n"
    "\n"
    "A pod template annotated bulwark.io/inject: \"disabled\" is left alone. Injecting an "
    "injected\n"
    "template replaces the earlier injection. Exit status: 0, 1 when a document or the config\n"
    "is invalid (nothing is written to stdout), 2 for a wrong argument.\n";

// DNS-1123 subdomain, what Kubernetes takes as a ConfigMap name.
bool valid_object_name(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name.front()) || !alnum(name.back())) return false;
  return std::all_of(name.begin(), name.end(),
                     [&alnum](char c) { return alnum(c) || c == '-' || c == '.'; });
}

// A Kubernetes quantity as people write them: 100m, 0.5, 64Mi, 1G.
bool valid_quantity(const std::string& text) {
  auto digits_end = [&text](size_t from) {
    while (from < text.size() && text[from] >= '0' && text[from] <= '9') ++from;
    return from;
  };
  size_t end = digits_end(0);
  if (end == 0) return false;
  if (end < text.size() && text[end] == '.') {
    size_t fraction_end = digits_end(end + 1);
    if (fraction_end == end + 1) return false;
    end = fraction_end;
  }
  static constexpr std::array<std::string_view, 14> kSuffixes{
      "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  std::string_view suffix = std::string_view(text).substr(end);
  return std::find(kSuffixes.begin(), kSuffixes.end(), suffix) != kSuffixes.end();
}

bool parse_ports(const std::string& text, std::vector<uint16_t>* ports) {
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    if (part.empty() || part.size() > 5 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    int port = std::stoi(part);
    if (port < 1 || port > 65535) return false;
    if (std::find(ports->begin(), ports->end(), port) != ports->end()) return false;
    ports->push_back(static_cast<uint16_t>(port));
  }
  return !ports->empty();
}

// What the command line asks for.
struct CommandLine {
  InjectOptions options;
  std::string input_file = "-";
  bool help = false;
  bool sidecar_flags = false;  // a flag that shapes the injection, which --uninject ignores
  bool transparent = false;
  IptablesOptions rules;   // what the --transparent flags below set
  std::string rules_flag;  // one of them, given without --transparent
};

// The flags that take a value.
constexpr std::array<std::string_view, 15> kValueFlags{"-f",
                                                       "--filename",
                                                       "--image",
                                                       "--config-map",
                                                       "--config-map-from",
                                                       "--ports",
                                                       "--cpu-request",
                                                       "--memory-request",
                                                       "--memory-limit",
                                                       "--inbound-ports",
                                                       "--exclude-inbound-ports",
                                                       "--inbound-redirect-port",
                                                       "--outbound-ports",
                                                       "--exclude-outbound-ports",
                                                       "--outbound-redirect-port"};

// Applies a flag that takes a value. Returns the usage error, or "" when it is fine.
bool takes_value(std::string_view flag) {
  return std::find(kValueFlags.begin(), kValueFlags.end(), flag) != kValueFlags.end();
}

std::string apply_flag(const std::string& flag, const std::string& value, CommandLine* line) {
  if (!takes_value(flag)) return "unknown argument '" + flag + "'";
  InjectOptions& options = line->options;
  // The capture lists take '' for none, like `bulwark iptables`.
  if (flag == "--inbound-ports" || flag == "--outbound-ports" ||
      flag == "--exclude-inbound-ports" || flag == "--exclude-outbound-ports") {
    line->sidecar_flags = true;
    line->rules_flag = flag;
    IptablesOptions& r = line->rules;
    bool inbound = flag.find("inbound") != std::string::npos;
    bool exclude = flag.rfind("--exclude", 0) == 0;
    std::vector<uint16_t>* ports =
        exclude ? (inbound ? &r.exclude_inbound_ports : &r.exclude_outbound_ports)
                : (inbound ? &r.inbound_ports : &r.outbound_ports);
    bool* all = exclude ? nullptr : (inbound ? &r.inbound_all : &r.outbound_all);
    ports->clear();
    if (all != nullptr) *all = false;  // the last of a repeated flag wins
    std::string why;
    if (!parse_port_list(value, ports, all, &why)) return flag + ": " + why;
    if (flag == "--inbound-ports") options.inbound_ports_given = true;
    return "";
  }
  if (value.empty()) return flag + " needs a value";
  if (flag == "-f" || flag == "--filename") {
    line->input_file = value;
    return "";
  }
  line->sidecar_flags = true;
  if (flag == "--image") {
    options.image = value;
  } else if (flag == "--config-map") {
    if (!valid_object_name(value))
      return "--config-map '" + value +
             "': not a Kubernetes object name (lowercase letters, digits, '-' and '.', starting "
             "and ending with a letter or digit)";
    options.config_map = value;
  } else if (flag == "--config-map-from") {
    options.config_file = value;
  } else if (flag == "--ports") {
    if (!parse_ports(value, &options.ports))
      return "--ports '" + value + "': not a list of different ports 1..65535 like 8080,8443";
  } else if (flag == "--inbound-redirect-port" || flag == "--outbound-redirect-port") {
    line->rules_flag = flag;
    std::vector<uint16_t> one;
    std::string why;
    if (!parse_port_list(value, &one, nullptr, &why) || one.size() != 1)
      return flag + " '" + value + "': not a port 1..65535";
    (flag == "--inbound-redirect-port" ? line->rules.inbound_redirect_port
                                       : line->rules.outbound_redirect_port) = one.front();
  } else if (flag == "--cpu-request" || flag == "--memory-request" || flag == "--memory-limit") {
    if (!valid_quantity(value))
      return flag + " '" + value + "': not a Kubernetes quantity like 100m, 0.5, 64Mi or 1Gi";
    std::string& target = flag == "--cpu-request"      ? options.cpu_request
                          : flag == "--memory-request" ? options.memory_request
                                                       : options.memory_limit;
    target = value;
  }
  return "";
}

// Reads argv (argv[0] is "inject"). Returns the usage error, or "".
std::string parse_command_line(int argc, char** argv, CommandLine* line) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      line->help = true;
      return "";
    }
    if (arg == "--classic") {
      line->options.classic = true;
      line->sidecar_flags = true;
      continue;
    }
    if (arg == "--transparent") {
      line->transparent = true;
      line->sidecar_flags = true;
      continue;
    }
    if (arg == "--uninject") {
      line->options.uninject = true;
      continue;
    }
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {  // --flag=value
      std::string error = apply_flag(arg.substr(0, eq), arg.substr(eq + 1), line);
      if (!error.empty()) return error;
      continue;
    }
    if (!takes_value(arg)) return "unknown argument '" + arg + "'";
    // "" given explicitly is a value (no ports); nothing at all is not.
    if (i + 1 == argc) return arg + " needs a value";
    std::string error = apply_flag(arg, argv[++i], line);
    if (!error.empty()) return error;
  }
  InjectOptions& options = line->options;
  if (options.uninject && line->sidecar_flags)
    return "--uninject takes only -f: what to remove is read from each pod template's "
           "bulwark.io/inject-status annotation";
  if (!line->rules_flag.empty() && !line->transparent)
    return line->rules_flag + " shapes the rules of --transparent, which is not given";
  const IptablesOptions& rules = line->rules;
  if (!rules.exclude_outbound_ports.empty() && !rules.outbound_all)
    return "--exclude-outbound-ports applies only to --outbound-ports '*'";
  if (!rules.exclude_inbound_ports.empty() && options.inbound_ports_given && !rules.inbound_all)
    return "--exclude-inbound-ports applies to --inbound-ports '*' or to the ports the containers "
           "declare, not to a list of ports";
  if (options.inbound_ports_given && rules.inbound_ports.empty() && !rules.inbound_all &&
      rules.outbound_ports.empty() && !rules.outbound_all)
    return "--transparent with --inbound-ports '' and no --outbound-ports would capture nothing";
  if (line->transparent) options.transparent = line->rules;
  if (options.config_file && !options.ports.empty())
    return "--ports and --config-map-from exclude each other: with a config file the ports are "
           "its listeners'";
  return "";
}

}  // namespace

int inject_main(int argc, char** argv) {
  CommandLine line;
  std::string error = parse_command_line(argc, argv, &line);
  if (!error.empty()) {
    std::fprintf(stderr, "bulwark inject: %s\n%s", error.c_str(), kInjectUsage);
    return 2;
  }
  if (line.help) {
    std::fputs(kInjectUsage, stdout);
    return 0;
  }
  const InjectOptions& options = line.options;
  const std::string& input_file = line.input_file;
  std::string input;
  if (input_file == "-") {
    input.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else if (!read_text_file(input_file, &input)) {
    std::fprintf(stderr, "bulwark inject: %s: cannot read it: %s\n", input_file.c_str(),
                 std::strerror(errno));
    return 1;
  }
  InjectResult result = inject(input, options, input_file);
  for (const auto& w : result.warnings)
    std::fprintf(stderr, "bulwark inject: warning: %s\n", w.c_str());
  for (const auto& e : result.errors) std::fprintf(stderr, "bulwark inject: %s\n", e.c_str());
  if (!result.ok()) return 1;
  std::fwrite(result.output.data(), 1, result.output.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace bulwark::kube
