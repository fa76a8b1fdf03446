#include "proxy/buffer.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace bulwark {
namespace {

void put(InputBuffer& in, const std::string& s) {
  REQUIRE(in.space() >= s.size());
  std::memcpy(in.tail(), s.data(), s.size());
  in.filled += s.size();
}

std::string unparsed(const InputBuffer& in) { return {in.data + in.parsed, in.filled - in.parsed}; }

TEST_CASE("buffer: BufferPool reuses released blocks, most recent first") {
  BufferPool pool(64, 8);
  CHECK(pool.block_size() == 64);
  char* a = pool.acquire();
  char* b = pool.acquire();
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  CHECK(a != b);
  pool.release(a);
  pool.release(b);
  CHECK(pool.acquire() == b);
  CHECK(pool.acquire() == a);
  pool.release(a);
  pool.release(b);
}

TEST_CASE("buffer: BufferPool keeps at most max_free blocks") {
  BufferPool pool(64, 1);
  char* a = pool.acquire();
  char* b = pool.acquire();
  pool.release(a);
  pool.release(b);  // over the limit: freed
  char* c = pool.acquire();
  CHECK(c == a);
  char* d = pool.acquire();  // the pool is empty again: a fresh block
  CHECK(d != a);
  pool.release(c);
  pool.release(d);
}

TEST_CASE("buffer: InputBuffer::ensure takes one pool block and keeps it") {
  BufferPool pool(128, 4);
  InputBuffer in;
  CHECK_FALSE(in.has_storage());
  CHECK(in.empty());
  in.ensure(pool);
  REQUIRE(in.has_storage());
  CHECK(in.capacity == 128);
  CHECK(in.space() == 128);
  CHECK(in.parsed == 0);
  CHECK(in.filled == 0);
  put(in, "abc");
  char* data = in.data;
  in.ensure(pool);  // already has storage: nothing changes
  CHECK(in.data == data);
  CHECK(in.filled == 3);
  CHECK(in.space() == 125);
  CHECK(in.tail() == in.data + 3);
  in.release(pool);
}

TEST_CASE("buffer: InputBuffer::compact moves the unparsed bytes to the front") {
  BufferPool pool(64, 4);
  InputBuffer in;
  in.ensure(pool);
  put(in, "parsed|rest");
  in.parsed = 7;
  in.compact(pool);
  CHECK(in.parsed == 0);
  CHECK(in.filled == 4);
  CHECK(std::string(in.data, 4) == "rest");
  CHECK(in.space() == 60);

  in.parsed = 4;  // all parsed
  in.compact(pool);
  CHECK(in.parsed == 0);
  CHECK(in.filled == 0);
  CHECK(in.empty());

  put(in, "xy");
  in.compact(pool);  // nothing parsed: nothing moves
  CHECK(std::string(in.data, in.filled) == "xy");
  in.release(pool);
}

TEST_CASE("buffer: InputBuffer::grow keeps the bytes and their offsets") {
  BufferPool pool(16, 4);
  InputBuffer in;
  in.ensure(pool);
  char* block = in.data;
  put(in, "0123456789abcdef");
  in.parsed = 5;
  CHECK(in.space() == 0);

  in.grow(pool, 64);
  CHECK(in.capacity == 64);
  CHECK(in.parsed == 5);
  CHECK(in.filled == 16);
  CHECK(std::string(in.data, in.filled) == "0123456789abcdef");
  CHECK(unparsed(in) == "56789abcdef");
  CHECK(in.space() == 48);
  // The pool block went back to the pool. (Had it been freed instead, this malloc of the same
  // size would most likely get it, and the pool would hand out a different block.)
  void* decoy = std::malloc(pool.block_size());
  char* again = pool.acquire();
  CHECK(again == block);
  pool.release(again);
  std::free(decoy);

  // Growing a grown buffer works too, and the grown storage is not put into the pool.
  put(in, std::string(48, 'z'));
  in.grow(pool, 200);
  CHECK(in.capacity == 200);
  CHECK(in.filled == 64);
  CHECK(std::string(in.data + 16, 48) == std::string(48, 'z'));
  in.release(pool);
  CHECK_FALSE(in.has_storage());
  CHECK(in.capacity == 0);
  char* pooled = pool.acquire();
  CHECK(pooled == block);  // only the original block is pooled
  pool.release(pooled);
}

TEST_CASE("buffer: release_if_empty keeps storage while bytes are unparsed") {
  BufferPool pool(32, 4);
  InputBuffer in;
  in.release_if_empty(pool);  // no storage: nothing happens
  CHECK_FALSE(in.has_storage());

  in.ensure(pool);
  char* block = in.data;
  put(in, "abcd");
  in.parsed = 2;
  in.release_if_empty(pool);
  REQUIRE(in.has_storage());
  CHECK(unparsed(in) == "cd");

  in.parsed = 4;
  in.release_if_empty(pool);
  CHECK_FALSE(in.has_storage());
  CHECK(in.parsed == 0);
  CHECK(in.filled == 0);
  CHECK(in.capacity == 0);
  CHECK(in.space() == 0);
  char* pooled = pool.acquire();
  CHECK(pooled == block);
  pool.release(pooled);

  // Storage comes back on demand, empty.
  in.ensure(pool);
  CHECK(in.has_storage());
  CHECK(in.filled == 0);
  in.release(pool);
}

// Issue 12 item 7: a block that a queued write points into is never handed to another reader,
// whatever the reader that filled it does (closes, compacts, starts over).
TEST_CASE("buffer: a block referenced by a queued write outlives its reader") {
  BufferPool pool(64, 8);
  SUBCASE("the reader releases it (the peer closed)") {
    InputBuffer in;
    in.ensure(pool);
    put(in, "response bytes");
    BufferBlock* held = in.block;
    block_ref(held);  // an Outbox segment pointing at it
    in.parsed = in.filled;
    in.release(pool);
    InputBuffer other;
    other.ensure(pool);
    CHECK(other.data != held->data);  // another connection gets another block
    put(other, "someone else's bytes");
    CHECK(std::string(held->data, 14) == "response bytes");
    CHECK(pool.blocks_in_use() == 2);
    block_unref(held);  // the write completed
    CHECK(pool.blocks_in_use() == 1);
    other.release(pool);
    CHECK(pool.blocks_in_use() == 0);
  }
  SUBCASE("the reader starts over or compacts") {
    InputBuffer in;
    in.ensure(pool);
    put(in, "abcdef");
    BufferBlock* held = in.block;
    block_ref(held);
    in.parsed = in.filled;
    in.restart(pool);  // would have written over "abcdef"
    CHECK(in.block != held);
    in.ensure(pool);
    put(in, "xyz");
    in.parsed = 1;
    BufferBlock* second = in.block;
    block_ref(second);
    in.compact(pool);  // would have moved "yz" over "x"
    CHECK(in.block != second);
    CHECK(unparsed(in) == "yz");
    CHECK(std::string(held->data, 6) == "abcdef");
    CHECK(std::string(second->data, 3) == "xyz");
    block_unref(held);
    block_unref(second);
    // Without another reference the reader keeps its block.
    BufferBlock* own = in.block;
    in.parsed = in.filled;
    in.restart(pool);
    CHECK(in.block == own);
    CHECK(in.filled == 0);
    in.release(pool);
    CHECK(pool.blocks_in_use() == 0);
  }
}

}  // namespace
}  // namespace bulwark
