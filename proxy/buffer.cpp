#include "proxy/buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace bulwark {

BufferPool::BufferPool(size_t block_size, size_t max_free)
    : block_size_(block_size), max_free_(max_free) {}

BufferPool::~BufferPool() {
  for (char* b : free_) unmap_block(b, block_size_);
}

// Blocks are mapped one by one rather than taken from malloc: 16 KiB chunks freed between
// long-lived objects (connections) stay in malloc's heap, so after a burst of traffic the
// process would keep its peak memory for good. An unmapped block is back with the OS at once.
char* BufferPool::map_block(size_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

void BufferPool::unmap_block(char* block, size_t size) { munmap(block, size); }

char* BufferPool::acquire() {
  if (free_.empty()) return map_block(block_size_);
  char* b = free_.back();
  free_.pop_back();
  low_water_ = std::min(low_water_, free_.size());
  return b;
}

void BufferPool::release(char* block) {
  if (free_.size() < max_free_) {
    free_.push_back(block);
  } else {
    unmap_block(block, block_size_);
  }
}

void BufferPool::trim() {
  // low_water_ blocks sat in the free list through the whole interval: nobody needed them.
  for (size_t i = 0; i < low_water_ && !free_.empty(); ++i) {
    unmap_block(free_.back(), block_size_);
    free_.pop_back();
  }
  low_water_ = free_.size();
}

InputBuffer::~InputBuffer() {
  // Storage must go back through release(pool); a buffer dying with storage frees it directly.
  if (pooled_) {
    BufferPool::unmap_block(data, capacity);
  } else {
    std::free(data);
  }
}

void InputBuffer::ensure(BufferPool& pool) {
  if (data != nullptr) return;
  data = pool.acquire();
  capacity = pool.block_size();
  pooled_ = true;
  parsed = filled = 0;
}

void InputBuffer::release_if_empty(BufferPool& pool) {
  if (data != nullptr && parsed == filled) release(pool);
}

void InputBuffer::release(BufferPool& pool) {
  if (data == nullptr) return;
  if (pooled_) {
    pool.release(data);
  } else {
    std::free(data);
  }
  data = nullptr;
  capacity = parsed = filled = 0;
  pooled_ = false;
}

void InputBuffer::compact() {
  if (parsed == 0) return;
  size_t n = filled - parsed;
  if (n > 0) std::memmove(data, data + parsed, n);
  parsed = 0;
  filled = n;
}

void InputBuffer::grow(BufferPool& pool, size_t new_capacity) {
  char* bigger = static_cast<char*>(std::malloc(new_capacity));
  std::memcpy(bigger, data, filled);
  if (pooled_) {
    pool.release(data);
  } else {
    std::free(data);
  }
  data = bigger;
  capacity = new_capacity;
  pooled_ = false;
}

}  // namespace bulwark
