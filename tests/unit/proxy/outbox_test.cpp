#include "proxy/outbox.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <string>

#include "proxy/transport.h"

namespace bulwark {
namespace {

// A transport on one end of a socketpair; the test reads what the Outbox wrote from the other end.
class Wire : private Transport::Callbacks {
 public:
  Wire() {
    REQUIRE(uv_loop_init(&loop_) == 0);
    later_ = std::make_unique<DeferredDeleter>(&loop_);
    context_.later = later_.get();
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    peer_ = fds[1];
    transport_ = TcpTransport::open(&context_, fds[0]);
    REQUIRE(transport_ != nullptr);
    transport_->attach(this, nullptr);
  }
  ~Wire() {
    transport_.reset();
    later_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    close(peer_);
  }
  Wire(const Wire&) = delete;
  Wire& operator=(const Wire&) = delete;

  // Flushes the outbox and runs the loop until the write callback ran. Returns the flush result.
  int flush(Outbox& out) {
    int rc = start(out);
    if (rc != 0 || !out.in_flight()) return rc;
    finish(out);
    return 0;
  }
  // The two halves of flush(): start the write (it is then in flight) ...
  int start(Outbox& out, bool at_once = false) {
    written_ = false;
    status_ = 1;
    return transport_->write(out, at_once);
  }
  bool callback_ran() const { return written_; }
  void run_once() { uv_run(&loop_, UV_RUN_NOWAIT); }
  // ... and run the loop until its callback ran (the transport tells the Outbox first).
  void finish(Outbox& out) {
    // Read while waiting, so a write larger than the socket buffer still completes.
    while (!written_) {
      uv_run(&loop_, UV_RUN_NOWAIT);
      drain();
    }
    CHECK(status_ == 0);
    CHECK_FALSE(out.in_flight());
  }

  // Everything the peer has received so far.
  std::string received() {
    drain();
    std::string s;
    s.swap(drained_);
    return s;
  }

 private:
  void on_transport_connected(int) override {}
  void on_transport_read(ssize_t) override {}
  void on_transport_written(int status) override {
    written_ = true;
    status_ = status;
  }

  // Moves what the peer can read now into drained_.
  void drain() {
    char buf[4096];
    while (true) {
      ssize_t n = recv(peer_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        drained_.append(buf, static_cast<size_t>(n));
        continue;
      }
      REQUIRE((n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)));
      return;
    }
  }

  uv_loop_t loop_;
  BufferPool buffers_;
  std::unique_ptr<DeferredDeleter> later_;
  TransportContext context_{&loop_, &buffers_};
  TransportPtr transport_;
  int peer_ = -1;
  bool written_ = false;
  int status_ = 1;
  std::string drained_;
};

TEST_CASE("outbox: head, data and framing go out in order in one write") {
  Wire wire;
  Outbox out;
  std::string body = "0123456789";  // lives in "the other side's buffer"
  out.head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  out.add_head();
  out.add_chunk(body.data(), 5, nullptr);
  out.add_chunk(body.data() + 5, 5, nullptr);
  out.add_last_chunk();
  std::string expected = out.head + "5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n";
  CHECK_FALSE(out.empty());
  CHECK(out.bytes_pending() == expected.size());

  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == expected);
  CHECK(out.empty());
  CHECK_FALSE(out.in_flight());
  CHECK(out.bytes_pending() == 0);
}

TEST_CASE("outbox: data is sent from where it lives, not copied when added") {
  Wire wire;
  Outbox out;
  std::string body = "before";
  out.add_data(body.data(), body.size(), nullptr);
  body = "after!";  // same size, same storage
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "after!");
}

TEST_CASE("outbox: empty data and zero-size chunks add nothing") {
  Wire wire;
  Outbox out;
  const char* p = "x";
  out.add_data(p, 0, nullptr);
  out.add_chunk(p, 0, nullptr);  // a zero-size chunk would end the body early
  CHECK(out.empty());
  CHECK(out.bytes_pending() == 0);
  out.add_chunk(p, 1, nullptr);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "1\r\nx\r\n");
}

