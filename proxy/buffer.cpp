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
  for (BufferBlock* b : spare_blocks_) delete b;
}

void block_unref(BufferBlock* b) {
  if (b != nullptr && --b->refs == 0) b->pool->recycle(b);
}

BufferBlock* BufferPool::take_block() {
  char* data = acquire();
  if (data == nullptr) return nullptr;
  BufferBlock* b;
  if (spare_blocks_.empty()) {
    b = new BufferBlock();
  } else {
    b = spare_blocks_.back();
    spare_blocks_.pop_back();
  }
  *b = {data, block_size_, 1, true, this};
  ++blocks_in_use_;
  return b;
}

BufferBlock* BufferPool::take_large_block(size_t capacity) {
  auto* data = static_cast<char*>(std::malloc(capacity));
  if (data == nullptr) return nullptr;
  auto* b = new BufferBlock{data, capacity, 1, false, this};
  ++blocks_in_use_;
  return b;
}

void BufferPool::recycle(BufferBlock* b) {
  --blocks_in_use_;
  if (!b->pooled) {
    std::free(b->data);
    delete b;
    return;
  }
  release(b->data);
  b->data = nullptr;
  if (spare_blocks_.size() < max_free_) {
    spare_blocks_.push_back(b);
  } else {
    delete b;
  }
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

size_t BufferPool::trim() {
  // low_water_ blocks sat in the free list through the whole interval: nobody needed them.
  size_t n = std::min(low_water_, free_.size());
  for (size_t i = 0; i < n; ++i) {
    unmap_block(free_.back(), block_size_);
    free_.pop_back();
  }
  low_water_ = free_.size();
  // The control structs of blocks a burst took: as many kept as there are free blocks.
  while (spare_blocks_.size() > free_.size()) {
    delete spare_blocks_.back();
    spare_blocks_.pop_back();
  }
  if (spare_blocks_.empty()) std::vector<BufferBlock*>().swap(spare_blocks_);
  return n;
}

InputBuffer::~InputBuffer() { block_unref(block); }

void InputBuffer::adopt(BufferBlock* b) {
  block = b;
  data = b != nullptr ? b->data : nullptr;
  capacity = b != nullptr ? b->capacity : 0;
}

void InputBuffer::ensure(BufferPool& pool) {
  if (block != nullptr) return;
  adopt(pool.take_block());
  parsed = filled = 0;
}

void InputBuffer::release_if_empty(BufferPool& pool) {
  if (block != nullptr && parsed == filled) release(pool);
}

void InputBuffer::release(BufferPool&) {
  block_unref(block);
  adopt(nullptr);
  parsed = filled = 0;
}

void InputBuffer::compact(BufferPool& pool) {
  if (parsed == 0) return;
  size_t n = filled - parsed;
  if (block->refs > 1) {
    // A queued write still sends bytes of this block: leave them be.
    BufferBlock* fresh = n <= pool.block_size() ? pool.take_block() : pool.take_large_block(n);
    if (fresh == nullptr) return;  // keep the bytes where they are
    if (n > 0) std::memcpy(fresh->data, data + parsed, n);
    block_unref(block);
    adopt(fresh);
  } else if (n > 0) {
    std::memmove(data, data + parsed, n);
  }
  parsed = 0;
  filled = n;
}

void InputBuffer::restart(BufferPool& pool) {
  if (block == nullptr || parsed != filled) return;
  if (block->refs > 1) {
    release(pool);  // the next read takes a fresh block
  } else {
    parsed = filled = 0;
  }
}

void InputBuffer::grow(BufferPool& pool, size_t new_capacity) {
  BufferBlock* bigger = pool.take_large_block(new_capacity);
  if (bigger == nullptr) return;
  std::memcpy(bigger->data, data, filled);
  block_unref(block);
  adopt(bigger);
}

}  // namespace bulwark
