#include "proxy/outbox.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include "proxy/headers.h"

namespace bulwark {

void Outbox::add_data(const char* p, size_t n, BufferBlock* block) {
  if (n == 0) return;
  block_ref(block);
  segments_.push_back({p, block, kData, static_cast<uint32_t>(n)});
  pending_bytes_ += n;
}

void Outbox::drop_segments(size_t end) {
  for (size_t i = 0; i < end; ++i) {
    if (segments_[i].offset == kData) block_unref(segments_[i].block);
  }
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<long>(end));
}

void Outbox::add_framing(std::string_view s) {
  if (in_flight_ && framing_.size() + s.size() > framing_.capacity()) {
    // framing_ would move while the write in flight still points into it: keep these bytes
    // apart, where nothing moves them (a deque never moves its elements).
    late_framing_.emplace_back(s);
    const std::string& kept = late_framing_.back();
    segments_.push_back({kept.data(), nullptr, kData, static_cast<uint32_t>(kept.size())});
  } else {
    segments_.push_back({nullptr, nullptr, static_cast<uint32_t>(framing_.size()),
                         static_cast<uint32_t>(s.size())});
    framing_.append(s);
  }
  pending_bytes_ += s.size();
}

void Outbox::add_chunk(const char* p, size_t n, BufferBlock* block) {
  if (n == 0) return;  // a zero-size chunk would end the body
  char size_line[20];
  add_framing({size_line, http::write_chunk_header(size_line, n)});
  add_data(p, n, block);
  add_framing(http::kChunkEnd);
}

void Outbox::add_chunk_copy(const char* p, size_t n) {
  if (n == 0) return;
  char size_line[20];
  add_framing({size_line, http::write_chunk_header(size_line, n)});
  add_framing({p, n});
  add_framing(http::kChunkEnd);
}

void Outbox::add_last_chunk() { add_framing(http::kLastChunk); }

bool Outbox::begin_write() {
  bufs_.clear();
  buf_at_ = 0;
  for (size_t i = first_unsent_; i < segments_.size(); ++i) {
    const Segment& s = segments_[i];
    const char* p = s.offset == kHead   ? head.data()
                    : s.offset == kData ? s.data
                                        : framing_.data() + s.offset;
    size_t len = s.offset == kHead ? head.size() : s.length;
    if (len > 0) bufs_.push_back(uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len)));
  }
  flushed_until_ = segments_.size();
  flushed_bytes_ = pending_bytes_;
  if (bufs_.empty()) {
    first_unsent_ = flushed_until_;
    pending_bytes_ = 0;
    return false;
  }
  in_flight_ = true;
  return true;
}

int Outbox::write_some(int fd) {
  static_assert(sizeof(uv_buf_t) == sizeof(iovec));
  while (buf_at_ < bufs_.size()) {
    msghdr msg{};
    msg.msg_iov = reinterpret_cast<iovec*>(&bufs_[buf_at_]);
    msg.msg_iovlen = std::min<size_t>(bufs_.size() - buf_at_, IOV_MAX);
    // MSG_NOSIGNAL: a peer that went away is an EPIPE here, not a SIGPIPE for the process.
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -errno;
    }
    advance(static_cast<size_t>(n));
  }
  return 1;
}

void Outbox::advance(size_t written) {
  // Skip the buffers that went, and the part of the one cut short.
  while (buf_at_ < bufs_.size() && written >= bufs_[buf_at_].len) {
    written -= bufs_[buf_at_].len;
    ++buf_at_;
  }
  if (written > 0) {
    bufs_[buf_at_].base += written;
    bufs_[buf_at_].len -= written;
  }
}

void Outbox::on_written() {
  in_flight_ = false;
  total_bytes_ += flushed_bytes_;
  pending_bytes_ -= flushed_bytes_;
  flushed_bytes_ = 0;
  first_unsent_ = flushed_until_;
  if (!keep_history_) {
    // Only what this write sent is forgotten; anything added while it was in flight stays to
    // be sent (its framing offsets stay valid: framing_ is kept until nothing refers to it).
    drop_segments(flushed_until_);
    if (segments_.empty()) {
      framing_.clear();
      if (!late_framing_.empty()) late_framing_.clear();  // clear() costs even when empty
    }
    first_unsent_ = flushed_until_ = 0;
    total_bytes_ = 0;
    forgot_written_ = true;
  }
}

void Outbox::clear() {
  drop_segments(segments_.size());
  in_flight_ = false;
  // A kept request body may have grown the framing storage; an idle connection keeps none of it.
  if (!late_framing_.empty()) late_framing_.clear();
  if (framing_.capacity() > 4096) {
    std::string().swap(framing_);
  } else {
    framing_.clear();
  }
  forgot_written_ = false;
  head.clear();
  first_unsent_ = flushed_until_ = 0;
  pending_bytes_ = total_bytes_ = 0;
  keep_history_ = false;
}

void Outbox::copy_message(std::string& out) const {
  for (const Segment& s : segments_) {
    if (s.offset == kHead) {
      out += head;
    } else if (s.offset == kData) {
      out.append(s.data, s.length);
    } else {
      out.append(framing_, s.offset, s.length);
    }
  }
}

void Outbox::set_keep_history(bool keep) {
  keep_history_ = keep;
  if (!keep && !in_flight_ && first_unsent_ > 0) {
    // Drop what was already written; keep what is still to go.
    drop_segments(first_unsent_);
    first_unsent_ = flushed_until_ = 0;
    total_bytes_ = 0;
    forgot_written_ = true;
  }
}

bool Outbox::replace_in_head(size_t at, size_t length, std::string_view with) {
  if (in_flight_ || first_unsent_ != 0 || segments_.empty() || segments_[0].offset != kHead ||
      at > head.size() || length > head.size() - at) {
    return false;
  }
  head.replace(at, length, with);
  pending_bytes_ = pending_bytes_ - segments_[0].length + head.size();
  segments_[0].length = static_cast<uint32_t>(head.size());
  return true;
}

}  // namespace bulwark
