#pragma once
// Read buffers. Each worker owns a BufferPool of fixed-size blocks; a connection holds a block
// only while it has bytes to parse or forward, so an idle keep-alive connection holds none.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace bulwark {

class BufferPool;

// Read-buffer storage, shared by the reader that fills it and by every queued write that points
// into it (an Outbox segment holds a reference). The block returns to its pool only when the
// last reference is dropped, so a connection that closes, or moves on to a fresh block, can
// never let its bytes be overwritten under a write of another connection that still sends them.
struct BufferBlock {
  char* data = nullptr;
  size_t capacity = 0;
  uint32_t refs = 0;
  bool pooled = false;  // a pool block (mapped); otherwise malloc'ed for an oversized head
  BufferPool* pool = nullptr;
};
inline void block_ref(BufferBlock* b) {
  if (b != nullptr) ++b->refs;
}
void block_unref(BufferBlock* b);

// Hands out blocks of one size and keeps up to `max_free` released ones for reuse. trim(),
// called every second or so, gives back to the OS the blocks nobody needed since the last call,
// so memory returns to its steady level soon after a burst without churning under steady load.
// Single-threaded: each worker has its own.
class BufferPool {
 public:
  explicit BufferPool(size_t block_size = 16 * 1024, size_t max_free = 4096);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  size_t block_size() const { return block_size_; }
  char* acquire();  // nullptr when the OS has no memory left
  void release(char* block);
  size_t trim();  // returns the blocks given back
  size_t free_blocks() const { return free_.size(); }

  static char* map_block(size_t size);
  static void unmap_block(char* block, size_t size);

  // A pool block with one reference (the caller's), or nullptr when memory is exhausted.
  BufferBlock* take_block();
  // A block of `capacity` bytes outside the pool (an oversized head), with one reference.
  BufferBlock* take_large_block(size_t capacity);
  // Called by block_unref() when the last reference went.
  void recycle(BufferBlock* b);
  // Blocks handed out and not yet recycled (a test and a leak check look at it).
  size_t blocks_in_use() const { return blocks_in_use_; }

 private:
  size_t block_size_;
  size_t max_free_;
  std::vector<char*> free_;
  std::vector<BufferBlock*> spare_blocks_;  // control structs for reuse
  size_t blocks_in_use_ = 0;
  size_t low_water_ = 0;  // the fewest free blocks since the last trim()
};

// One direction's input: bytes [parsed, filled) arrived but are not parsed yet; bytes before
// `parsed` were parsed, and may still be referenced by queued writes, which hold a reference to
// the block: the buffer never writes over a block someone else references (compact() and
// restart() move to a fresh block instead). The buffer grows beyond a pool block only to hold an
// oversized message head.
class InputBuffer {
 public:
  InputBuffer() = default;
  ~InputBuffer();
  InputBuffer(const InputBuffer&) = delete;
  InputBuffer& operator=(const InputBuffer&) = delete;

  bool empty() const { return parsed == filled; }
  bool has_storage() const { return data != nullptr; }
  size_t space() const { return capacity - filled; }
  char* tail() { return data + filled; }

  // Gets a block from the pool if there is none.
  void ensure(BufferPool& pool);
  // Returns the storage when nothing unparsed is left in it. Not while a head is being parsed:
  // its spans point into the parsed bytes.
  void release_if_empty(BufferPool& pool);
  void release(BufferPool& pool);
  // Moves the unparsed bytes to the front (into a fresh block when a write still references this
  // one). Only when no span of a head being parsed refers to earlier bytes.
  void compact(BufferPool& pool);
  // Everything was parsed: the next bytes may go to the front of the buffer (of a fresh one, when
  // a write still references this one).
  void restart(BufferPool& pool);
  // Grows to `new_capacity` (> capacity), keeping the bytes and their offsets.
  void grow(BufferPool& pool, size_t new_capacity);

  BufferBlock* block = nullptr;  // the storage: data and capacity are its
  char* data = nullptr;
  size_t capacity = 0;
  size_t parsed = 0;
  size_t filled = 0;

 private:
  void adopt(BufferBlock* b);
};

// Keeps released objects of one type for reuse, up to `max_free` of them. Single-threaded: each
// worker has its own. T need only be complete where acquire(), release() and the destructor are
// used.
template <class T>
class FreeList {
 public:
  explicit FreeList(size_t max_free) : max_free_(max_free) {}
  ~FreeList() {
    for (T* p : free_) delete p;
  }
  FreeList(const FreeList&) = delete;
  FreeList& operator=(const FreeList&) = delete;

  // A kept object as it was released, or a new one made with `args`.
  template <class... Args>
  T* acquire(Args&&... args) {
    if (free_.empty()) return new T(std::forward<Args>(args)...);
    T* p = free_.back();
    free_.pop_back();
    if (free_.size() < low_water_) low_water_ = free_.size();
    return p;
  }
  size_t free_count() const { return free_.size(); }
  void release(T* p) {
    if (free_.size() < max_free_) {
      free_.push_back(p);
    } else {
      delete p;
    }
  }
  // Frees the kept objects nobody took since the last call (as BufferPool::trim()); returns how
  // many.
  size_t trim() {
    size_t n = std::min(low_water_, free_.size());
    for (size_t i = 0; i < n; ++i) {
      delete free_.back();
      free_.pop_back();
    }
    if (free_.empty()) std::vector<T*>().swap(free_);
    low_water_ = free_.size();
    return n;
  }

 private:
  size_t max_free_;
  std::vector<T*> free_;
  size_t low_water_ = 0;  // the fewest kept objects since the last trim()
};

}  // namespace bulwark
