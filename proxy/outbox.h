#pragma once
// The bytes one side is about to write: a message head, body data that still lives in the other
// side's read buffer (no copy: the segment holds a reference to that BufferBlock, so the block
// outlives the write whatever happens to the reader), and chunk framing, sent together with one
// writev(2) (more when the socket takes only part).
//
// Bytes added while a write is in flight (a final response behind a 1xx, say) go out with the
// next write; framing storage never moves under a write in flight. Memory per connection stays
// bounded because the producer's reader stops while a write is in flight. With `keep_history`
// the segments stay after they were written, so the whole request can be sent again on a new
// connection (the upstream closed an idle connection just as we reused it).

#include <uv.h>

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/buffer.h"

namespace bulwark {

class Outbox {
 public:
  std::string head;  // filled by the caller, then add_head()

  bool empty() const { return first_unsent_ == segments_.size(); }
  bool in_flight() const { return in_flight_; }
  size_t bytes_pending() const { return pending_bytes_; }

  void add_head() {
    segments_.push_back({nullptr, nullptr, kHead, static_cast<uint32_t>(head.size())});
    pending_bytes_ += head.size();
  }
  // Replaces head[at, at + length) with `with`, while no byte of the head is sent or in flight
  // (a try's start, before its first write). False, changing nothing, otherwise.
  bool replace_in_head(size_t at, size_t length, std::string_view with);
  // Data p[0, n) inside `block` (which the segment references until it is written or cleared).
  void add_data(const char* p, size_t n, BufferBlock* block);
  void add_framing(std::string_view s);
  // One chunk of chunked encoding around data p[0, n) inside `block`.
  void add_chunk(const char* p, size_t n, BufferBlock* block);
  // The same, copying the data into the Outbox's own storage, so the caller's buffer can be
  // reused at once (a request body kept for retries).
  void add_data_copy(const char* p, size_t n) {
    if (n > 0) add_framing({p, n});
  }
  void add_chunk_copy(const char* p, size_t n);
  void add_last_chunk();

  // Starts a write of everything not yet written (in_flight() from here until on_written()).
  // False when there is nothing to write.
  bool begin_write();
  // Writes what the socket takes of the write begun: 1 when all of it went, 0 when the socket is
  // full (call again when it is writable), or a negative errno.
  int write_some(int fd);
  // For a transport that writes the bytes itself (TLS): the rest of the write begun, as
  // buffers (count in *n; none when all went), and advance() past `bytes` of them once written.
  const uv_buf_t* unsent(size_t* n) const {
    *n = bufs_.size() - buf_at_;
    return bufs_.data() + buf_at_;
  }
  void advance(size_t bytes);
  // Ends the write begun: when it all went, when it failed, and when the socket was closed under
  // it (none of its bytes is read after that).
  void on_written();
  // Forgets everything (and the history). Not while a write is in flight.
  void clear();
  ~Outbox() { clear(); }
  // True while every byte ever added is still held (nothing written was forgotten), so rewind()
  // can replay the message from its first byte.
  bool can_rewind() const { return !forgot_written_; }
  // Makes everything (from the head on) unsent again, to send it on another connection.
  // Only when can_rewind() and nothing is in flight.
  void rewind() {
    first_unsent_ = 0;
    pending_bytes_ += total_bytes_;
    total_bytes_ = 0;
  }
  // Appends every byte of the message to `out`, whatever was sent of it: a copy for another try
  // to send beside this one (a hedge). Only when can_rewind().
  void copy_message(std::string& out) const;
  void set_keep_history(bool keep);
  bool keep_history() const { return keep_history_; }

 private:
  static constexpr uint32_t kHead = UINT32_MAX;
  static constexpr uint32_t kData = UINT32_MAX - 1;
  struct Segment {
    const char* data;    // kData: the bytes
    BufferBlock* block;  // kData: the block they live in (referenced)
    uint32_t offset;     // kHead, kData, or an offset into framing_
    uint32_t length;
  };
  // Drops segments [0, end), releasing the blocks they reference.
  void drop_segments(size_t end);
  std::vector<Segment> segments_;
  std::vector<uv_buf_t> bufs_;  // the write in flight (uv_buf_t is struct iovec on Unix)
  size_t buf_at_ = 0;           // its first buffer not fully written
  std::string framing_;
  std::deque<std::string> late_framing_;  // framing added while framing_ could not grow
  size_t first_unsent_ = 0;
  size_t flushed_until_ = 0;
  size_t pending_bytes_ = 0;
  size_t flushed_bytes_ = 0;  // bytes of the write in flight
  size_t total_bytes_ = 0;
  bool in_flight_ = false;
  bool keep_history_ = false;
  bool forgot_written_ = false;
};

}  // namespace bulwark
