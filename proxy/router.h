#pragma once
// Picks the route for a request: the first route of the listener whose match accepts it.

#include <string_view>

#include "config/config.h"
#include "proxy/codec.h"

namespace bulwark {

// The parts of a request target that routing looks at.
struct RequestTarget {
  std::string_view path;       // from "/" up to, not including, "?"
  std::string_view query;      // from "?" on (may be empty)
  std::string_view authority;  // from an absolute-form target ("http://host:80/x"), else empty
};
// Splits origin-form ("/a?b") and absolute-form ("http://h/a?b") targets. Returns false for
// anything else except "*" (asterisk-form, OPTIONS), which yields path "*".
bool split_target(std::string_view target, RequestTarget* out);

// The host a request is for, without the port: the absolute-form authority if any, else the
// Host header. Lowercased into `buf` when it fits; a longer name is returned as it came, never
// truncated (a route's host match is case-insensitive).
std::string_view request_host(const http::MessageHead& head, const RequestTarget& target, char* buf,
                              size_t buf_size);

class Router {
 public:
  explicit Router(const config::ListenerConfig& listener) : listener_(&listener) {}

  // The index of the first matching route in the listener's routes, or -1.
  int match(const http::MessageHead& head, const RequestTarget& target,
            std::string_view host) const;

  static bool matches(const config::RouteMatch& m, const http::MessageHead& head,
                      std::string_view path, std::string_view host);

 private:
  const config::ListenerConfig* listener_;
};

}  // namespace bulwark
