#pragma once
// The character classes of HTTP/1.1 (RFC 9110, 9112) and URIs (RFC 3986), as tables: what the
// codec and the chunked decoder accept, byte by byte.

#include <array>
#include <string_view>

namespace bulwark::http {

constexpr std::array<bool, 256> make_table(std::string_view extra, bool alnum) {
  std::array<bool, 256> t{};
  if (alnum) {
    for (int c = '0'; c <= '9'; ++c) t[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  }
  for (char c : extra) t[static_cast<unsigned char>(c)] = true;
  return t;
}
// RFC 9110 5.6.2: tchar.
inline constexpr auto kTchar = make_table("!#$%&'*+-.^_`|~", true);
// RFC 3986 reg-name (and IPv4address) characters: unreserved, sub-delims and pct-encoded.
inline constexpr auto kRegNameChar = make_table("-._~!$&'()*+,;=%", true);

inline bool is_tchar(char c) { return kTchar[static_cast<unsigned char>(c)]; }

// A request-target byte (RFC 3986 is ASCII): visible, never a space, a control, a byte above
// 0x7e or a fragment mark.
inline bool is_target_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return u > 0x20 && u < 0x7f && u != '#';
}

// A reason-phrase byte (RFC 9112 4): HTAB, SP, VCHAR, obs-text.
inline bool is_reason_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return c == '\t' || (u >= 0x20 && u != 0x7f);
}

inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace bulwark::http