TEST_CASE("outbox: a second flush sends only what was added since") {
  Wire wire;
  Outbox out;
  out.head = "HEAD-";
  out.add_head();
  std::string a = "aaa", b = "bbb";
  out.add_data(a.data(), a.size(), nullptr);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "HEAD-aaa");

  out.add_data(b.data(), b.size(), nullptr);
  out.add_framing("!");
  CHECK(out.bytes_pending() == 4);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "bbb!");
}

TEST_CASE("outbox: with history, rewind sends everything again") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  CHECK(out.keep_history());
  out.head = "GET / HTTP/1.1\r\n\r\n";
  out.add_head();
  std::string body = "body";
  out.add_chunk(body.data(), body.size(), nullptr);
  REQUIRE(wire.flush(out) == 0);
  std::string first = wire.received();
  CHECK(first == out.head + "4\r\nbody\r\n");

  std::string more = "more";
  out.add_data(more.data(), more.size(), nullptr);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "more");

  // The connection died: send the whole request on another one.
  out.rewind();
  CHECK_FALSE(out.empty());
  CHECK(out.bytes_pending() == first.size() + more.size());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == first + more);
  CHECK(out.bytes_pending() == 0);

  // And again: the history survives a replay.
  out.rewind();
  CHECK(out.bytes_pending() == first.size() + more.size());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == first + more);
}

TEST_CASE("outbox: rewind before anything was written keeps the pending count right") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  out.head = "H";
  out.add_head();
  out.rewind();
  CHECK(out.bytes_pending() == 1);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "H");
}

TEST_CASE("outbox: a value in the head is replaced only while no byte of it went out") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  out.head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  out.add_head();
  std::string body = "body";
  out.add_data(body.data(), body.size(), nullptr);
  const size_t at = out.head.find("a\r\n");
  REQUIRE(out.replace_in_head(at, 1, "longer.example:8080"));
  CHECK(out.bytes_pending() == out.head.size() + body.size());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "GET / HTTP/1.1\r\nHost: longer.example:8080\r\n\r\nbody");
  // Sent: no more changes, until a rewind makes it all unsent again (the next try).
  CHECK_FALSE(out.replace_in_head(at, 19, "b"));
  out.rewind();
  REQUIRE(out.replace_in_head(at, 19, "b"));
  CHECK(out.bytes_pending() == out.head.size() + body.size());
  CHECK_FALSE(out.replace_in_head(at, 1000, "c"));  // past the head's end
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "GET / HTTP/1.1\r\nHost: b\r\n\r\nbody");
}

TEST_CASE("outbox: without history, written segments are dropped") {
  Wire wire;
  Outbox out;
  out.head = "H1";
  out.add_head();
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "H1");
  out.rewind();  // nothing kept, nothing to resend
  CHECK(out.empty());
  CHECK(out.bytes_pending() == 0);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received().empty());
}

TEST_CASE("outbox: what is added while a write is in flight is sent by the next one, not dropped") {
  Wire wire;
  Outbox out;
  std::string first = "first", second = "second";
  out.add_data(first.data(), first.size(), nullptr);
  REQUIRE(wire.start(out) == 0);
  REQUIRE(out.in_flight());
  out.add_data(second.data(), second.size(), nullptr);
  out.add_framing("+frame");
  wire.finish(out);
  CHECK_FALSE(out.empty());
  CHECK(out.bytes_pending() == second.size() + 6);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "firstsecond+frame");
  CHECK(out.empty());
  CHECK(out.bytes_pending() == 0);
}

TEST_CASE("outbox: framing added during a write never moves the bytes that write still sends") {
  // A write larger than the socket buffer stays queued; framing added meanwhile (a 1xx, a final
  // head) must not reallocate the storage the queued write reads from.
  Wire wire;
  Outbox out;
  std::string big(1 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
  out.add_framing(big);
  REQUIRE(wire.start(out) == 0);
  REQUIRE(out.in_flight());
  std::string later(3 << 20, 'y');  // far beyond what the framing storage can hold in place
  out.add_framing(later);
  out.add_framing("tail");
  wire.finish(out);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == big + later + "tail");
}

