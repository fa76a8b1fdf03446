#include "proxy/slab.h"

#include <sys/mman.h>

#include <cassert>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace bulwark {

// At the start of each chunk; the slots follow.
struct Slab::Chunk {
  Slab* owner;
  Chunk* prev = nullptr;  // in the owner's partial list
  Chunk* next = nullptr;
  void* free = nullptr;  // freed slots, linked through their first word
  uint32_t live = 0;     // slots in use
  uint32_t carved = 0;   // slots handed out at least once (the rest were never touched)
  bool partial = false;  // in the partial list

  char* slots() { return reinterpret_cast<char*>(this) + kHeader; }
  static constexpr size_t kHeader = 64;
};

namespace {

// A kChunkSize mapping aligned to kChunkSize: map twice the size, unmap the ends.
void* map_aligned() {
  constexpr size_t size = Slab::kChunkSize;
  void* p = mmap(nullptr, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  auto start = reinterpret_cast<uintptr_t>(p);
  uintptr_t aligned = (start + size - 1) & ~(uintptr_t{size} - 1);
  if (aligned > start) munmap(p, aligned - start);
  uintptr_t end = start + 2 * size;
  if (end > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
  return reinterpret_cast<void*>(aligned);
}

thread_local char this_thread;  // its address tells threads apart

}  // namespace

Slab::Slab(size_t object_size)
    : object_size_(slab_size_class(object_size < sizeof(void*) ? sizeof(void*) : object_size)),
      slots_per_chunk_(static_cast<uint32_t>((kChunkSize - Chunk::kHeader) / object_size_)),
      thread_(&this_thread) {}

Slab::~Slab() {
  while (partial_head_ != nullptr) {
    Chunk* c = partial_head_;
    unlink_partial(c);
    if (c->live == 0) munmap(c, kChunkSize);
  }
}

void* Slab::allocate() {
  static_assert(sizeof(Chunk) <= Chunk::kHeader);
  Chunk* c = partial_head_;
  if (c == nullptr) {
    void* mem = map_aligned();
    if (mem == nullptr) throw std::bad_alloc();
    c = new (mem) Chunk{this};
    ++chunks_;
    link_partial(c);
  }
  void* p;
  if (c->free != nullptr) {
    p = c->free;
    c->free = *static_cast<void**>(p);
  } else {
    p = c->slots() + size_t{c->carved} * object_size_;
    ++c->carved;
  }
  ++c->live;
  ++live_;
  if (c->free == nullptr && c->carved == slots_per_chunk_) unlink_partial(c);
  return p;
}

void Slab::deallocate(void* p) noexcept {
  if (p == nullptr) return;
  auto* c = reinterpret_cast<Chunk*>(reinterpret_cast<uintptr_t>(p) & ~(uintptr_t{kChunkSize} - 1));
  c->owner->release(c, p);
}

void Slab::release(Chunk* c, void* p) noexcept {
#ifdef BULWARK_SLAB_CHECKS
  // The sanitizer build checks the rule the slab relies on: freed on the thread that made it.
  if (!orphaned_ && thread_ != &this_thread) {
    std::fprintf(stderr, "slab: object freed on another thread than the one that made it\n");
    std::abort();
  }
#endif
  assert(c->live > 0);
  *static_cast<void**>(p) = c->free;
  c->free = p;
  --c->live;
  --live_;
  if (c->live == 0) {
    // Empty: back to the system, unless it is the only chunk with room (a connection that
    // comes and goes alone would map and unmap a chunk each time).
    if (c->partial) unlink_partial(c);
    if (partial_head_ != nullptr || orphaned_) {
      munmap(c, kChunkSize);
      --chunks_;
      if (orphaned_ && live_ == 0) delete this;
      return;
    }
    link_partial(c);
    return;
  }
  if (!c->partial) link_partial(c);
}

void Slab::link_partial(Chunk* c) {
  c->partial = true;
  c->next = nullptr;
  c->prev = partial_tail_;
  if (partial_tail_ != nullptr) {
    partial_tail_->next = c;
  } else {
    partial_head_ = c;
  }
  partial_tail_ = c;
}

void Slab::unlink_partial(Chunk* c) {
  c->partial = false;
  (c->prev != nullptr ? c->prev->next : partial_head_) = c->next;
  (c->next != nullptr ? c->next->prev : partial_tail_) = c->prev;
  c->prev = c->next = nullptr;
}

Slab::Holder::Holder(size_t size) : slab(new Slab(size)) {}

Slab::Holder::~Holder() {
  if (slab->live_ == 0) {
    delete slab;
  } else {
    slab->orphaned_ = true;
  }
}

}  // namespace bulwark
