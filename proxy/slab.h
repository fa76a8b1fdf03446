#pragma once
// Storage for long-lived objects of one size: client and upstream connections, their transports
// and timers.
//
// Why not malloc: in a burst, a worker allocates thousands of short-lived objects (exchanges,
// parsers, outboxes, write requests) between the connections it accepts. When the burst is over
// the short-lived ones are freed, but malloc's pages stay, each held by the few connection objects
// that landed on it: 5,000 connections arriving at once left ~3.5 KB each behind. With the
// long-lived objects here, malloc's heap holds only short-lived memory, which it can give back
// whole (malloc_trim), and the objects that stay are packed next to each other.
//
// A Slab maps 64 KiB chunks and carves them into slots of one size, allocating from the oldest
// chunk that has room (so the live objects gather in few chunks) and unmapping a chunk once its
// last object goes. A slot's chunk is found by masking its address (chunks are aligned to their
// size), so freeing needs no lookup. Single-threaded: an object is freed on the thread that made
// it (a loop's objects live and die on its loop thread).

#include <cstddef>
#include <cstdint>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define BULWARK_SLAB_CHECKS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BULWARK_SLAB_CHECKS 1
#endif
#endif

namespace bulwark {

class Slab {
 public:
  static constexpr size_t kChunkSize = 64 * 1024;

  explicit Slab(size_t object_size);
  ~Slab();  // unmaps the chunks that are empty; one that still has objects is left mapped
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  void* allocate();  // throws std::bad_alloc when no chunk can be mapped
  // Frees a slot of whichever Slab made it.
  static void deallocate(void* p) noexcept;

  size_t object_size() const { return object_size_; }
  size_t chunks() const { return chunks_; }
  size_t live() const { return live_; }

  // This thread's slab for objects of `size` bytes (rounded up to 16), made on first use.
  template <size_t Size>
  static Slab& local() {
    static thread_local Holder holder(Size);
    return *holder.slab;
  }

 private:
  struct Chunk;
  // Owns a thread's slab; at thread exit frees it if no object is left in it, else leaves it
  // (an object freed later finds it through its chunk).
  struct Holder {
    explicit Holder(size_t size);
    ~Holder();
    Slab* slab;
  };

  void release(Chunk* c, void* p) noexcept;
  void link_partial(Chunk* c);
  void unlink_partial(Chunk* c);

  size_t object_size_;
  uint32_t slots_per_chunk_;
  Chunk* partial_head_ = nullptr;  // chunks with a free slot, oldest first
  Chunk* partial_tail_ = nullptr;
  size_t chunks_ = 0;
  size_t live_ = 0;
  bool orphaned_ = false;  // the owning thread ended: free the slab with its last object
  const char* thread_;     // the owning thread (a thread_local's address)
};

constexpr size_t slab_size_class(size_t size) { return (size + 15) / 16 * 16; }

// A base that puts T's objects in this thread's slab for T's size class: `new T(...)` and
// `delete` work as usual. The sanitizer build leaves them in ASan's heap instead, where a use
// after free is caught (the slab itself is tested on its own).
template <class T>
struct SlabAllocated {
#ifdef BULWARK_SLAB_CHECKS
  static void* operator new(size_t size) { return ::operator new(size); }
  static void operator delete(void* p) noexcept { ::operator delete(p); }
#else
  static void* operator new(size_t size) {
    static_assert(slab_size_class(sizeof(T)) <= Slab::kChunkSize / 8);
    if (size != sizeof(T)) return ::operator new(size);  // a derived class; not expected
    return Slab::local<slab_size_class(sizeof(T))>().allocate();
  }
  static void operator delete(void* p, size_t size) noexcept {
    if (size != sizeof(T)) {
      ::operator delete(p);
      return;
    }
    Slab::deallocate(p);
  }
#endif
};

}  // namespace bulwark
