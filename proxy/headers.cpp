#include "proxy/headers.h"

#include <strings.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>

namespace bulwark::http {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

namespace {

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

void append_number_header(std::string& out, std::string_view name, uint64_t value) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  append_header(out, name, {digits, static_cast<size_t>(end - digits)});
}

// True for the kinds a proxy forwards as they came; everything else is hop by hop, framing, or
// written by the caller.
bool end_to_end(HeaderKind kind) {
  switch (kind) {
    case HeaderKind::kOther:
    case HeaderKind::kExpect:
    case HeaderKind::kXRequestId:
    case HeaderKind::kIdempotencyKey:
      return true;
    default:
      return false;
  }
}

}  // namespace

HostValueSpan write_upstream_request(const MessageHead& request, const UpstreamRequestHead& how,
                                     std::string& out) {
  HostValueSpan host;
  const auto append_host = [&](std::string_view value) {
    host.at = out.size() + 6;  // after "Host: "
    host.length = value.size();
    append_header(out, "Host", value);
  };
  out.clear();
  out.append(request.method);
  out.push_back(' ');
  out.append(how.path);
  out.append(" HTTP/1.1\r\n");
  for (const Header& h : request.headers) {
    // A client id bulwark could not use (empty or too long) is replaced, not sent beside ours.
    if (h.kind == HeaderKind::kXRequestId && how.add_request_id) continue;
    if (end_to_end(h.kind) ||
        (h.kind == HeaderKind::kXForwardedClientCert && how.keep_client_cert)) {
      append_header(out, request.str(h.name), request.str(h.value));
    } else if (h.kind == HeaderKind::kHost) {
      append_host(how.authority.empty() ? request.str(h.value) : how.authority);
    }
  }
  if (request.host < 0 && !how.authority.empty()) append_host(how.authority);
  // X-Forwarded-For: the addresses the trusted hops added (the last trusted_hops of the list,
  // all X-Forwarded-For fields together), then the client we saw. Anything before them was
  // written by whoever connected first and is not believed.
  std::array<std::string_view, kMaxTrustedHops> kept;
  size_t nkept = 0;
  const size_t want = std::min<size_t>(how.trusted_hops, kept.size());
  std::string_view proto = how.proto;
  for (size_t i = request.headers.size(); i-- > 0 && nkept < want;) {
    const Header& h = request.headers[i];
    if (h.kind != HeaderKind::kXForwardedFor) continue;
    std::string_view value = request.str(h.value);
    while (!value.empty() && nkept < want) {
      size_t comma = value.rfind(',');
      std::string_view element = comma == std::string_view::npos ? value : value.substr(comma + 1);
      value = comma == std::string_view::npos ? std::string_view() : value.substr(0, comma);
      while (!element.empty() && (element.front() == ' ' || element.front() == '\t'))
        element.remove_prefix(1);
      while (!element.empty() && (element.back() == ' ' || element.back() == '\t'))
        element.remove_suffix(1);
      if (!element.empty()) kept[nkept++] = element;
    }
  }
  if (want > 0) {
    for (const Header& h : request.headers) {
      if (h.kind == HeaderKind::kXForwardedProto && h.value.length > 0) {
        proto = request.str(h.value);
        break;
      }
    }
  }
  out.append("X-Forwarded-For: ");
  while (nkept > 0) {
    out.append(kept[--nkept]);
    out.append(", ");
  }
  out.append(how.client_address);
  out.append("\r\nX-Forwarded-Proto: ");
  out.append(proto);
  out.append("\r\n");
  if (!how.client_cert.empty()) append_header(out, "X-Forwarded-Client-Cert", how.client_cert);
  if (how.add_request_id) append_header(out, "X-Request-Id", how.request_id);
  if (how.framing == BodyFraming::kContentLength) {
    append_number_header(out, "Content-Length", request.content_length);
  } else if (how.framing == BodyFraming::kChunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  }
  if (how.upgrade) {
    append_header(out, "Upgrade", how.upgrade_protocols);
    out.append("Connection: upgrade\r\n");
  }
  out.append("\r\n");
  return host;
}

void write_downstream_response(const MessageHead& response, const DownstreamResponseHead& how,
                               std::string& out) {
  out.clear();
  out.append("HTTP/1.1 ");
  char status[8];
  char* end = std::to_chars(status, status + sizeof status - 1, response.status).ptr;
  *end++ = ' ';
  out.append(status, static_cast<size_t>(end - status));
  std::string_view reason = response.str(response.reason);
  out.append(reason.empty() ? reason_phrase(response.status) : reason);
  out.append("\r\n");
  // When this hop retried, its count replaces one from further upstream (another bulwark).
  const bool replace_attempts = how.attempts > 1;
  for (const Header& h : response.headers) {
    if (!end_to_end(h.kind) && h.kind != HeaderKind::kXForwardedFor &&
        h.kind != HeaderKind::kXForwardedProto && h.kind != HeaderKind::kXForwardedClientCert) {
      continue;
    }
    std::string_view name = response.str(h.name);
    if (replace_attempts && iequals(name, "x-bulwark-attempts")) continue;
    append_header(out, name, response.str(h.value));
  }
  if (!how.request_id.empty() && response.request_id < 0) {
    append_header(out, "X-Request-Id", how.request_id);
  }
  if (replace_attempts) append_number_header(out, "x-bulwark-attempts", how.attempts);
  // The length the upstream declared, as parsed: also for HEAD and 304, where it describes the
  // representation; never on 1xx and 204, which cannot have one (RFC 9110 8.6).
  bool no_length = response.status < 200 || response.status == 204;
  if (how.framing == BodyFraming::kChunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  } else if (response.has_content_length && !no_length) {
    append_number_header(out, "Content-Length", response.content_length);
  }
  if (how.upgrade) {
    append_header(out, "Upgrade", response.value_of(response.upgrade_header));
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
  int body_len =
      snprintf(line, sizeof line, "%d %.*s: %.*s\n", status, static_cast<int>(phrase.size()),
               phrase.data(), static_cast<int>(reason_token.size()), reason_token.data());
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

void write_health_check_request(std::string_view path, std::string_view host, std::string& out) {
  out.append("GET ").append(path).append(" HTTP/1.1\r\nHost: ").append(host);
  out.append("\r\nUser-Agent: bulwark-health-check/" BULWARK_VERSION
             "\r\nAccept: */*\r\nConnection: close\r\n\r\n");
}

BodyFraming request_framing(const MessageHead& request) {
  return request.chunked              ? BodyFraming::kChunked
         : request.has_content_length ? BodyFraming::kContentLength
                                      : BodyFraming::kNone;
}

BodyFraming response_framing(const MessageHead& response, bool no_body, bool client_http10) {
  if (no_body) return BodyFraming::kNone;
  if (response.has_content_length && !response.chunked) return BodyFraming::kContentLength;
  return client_http10 ? BodyFraming::kClose : BodyFraming::kChunked;
}

void forwarded_upgrades(std::string_view offered, const std::vector<std::string>& allowed,
                        std::string& out) {
  out.clear();
  for_each_list_element(offered, [&](std::string_view p) {
    std::string_view name = p.substr(0, p.find('/'));
    for (const std::string& a : allowed) {
      if (!iequals(name, a)) continue;
      if (!out.empty()) out.append(", ");
      out.append(p);
      break;
    }
  });
}

}  // namespace bulwark::http