TEST_CASE("outbox: turning history off drops what was written and keeps what was not") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  std::string a = "written", b = "pending";
  out.add_data(a.data(), a.size(), nullptr);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "written");
  out.add_data(b.data(), b.size(), nullptr);

  out.set_keep_history(false);
  CHECK_FALSE(out.keep_history());
  CHECK(out.bytes_pending() == b.size());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "pending");
  out.rewind();
  CHECK(out.empty());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received().empty());
}

TEST_CASE("outbox: clear forgets everything, history included") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  out.head = "old head";
  out.add_head();
  out.add_framing("old framing");
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "old headold framing");

  out.clear();
  CHECK(out.empty());
  CHECK(out.head.empty());
  CHECK(out.bytes_pending() == 0);
  CHECK_FALSE(out.keep_history());
  out.rewind();
  CHECK(out.empty());

  out.add_framing("new");
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "new");
}

TEST_CASE("outbox: flushing nothing writes nothing and leaves nothing in flight") {
  Wire wire;
  Outbox out;
  REQUIRE(wire.flush(out) == 0);
  CHECK_FALSE(out.in_flight());
  CHECK(wire.received().empty());
}

TEST_CASE("outbox: add_data_copy sends the bytes as they were when added") {
  Wire wire;
  Outbox out;
  std::string body = "before";
  out.add_data_copy(body.data(), body.size());
  CHECK(out.bytes_pending() == 6);
  body = "after!";  // same size, same storage: the caller reused its buffer at once
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "before");
}

TEST_CASE("outbox: add_chunk_copy is framed like add_chunk and copies the data") {
  Wire wire;
  std::string reference;
  {
    Outbox out;
    std::string body(300, 'q');
    out.add_chunk(body.data(), body.size(), nullptr);
    out.add_last_chunk();
    REQUIRE(wire.flush(out) == 0);
    reference = wire.received();
  }
  CHECK(reference == "12c\r\n" + std::string(300, 'q') + "\r\n0\r\n\r\n");

  Outbox out;
  std::string body(300, 'q');
  out.add_chunk_copy(body.data(), body.size());
  CHECK(out.bytes_pending() == reference.size() - 5);  // all but the last chunk
  body.assign(300, 'Z');
  out.add_last_chunk();
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == reference);
}

TEST_CASE("outbox: copies of nothing add nothing") {
  Wire wire;
  Outbox out;
  const char* p = "x";
  out.add_data_copy(p, 0);
  out.add_chunk_copy(p, 0);  // a zero-size chunk would end the body early
  CHECK(out.empty());
  CHECK(out.bytes_pending() == 0);
  out.add_chunk_copy(p, 1);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "1\r\nx\r\n");
}

TEST_CASE("outbox: copied and borrowed data keep their order") {
  Wire wire;
  Outbox out;
  std::string a = "aa", b = "bb", c = "cc";
  out.add_data(a.data(), a.size(), nullptr);
  out.add_data_copy(b.data(), b.size());
  out.add_chunk_copy(c.data(), c.size());
  b = "XX";
  c = "YY";
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "aabb2\r\ncc\r\n");
}

TEST_CASE("outbox: can_rewind holds while history is kept, and after a rewind") {
  Wire wire;
  Outbox out;
  CHECK(out.can_rewind());  // nothing added, nothing forgotten
  out.set_keep_history(true);
  out.head = "H";
  out.add_head();
  CHECK(out.can_rewind());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "H");
  CHECK(out.can_rewind());
  out.rewind();
  CHECK(out.can_rewind());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "H");
  CHECK(out.can_rewind());
}

TEST_CASE("outbox: can_rewind is false once a write completed without history") {
  Wire wire;
  Outbox out;
  out.head = "H";
  out.add_head();
  CHECK(out.can_rewind());  // not written yet: everything is still held
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "H");
  CHECK_FALSE(out.can_rewind());

  // Adding more does not bring the forgotten bytes back.
  out.add_framing("more");
  CHECK_FALSE(out.can_rewind());

  out.clear();
  CHECK(out.can_rewind());
}

