#include "proxy/buffer.h"

#include <cstdlib>
#include <cstring>

namespace bulwark {

BufferPool::BufferPool(size_t block_size, size_t max_free)
    : block_size_(block_size), max_free_(max_free) {}

BufferPool::~BufferPool() {
  for (char* b : free_) std::free(b);
}

char* BufferPool::acquire() {
  if (!free_.empty()) {
    char* b = free_.back();
    free_.pop_back();
    return b;
  }
  return static_cast<char*>(std::malloc(block_size_));
}

void BufferPool::release(char* block) {
  if (free_.size() < max_free_) {
    free_.push_back(block);
  } else {
    std::free(block);
  }
}

InputBuffer::~InputBuffer() {
  // Storage must go back through release(pool); a buffer dying with storage frees it directly.
  std::free(data);
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
