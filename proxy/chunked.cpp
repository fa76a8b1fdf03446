#include "proxy/chunked.h"

#include "proxy/codec.h"
#include "proxy/http_chars.h"

namespace bulwark::http {
namespace {

// A chunk-size line (size and extensions) longer than this is refused: extensions are dropped
// anyway, and nothing legitimate sends kilobytes of them.
constexpr uint32_t kMaxChunkLine = 4096;

}  // namespace

void ChunkedDecoder::reset() {
  state_ = State::kSize;
  remaining_ = 0;
  line_ = trailer_bytes_ = 0;
  digits_ = trailer_colon_ = false;
  error_ = nullptr;
}

ChunkedDecoder::Status ChunkedDecoder::decode(const char* base, size_t& pos, size_t to,
                                              ParserCallbacks& callbacks,
                                              size_t max_trailer_bytes) {
  auto bad = [&](const char* why) {
    error_ = why;
    return Status::kError;
  };
  while (pos < to) {
    char c = base[pos];
    switch (state_) {
      case State::kSize: {
        int v = hex_value(c);
        if (v >= 0) {
          if (remaining_ >> 59 != 0) return bad("chunk size too large");
          remaining_ = remaining_ * 16 + static_cast<uint64_t>(v);
          digits_ = true;
          break;
        }
        if (!digits_) return bad("invalid chunk size");
        if (c == ' ' || c == '\t') {
          state_ = State::kSizeWs;
        } else if (c == ';') {
          state_ = State::kExtStart;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else {
          return bad("invalid chunk size");
        }
        break;
      }
      // Chunk extensions (RFC 9112 7.1.1) are checked against the grammar, then dropped.
      case State::kSizeWs:  // whitespace after the size only comes before an extension
        if (c == ';') {
          state_ = State::kExtStart;
        } else if (c != ' ' && c != '\t') {
          return bad("invalid chunk size");
        }
        break;
      case State::kExtStart:
        if (is_tchar(c)) {
          state_ = State::kExtName;
        } else if (c != ' ' && c != '\t') {
          return bad("invalid chunk extension");
        }
        break;
      case State::kExtName:
      case State::kExtAfterName:
        if (c == '=') {
          state_ = State::kExtValueStart;
        } else if (c == ';') {
          state_ = State::kExtStart;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (c == ' ' || c == '\t') {
          state_ = State::kExtAfterName;
        } else if (!is_tchar(c) || state_ == State::kExtAfterName) {
          return bad("invalid chunk extension");
        }
        break;
      case State::kExtValueStart:
        if (c == '"') {
          state_ = State::kExtQuoted;
        } else if (is_tchar(c)) {
          state_ = State::kExtValue;
        } else if (c != ' ' && c != '\t') {
          return bad("invalid chunk extension");
        }
        break;
      case State::kExtValue:
      case State::kExtAfterValue:
        if (c == ';') {
          state_ = State::kExtStart;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (c == ' ' || c == '\t') {
          state_ = State::kExtAfterValue;
        } else if (!is_tchar(c) || state_ == State::kExtAfterValue) {
          return bad("invalid chunk extension");
        }
        break;
      case State::kExtQuoted: {
        auto u = static_cast<unsigned char>(c);
        if (c == '"') {
          state_ = State::kExtAfterValue;
        } else if (c == '\\') {
          state_ = State::kExtQuotedEscape;
        } else if ((u < 0x20 && c != '\t') || u == 0x7f) {
          return bad("invalid chunk extension");
        }
        break;
      }
      case State::kExtQuotedEscape: {
        auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\t') || u == 0x7f) return bad("invalid chunk extension");
        state_ = State::kExtQuoted;
        break;
      }
      case State::kSizeLf:
        if (c != '\n') return bad("chunk size line not ended by CRLF");
        digits_ = false;
        line_ = 0;
        state_ = remaining_ == 0 ? State::kTrailerStart : State::kData;
        break;
      case State::kData: {
        size_t n = to - pos;
        if (n > remaining_) n = static_cast<size_t>(remaining_);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDataCr;
        callbacks.on_body(base + pos, n);
        pos += n;
        continue;
      }
      case State::kDataCr:
        if (c != '\r') return bad("chunk data not followed by CRLF");
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return bad("chunk data not followed by CRLF");
        state_ = State::kSize;
        break;
      case State::kTrailerStart:
        if (c == '\r') {
          state_ = State::kLastLf;
        } else if (is_tchar(c)) {
          trailer_colon_ = false;
          state_ = State::kTrailerLine;
        } else {
          return bad("invalid trailer field");
        }
        break;
      case State::kTrailerLine: {
        // Trailer fields are checked like header fields, then dropped.
        auto u = static_cast<unsigned char>(c);
        if (c == '\r') {
          if (!trailer_colon_) return bad("invalid trailer field");
          state_ = State::kTrailerLf;
        } else if (!trailer_colon_) {
          if (c == ':') {
            trailer_colon_ = true;
          } else if (!is_tchar(c)) {
            return bad("invalid trailer field name");
          }
        } else if ((u < 0x20 && c != '\t') || u == 0x7f) {
          return bad("invalid trailer field value");
        }
        break;
      }
      case State::kTrailerLf:
        if (c != '\n') return bad("trailer field not ended by CRLF");
        state_ = State::kTrailerStart;
        break;
      case State::kLastLf:
        if (c != '\n') return bad("chunked body not ended by CRLF");
        ++pos;
        return Status::kDone;
    }
    ++pos;
    if (state_ < State::kSizeLf) {
      if (++line_ > kMaxChunkLine) return bad("chunk size line too long");
    } else if (state_ >= State::kTrailerStart) {
      if (++trailer_bytes_ > max_trailer_bytes) return bad("trailer section too large");
    }
  }
  return Status::kMore;
}

}  // namespace bulwark::http
