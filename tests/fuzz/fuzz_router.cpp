// Fuzz target: routing. The input describes a listener's routes and then requests, one a line.
// The routes become YAML loaded through the real config loader, so a regex is compiled by
// whatever engine the loader uses (RE2) and a pattern the loader refuses ends the input. Each
// request is parsed by http::Parser, split (split_target, request_host) and matched. Besides not
// crashing and not taking long (a regex must match in linear time), the router must pick the
// first route that a plain reading of the documented match rules (config/config.h) accepts.
//
// Input, fields separated by one space ("-" for none):
//   KIND PATTERN HOST METHODS CANARY   a route, until a line "--"; KIND is p (prefix), e (exact
//                                      path), r (regex) or - (every path); HOST is exact or
//                                      "*.suffix"; METHODS a comma list; CANARY a value the
//                                      x-canary header must have
//   METHOD TARGET HOST CANARY          a request: its Host and x-canary headers

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"
#include "tests/fuzz/http_fuzz.h"

using namespace bulwark;
using namespace bulwark::fuzz;

namespace {

// A double-quoted YAML scalar holding `s` (a byte above 0x7f becomes that code point).
std::string yaml_quoted(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out + "\"";
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? s.npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

std::string_view field(const std::vector<std::string_view>& fields, size_t i) {
  return i < fields.size() && fields[i] != "-" ? fields[i] : std::string_view();
}

// The documented rules, read plainly. A regex is the one thing this does not judge itself: that
// part is the router's, except that a pattern without metacharacters must match as a substring.
bool expected_match(const config::RouteMatch& m, const MessageHead& head, std::string_view path,
                    std::string_view host) {
  switch (m.path.kind) {
    case config::PathMatch::Kind::kPrefix:
      if (path.substr(0, m.path.value.size()) != m.path.value) return false;
      break;
    case config::PathMatch::Kind::kExact:
      if (path != m.path.value) return false;
      break;
    case config::PathMatch::Kind::kRegex: {
      config::RouteMatch only_path;
      only_path.path = m.path;
      bool matched = Router::matches(only_path, head, path, host);
      bool literal = m.path.value.find_first_not_of(
                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-") ==
                     std::string::npos;
      if (literal) {
        FUZZ_CHECK(matched == (path.find(m.path.value) != std::string_view::npos),
                   "literal regex [" + escaped(m.path.value) + "] on path [" + escaped(path) + "]");
      }
      if (!matched) return false;
      break;
    }
  }
  if (!m.host.empty()) {
    if (m.host.wildcard) {
      // ".example.com": a.example.com and a.b.example.com, not example.com; any case.
      if (host.size() <= m.host.value.size() ||
          !http::iequals(host.substr(host.size() - m.host.value.size()), m.host.value))
        return false;
    } else if (!http::iequals(host, m.host.value)) {
      return false;
    }
  }
  if (!m.methods.empty()) {
    bool found = false;
    for (const std::string& method : m.methods) found = found || method == head.method;
    if (!found) return false;
  }
  for (const config::HeaderMatch& hm : m.headers) {
    const http::Header* h = head.find(hm.name);
    if (h == nullptr || head.str(h->value) != hm.value) return false;
  }
  return true;
}

// Hands the head of one request to `fn` while its spans are valid.
template <typename Fn>
class OneHead : public ParserCallbacks {
 public:
  explicit OneHead(Fn fn) : fn_(std::move(fn)) {}
  HeadAction on_head(MessageHead& head) override {
    fn_(head);
    return kPause;
  }
  void on_body(const char*, size_t) override {}
  void on_message_complete() override {}

 private:
  Fn fn_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string_view> lines =
      split(std::string_view(reinterpret_cast<const char*>(data), size), '\n');
  size_t line = 0;

  std::string yaml = "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    routes:\n";
  size_t routes = 0;
  for (; line < lines.size() && lines[line] != "--" && routes < 16; ++line, ++routes) {
    std::vector<std::string_view> f = split(lines[line], ' ');
    yaml += "      - name: r" + std::to_string(routes) + "\n        cluster: c\n        match:\n";
    std::string_view kind = field(f, 0), pattern = field(f, 1), host = field(f, 2),
                     methods = field(f, 3), canary = field(f, 4);
    if (kind == "p") yaml += "          prefix: " + yaml_quoted(pattern) + "\n";
    if (kind == "e") yaml += "          path: " + yaml_quoted(pattern) + "\n";
    if (kind == "r") yaml += "          regex: " + yaml_quoted(pattern) + "\n";
    if (!host.empty()) yaml += "          host: " + yaml_quoted(host) + "\n";
    if (!methods.empty()) {
      yaml += "          methods: [";
      for (std::string_view m : split(methods, ',')) yaml += yaml_quoted(m) + ",";
      yaml += "]\n";
    }
    if (!canary.empty()) yaml += "          headers: {x-canary: " + yaml_quoted(canary) + "}\n";
  }
  ++line;  // the "--"
  yaml += "clusters:\n  - name: c\n    endpoints: [127.0.0.1:9000]\n";

  config::LoadResult loaded = config::load_config_string(yaml, "fuzz.yaml");
  FUZZ_CHECK((loaded.config != nullptr) == loaded.ok(), yaml);
  if (!loaded.ok()) return 0;
  const config::ListenerConfig& listener = loaded.config->listeners.at(0);
  FUZZ_CHECK(listener.routes.size() == routes, yaml);
  Router router(listener);

  for (; line < lines.size(); ++line) {
    std::vector<std::string_view> f = split(lines[line], ' ');
    std::string request(field(f, 0).empty() ? "GET" : field(f, 0));
    request += ' ';
    request += field(f, 1).empty() ? "/" : field(f, 1);
    request += " HTTP/1.1\r\n";
    if (!field(f, 2).empty()) request += "Host: " + std::string(field(f, 2)) + "\r\n";
    if (!field(f, 3).empty()) request += "x-canary: " + std::string(field(f, 3)) + "\r\n";
    request += "\r\n";

    OneHead callbacks([&](const MessageHead& head) {
      RequestTarget target;
      if (!split_target(head.str(head.target), &target)) return;
      char buf[256];
      std::string_view host = request_host(head, target, buf, sizeof buf);
      // Lowercased when it fits the buffer; a longer name comes back whole, as sent.
      if (host.data() == buf) {
        for (char c : host) {
          FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "host not lowercased: " + escaped(request));
        }
      }
      int got = router.match(head, target, host);
      int want = -1;
      for (size_t i = 0; i < listener.routes.size() && want < 0; ++i) {
        if (expected_match(listener.routes[i].match, head, target.path, host))
          want = static_cast<int>(i);
      }
      FUZZ_CHECK(got == want, "router picked route " + std::to_string(got) + ", the rules say " +
                                  std::to_string(want) + "\nrequest: " + escaped(request) +
                                  "\nconfig:\n" + yaml);
    });
    Parser parser(Parser::Type::kRequest, &callbacks);
    parser.execute(request.data(), 0, request.size());
  }
  return 0;
}
