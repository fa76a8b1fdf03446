#include "proxy/router.h"

#include <re2/re2.h>

#include <algorithm>
#include <cctype>

#include "proxy/headers.h"

namespace bulwark {

bool split_target(std::string_view target, RequestTarget* out) {
  *out = {};
  if (target == "*") {
    out->path = target;
    return true;
  }
  if (target.size() > 7 &&
      (http::iequals(target.substr(0, 7), "http://") ||
       (target.size() > 8 && http::iequals(target.substr(0, 8), "https://")))) {
    size_t start = target[4] == ':' ? 7 : 8;
    size_t slash = target.find_first_of("/?", start);
    out->authority =
        target.substr(start, slash == std::string_view::npos ? target.npos : slash - start);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    if (!target.empty() && target.front() == '?') {
      out->path = "/";
      out->query = target;
      return true;
    }
  }
  if (target.empty() || target.front() != '/') return false;
  size_t q = target.find('?');
  out->path = target.substr(0, q);
  if (q != std::string_view::npos) out->query = target.substr(q);
  return true;
}

std::string_view request_host(const http::MessageHead& head, const RequestTarget& target, char* buf,
                              size_t buf_size) {
  std::string_view host = target.authority;
  if (host.empty()) host = head.value_of(head.host);
  // Strip the port; keep IPv6 brackets intact.
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close != std::string_view::npos) host = host.substr(0, close + 1);
  } else {
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos) host = host.substr(0, colon);
  }
  // Never truncated: a name too long for `buf` is returned as it came (routes compare hosts
  // case-insensitively either way).
  if (host.size() > buf_size) return host;
  for (size_t i = 0; i < host.size(); ++i)
    buf[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(host[i])));
  return {buf, host.size()};
}

bool Router::matches(const config::RouteMatch& m, const http::MessageHead& head,
                     std::string_view path, std::string_view host) {
  switch (m.path.kind) {
    case config::PathMatch::Kind::kPrefix:
      if (path.substr(0, m.path.value.size()) != m.path.value) return false;
      break;
    case config::PathMatch::Kind::kExact:
      if (path != m.path.value) return false;
      break;
    case config::PathMatch::Kind::kRegex:
      if (!RE2::PartialMatch(path, *m.path.regex)) return false;  // searched, linear time
      break;
  }
  if (!m.host.empty()) {
    if (m.host.wildcard) {
      // "*.example.com" is stored as ".example.com": a non-empty label must precede it.
      if (host.size() <= m.host.value.size() ||
          !http::iequals(host.substr(host.size() - m.host.value.size()), m.host.value)) {
        return false;
      }
    } else if (!http::iequals(host, m.host.value)) {
      return false;
    }
  }
  if (!m.methods.empty() &&
      std::find(m.methods.begin(), m.methods.end(), head.method) == m.methods.end()) {
    return false;
  }
  for (const config::HeaderMatch& hm : m.headers) {
    const http::Header* h = head.find(hm.name);
    if (h == nullptr || head.str(h->value) != hm.value) return false;
  }
  return true;
}

int Router::match(const http::MessageHead& head, const RequestTarget& target,
                  std::string_view host) const {
  const auto& routes = listener_->routes;
  for (size_t i = 0; i < routes.size(); ++i) {
    if (matches(routes[i].match, head, target.path, host)) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace bulwark
