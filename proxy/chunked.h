#pragma once
// The decoder of chunked bodies (RFC 9112 7.1): chunk sizes, extensions and trailer fields are
// checked against the grammar byte by byte and dropped; the data goes to the owner's callbacks
// as it comes, pointing into the owner's buffer. The codec (codec.h) hands a message's body to
// it right after the head and takes the connection back after the last chunk.
//
// Strict, as request smuggling requires: a bare CR or LF in a size or trailer line, a size of 16
// or more hex digits, a size line over 4 KiB, whitespace anywhere but before an extension, and a
// trailer section over the head limit are errors.

#include <cstddef>
#include <cstdint>

namespace bulwark::http {

class ParserCallbacks;

class ChunkedDecoder {
 public:
  enum class Status : uint8_t { kMore, kDone, kError };

  // Starts a new body.
  void reset();
  // Decodes base[pos, to), advancing pos; data goes to callbacks.on_body(). kDone when the body
  // (its last chunk and trailers) ended, pos just after it; kError (see error()) when the framing
  // is invalid; kMore when it needs more bytes.
  Status decode(const char* base, size_t& pos, size_t to, ParserCallbacks& callbacks,
                size_t max_trailer_bytes);
  // Why the last decode() failed.
  const char* error() const { return error_; }

 private:
  enum class State : uint8_t {
    // The chunk-size line: size, then *( BWS ";" BWS name [ BWS "=" BWS value ] ), CRLF.
    kSize,
    kSizeWs,
    kExtStart,
    kExtName,
    kExtAfterName,
    kExtValueStart,
    kExtValue,
    kExtQuoted,
    kExtQuotedEscape,
    kExtAfterValue,
    kSizeLf,
    kData,
    kDataCr,
    kDataLf,
    kTrailerStart,
    kTrailerLine,
    kTrailerLf,
    kLastLf,
  };

  State state_ = State::kSize;
  uint64_t remaining_ = 0;
  uint32_t line_ = 0;  // bytes of the current chunk-size or trailer line
  uint32_t trailer_bytes_ = 0;
  bool digits_ = false;         // the size line had at least one hex digit
  bool trailer_colon_ = false;  // the trailer line being read has had its colon
  const char* error_ = nullptr;
};

}  // namespace bulwark::http