TEST_CASE("outbox: can_rewind is false once set_keep_history(false) dropped written segments") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  std::string a = "written";
  out.add_data_copy(a.data(), a.size());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "written");
  CHECK(out.can_rewind());

  out.set_keep_history(false);
  CHECK_FALSE(out.can_rewind());
  out.clear();
  CHECK(out.can_rewind());
}

TEST_CASE("outbox: set_keep_history(false) before anything was written forgets nothing") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  out.add_framing("pending");
  out.set_keep_history(false);
  CHECK(out.can_rewind());
  CHECK(out.bytes_pending() == 7);
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == "pending");
  CHECK_FALSE(out.can_rewind());  // written without history
}

TEST_CASE("outbox: rewind re-sends exactly the same head, copied body and framing") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  out.head = "POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  out.add_head();
  std::string buffer = "first piece";  // the read buffer, reused for each piece
  out.add_chunk_copy(buffer.data(), buffer.size());
  buffer = "second";
  out.add_chunk_copy(buffer.data(), buffer.size());
  buffer = "raw";
  out.add_data_copy(buffer.data(), buffer.size());
  buffer = "###########";  // overwritten before the first write
  out.add_last_chunk();
  std::string expected = out.head + "b\r\nfirst piece\r\n6\r\nsecond\r\nraw0\r\n\r\n";
  CHECK(out.bytes_pending() == expected.size());

  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == expected);
  CHECK(out.can_rewind());

  buffer = "overwritten again after the write";
  out.rewind();
  CHECK(out.bytes_pending() == expected.size());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == expected);
  CHECK(out.bytes_pending() == 0);
}

TEST_CASE("outbox: clear after a large copied body leaves the outbox ready for normal use") {
  Wire wire;
  Outbox out;
  out.set_keep_history(true);
  out.head = "PUT /big HTTP/1.1\r\nContent-Length: 65536\r\n\r\n";
  out.add_head();
  std::string big(64 * 1024, 'b');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  out.add_data_copy(big.data(), big.size());
  std::string expected = out.head + big;
  big.assign(big.size(), '!');
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == expected);

  out.clear();
  CHECK(out.empty());
  CHECK(out.bytes_pending() == 0);
  CHECK(out.can_rewind());
  CHECK_FALSE(out.keep_history());

  // The next request, with history again: nothing of the old one comes back.
  out.set_keep_history(true);
  out.head = "GET /small HTTP/1.1\r\n\r\n";
  out.add_head();
  std::string small = "tiny";
  out.add_chunk_copy(small.data(), small.size());
  std::string next = out.head + "4\r\ntiny\r\n";
  CHECK(out.bytes_pending() == next.size());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == next);
  out.rewind();
  CHECK(out.bytes_pending() == next.size());
  REQUIRE(wire.flush(out) == 0);
  CHECK(wire.received() == next);
}

TEST_CASE("outbox: at_once completes a write the socket takes whole, with no callback") {
  Wire wire;
  Outbox out;
  std::string body = "0123456789";
  out.head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
  out.add_head();
  out.add_data(body.data(), body.size(), nullptr);
  std::string expected = out.head + body;
  REQUIRE(wire.start(out, true) == 0);
  CHECK_FALSE(out.in_flight());
  CHECK(out.empty());
  CHECK(out.bytes_pending() == 0);
  CHECK(wire.received() == expected);
  wire.run_once();
  CHECK_FALSE(wire.callback_ran());
}

TEST_CASE("outbox: at_once queues what the socket did not take, from the byte it stopped at") {
  Wire wire;
  Outbox out;
  // More than a socketpair's buffer: the socket takes part of it now, the rest later.
  std::string big(4 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  out.head = "HTTP/1.1 200 OK\r\n\r\n";
  out.add_head();
  out.add_data(big.data(), big.size() / 2, nullptr);
  out.add_framing("|");
  out.add_data(big.data() + big.size() / 2, big.size() / 2, nullptr);
  std::string expected =
      out.head + big.substr(0, big.size() / 2) + "|" + big.substr(big.size() / 2);
  REQUIRE(wire.start(out, true) == 0);
  REQUIRE(out.in_flight());
  wire.finish(out);
  CHECK(wire.received() == expected);
  CHECK(out.empty());
}
}  // namespace
}  // namespace bulwark
