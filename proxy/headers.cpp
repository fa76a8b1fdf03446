#include "proxy/headers.h"

#include <strings.h>

#include <algorithm>
#include <cstdio>

namespace bulwark::http {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

namespace {

// Calls fn(token) for each comma-separated token of a list header value, trimmed.
template <typename Fn>
void for_each_token(std::string_view value, Fn&& fn) {
  size_t i = 0;
  while (i <= value.size()) {
    size_t comma = value.find(',', i);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view t = value.substr(i, comma - i);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    if (!t.empty()) fn(t);
    i = comma + 1;
  }
}

bool always_hop_by_hop(std::string_view name) {
  switch (name.size()) {
    case 2: return iequals(name, "te");
    case 7: return iequals(name, "trailer") || iequals(name, "upgrade");
    case 10: return iequals(name, "connection") || iequals(name, "keep-alive");
    case 16: return iequals(name, "proxy-connection");
    case 17: return iequals(name, "transfer-encoding");
    default: return false;
  }
}

bool listed_in_connection(const MessageHead& head, std::string_view name) {
  for (const Header& h : head.headers) {
    if (!iequals(head.str(h.name), "connection")) continue;
    bool found = false;
    for_each_token(head.str(h.value), [&](std::string_view t) { found = found || iequals(t, name); });
    if (found) return true;
  }
  return false;
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

void append_number_header(std::string& out, std::string_view name, uint64_t value) {
  char digits[24];
  int n = snprintf(digits, sizeof digits, "%llu", static_cast<unsigned long long>(value));
  append_header(out, name, {digits, static_cast<size_t>(n)});
}

// Copies the end-to-end headers. Content-Length is kept only when the framing is kContentLength.
// X-Forwarded-* and X-Request-Id are left to the caller when `forwarding` is set. A header named
// `replaced` (lowercase) is left out because the caller writes its own.
void copy_end_to_end(const MessageHead& head, bool keep_content_length, bool forwarding,
                     bool has_connection_list, std::string& out, std::string_view replaced = {}) {
  for (const Header& h : head.headers) {
    std::string_view name = head.str(h.name);
    if (always_hop_by_hop(name)) continue;
    if (!replaced.empty() && name.size() == replaced.size() && iequals(name, replaced)) continue;
    if (name.size() == 14 && iequals(name, "content-length") && !keep_content_length) continue;
    if (forwarding && (iequals(name, "x-forwarded-for") || iequals(name, "x-forwarded-proto"))) {
      continue;
    }
    if (has_connection_list && listed_in_connection(head, name)) continue;
    append_header(out, name, head.str(h.value));
  }
}

bool has_connection_header(const MessageHead& head) {
  for (const Header& h : head.headers) {
    if (iequals(head.str(h.name), "connection")) return true;
  }
  return false;
}

}  // namespace

ConnectionOptions parse_connection(const MessageHead& head) {
  ConnectionOptions o;
  for (const Header& h : head.headers) {
    if (!iequals(head.str(h.name), "connection")) continue;
    for_each_token(head.str(h.value), [&](std::string_view t) {
      if (iequals(t, "close")) o.close = true;
      if (iequals(t, "keep-alive")) o.keep_alive = true;
      if (iequals(t, "upgrade")) o.upgrade = true;
    });
  }
  return o;
}

bool is_hop_by_hop(const MessageHead& head, std::string_view name) {
  return always_hop_by_hop(name) || listed_in_connection(head, name);
}

void write_upstream_request(const MessageHead& request, const UpstreamRequestHead& how,
                            std::string& out) {
  out.clear();
  out.append(request.method);
  out.push_back(' ');
  out.append(how.path);
  out.append(" HTTP/1.1\r\n");
  copy_end_to_end(request, how.framing == BodyFraming::kContentLength, true,
                  has_connection_header(request), out);
  // X-Forwarded-For: every earlier hop, then the client we saw.
  size_t xff_start = out.size();
  for (const Header& h : request.headers) {
    if (!iequals(request.str(h.name), "x-forwarded-for")) continue;
    out.append(out.size() == xff_start ? "X-Forwarded-For: " : ", ");
    out.append(request.str(h.value));
  }
  out.append(out.size() == xff_start ? "X-Forwarded-For: " : ", ");
  out.append(how.client_address);
  out.append("\r\nX-Forwarded-Proto: http\r\n");
  if (how.add_request_id) append_header(out, "X-Request-Id", how.request_id);
  if (how.framing == BodyFraming::kChunked) out.append("Transfer-Encoding: chunked\r\n");
  if (how.upgrade) {
    if (const Header* up = request.find("upgrade")) append_header(out, "Upgrade", request.str(up->value));
    out.append("Connection: upgrade\r\n");
  }
  out.append("\r\n");
}

void write_downstream_response(const MessageHead& response, const DownstreamResponseHead& how,
                               std::string& out) {
  out.clear();
  out.append("HTTP/1.1 ");
  char status[8];
  int n = snprintf(status, sizeof status, "%d ", response.status);
  out.append(status, static_cast<size_t>(n));
  std::string_view reason = response.str(response.reason);
  out.append(reason.empty() ? reason_phrase(response.status) : reason);
  out.append("\r\n");
  // When this hop retried, its count replaces one from further upstream (another bulwark).
  copy_end_to_end(response, how.framing != BodyFraming::kChunked, false,
                  has_connection_header(response), out,
                  how.attempts > 1 ? "x-bulwark-attempts" : std::string_view());
  if (!how.request_id.empty() && response.find("x-request-id") == nullptr) {
    append_header(out, "X-Request-Id", how.request_id);
  }
  if (how.attempts > 1) append_number_header(out, "x-bulwark-attempts", how.attempts);
  if (how.framing == BodyFraming::kChunked) out.append("Transfer-Encoding: chunked\r\n");
  if (how.upgrade) {
    if (const Header* up = response.find("upgrade")) append_header(out, "Upgrade", response.str(up->value));
    out.append("Connection: upgrade\r\n");
  } else if (!how.keep_alive) {
    out.append("Connection: close\r\n");
  } else if (how.http10_keep_alive) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append("\r\n");
}

size_t write_local_reply(int status, std::string_view reason_token, bool keep_alive,
                         std::string_view request_id, bool head_request, std::string& out,
                         const LocalReplyExtras& extras) {
  char line[160];
  std::string_view phrase = reason_phrase(status);
  int body_len = snprintf(line, sizeof line, "%d %.*s: %.*s\n", status,
                          static_cast<int>(phrase.size()), phrase.data(),
                          static_cast<int>(reason_token.size()), reason_token.data());
  body_len = std::min(body_len, static_cast<int>(sizeof line) - 1);  // snprintf truncated it
  out.clear();
  char head[64];
  int n = snprintf(head, sizeof head, "HTTP/1.1 %d ", status);
  out.append(head, static_cast<size_t>(n));
  out.append(phrase);
  out.append("\r\ncontent-type: text/plain\r\n");
  n = snprintf(head, sizeof head, "content-length: %d\r\n", body_len);
  out.append(head, static_cast<size_t>(n));
  append_header(out, "x-bulwark-reason", reason_token);
  if (!request_id.empty()) append_header(out, "x-request-id", request_id);
  if (extras.attempts > 1) append_number_header(out, "x-bulwark-attempts", extras.attempts);
  if (extras.retry_after_s > 0) append_number_header(out, "retry-after", extras.retry_after_s);
  if (!keep_alive) out.append("connection: close\r\n");
  out.append("\r\n");
  if (head_request) return 0;
  out.append(line, static_cast<size_t>(body_len));
  return static_cast<size_t>(body_len);
}

size_t write_chunk_header(char* out, size_t size) {
  return static_cast<size_t>(snprintf(out, 20, "%zx\r\n", size));
}

}  // namespace bulwark::http
