#include "proxy/slab.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "proxy/buffer.h"

namespace bulwark {
namespace {

uintptr_t chunk_of(void* p) {
  return reinterpret_cast<uintptr_t>(p) & ~(uintptr_t{Slab::kChunkSize} - 1);
}

TEST_CASE("slab: slots are distinct, writable and reused after a free") {
  Slab slab(100);
  CHECK(slab.object_size() == 112);  // rounded up to 16
  std::vector<void*> slots;
  for (int i = 0; i < 10; ++i) {
    void* p = slab.allocate();
    std::memset(p, i, slab.object_size());
    slots.push_back(p);
  }
  for (size_t i = 1; i < slots.size(); ++i) {
    CHECK(static_cast<char*>(slots[i]) - static_cast<char*>(slots[i - 1]) == 112);
  }
  CHECK(slab.live() == 10);
  Slab::deallocate(slots[3]);
  CHECK(slab.allocate() == slots[3]);
  for (void* p : slots) Slab::deallocate(p);
  CHECK(slab.live() == 0);
}

TEST_CASE(
    "slab: a chunk goes back to the system when its last object goes, but the last one stays") {
  Slab slab(1024);
  const size_t per_chunk = (Slab::kChunkSize - 64) / 1024;
  std::vector<void*> slots;
  for (size_t i = 0; i < 3 * per_chunk; ++i) slots.push_back(slab.allocate());
  CHECK(slab.chunks() == 3);
  CHECK(chunk_of(slots.front()) != chunk_of(slots.back()));
  // Empty the middle chunk while the others are full: kept, as the only one with room (a
  // connection that comes and goes alone does not map and unmap a chunk each time).
  for (size_t i = per_chunk; i < 2 * per_chunk; ++i) Slab::deallocate(slots[i]);
  CHECK(slab.chunks() == 3);
  // Empty the first too: there is room elsewhere, so it is unmapped at once.
  for (size_t i = 0; i < per_chunk; ++i) Slab::deallocate(slots[i]);
  CHECK(slab.chunks() == 2);
  for (size_t i = 2 * per_chunk; i < 3 * per_chunk; ++i) Slab::deallocate(slots[i]);
  CHECK(slab.chunks() == 1);
  CHECK(slab.live() == 0);
}

TEST_CASE("slab: new objects fill the oldest chunk with room first, so survivors gather") {
  Slab slab(1024);
  const size_t per_chunk = (Slab::kChunkSize - 64) / 1024;
  std::vector<void*> first, second;
  for (size_t i = 0; i < per_chunk; ++i) first.push_back(slab.allocate());
  for (size_t i = 0; i < per_chunk; ++i) second.push_back(slab.allocate());
  // A hole in each chunk, the second chunk's first.
  Slab::deallocate(second[0]);
  Slab::deallocate(first[5]);
  // The first chunk became partial after the second: the second's hole is filled first, then
  // the first's, and only then a new chunk.
  CHECK(slab.allocate() == second[0]);
  CHECK(slab.allocate() == first[5]);
  CHECK(slab.chunks() == 2);
  void* third = slab.allocate();
  CHECK(slab.chunks() == 3);
  Slab::deallocate(third);
  for (void* p : first) Slab::deallocate(p);
  for (void* p : second) Slab::deallocate(p);
}

struct Tracked : SlabAllocated<Tracked> {
  explicit Tracked(int v) : value(v) {}
  int value;
  char pad[200];
};

TEST_CASE(
    "slab: SlabAllocated objects live in the slab of their thread, made and freed with new and "
    "delete") {
  Slab& slab = Slab::local<slab_size_class(sizeof(Tracked))>();
  size_t before = slab.live();
  auto* a = new Tracked(7);
  auto* b = new Tracked(8);
#ifndef BULWARK_SLAB_CHECKS  // the sanitizer build keeps them in ASan's heap
  CHECK(slab.live() == before + 2);
  CHECK(chunk_of(a) == chunk_of(b));
#endif
  CHECK(a->value == 7);
  CHECK(b->value == 8);
  delete a;
  delete b;
  CHECK(slab.live() == before);
}

TEST_CASE("slab: an object that outlives its thread can still be freed after the thread ended") {
  Tracked* survivor = nullptr;
  std::thread t([&] { survivor = new Tracked(42); });
  t.join();
  REQUIRE(survivor != nullptr);
  CHECK(survivor->value == 42);
  delete survivor;  // the orphaned slab goes with its last object
}

TEST_CASE("slab: FreeList::trim gives back the objects that sat unused since the last trim") {
  FreeList<int> list(100);
  std::vector<int*> taken;
  for (int i = 0; i < 10; ++i) taken.push_back(list.acquire(i));
  for (int* p : taken) list.release(p);
  CHECK(list.free_count() == 10);
  CHECK(list.trim() == 0);       // the low-water mark starts at 0: the burst just ended
  int* again = list.acquire(0);  // steady use draws the list down to 9
  list.release(again);
  CHECK(list.trim() == 9);  // 9 sat there for a whole interval
  CHECK(list.free_count() == 1);
  CHECK(list.trim() == 1);
  CHECK(list.free_count() == 0);
}

}  // namespace
}  // namespace bulwark
