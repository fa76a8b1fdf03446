#include "config/loader.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <re2/re2.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <tuple>

#include "config/units.h"
#include "config/yaml_path.h"

namespace bulwark::config {

namespace {

constexpr std::string_view kDurationExamples = "e.g. 250ms, 1s, 2m, 1h";
constexpr std::string_view kSizeExamples = "e.g. 512B, 64KiB, 1MiB, or a number of bytes";
constexpr uint32_t kMaxWorkers = 1024;
constexpr uint32_t kMinWeight = 1;
constexpr uint32_t kMaxWeight = 10000;
constexpr uint32_t kMaxPriority = 127;
constexpr int kMinStatus = 100;
constexpr int kMaxStatus = 599;
constexpr uint64_t kMinHeadersSize = 1024;
constexpr uint64_t kMaxHeadersSize = 1024 * 1024;
constexpr uint32_t kMaxCount = std::numeric_limits<uint32_t>::max();
constexpr uint32_t kMaxHeaderCount = 10000;  // header fields in one head (Envoy's cap too)
constexpr uint32_t kMaxTrustedHops = 64;
constexpr uint32_t kMaxConnections = 10'000'000;
constexpr uint32_t kMaxRetryAttempts = 10;
constexpr uint32_t kMaxHedges = 3;
constexpr uint64_t kMaxRetryBodyBytes = 64 * 1024 * 1024;
constexpr double kMaxRequestsPerSecond = 1e9;
// Route regexes (RE2). Matching is linear in the path, but each byte can cost up to the program
// size (RE2::ProgramSize) when RE2 falls back from its DFA to its NFA: at the cap, a worst-case
// pattern such as `a[ab]{990}c` takes about 0.3 s of a worker on a 60 KiB path. Envoy's default
// cap is 100, which rejects everyday patterns (`[^/]{100}` is 804); at 1000 the worst case stays
// well under a second, and `/static/[a-zA-Z0-9._-]{0,200}/` (1013) needs only a small rewrite.
constexpr int kMaxRegexProgramSize = 1000;
// The memory RE2 may use for one pattern (its default is 8 MiB): the compiled programs, a small
// part at the cap, and the DFA states it caches while matching. When that cache fills too often,
// RE2 falls back to its NFA, which is slower per byte but still linear.
constexpr int64_t kRegexMaxMem = 1 << 20;
// RFC 7301: an ALPN protocol name is 1..255 bytes.
// A DNS name in SNI (RFC 6066) is at most 253 bytes written out.
constexpr size_t kMaxServerNameBytes = 253;
constexpr std::array<std::string_view, 2> kTlsVersionWords{"1.2", "1.3"};
constexpr std::array<std::string_view, 3> kForwardClientCertWords{"sanitize", "sanitize_set",
                                                                  "append_forward"};

// The names of the retry conditions, for "expected one of" in messages.
constexpr auto kRetryOnWords = [] {
  std::array<std::string_view, kRetryOnNames.size()> words{};
  for (size_t i = 0; i < words.size(); ++i) words[i] = kRetryOnNames[i].name;
  return words;
}();

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

const char* describe_kind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "a string";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
  }
  return "something else";
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// `Words` is any range of std::string_view: an initializer_list or an array.
template <typename Words>
std::string join(const Words& words) {
  std::string out;
  for (std::string_view word : words) {
    if (!out.empty()) out += ", ";
    out += word;
  }
  return out;
}

template <typename Words>
std::optional<std::string_view> closest(std::string_view name, const Words& allowed) {
  std::optional<std::string_view> best;
  size_t best_distance = 3;  // suggest only near misses
  for (std::string_view candidate : allowed) {
    const size_t distance = edit_distance(name, candidate);
    if (distance < best_distance && distance < candidate.size()) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

// The tail of a message about a word that is not one of `allowed`:
// " (did you mean 'x'?); expected one of: a, b, c".
template <typename Words>
std::string expected_one_of(std::string_view word, const Words& allowed) {
  std::string out;
  if (auto suggestion = closest(word, allowed)) {
    out += " (did you mean " + quoted(*suggestion) + "?)";
  }
  return out + "; expected one of: " + join(allowed);
}

char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
char to_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

// RFC 9110 token characters, used by header names and methods.
bool is_token_char(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_token_char);
}

bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

// Whether the line `mark` is on starts with whitespace that includes a tab: yaml-cpp then reports
// something unhelpful such as "illegal block entry".
bool tab_indented(std::string_view text, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return false;
  size_t start = 0;
  for (int line = 0; line < mark.line; ++line) {
    start = text.find('\n', start);
    if (start == std::string_view::npos) return false;
    ++start;
  }
  for (size_t i = start; i < text.size() && (text[i] == ' ' || text[i] == '\t'); ++i) {
    if (text[i] == '\t') return true;
  }
  return false;
}

// Spaces and control characters, which have no place in a request line or a Host header.
bool has_space_or_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte <= 0x20 || byte == 0x7f;
  });
}

bool is_unspecified_host(const std::string& host) { return host == "0.0.0.0" || host == "::"; }

// A key and its value in a YAML map, or an item of a YAML list (then `key` is unset), with the
// dotted path used in error messages ("listeners[0].routes[1].timeout").
struct Field {
  YAML::Node key;
  YAML::Node value;
  std::string path;
  YAML::Mark mark;  // where errors about the value point
};

Field map_field(const YAML::Node& key, const YAML::Node& value, std::string path) {
  // An empty value ("timeout:" with nothing after it) is marked at the next token, often on the
  // next line, so errors about it point at its key instead.
  const YAML::Mark mark = value.IsNull() ? key.Mark() : value.Mark();
  return Field{key, value, std::move(path), mark};
}

Field item_field(const YAML::Node& item, std::string path) {
  return Field{YAML::Node(), item, std::move(path), item.Mark()};
}

// The checked keys of one YAML map. Built by Loader::read_map, which has already reported unknown
// and duplicate keys; `valid` is false when the node was not a map at all.
struct MapView {
  bool valid = false;
  std::string path;
  YAML::Mark mark;
  std::string what;  // "listener", "route", ... for messages
  std::map<std::string, Field, std::less<>> fields;

  const Field* find(std::string_view key) const {
    auto it = fields.find(key);
    return it == fields.end() ? nullptr : &it->second;
  }
};

enum class AddressUse { kListen, kEndpoint };

// A route's `cluster` value, resolved once every cluster name is known.
struct ClusterReference {
  size_t listener = 0;
  size_t route = 0;
  std::string route_name;
  std::string path;
  YAML::Mark mark;
};

// A listening address (a listener or the admin listener), to refuse two that would collide.
struct ListenAddress {
  SocketAddress address;
  std::string owner;  // "listener 'inbound'" or "the admin listener"
  std::string path;
  YAML::Mark mark;
};

// Notes where the second YAML document of a stream starts; ignores everything else.
class DocumentStarts : public YAML::EventHandler {
 public:
  YAML::Mark second = YAML::Mark::null_mark();
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++count_ == 2) second = mark;
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
  int count_ = 0;
};

class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

  LoadResult load(std::string_view yaml) {
    auto config = std::make_shared<Config>();
    config->source_file = file_;
    try {
      // Not YAML::LoadAll: in yaml-cpp 0.7 it loops for ever, adding a null document a turn,
      // on some inputs (a config that starts with ','; jbeder/yaml-cpp#1040, found by
      // fuzz_config). The first document comes from Load; whether another follows, from at most
      // two steps of a parser that only notes where each document starts.
      const std::string text(yaml);
      YAML::Node root = YAML::Load(text);
      std::istringstream stream(text);
      YAML::Parser parser(stream);
      DocumentStarts starts;
      const bool another = parser.HandleNextDocument(starts) && parser.HandleNextDocument(starts);
      if (root.IsNull()) {
        error(YAML::Mark(), "",
              "the config is empty; expected a map with at least 'listeners' and 'clusters'");
      } else {
        if (another) {
          error(starts.second, "", "only one YAML document is allowed; found another one here");
        }
        read_root(root, *config);
      }
    } catch (const YAML::Exception& e) {
      std::string message = "YAML syntax error: " + e.msg;
      if (tab_indented(yaml, e.mark)) message += " (YAML does not allow tabs for indentation)";
      error(e.mark, "", message);
    } catch (const std::exception& e) {
      error(YAML::Mark::null_mark(), "", std::string("could not load the config: ") + e.what());
    }
    LoadResult result;
    std::stable_sort(errors_.begin(), errors_.end(),
                     [](const ConfigError& a, const ConfigError& b) {
                       return std::tie(a.line, a.column) < std::tie(b.line, b.column);
                     });
    result.errors = std::move(errors_);
    if (result.errors.empty()) result.config = std::move(config);
    return result;
  }

 private:
  // Records an error at `mark` (0-based, as yaml-cpp gives it) about the value at `path`.
  void error(const YAML::Mark& mark, const std::string& path, const std::string& message) {
    ConfigError e;
    e.file = file_;
    if (!mark.is_null()) {
      e.line = mark.line + 1;
      e.column = mark.column + 1;
    }
    e.message = path.empty() ? message : path + ": " + message;
    errors_.push_back(std::move(e));
  }

  void error(const Field& field, const std::string& message) {
    error(field.mark, field.path, message);
  }

  SourceLocation location(const YAML::Mark& mark) const {
    SourceLocation where;
    where.file = file_;
    if (!mark.is_null()) {
      where.line = mark.line + 1;
      where.column = mark.column + 1;
    }
    return where;
  }

  // Checks that `field` holds a map whose keys are all in `allowed`, each once. Unknown, duplicate
  // and non-string keys are reported; the known keys are returned.
  MapView read_map(const Field& field, std::string_view what,
                   std::initializer_list<std::string_view> allowed) {
    MapView view;
    view.path = field.path;
    view.mark = field.mark;
    view.what = std::string(what);
    if (!field.value.IsMap()) {
      error(field, "expected a map (" + std::string(what) + "), got " + describe_kind(field.value));
      return view;
    }
    view.valid = true;
    const std::string in_what = what == "top level" ? "at top level" : "in " + std::string(what);
    for (auto it = field.value.begin(); it != field.value.end(); ++it) {
      // The iterator hands out a temporary pair; keep copies (they share the node) past it.
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar()) {
        error(key.Mark(), field.path,
              "keys must be plain strings, got " + std::string(describe_kind(key)));
        continue;
      }
      const std::string& name = key.Scalar();
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        error(key.Mark(), field.path,
              "unknown key " + quoted(name) + " " + in_what + expected_one_of(name, allowed));
        continue;
      }
      if (const Field* first = view.find(name)) {
        error(key.Mark(), field.path,
              "duplicate key " + quoted(name) + " " + in_what + " (first set on line " +
                  std::to_string(first->key.Mark().line + 1) + ")");
        continue;
      }
      view.fields.emplace(name, map_field(key, value, child_path(field.path, name)));
    }
    return view;
  }

  // Returns the field, or reports it missing (pointing at the enclosing map) and returns null.
  const Field* require(const MapView& map, std::string_view key) {
    const Field* field = map.find(key);
    if (field == nullptr && map.valid) {
      const std::string in_what = map.what == "top level" ? "at top level" : "in " + map.what;
      error(map.mark, map.path, "missing required key " + quoted(key) + " " + in_what);
    }
    return field;
  }

  // The scalar text of `field`, or nullopt after reporting that it is not a scalar.
  std::optional<std::string> scalar(const Field& field, std::string_view expected) {
    if (!field.value.IsScalar()) {
      error(field, "expected " + std::string(expected) + ", got " + describe_kind(field.value));
      return std::nullopt;
    }
    return field.value.Scalar();
  }

  bool read_name(const Field* field, std::string& out) {
    if (field == nullptr) return false;
    auto text = scalar(*field, "a name");
    if (!text) return false;
    if (text->empty()) {
      error(*field, "must not be empty");
      return false;
    }
    out = std::move(*text);
    return true;
  }

  void read_duration(const Field* field, Duration& out, bool must_be_positive) {
    if (field == nullptr) return;
    auto text = scalar(*field, "a duration (" + std::string(kDurationExamples) + ")");
    if (!text) return;
    auto value = parse_duration(*text);
    if (!value) {
      error(*field, "invalid duration " + quoted(*text) + " (expected " +
                        std::string(kDurationExamples) + ")");
      return;
    }
    if (must_be_positive && value->count() == 0) {
      error(*field, "must be greater than 0s");
      return;
    }
    out = *value;
  }

  void read_size(const Field* field, size_t& out, uint64_t min, uint64_t max) {
    if (field == nullptr) return;
    auto text = scalar(*field, "a size (" + std::string(kSizeExamples) + ")");
    if (!text) return;
    auto value = parse_size(*text);
    if (!value) {
      error(*field,
            "invalid size " + quoted(*text) + " (expected " + std::string(kSizeExamples) + ")");
      return;
    }
    if (*value < min || *value > max) {
      error(*field, "must be between " + format_size(min) + " and " + format_size(max) + ", got " +
                        quoted(*text));
      return;
    }
    out = static_cast<size_t>(*value);
  }

  // Returns true when the field was present and valid, and so stored in `out`.
  bool read_uint(const Field* field, uint32_t& out, uint32_t min, uint32_t max) {
    if (field == nullptr) return false;
    const std::string expected =
        "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    auto text = scalar(*field, expected);
    if (!text) return false;
    uint64_t value = 0;
    bool ok = !text->empty();
    for (char c : *text) {
      if (c < '0' || c > '9' || value > max) {
        ok = false;
        break;
      }
      value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    if (!ok || value < min || value > max) {
      error(*field, "must be " + expected + ", got " + quoted(*text));
      return false;
    }
    out = static_cast<uint32_t>(value);
    return true;
  }

  // A number with an optional fraction ("10", "0.5") from `min` to `max`; when `min_excluded`,
  // it must be greater than `min`.
  void read_decimal(const Field* field, double& out, double min, double max, bool min_excluded) {
    if (field == nullptr) return;
    const std::string expected =
        min_excluded
            ? "a number greater than " + format_decimal(min) + " and at most " + format_decimal(max)
            : "a number from " + format_decimal(min) + " to " + format_decimal(max);
    auto text = scalar(*field, expected);
    if (!text) return;
    auto value = parse_decimal(*text);
    if (!value || *value < min || (min_excluded && *value == min) || *value > max) {
      error(*field, "must be " + expected + ", got " + quoted(*text));
      return;
    }
    out = *value;
  }

  // A percentage with its sign, from 0% to 100%: "10%", or with `whole_only` "50%" but not "50.5%".
  // Returns the number when the field was present and valid.
  std::optional<double> read_percent(const Field* field, bool whole_only) {
    if (field == nullptr) return std::nullopt;
    const std::string expected = whole_only ? "a whole percentage from 0% to 100%, such as 50%"
                                            : "a percentage from 0% to 100%, such as 10% or 2.5%";
    auto text = scalar(*field, expected);
    if (!text) return std::nullopt;
    const auto valid = [&](std::string_view candidate) -> std::optional<double> {
      auto value = parse_percent(candidate);
      if (!value || *value > 100) return std::nullopt;
      if (whole_only && candidate.find('.') != std::string_view::npos) return std::nullopt;
      return value;
    };
    auto value = valid(*text);
    if (!value) {
      // A bare number is the likely slip: say what to write instead.
      const bool bare = valid(*text + "%").has_value();
      error(*field, "must be " + expected + ", got " + quoted(*text) +
                        (bare ? " (the % sign is required: " + *text + "%)" : ""));
    }
    return value;
  }

  // Returns true when the field was present and valid, and so stored in `out`.
  bool read_bool(const Field* field, bool& out) {
    if (field == nullptr) return false;
    auto text = scalar(*field, "true or false");
    if (!text) return false;
    if (*text == "true") {
      out = true;
    } else if (*text == "false") {
      out = false;
    } else {
      error(*field, "must be true or false, got " + quoted(*text));
      return false;
    }
    return true;
  }

  // Two durations of one map that must be ordered, such as a backoff's base and max. When they
  // are not, the error points at `upper_key`, or at `lower_key` when `upper_key` took its default.
  // Call only when both values were read without errors.
  void check_not_greater(const MapView& map, std::string_view lower_key, Duration lower,
                         std::string_view upper_key, Duration upper) {
    if (lower <= upper) return;
    const Field* lower_field = map.find(lower_key);
    const Field* upper_field = map.find(upper_key);
    const auto value_of = [](const Field* field, Duration value) {
      return format_duration(value) + (field == nullptr ? ", its default" : "");
    };
    if (upper_field != nullptr) {
      error(*upper_field, "must not be less than " + std::string(lower_key) + " (" +
                              value_of(lower_field, lower) + "), got " + format_duration(upper));
    } else if (lower_field != nullptr) {
      error(*lower_field, "must not be greater than " + std::string(upper_key) + " (" +
                              value_of(upper_field, upper) + "), got " + format_duration(lower));
    }
  }

  std::optional<SocketAddress> read_address(const Field& field, AddressUse use) {
    const char* example = use == AddressUse::kListen
                              ? "0.0.0.0:8080 or [::]:8080"
                              : "10.0.0.5:9000, [::1]:9000 or app.internal:9000";
    auto text = scalar(field, std::string("an address such as ") + example);
    if (!text) return std::nullopt;
    std::string why;
    auto address = parse_address(*text, &why);
    if (!address) {
      error(field,
            "invalid address " + quoted(*text) + ": " + why + " (expected e.g. " + example + ")");
      return std::nullopt;
    }
    if (use == AddressUse::kListen && !address->is_ip) {
      error(field, "must be an IP address to listen on, not a DNS name: " + quoted(*text) +
                       " (expected e.g. " + example + ")");
      return std::nullopt;
    }
    if (use == AddressUse::kEndpoint && address->port == 0) {
      error(field, "port must be 1..65535, got " + quoted(*text));
      return std::nullopt;
    }
    return address;
  }

  // Reads a list that must have at least one item; returns its items, or nothing after an error.
  std::vector<Field> read_list(const Field* field, std::string_view item_name) {
    std::vector<Field> items;
    if (field == nullptr) return items;
    if (!field->value.IsSequence()) {
      error(*field, "expected a list of " + std::string(item_name) + "s, got " +
                        describe_kind(field->value));
      return items;
    }
    if (field->value.size() == 0) {
      error(*field, "must list at least one " + std::string(item_name));
      return items;
    }
    size_t index = 0;
    for (const YAML::Node& item : field->value) {
      items.push_back(item_field(item, item_path(field->path, index++)));
    }
    return items;
  }

  void read_root(const YAML::Node& root, Config& config) {
    const Field field{YAML::Node(), root, "", root.Mark()};
    if (!root.IsMap()) {
      error(field, "the top level must be a map with at least 'listeners' and 'clusters', got " +
                       std::string(describe_kind(root)));
      return;
    }
    MapView map =
        read_map(field, "top level",
                 {"workers", "max_connections", "drain_delay", "drain_timeout", "admin", "probes",
                  "watchdog", "listeners", "clusters", "readiness", "access_log", "watch_config"});
    read_uint(map.find("workers"), config.workers, 1, kMaxWorkers);
    read_uint(map.find("max_connections"), config.max_connections, 0, kMaxConnections);
    read_duration(map.find("drain_delay"), config.drain_delay, false);
    read_duration(map.find("drain_timeout"), config.drain_timeout, false);
    if (const Field* admin = map.find("admin")) read_admin(*admin, config.admin);
    if (!admin_address_set_) {
      // The admin listener always exists; a listener must not take its default address either.
      listen_addresses_.push_back({config.admin.address,
                                   "the admin listener (its default; set admin.address to move it)",
                                   "admin.address", YAML::Mark::null_mark()});
    }
    if (const Field* probes = map.find("probes")) read_probes(*probes, config.probes.emplace());
    if (const Field* watchdog = map.find("watchdog")) {
      read_duration(watchdog, config.watchdog, false);
      if (config.watchdog.count() > 0 && config.watchdog < Duration{100}) {
        error(*watchdog, "must be 0s (off) or at least 100ms");
      }
    }
    if (const Field* log = map.find("access_log"))
      read_access_log(*log, config.access_log.emplace());
    read_bool(map.find("watch_config"), config.watch_config);

    for (const Field& item : read_list(require(map, "listeners"), "listener")) {
      config.listeners.emplace_back();
      read_listener(item, config.listeners.size() - 1, config.listeners.back());
    }
    for (const Field& item : read_list(require(map, "clusters"), "cluster")) {
      config.clusters.emplace_back();
      read_cluster(item, config.clusters.size() - 1, config.clusters.back());
    }
    // Without a usable `clusters` list, or with a cluster whose name could not be read, a route
    // may well name a cluster we could not register; the error already reported says enough.
    if (!config.clusters.empty() && !cluster_unnamed_) resolve_clusters(config);
    if (const Field* readiness = map.find("readiness")) read_readiness(*readiness, config);
    check_listen_addresses();
  }

  // Read after the clusters, whose names it refers to.
  void read_readiness(const Field& field, Config& config) {
    MapView map = read_map(field, "readiness", {"require_healthy"});
    ReadinessConfig& readiness = config.readiness;
    for (const Field& item : read_list(map.find("require_healthy"), "cluster")) {
      std::string name;
      if (!read_name(&item, name)) continue;
      if (std::find(readiness.require_healthy.begin(), readiness.require_healthy.end(), name) !=
          readiness.require_healthy.end()) {
        error(item, "duplicate cluster " + quoted(name));
        continue;
      }
      auto it = cluster_indexes_.find(name);
      if (it == cluster_indexes_.end()) {
        // As for routes: a cluster that could not be registered makes this error say nothing new.
        if (!config.clusters.empty() && !cluster_unnamed_) error(item, unknown_cluster(name));
        continue;
      }
      if (config.clusters[it->second].type == ClusterType::kOriginalDestination) {
        error(item, "cluster " + quoted(name) +
                        " is of type original_destination: it has no endpoints to be healthy");
        continue;
      }
      readiness.require_healthy.push_back(std::move(name));
      readiness.cluster_indexes.push_back(it->second);
    }
  }

  void read_access_log(const Field& field, AccessLogConfig& log) {
    MapView map = read_map(field, "access_log", {"path", "format", "sample_percent"});
    if (const Field* path = map.find("path")) {
      if (auto text = scalar(*path, "a file path")) {
        if (text->empty()) {
          error(*path,
                "the access log path must not be empty (use /dev/stdout for standard output)");
        } else {
          log.path = *text;
          log.location = location(path->mark);
        }
      }
    }
    if (const Field* format = map.find("format")) {
      if (auto text = scalar(*format, "an access log format")) {
        if (*text == "json") {
          log.format = AccessLogFormat::kJson;
        } else if (*text == "text") {
          log.format = AccessLogFormat::kText;
        } else {
          error(*format, "unknown format " + quoted(*text) + "; expected one of: json, text");
        }
      }
    }
    read_decimal(map.find("sample_percent"), log.sample_percent, 0, 100, false);
  }

  void read_admin(const Field& field, AdminConfig& admin) {
    MapView map = read_map(field, "admin", {"address", "token_file"});
    if (const Field* address = map.find("address")) {
      if (auto parsed = read_address(*address, AddressUse::kListen)) {
        admin.address = *parsed;
        admin_address_set_ = true;
        listen_addresses_.push_back({*parsed, "the admin listener", address->path, address->mark});
      }
    }
    if (const Field* token = map.find("token_file")) {
      if (auto text = scalar(*token, "a file path")) {
        if (text->empty()) {
          error(*token, "token_file must not be empty (leave it out for loopback-only control)");
        } else {
          admin.token_file = *text;
          admin.token_location = location(token->mark);
        }
      }
    }
  }

  void read_probes(const Field& field, ProbesConfig& probes) {
    MapView map = read_map(field, "probes", {"address"});
    if (const Field* address = map.find("address")) {
      if (auto parsed = read_address(*address, AddressUse::kListen)) probes.address = *parsed;
    }
    // The probes listener takes its default address unless it names another.
    const Field* at = map.find("address");
    listen_addresses_.push_back({probes.address, "the probes listener",
                                 at != nullptr ? at->path : field.path + ".address",
                                 at != nullptr ? at->mark : field.mark});
  }

  void read_listener(const Field& field, size_t index, ListenerConfig& listener) {
    listener.location = location(field.mark);
    MapView map =
        read_map(field, "listener",
                 {"name", "address", "direction", "original_destination", "request_headers_timeout",
                  "idle_timeout", "stream_idle_timeout", "max_request_headers_size",
                  "max_request_headers", "trusted_hops", "max_connections", "tls", "routes"});
    if (!map.valid) return;
    const Field* name = require(map, "name");
    if (read_name(name, listener.name)) {
      check_unique(listener_names_, listener.name, "listener", *name);
    }
    if (const Field* address = require(map, "address")) {
      if (auto parsed = read_address(*address, AddressUse::kListen)) {
        listener.address = *parsed;
        const std::string owner =
            listener.name.empty() ? "listener " + field.path : "listener " + quoted(listener.name);
        listen_addresses_.push_back({*parsed, owner, address->path, address->mark});
      }
    }
    if (const Field* direction = map.find("direction")) {
      if (auto text = scalar(*direction, "a direction")) {
        if (*text == "inbound") {
          listener.direction = ListenerDirection::kInbound;
        } else if (*text == "outbound") {
          listener.direction = ListenerDirection::kOutbound;
        } else {
          error(*direction,
                "unknown direction " + quoted(*text) + "; expected one of: inbound, outbound");
        }
      }
    }
    read_bool(map.find("original_destination"), listener.original_destination);
    read_duration(map.find("request_headers_timeout"), listener.request_headers_timeout, true);
    read_duration(map.find("idle_timeout"), listener.idle_timeout, true);
    read_duration(map.find("stream_idle_timeout"), listener.stream_idle_timeout, false);
    read_size(map.find("max_request_headers_size"), listener.max_request_headers_size,
              kMinHeadersSize, kMaxHeadersSize);
    read_uint(map.find("max_request_headers"), listener.max_request_headers, 1, kMaxHeaderCount);
    read_uint(map.find("trusted_hops"), listener.trusted_hops, 0, kMaxTrustedHops);
    read_uint(map.find("max_connections"), listener.max_connections, 0, kMaxConnections);
    if (const Field* tls = map.find("tls")) read_listener_tls(*tls, listener.tls);
    std::map<std::string, int, std::less<>> route_names;
    for (const Field& item : read_list(require(map, "routes"), "route")) {
      listener.routes.emplace_back();
      read_route(item, index, listener.routes.size() - 1, listener.routes.back(), route_names);
    }
  }

  void read_route(const Field& field, size_t listener_index, size_t route_index, RouteConfig& route,
                  std::map<std::string, int, std::less<>>& route_names) {
    route.location = location(field.mark);
    route.match.path.value = "/";  // a route without a path matcher matches every path
    MapView map = read_map(field, "route",
                           {"name", "match", "cluster", "timeout", "prefix_rewrite", "host_rewrite",
                            "retry", "bulkhead", "rate_limit", "fault", "upgrades"});
    if (!map.valid) return;
    const Field* name = require(map, "name");
    if (read_name(name, route.name)) check_unique(route_names, route.name, "route", *name);
    if (const Field* match = map.find("match")) read_match(*match, route.match);
    if (const Field* cluster = require(map, "cluster")) {
      if (read_name(cluster, route.cluster)) {
        cluster_references_.push_back(
            {listener_index, route_index, route.name, cluster->path, cluster->mark});
      }
    }
    read_duration(map.find("timeout"), route.timeout, false);
    if (const Field* rewrite = map.find("prefix_rewrite")) {
      if (auto text = scalar(*rewrite, "a path starting with '/'")) {
        if (route.match.path.kind != PathMatch::Kind::kPrefix) {
          error(*rewrite,
                "only allowed when the route matches a 'prefix' (this route matches a " +
                    std::string(route.match.path.kind == PathMatch::Kind::kExact ? "'path'"
                                                                                 : "'regex'") +
                    ")");
        } else if (text->empty() || text->front() != '/') {
          error(*rewrite, "must start with '/', got " + quoted(*text));
        } else {
          route.prefix_rewrite = std::move(*text);
        }
      }
    }
    if (const Field* host = map.find("host_rewrite")) read_host_rewrite(*host, route);
    if (const Field* retry = map.find("retry")) read_retry(*retry, route.retry);
    if (const Field* bulkhead = map.find("bulkhead")) read_bulkhead(*bulkhead, route.bulkhead);
    if (const Field* limit = map.find("rate_limit")) read_rate_limit(*limit, route.rate_limit);
    if (const Field* fault = map.find("fault")) read_fault(*fault, route.fault);
    if (const Field* upgrades = map.find("upgrades")) read_upgrades(*upgrades, route.upgrades);
  }

  // `auto`, or a host with an optional port as a Host header carries it.
  void read_host_rewrite(const Field& field, RouteConfig& route) {
    auto text = scalar(field, "a host name, host:port, or auto");
    if (!text) return;
    if (*text == "auto") {
      route.host_rewrite_mode = RouteConfig::HostRewrite::kAuto;
      return;
    }
    // A Host value is an address without a scheme, its port optional (RFC 9110 7.2).
    std::string why;
    bool valid = !text->empty() && text->size() <= 255 && parse_address(*text, &why).has_value();
    if (!valid && why.find("missing port") != std::string::npos) {
      valid = parse_address(*text + ":80", &why).has_value();
    }
    if (!valid) {
      error(field,
            "expected auto or a host name with an optional port (e.g. payments.internal "
            "or payments.internal:8443), got " +
                quoted(*text));
      return;
    }
    route.host_rewrite_mode = RouteConfig::HostRewrite::kLiteral;
    route.host_rewrite = *text;
  }

  void read_match(const Field& field, RouteMatch& match) {
    MapView map =
        read_map(field, "route match", {"prefix", "path", "regex", "host", "headers", "methods"});
    if (!map.valid) return;

    // At most one path matcher; without one the route matches every path (prefix "/"). When
    // there are more, the first in the file is read and each later one is reported.
    std::vector<const Field*> matchers;
    for (std::string_view kind : {"prefix", "path", "regex"}) {
      if (const Field* candidate = map.find(kind)) matchers.push_back(candidate);
    }
    std::sort(matchers.begin(), matchers.end(),
              [](const Field* a, const Field* b) { return a->key.Mark().pos < b->key.Mark().pos; });
    for (size_t i = 1; i < matchers.size(); ++i) {
      error(matchers[i]->key.Mark(), field.path,
            "only one of 'prefix', 'path' or 'regex' may be set, found " +
                quoted(matchers[0]->key.Scalar()) + " and " + quoted(matchers[i]->key.Scalar()));
    }
    if (!matchers.empty()) read_path_match(*matchers[0], match.path);

    if (const Field* host = map.find("host")) read_host_match(*host, match.host);
    if (const Field* headers = map.find("headers")) read_header_matches(*headers, match.headers);
    if (const Field* methods = map.find("methods")) read_methods(*methods, match.methods);
  }

  void read_path_match(const Field& field, PathMatch& path) {
    const std::string kind = field.key.Scalar();
    auto text =
        scalar(field, kind == "regex" ? "a regular expression" : "a path starting with '/'");
    if (!text) return;
    if (kind == "regex") {
      path.regex = compile_regex(field, *text);
      if (path.regex == nullptr) return;
      path.kind = PathMatch::Kind::kRegex;
    } else {
      if (text->empty() || text->front() != '/') {
        error(field, "must start with '/', got " + quoted(*text));
        return;
      }
      path.kind = kind == "prefix" ? PathMatch::Kind::kPrefix : PathMatch::Kind::kExact;
    }
    path.value = std::move(*text);
  }

  // Compiles `text` (RE2 syntax) for `field`; null, with an error recorded, when RE2 rejects it or
  // its program is bigger than kMaxRegexProgramSize.
  std::shared_ptr<const re2::RE2> compile_regex(const Field& field, const std::string& text) {
    RE2::Options options;
    options.set_log_errors(false);
    options.set_max_mem(kRegexMaxMem);
    auto regex = std::make_shared<const re2::RE2>(text, options);
    if (!regex->ok()) {
      std::string message = "invalid regex " + quoted(text) + ": " + regex->error();
      if (regex->error_code() == RE2::ErrorPatternTooLarge) {
        message += " (a pattern may use at most " + std::to_string(kRegexMaxMem >> 10) +
                   " KiB compiled, and its program size may be at most " +
                   std::to_string(kMaxRegexProgramSize) + ")";
      } else {
        message += " (expected RE2 syntax: https://github.com/google/re2/wiki/Syntax)";
      }
      error(field, message);
      return nullptr;
    }
    if (regex->ProgramSize() > kMaxRegexProgramSize) {
      error(field, "regex " + quoted(text) + " compiles to a program of size " +
                       std::to_string(regex->ProgramSize()) + ", more than the cap of " +
                       std::to_string(kMaxRegexProgramSize) +
                       " (use fewer or smaller counted repetitions {n,m} and alternatives)");
      return nullptr;
    }
    return regex;
  }

  void read_host_match(const Field& field, HostMatch& host) {
    auto text = scalar(field, "a host name such as api.example.com or *.example.com");
    if (!text) return;
    std::string value = *text;
    std::transform(value.begin(), value.end(), value.begin(), to_lower);
    bool wildcard = false;
    std::string_view name = value;
    if (name.size() >= 2 && name.substr(0, 2) == "*.") {
      wildcard = true;
      name.remove_prefix(1);  // keep the dot: ".example.com"
    }
    bool valid = false;
    if (!wildcard && name.size() > 2 && name.front() == '[' && name.back() == ']') {
      in6_addr ip6{};
      valid = inet_pton(AF_INET6, std::string(name.substr(1, name.size() - 2)).c_str(), &ip6) == 1;
    } else {
      const std::string_view body = wildcard ? name.substr(1) : name;
      valid = !body.empty() && std::all_of(body.begin(), body.end(), is_host_char);
    }
    if (!valid) {
      error(field, "invalid host " + quoted(*text) +
                       " (expected an exact name such as api.example.com, or a leading wildcard "
                       "such as *.example.com; no port)");
      return;
    }
    host.value = std::string(name);
    host.wildcard = wildcard;
  }

  void read_header_matches(const Field& field, std::vector<HeaderMatch>& headers) {
    if (!field.value.IsMap()) {
      error(field, "expected a map of header name to value, got " +
                       std::string(describe_kind(field.value)));
      return;
    }
    std::map<std::string, int, std::less<>> seen;
    for (auto it = field.value.begin(); it != field.value.end(); ++it) {
      // The iterator hands out a temporary pair; keep copies (they share the node) past it.
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar() || !is_token(key.Scalar())) {
        error(key.Mark(), field.path,
              "invalid header name " +
                  (key.IsScalar() ? quoted(key.Scalar()) : describe_kind(key)) +
                  " (expected a token such as x-canary)");
        continue;
      }
      HeaderMatch header;
      header.name = key.Scalar();
      std::transform(header.name.begin(), header.name.end(), header.name.begin(), to_lower);
      const Field value_field = map_field(key, value, child_path(field.path, header.name));
      if (auto first = seen.find(header.name); first != seen.end()) {
        error(key.Mark(), field.path,
              "duplicate header " + quoted(header.name) + " (first set on line " +
                  std::to_string(first->second) + "; header names are case-insensitive)");
        continue;
      }
      seen.emplace(header.name, key.Mark().line + 1);
      auto text = scalar(value_field, "a header value");
      if (!text) continue;
      if (std::any_of(text->begin(), text->end(), [](char c) {
            const auto byte = static_cast<unsigned char>(c);
            return (byte < 0x20 && c != '\t') || byte == 0x7f;
          })) {
        error(value_field, "header value must not contain control characters");
        continue;
      }
      header.value = std::move(*text);
      headers.push_back(std::move(header));
    }
  }

  // A list of distinct RFC 9110 tokens, case-folded with `fold`. `what` names an item in errors
  // ("method"), `expected` describes one ("an HTTP method such as GET"); `forbidden` (after
  // folding) is refused with `forbidden_why`.
  void read_token_list(const Field& field, const std::string& what, const std::string& expected,
                       char (*fold)(char), std::vector<std::string>& out,
                       std::string_view forbidden = {}, std::string_view forbidden_why = {}) {
    for (const Field& item : read_list(&field, what)) {
      auto text = scalar(item, expected);
      if (!text) continue;
      if (!is_token(*text)) {
        error(item, "invalid " + what + " " + quoted(*text) + " (expected a token such as " +
                        expected.substr(expected.rfind(' ') + 1) + ")");
        continue;
      }
      std::string token = std::move(*text);
      std::transform(token.begin(), token.end(), token.begin(), fold);
      if (!forbidden.empty() && token == forbidden) {
        error(item, std::string(forbidden_why));
        continue;
      }
      if (std::find(out.begin(), out.end(), token) != out.end()) {
        error(item, "duplicate " + what + " " + quoted(token));
        continue;
      }
      out.push_back(std::move(token));
    }
  }

  void read_upgrades(const Field& field, std::vector<std::string>& upgrades) {
    upgrades.clear();  // [] forwards no upgrade at all
    read_token_list(field, "protocol", "an Upgrade protocol such as websocket", to_lower, upgrades,
                    "h2c", "h2c cannot be forwarded: bulwark speaks HTTP/1.1 to upstreams");
  }

  void read_methods(const Field& field, std::vector<std::string>& methods) {
    read_token_list(field, "method", "an HTTP method such as GET", to_upper, methods);
  }

  void read_retry(const Field& field, RetryConfig& retry) {
    const size_t errors_before = errors_.size();
    MapView map = read_map(field, "retry",
                           {"attempts", "per_try_timeout", "retry_on", "retriable_status_codes",
                            "backoff", "retry_non_idempotent", "max_body_bytes", "budget",
                            "hedge"});
    read_uint(map.find("attempts"), retry.attempts, 1, kMaxRetryAttempts);
    read_duration(map.find("per_try_timeout"), retry.per_try_timeout, true);
    std::map<uint32_t, Field> conditions;
    if (const Field* retry_on = map.find("retry_on")) {
      conditions = read_retry_on(*retry_on, retry.retry_on);
    }
    const Field* codes = map.find("retriable_status_codes");
    if (codes != nullptr) read_status_codes(*codes, retry.retriable_status_codes);
    // These conditions and values only work together. Checked only when all above is sound: a
    // misspelt key may be the one meant to fit, and a mistake above already explains itself.
    if (errors_.size() == errors_before) {
      if (auto it = conditions.find(kRetryOnRetriableStatusCodes); it != conditions.end()) {
        if (codes == nullptr) {
          error(it->second,
                "'retriable-status-codes' needs a non-empty retriable_status_codes "
                "list in this retry policy");
        }
      } else if (codes != nullptr) {
        error(*codes,
              "these codes are only retried when retry_on lists 'retriable-status-codes'" +
                  std::string(conditions.empty() ? " (the default retry_on does not)" : "") +
                  "; add it to retry_on");
      }
      if (auto it = conditions.find(kRetryOnPerTryTimeout);
          it != conditions.end() && retry.per_try_timeout.count() == 0) {
        error(it->second, "'per-try-timeout' needs a per_try_timeout in this retry policy");
      }
    }
    if (const Field* backoff = map.find("backoff")) read_backoff(*backoff, retry);
    read_bool(map.find("retry_non_idempotent"), retry.retry_non_idempotent);
    read_size(map.find("max_body_bytes"), retry.max_body_bytes, 0, kMaxRetryBodyBytes);
    if (const Field* budget = map.find("budget")) read_retry_budget(*budget, retry.budget);
    if (const Field* hedge = map.find("hedge")) read_hedge(*hedge, retry);
  }

  void read_hedge(const Field& field, RetryConfig& retry) {
    const size_t errors_before = errors_.size();
    MapView map = read_map(field, "hedge", {"delay", "max_hedges"});
    HedgeConfig& hedge = retry.hedge.emplace();
    const Field* delay = map.find("delay");
    if (delay != nullptr && delay->value.IsScalar() && delay->value.Scalar() == "auto") {
      hedge.auto_delay = true;
    } else {
      read_duration(delay, hedge.delay, true);
    }
    const Field* max = map.find("max_hedges");
    read_uint(max, hedge.max_hedges, 1, kMaxHedges);
    if (errors_.size() != errors_before) return;
    if (hedge.max_hedges >= retry.attempts) {
      error(max != nullptr ? *max : field,
            "each hedge is a try: max_hedges (" + std::to_string(hedge.max_hedges) +
                ") must be less than this retry policy's attempts (" +
                std::to_string(retry.attempts) + ")");
    } else if (!hedge.auto_delay && retry.per_try_timeout.count() > 0 &&
               hedge.delay >= retry.per_try_timeout) {
      error(delay != nullptr ? *delay : field,
            "the hedge delay must be shorter than per_try_timeout (" +
                format_duration(retry.per_try_timeout) + "), or no hedge would ever start");
    }
  }

  // Reads the list of retry conditions into `bits`, and returns each condition's item so later
  // checks can point at it. `bits` is left as it was when the list has an error.
  std::map<uint32_t, Field> read_retry_on(const Field& field, uint32_t& bits) {
    const size_t errors_before = errors_.size();
    std::map<uint32_t, Field> conditions;
    uint32_t read = 0;
    for (const Field& item : read_list(&field, "retry condition")) {
      auto text = scalar(item, "a retry condition such as 5xx");
      if (!text) continue;
      const auto known = std::find_if(kRetryOnNames.begin(), kRetryOnNames.end(),
                                      [&](const RetryOnName& name) { return name.name == *text; });
      if (known == kRetryOnNames.end()) {
        error(item,
              "unknown retry condition " + quoted(*text) + expected_one_of(*text, kRetryOnWords));
        continue;
      }
      if ((read & known->bit) != 0) {
        error(item, "duplicate retry condition " + quoted(*text));
        continue;
      }
      read |= known->bit;
      conditions.emplace(known->bit, item);
    }
    if (errors_.size() != errors_before) return {};
    bits = read;
    return conditions;
  }

  void read_status_codes(const Field& field, std::vector<int>& codes) {
    for (const Field& item : read_list(&field, "status code")) {
      uint32_t code = 0;
      if (!read_uint(&item, code, 100, 599)) continue;
      if (std::find(codes.begin(), codes.end(), static_cast<int>(code)) != codes.end()) {
        error(item, "duplicate status code " + std::to_string(code));
        continue;
      }
      codes.push_back(static_cast<int>(code));
    }
  }

  void read_backoff(const Field& field, RetryConfig& retry) {
    const size_t errors_before = errors_.size();  // a misspelt key may be the one meant to fit
    MapView map = read_map(field, "retry backoff", {"base", "max"});
    read_duration(map.find("base"), retry.backoff_base, true);
    read_duration(map.find("max"), retry.backoff_max, true);
    if (errors_.size() == errors_before) {
      check_not_greater(map, "base", retry.backoff_base, "max", retry.backoff_max);
    }
  }

  void read_retry_budget(const Field& field, RetryBudgetConfig& budget) {
    MapView map =
        read_map(field, "retry budget", {"enabled", "ratio", "min_retries_per_second", "window"});
    read_bool(map.find("enabled"), budget.enabled);
    read_decimal(map.find("ratio"), budget.ratio, 0, 1, false);
    read_uint(map.find("min_retries_per_second"), budget.min_retries_per_second, 0, kMaxCount);
    read_duration(map.find("window"), budget.window, true);
  }

  void read_bulkhead(const Field& field, std::optional<BulkheadConfig>& out) {
    MapView map = read_map(field, "bulkhead", {"max_concurrent", "max_queued", "queue_timeout"});
    BulkheadConfig& bulkhead = out.emplace();
    read_uint(map.find("max_concurrent"), bulkhead.max_concurrent, 1, kMaxCount);
    read_uint(map.find("max_queued"), bulkhead.max_queued, 0, kMaxCount);
    read_duration(map.find("queue_timeout"), bulkhead.queue_timeout, true);
  }

  void read_rate_limit(const Field& field, std::optional<RateLimitConfig>& out) {
    MapView map = read_map(field, "rate limit", {"requests_per_second", "burst"});
    RateLimitConfig& limit = out.emplace();
    read_decimal(map.find("requests_per_second"), limit.requests_per_second, 0,
                 kMaxRequestsPerSecond, true);
    // Without a burst the bucket holds about one second of requests, and at least one.
    limit.burst = static_cast<uint32_t>(std::max(1.0, std::round(limit.requests_per_second)));
    read_uint(map.find("burst"), limit.burst, 1, kMaxCount);
  }

  void read_fault(const Field& field, std::optional<FaultConfig>& out) {
    MapView map = read_map(field, "fault", {"delay", "abort", "header_control"});
    FaultConfig& fault = out.emplace();
    if (const Field* delay = map.find("delay")) {
      MapView delay_map = read_map(*delay, "fault delay", {"percent", "duration"});
      FaultDelayConfig& injected = fault.delay.emplace();
      read_decimal(delay_map.find("percent"), injected.percent, 0, 100, false);
      read_duration(delay_map.find("duration"), injected.duration, true);
    }
    if (const Field* abort = map.find("abort")) {
      MapView abort_map = read_map(*abort, "fault abort", {"percent", "status"});
      FaultAbortConfig& injected = fault.abort.emplace();
      read_decimal(abort_map.find("percent"), injected.percent, 0, 100, false);
      uint32_t status = 0;
      if (read_uint(abort_map.find("status"), status, 200, 599)) {
        injected.status = static_cast<int>(status);
      }
    }
    read_bool(map.find("header_control"), fault.header_control);
  }

  void read_circuit_breaker(const Field& field, std::optional<CircuitBreakerConfig>& out) {
    const size_t errors_before = errors_.size();
    MapView map =
        read_map(field, "circuit breaker",
                 {"failure_rate_percent", "slow_call_duration", "slow_call_rate_percent", "window",
                  "minimum_calls", "open_duration", "max_open_duration", "half_open_calls"});
    CircuitBreakerConfig& breaker = out.emplace();
    read_uint(map.find("failure_rate_percent"), breaker.failure_rate_percent, 1, 100);
    read_duration(map.find("slow_call_duration"), breaker.slow_call_duration, true);
    read_uint(map.find("slow_call_rate_percent"), breaker.slow_call_rate_percent, 1, 100);
    read_duration(map.find("window"), breaker.window, true);
    read_uint(map.find("minimum_calls"), breaker.minimum_calls, 1, kMaxCount);
    read_duration(map.find("open_duration"), breaker.open_duration, true);
    read_duration(map.find("max_open_duration"), breaker.max_open_duration, true);
    read_uint(map.find("half_open_calls"), breaker.half_open_calls, 1, kMaxCount);
    // Compared only when the whole block is sound: a misspelt key may be the one meant to fit.
    if (errors_.size() == errors_before) {
      check_not_greater(map, "open_duration", breaker.open_duration, "max_open_duration",
                        breaker.max_open_duration);
    }
  }

  void read_cluster(const Field& field, size_t index, ClusterConfig& cluster) {
    cluster.location = location(field.mark);
    MapView map =
        read_map(field, "cluster",
                 {"name", "type", "endpoints", "dns_refresh", "lb", "connect_timeout", "pool",
                  "circuit_breaker", "health_check", "outlier_detection", "panic_threshold",
                  "max_response_headers", "tls", "slow_start", "adaptive_concurrency"});
    if (!map.valid) {
      cluster_unnamed_ = true;
      return;
    }
    const Field* name = require(map, "name");
    if (read_name(name, cluster.name)) {
      if (check_unique(cluster_names_, cluster.name, "cluster", *name)) {
        cluster_indexes_.emplace(cluster.name, index);
      }
    } else {
      cluster_unnamed_ = true;
    }
    if (const Field* type = map.find("type")) {
      if (auto text = scalar(*type, "a cluster type")) {
        if (*text == "static") {
          cluster.type = ClusterType::kStatic;
        } else if (*text == "original_destination") {
          cluster.type = ClusterType::kOriginalDestination;
        } else {
          error(*type, "unknown type " + quoted(*text) +
                           "; expected one of: static, original_destination");
        }
      }
    }
    if (cluster.type == ClusterType::kOriginalDestination) {
      // Each request goes where its client meant to: there is no list to check, resolve or
      // load-balance, and no name to verify a certificate against.
      for (const char* key : {"endpoints", "health_check", "tls", "slow_start"}) {
        if (const Field* found = map.find(key)) {
          error(*found, "a cluster of type original_destination takes no " + std::string(key) +
                            ": each request goes to the address its client connected to");
        }
      }
      // One breaker (or detector) for every destination: one dead dependency would cut the app
      // off from all the others.
      for (const char* key : {"circuit_breaker", "outlier_detection", "adaptive_concurrency"}) {
        if (const Field* found = map.find(key)) {
          error(*found, "a cluster of type original_destination takes no " + std::string(key) +
                            ": it would judge every destination by the failures of any one");
        }
      }
      read_cluster_policies(map, cluster);
      return;
    }
    // Where each endpoint's address was read (none when it was not), for the TLS check below.
    std::vector<std::optional<Field>> endpoint_addresses;
    for (const Field& item : read_list(require(map, "endpoints"), "endpoint")) {
      cluster.endpoints.emplace_back();
      endpoint_addresses.push_back(read_endpoint(item, cluster.endpoints.back()));
    }
    read_duration(map.find("dns_refresh"), cluster.dns_refresh, true);
    read_cluster_policies(map, cluster);
    if (const Field* adaptive = map.find("adaptive_concurrency")) {
      read_adaptive_concurrency(*adaptive, cluster.adaptive_concurrency);
    }
    if (const Field* slow = map.find("slow_start")) {
      MapView ss = read_map(*slow, "slow start", {"window", "aggression", "min_weight_percent"});
      SlowStartConfig& slow_start = cluster.slow_start.emplace();
      read_duration(ss.find("window"), slow_start.window, true);
      read_decimal(ss.find("aggression"), slow_start.aggression, 0, 100, true);
      read_uint(ss.find("min_weight_percent"), slow_start.min_weight_percent, 1, 100);
    }
    if (const Field* check = map.find("health_check")) {
      read_health_check(*check, cluster.health_check, map.find("tls") != nullptr);
    }
    if (const Field* tls = map.find("tls")) {
      if (read_cluster_tls(*tls, cluster.tls)) {
        check_tls_endpoints(*cluster.tls, cluster.endpoints, endpoint_addresses);
      }
    }
  }

  // The keys every cluster type takes.
  void read_cluster_policies(const MapView& map, ClusterConfig& cluster) {
    if (const Field* lb = map.find("lb")) {
      if (auto text = scalar(*lb, "a load-balancing policy")) {
        if (*text == "round_robin") {
          cluster.lb = LbPolicy::kRoundRobin;
        } else if (*text == "least_request") {
          cluster.lb = LbPolicy::kLeastRequest;
        } else if (*text == "random") {
          cluster.lb = LbPolicy::kRandom;
        } else {
          error(*lb, "unknown policy " + quoted(*text) +
                         "; expected one of: round_robin, least_request, random");
        }
      }
    }
    read_duration(map.find("connect_timeout"), cluster.connect_timeout, true);
    if (const Field* pool = map.find("pool")) read_pool(*pool, cluster.pool);
    if (const Field* breaker = map.find("circuit_breaker")) {
      read_circuit_breaker(*breaker, cluster.circuit_breaker);
    }
    if (const Field* outlier = map.find("outlier_detection")) {
      read_outlier_detection(*outlier, cluster.outlier_detection);
    }
    if (auto percent = read_percent(map.find("panic_threshold"), true)) {
      cluster.panic_threshold_percent = static_cast<uint32_t>(*percent);
    }
    read_uint(map.find("max_response_headers"), cluster.max_response_headers, 1, kMaxHeaderCount);
  }

  void read_health_check(const Field& field, std::optional<HealthCheckConfig>& out,
                         bool cluster_has_tls) {
    MapView map = read_map(
        field, "health check",
        {"path", "tcp", "host", "interval", "interval_jitter", "timeout", "healthy_threshold",
         "unhealthy_threshold", "unhealthy_interval", "expected_statuses", "tls"});
    HealthCheckConfig& check = out.emplace();
    read_bool(map.find("tcp"), check.tcp);
    // A TCP check sends no request: the keys about the request and its response would be ignored.
    const auto http_only = [&](std::string_view key) -> const Field* {
      const Field* found = map.find(key);
      if (found != nullptr && check.tcp) {
        error(*found,
              "only applies to HTTP checks, and this check has tcp: true; remove it or "
              "set tcp: false");
        return nullptr;
      }
      return found;
    };
    if (const Field* path = http_only("path")) {
      if (auto text = read_request_text(*path, "a path starting with '/'")) {
        if (text->front() != '/') {
          error(*path, "must start with '/', got " + quoted(*text));
        } else {
          check.path = std::move(*text);
        }
      }
    }
    if (const Field* host = http_only("host")) {
      if (auto text = read_request_text(*host, "a Host header value such as app.local")) {
        check.host = std::move(*text);
      }
    }
    if (const Field* statuses = http_only("expected_statuses")) {
      read_status_ranges(*statuses, check.expected_statuses);
    }
    read_duration(map.find("interval"), check.interval, true);
    if (auto jitter = read_percent(map.find("interval_jitter"), false)) {
      check.interval_jitter_percent = *jitter;
    }
    read_duration(map.find("timeout"), check.timeout, true);
    read_uint(map.find("healthy_threshold"), check.healthy_threshold, 1, kMaxCount);
    read_uint(map.find("unhealthy_threshold"), check.unhealthy_threshold, 1, kMaxCount);
    read_duration(map.find("unhealthy_interval"), check.unhealthy_interval, true);
    if (const Field* tls = map.find("tls")) {
      bool over_tls = false;
      if (read_bool(tls, over_tls)) {
        if (over_tls && !cluster_has_tls) {
          error(*tls,
                "the cluster has no tls section, so there are no TLS settings to check with; add "
                "tls to the cluster or remove this key");
        } else {
          check.tls = over_tls;
        }
      }
    }
  }

  // A string that goes into a request as it is: not empty, no spaces or control characters.
  std::optional<std::string> read_request_text(const Field& field, std::string_view expected) {
    auto text = scalar(field, expected);
    if (!text) return std::nullopt;
    if (text->empty()) {
      error(field, "must not be empty (expected " + std::string(expected) + ")");
      return std::nullopt;
    }
    if (has_space_or_control(*text)) {
      error(field, "must not contain spaces or control characters");
      return std::nullopt;
    }
    return text;
  }

  // Replaces `ranges` with the list in `field` when every item is valid.
  void read_status_ranges(const Field& field, std::vector<StatusRange>& ranges) {
    const std::string expected = "a status from " + std::to_string(kMinStatus) + " to " +
                                 std::to_string(kMaxStatus) + " or a range such as 200-399";
    const auto valid = [](int status) { return status >= kMinStatus && status <= kMaxStatus; };
    const size_t errors_before = errors_.size();
    std::vector<StatusRange> read;
    for (const Field& item : read_list(&field, "status code")) {
      auto text = scalar(item, expected);
      if (!text) continue;
      auto range = parse_status_range(*text);
      if (!range || !valid(range->min) || !valid(range->max)) {
        error(item, "must be " + expected + ", got " + quoted(*text));
        continue;
      }
      if (range->min > range->max) {
        error(item, "the range " + quoted(*text) + " is reversed; write the lower status first: " +
                        format_status_range({range->max, range->min}));
        continue;
      }
      read.push_back(*range);
    }
    if (errors_.size() == errors_before && !read.empty()) ranges = std::move(read);
  }

  void read_outlier_detection(const Field& field, std::optional<OutlierDetectionConfig>& out) {
    const size_t errors_before = errors_.size();
    MapView map = read_map(
        field, "outlier detection",
        {"consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
         "uneject_on_health_check_pass", "base_ejection_time", "max_ejection_time",
         "max_ejection_percent", "failure_percent", "failure_percent_minimum_requests", "interval",
         "success_rate"});
    OutlierDetectionConfig& outlier = out.emplace();
    read_uint(map.find("consecutive_5xx"), outlier.consecutive_5xx, 0, kMaxCount);
    read_uint(map.find("consecutive_gateway_failure"), outlier.consecutive_gateway_failure, 0,
              kMaxCount);
    read_uint(map.find("consecutive_local_origin_failure"),
              outlier.consecutive_local_origin_failure, 0, kMaxCount);
    read_bool(map.find("uneject_on_health_check_pass"), outlier.uneject_on_health_check_pass);
    read_duration(map.find("base_ejection_time"), outlier.base_ejection_time, true);
    read_duration(map.find("max_ejection_time"), outlier.max_ejection_time, true);
    read_uint(map.find("max_ejection_percent"), outlier.max_ejection_percent, 0, 100);
    read_uint(map.find("failure_percent"), outlier.failure_percent, 0, 100);
    read_uint(map.find("failure_percent_minimum_requests"),
              outlier.failure_percent_minimum_requests, 1, kMaxCount);
    read_duration(map.find("interval"), outlier.interval, true);
    if (const Field* rate = map.find("success_rate")) {
      MapView sr =
          read_map(*rate, "success rate", {"minimum_hosts", "request_volume", "stdev_factor"});
      OutlierDetectionConfig::SuccessRate& success = outlier.success_rate.emplace();
      read_uint(sr.find("minimum_hosts"), success.minimum_hosts, 2, kMaxCount);
      read_uint(sr.find("request_volume"), success.request_volume, 1, kMaxCount);
      read_decimal(sr.find("stdev_factor"), success.stdev_factor, 0, 100, true);
    }
    // Compared only when the whole block is sound: a misspelt key may be the one meant to fit.
    if (errors_.size() == errors_before) {
      check_not_greater(map, "base_ejection_time", outlier.base_ejection_time, "max_ejection_time",
                        outlier.max_ejection_time);
    }
  }

  void read_adaptive_concurrency(const Field& field,
                                 std::optional<AdaptiveConcurrencyConfig>& out) {
    const size_t errors_before = errors_.size();
    MapView map = read_map(field, "adaptive concurrency",
                           {"enabled", "min_limit", "max_limit", "sample_window",
                            "min_rtt_interval", "jitter", "min_rtt_samples", "buffer"});
    bool enabled = true;
    read_bool(map.find("enabled"), enabled);
    AdaptiveConcurrencyConfig ac;
    read_uint(map.find("min_limit"), ac.min_limit, 1, kMaxCount);
    read_uint(map.find("max_limit"), ac.max_limit, 1, kMaxCount);
    read_duration(map.find("sample_window"), ac.sample_window, true);
    read_duration(map.find("min_rtt_interval"), ac.min_rtt_interval, true);
    if (auto jitter = read_percent(map.find("jitter"), false)) ac.jitter_percent = *jitter;
    read_uint(map.find("min_rtt_samples"), ac.min_rtt_samples, 1, 100000);
    if (auto buffer = read_percent(map.find("buffer"), false)) ac.buffer_percent = *buffer;
    if (errors_.size() == errors_before && ac.jitter_percent >= 100) {
      error(*map.find("jitter"), "must be below 100% (the next measurement could come at once)");
    }
    if (errors_.size() == errors_before && ac.min_rtt_interval < 5 * ac.sample_window) {
      const Field* at = map.find("min_rtt_interval") != nullptr ? map.find("min_rtt_interval")
                                                                : map.find("sample_window");
      error(*at, "min_rtt_interval (" + format_duration(ac.min_rtt_interval) +
                     ") must be at least 5 sample windows (" +
                     format_duration(5 * ac.sample_window) +
                     "): the limit is held at min_limit while the minimum is measured");
    }
    if (errors_.size() == errors_before && ac.max_limit < ac.min_limit) {
      const Field* at =
          map.find("max_limit") != nullptr ? map.find("max_limit") : map.find("min_limit");
      error(*at, "max_limit " + std::to_string(ac.max_limit) + " is below min_limit " +
                     std::to_string(ac.min_limit));
    }
    if (enabled) out = ac;
  }

  // Returns the field the address was read from, when it was read without errors.
  std::optional<Field> read_endpoint(const Field& field, EndpointConfig& endpoint) {
    endpoint.location = location(field.mark);
    if (field.value.IsScalar()) {
      auto address = read_address(field, AddressUse::kEndpoint);
      if (!address) return std::nullopt;
      endpoint.address = *address;
      return field;
    }
    if (!field.value.IsMap()) {
      constexpr std::string_view kForms =
          "\"host:port\" or a map with 'address' and optional 'weight' and 'priority'";
      error(field, "expected " + std::string(kForms) + ", got " + describe_kind(field.value));
      return std::nullopt;
    }
    MapView map = read_map(field, "endpoint", {"address", "weight", "priority"});
    std::optional<Field> where;
    if (const Field* address = require(map, "address")) {
      if (auto parsed = read_address(*address, AddressUse::kEndpoint)) {
        endpoint.address = *parsed;
        where = *address;
      }
    }
    read_uint(map.find("weight"), endpoint.weight, kMinWeight, kMaxWeight);
    read_uint(map.find("priority"), endpoint.priority, 0, kMaxPriority);
    return where;
  }

  // ---- TLS (issue 14) ----

  // A file the proxy reads (a PEM certificate, key or CA bundle): a non-empty string. The loader
  // does not open it; the proxy does, and reports a missing or unreadable file itself. Returns
  // true when the field was present and valid, and so stored in `out` (and its place in `at`, for
  // the proxy's errors about the file).
  bool read_file_path(const Field* field, std::string& out, SourceLocation* at) {
    if (field == nullptr) return false;
    *at = location(field->mark);
    auto text = scalar(*field, "a file path");
    if (!text) return false;
    if (text->empty()) {
      error(*field, "must not be empty (expected a file path)");
      return false;
    }
    out = std::move(*text);
    return true;
  }

  // "1.2" or "1.3", quoted or not (YAML gives the text of 1.2 as it is written).
  void read_tls_version(const Field* field, TlsVersion& out) {
    if (field == nullptr) return;
    auto text = scalar(*field, "a TLS version, \"1.2\" or \"1.3\"");
    if (!text) return;
    if (*text == "1.2") {
      out = TlsVersion::k1_2;
      return;
    }
    if (*text == "1.3") {
      out = TlsVersion::k1_3;
      return;
    }
    // "TLSv1.2", "tls1.3": say what to write instead.
    std::string bare = *text;
    std::transform(bare.begin(), bare.end(), bare.begin(), to_lower);
    for (std::string_view prefix : {"tlsv", "tls"}) {
      if (bare.rfind(prefix, 0) == 0) {
        bare.erase(0, prefix.size());
        break;
      }
    }
    std::string message = "unsupported TLS version " + quoted(*text);
    if (bare == "1.2" || bare == "1.3") {
      message += " (write just " + quoted(bare) + ")";
    } else if (bare == "1" || bare == "1.0" || bare == "1.1") {
      message += " (TLS 1.0 and 1.1 are deprecated, RFC 8996)";
    }
    error(*field, message + "; expected one of: " + join(kTlsVersionWords));
  }

  // Replaces `out` with the list in `field` when every item is valid.
  void read_alpn(const Field& field, std::vector<std::string>& out) {
    constexpr std::string_view kExpected = "an ALPN protocol name such as http/1.1";
    const size_t errors_before = errors_.size();
    std::vector<std::string> read;
    for (const Field& item : read_list(&field, "ALPN protocol")) {
      auto text = scalar(item, kExpected);
      if (!text) continue;
      if (text->empty()) {
        error(item, "must not be empty (expected " + std::string(kExpected) + ")");
        continue;
      }
      // A protocol offered must be one bulwark speaks: a client that picks h2 would get
      // HTTP/1.1 bytes.
      if (*text != "http/1.1" && *text != "http/1.0") {
        error(item,
              "bulwark speaks HTTP/1.1 and HTTP/1.0 only: expected http/1.1 or http/1.0, got " +
                  quoted(*text));
        continue;
      }
      if (std::find(read.begin(), read.end(), *text) != read.end()) {
        error(item, "duplicate ALPN protocol " + quoted(*text));
        continue;
      }
      read.push_back(std::move(*text));
    }
    if (errors_.size() == errors_before) out = std::move(read);
  }

  // Names a peer's certificate must carry: exact, or a prefix with a trailing '*'.
  void read_san_matches(const Field& field, std::vector<SanMatch>& out) {
    const std::string expected =
        "a certificate name such as spiffe://cluster.local/ns/shop/sa/web, or a prefix ending "
        "in '*'";
    for (const Field& item : read_list(&field, "SAN")) {
      auto text = scalar(item, expected);
      if (!text) continue;
      if (text->empty()) {
        error(item, "must not be empty (expected " + expected + ")");
        continue;
      }
      const size_t star = text->find('*');
      if (star != std::string::npos && star + 1 != text->size()) {
        error(item, "invalid SAN " + quoted(*text) +
                        ": '*' is only allowed as the last character, for a prefix match");
        continue;
      }
      SanMatch match;
      match.prefix = star != std::string::npos;
      match.value = text->substr(0, star);
      if (match.value.empty()) {
        error(item, "'*' alone would match any name; leave " + field.key.Scalar() + " out instead");
        continue;
      }
      if (std::any_of(out.begin(), out.end(), [&](const SanMatch& seen) {
            return seen.value == match.value && seen.prefix == match.prefix;
          })) {
        error(item, "duplicate SAN " + quoted(*text));
        continue;
      }
      out.push_back(std::move(match));
    }
  }

  void read_certificate(const Field& field, TlsCertificateConfig& certificate) {
    certificate.location = location(field.mark);
    MapView map = read_map(field, "certificate", {"cert", "key"});
    read_file_path(require(map, "cert"), certificate.cert, &certificate.cert_at);
    read_file_path(require(map, "key"), certificate.key, &certificate.key_at);
  }

  void read_listener_tls(const Field& field, std::optional<ListenerTlsConfig>& out) {
    ListenerTlsConfig& tls = out.emplace();
    tls.location = location(field.key.Mark());
    MapView map =
        read_map(field, "listener tls",
                 {"certificates", "min_version", "ciphers", "alpn", "client_ca",
                  "require_client_certificate", "allowed_client_sans", "forward_client_cert"});
    if (!map.valid) return;
    for (const Field& item : read_list(require(map, "certificates"), "certificate")) {
      tls.certificates.emplace_back();
      read_certificate(item, tls.certificates.back());
    }
    read_tls_version(map.find("min_version"), tls.min_version);
    if (const Field* ciphers = map.find("ciphers")) {
      tls.ciphers_at = location(ciphers->mark);
      if (auto text = scalar(*ciphers, "an OpenSSL cipher list such as ECDHE+AESGCM")) {
        if (text->empty()) {
          error(*ciphers, "must not be empty (leave it out for OpenSSL's default ciphers)");
        } else {
          tls.ciphers = std::move(*text);
        }
      }
    }
    if (const Field* alpn = map.find("alpn")) read_alpn(*alpn, tls.alpn);
    const Field* client_ca = map.find("client_ca");
    read_file_path(client_ca, tls.client_ca, &tls.client_ca_at);
    // Only a client CA makes the listener ask for a certificate: without one these do nothing.
    const auto with_client_ca = [&](std::string_view key) -> const Field* {
      const Field* found = map.find(key);
      if (found != nullptr && client_ca == nullptr) {
        error(*found,
              "only applies with client_ca (the CA that verifies client certificates), which "
              "this tls section does not set");
        return nullptr;
      }
      return found;
    };
    read_bool(with_client_ca("require_client_certificate"), tls.require_client_certificate);
    if (const Field* sans = with_client_ca("allowed_client_sans")) {
      read_san_matches(*sans, tls.allowed_client_sans);
    }
    if (const Field* forward = map.find("forward_client_cert")) {
      if (auto text = scalar(*forward, "sanitize, sanitize_set or append_forward")) {
        if (*text == "sanitize") {
          tls.forward_client_cert = ForwardClientCert::kSanitize;
        } else if (*text == "sanitize_set") {
          tls.forward_client_cert = ForwardClientCert::kSanitizeSet;
        } else if (*text == "append_forward") {
          tls.forward_client_cert = ForwardClientCert::kAppendForward;
        } else {
          error(*forward,
                "unknown mode " + quoted(*text) + expected_one_of(*text, kForwardClientCertWords));
        }
      }
    }
  }

  // The name sent as SNI and checked against the server's certificate: a DNS name.
  void read_server_name(const Field& field, std::string& out) {
    auto text = scalar(field, "a DNS name such as payments.internal");
    if (!text) return;
    if (text->empty()) {
      error(field, "must not be empty (leave it out to use each endpoint's DNS name)");
      return;
    }
    std::string bare = *text;
    if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']') {
      bare = bare.substr(1, bare.size() - 2);
    }
    in_addr ip4{};
    in6_addr ip6{};
    if (inet_pton(AF_INET, bare.c_str(), &ip4) == 1 ||
        inet_pton(AF_INET6, bare.c_str(), &ip6) == 1) {
      error(field, "must be a DNS name, not an IP address: " + quoted(*text) +
                       " (SNI carries only host names, RFC 6066)");
      return;
    }
    const std::string_view name = *text;
    const bool valid = name.size() <= kMaxServerNameBytes && name.front() != '.' &&
                       name.back() != '.' && name.find("..") == std::string_view::npos &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '-' || c == '.';
                       });
    if (!valid) {
      error(field, "invalid server name " + quoted(*text) +
                       " (expected a DNS name of letters, digits, '-' and '.', such as "
                       "payments.internal, at most " +
                       std::to_string(kMaxServerNameBytes) + " bytes)");
      return;
    }
    out = std::move(*text);
  }

  // Returns true when the section was read without errors.
  bool read_cluster_tls(const Field& field, std::optional<ClusterTlsConfig>& out) {
    const size_t errors_before = errors_.size();
    ClusterTlsConfig& tls = out.emplace();
    tls.location = location(field.key.Mark());
    if (field.value.IsNull() || field.value.IsScalar()) {
      error(field, "expected a map (cluster tls), got " + std::string(describe_kind(field.value)) +
                       " (tls: {} is TLS with the defaults; leave the key out for plain TCP)");
      return false;
    }
    MapView map = read_map(field, "cluster tls",
                           {"sni", "ca", "verify", "verify_hostname", "allowed_server_sans", "cert",
                            "key", "min_version", "alpn"});
    if (!map.valid) return false;
    if (const Field* sni = map.find("sni")) read_server_name(*sni, tls.sni);
    const Field* ca = map.find("ca");
    read_file_path(ca, tls.ca, &tls.ca_at);
    read_bool(map.find("verify"), tls.verify);
    read_bool(map.find("verify_hostname"), tls.verify_hostname);
    const Field* sans = map.find("allowed_server_sans");
    if (sans != nullptr) read_san_matches(*sans, tls.allowed_server_sans);
    // A client certificate (mTLS) is a certificate and its key: both or neither.
    const Field* cert = map.find("cert");
    const Field* key = map.find("key");
    read_file_path(cert, tls.cert, &tls.cert_at);
    read_file_path(key, tls.key, &tls.key_at);
    if (cert != nullptr && key == nullptr) {
      error(*cert, "the client certificate needs its private key: 'key' is missing");
    } else if (key != nullptr && cert == nullptr) {
      error(*key, "the private key needs its client certificate: 'cert' is missing");
    }
    read_tls_version(map.find("min_version"), tls.min_version);
    if (const Field* alpn = map.find("alpn")) read_alpn(*alpn, tls.alpn);
    if (!tls.verify) {
      for (const Field* ignored : {ca, sans}) {
        if (ignored == nullptr) continue;
        error(*ignored,
              "would be ignored: verify: false accepts any server certificate; remove it or "
              "set verify: true");
      }
    }
    return errors_.size() == errors_before;
  }

  // With the hostname check on and no name given, an IP endpoint has no name to check the
  // server's certificate against. Call only when the cluster's tls section is sound: a misspelt
  // key may be the one meant to give the name.
  void check_tls_endpoints(const ClusterTlsConfig& tls,
                           const std::vector<EndpointConfig>& endpoints,
                           const std::vector<std::optional<Field>>& addresses) {
    if (!tls.verify || !tls.verify_hostname || !tls.allowed_server_sans.empty() ||
        !tls.sni.empty()) {
      return;
    }
    for (size_t i = 0; i < endpoints.size() && i < addresses.size(); ++i) {
      if (!addresses[i] || !endpoints[i].address.is_ip) continue;
      error(*addresses[i],
            "an IP endpoint needs tls.sni, tls.allowed_server_sans or tls.verify_hostname: false "
            "(there is no host name to check its certificate against)");
    }
  }

  void read_pool(const Field& field, PoolConfig& pool) {
    MapView map = read_map(field, "pool",
                           {"max_connections", "idle_timeout", "max_requests_per_connection",
                            "max_pending", "pending_timeout"});
    read_uint(map.find("max_connections"), pool.max_connections, 1, kMaxCount);
    read_duration(map.find("idle_timeout"), pool.idle_timeout, true);
    read_uint(map.find("max_requests_per_connection"), pool.max_requests_per_connection, 0,
              kMaxCount);
    read_uint(map.find("max_pending"), pool.max_pending, 0, kMaxCount);
    read_duration(map.find("pending_timeout"), pool.pending_timeout, true);
  }

  // Records `name` as seen; reports a duplicate and returns false when it was seen before.
  bool check_unique(std::map<std::string, int, std::less<>>& seen, const std::string& name,
                    std::string_view what, const Field& field) {
    auto [it, inserted] = seen.emplace(name, field.mark.line + 1);
    if (!inserted) {
      error(field, "duplicate " + std::string(what) + " name " + quoted(name) +
                       " (first defined on line " + std::to_string(it->second) + ")");
    }
    return inserted;
  }

  void resolve_clusters(Config& config) {
    for (const ClusterReference& ref : cluster_references_) {
      RouteConfig& route = config.listeners[ref.listener].routes[ref.route];
      auto it = cluster_indexes_.find(route.cluster);
      if (it != cluster_indexes_.end()) {
        route.cluster_index = it->second;
        const ListenerConfig& listener = config.listeners[ref.listener];
        if (config.clusters[it->second].type == ClusterType::kOriginalDestination &&
            !listener.original_destination) {
          error(ref.mark, ref.path,
                "cluster " + quoted(route.cluster) +
                    " is of type original_destination, which needs the address each client "
                    "connected to: set original_destination: true on listener " +
                    quoted(listener.name));
        }
        continue;
      }
      const std::string route_name = ref.route_name.empty() ? "" : quoted(ref.route_name) + " ";
      error(ref.mark, ref.path, "route " + route_name + "names " + unknown_cluster(route.cluster));
    }
  }

  // "unknown cluster 'ap' (did you mean 'app'?) (defined clusters: app, db)", for a reference
  // to a cluster by name. Call once every cluster is read.
  std::string unknown_cluster(const std::string& name) const {
    std::vector<std::string_view> known;
    for (const auto& [defined, index] : cluster_indexes_) known.push_back(defined);
    std::string out = "unknown cluster " + quoted(name);
    if (auto suggestion = closest(name, known)) {
      out += " (did you mean " + quoted(*suggestion) + "?)";
    }
    if (!known.empty()) out += " (defined clusters: " + join(known) + ")";
    return out;
  }

  // Two listening sockets on the same port collide when their hosts are equal or either is the
  // unspecified address. Listeners use SO_REUSEPORT, so the kernel would not refuse the second one;
  // it would silently share the traffic.
  void check_listen_addresses() {
    for (size_t i = 0; i < listen_addresses_.size(); ++i) {
      const ListenAddress& later = listen_addresses_[i];
      if (later.address.port == 0) continue;
      for (size_t j = 0; j < i; ++j) {
        const ListenAddress& earlier = listen_addresses_[j];
        if (earlier.address.port != later.address.port) continue;
        // IPv6 sockets are IPV6_V6ONLY (net.cpp): [::]:P and 0.0.0.0:P are two listeners, as
        // dual-stack transparent capture needs.
        const bool v6_earlier = earlier.address.host.find(':') != std::string::npos;
        const bool v6_later = later.address.host.find(':') != std::string::npos;
        if (v6_earlier != v6_later) continue;
        if (earlier.address.host != later.address.host &&
            !is_unspecified_host(earlier.address.host) &&
            !is_unspecified_host(later.address.host)) {
          continue;
        }
        error(later.mark, later.path,
              "address " + later.address.text() + " collides with " + earlier.address.text() +
                  " of " + earlier.owner);
        break;
      }
    }
  }

  std::string file_;
  std::vector<ConfigError> errors_;
  std::map<std::string, int, std::less<>> listener_names_;
  std::map<std::string, int, std::less<>> cluster_names_;
  std::map<std::string, size_t, std::less<>> cluster_indexes_;
  std::vector<ClusterReference> cluster_references_;
  bool cluster_unnamed_ = false;    // some cluster's name could not be read
  bool admin_address_set_ = false;  // admin.address was given (else its default is checked)
  std::vector<ListenAddress> listen_addresses_;
};

}  // namespace

std::string ConfigError::to_string() const {
  if (line == 0) return file + ": " + message;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

LoadResult load_config_string(std::string_view yaml, const std::string& file) {
  return Loader(file).load(yaml);
}

LoadResult load_config_file(const std::string& path) {
  const auto fail = [&](const std::string& why) {
    LoadResult result;
    ConfigError e;
    e.file = path;
    e.message = "cannot read the config file: " + why;
    result.errors.push_back(std::move(e));
    return result;
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || S_ISDIR(info.st_mode)) {
    const int saved = S_ISDIR(info.st_mode) ? EISDIR : errno;
    ::close(fd);
    return fail(std::strerror(saved));
  }
  std::string text;
  char buffer[16 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(fd);
      return fail(std::strerror(saved));
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return load_config_string(text, path);
}

}  // namespace bulwark::config
