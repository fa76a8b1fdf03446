#include "proxy/transport.h"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "tests/unit/proxy/test_net.h"

namespace bulwark {
namespace {

// A loop, its read buffers, and a recorder of a transport's events.
class Harness : public Transport::Callbacks {
 public:
  Harness() {
    REQUIRE(uv_loop_init(&loop_) == 0);
    later_ = std::make_unique<DeferredDeleter>(&loop_);
    context_.later = later_.get();
  }
  ~Harness() {
    later_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);  // lets closed handles go
    CHECK(uv_loop_close(&loop_) == 0);
    in.release(buffers_);
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  const TransportContext* context() { return &context_; }
  uv_loop_t* loop() { return &loop_; }
  BufferPool& buffers() { return buffers_; }

  // Runs the loop until `done` holds (bounded: a broken transport fails the test, not hangs it).
  template <class F>
  void run_until(F done) {
    for (int i = 0; i < 10000 && !done(); ++i) uv_run(&loop_, UV_RUN_ONCE);
    REQUIRE(done());
  }
  void run_nowait() { uv_run(&loop_, UV_RUN_NOWAIT); }

  void on_transport_connected(int status) override { connected.push_back(status); }
  void on_transport_read(ssize_t nread) override {
    reads.push_back(nread);
    if (on_read) on_read(nread);
  }
  void on_transport_written(int status) override { written.push_back(status); }

  InputBuffer in;
  std::vector<int> connected;
  std::vector<ssize_t> reads;
  std::vector<int> written;
  std::function<void(ssize_t)> on_read;

 private:
  uv_loop_t loop_;
  BufferPool buffers_;
  std::unique_ptr<DeferredDeleter> later_;
  TransportContext context_{&loop_, &buffers_};
};

// A connected socket pair: one end for a transport, the other read and written by the test.
struct Pair {
  Pair() {
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    ours = fds[0];
    peer = fds[1];
  }
  ~Pair() {
    if (peer >= 0) ::close(peer);
  }
  std::string read_peer() {
    std::string out;
    char buf[65536];
    while (true) {
      ssize_t n = recv(peer, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  int ours = -1;  // owned by the transport once opened
  int peer = -1;
};

std::string text(const InputBuffer& in) {
  return std::string(in.data + in.parsed, in.filled - in.parsed);
}

TEST_CASE("transport: bytes the peer sends are appended to the owner's input buffer") {
  Harness h;
  Pair p;
  TransportPtr t = TcpTransport::open(h.context(), p.ours);
  REQUIRE(t != nullptr);
  t->attach(&h, &h.in);
  t->read_start();
  CHECK(t->reading());
  REQUIRE(send(p.peer, "hello", 5, 0) == 5);
  h.run_until([&] { return !h.reads.empty(); });
  CHECK(h.reads[0] == 5);
  CHECK(text(h.in) == "hello");
  REQUIRE(send(p.peer, " world", 6, 0) == 6);
  h.run_until([&] { return h.reads.size() == 2; });
  CHECK(text(h.in) == "hello world");
}

TEST_CASE("transport: the peer's close is reported once as UV_EOF and reading stops") {
  Harness h;
  Pair p;
  TransportPtr t = TcpTransport::open(h.context(), p.ours);
  t->attach(&h, &h.in);
  t->read_start();
  ::close(p.peer);
  p.peer = -1;
  h.run_until([&] { return !h.reads.empty(); });
  CHECK(h.reads == std::vector<ssize_t>{UV_EOF});
  CHECK_FALSE(t->reading());
  // The buffer is its owner's to give back: a head being parsed may point into it.
  CHECK(h.in.empty());
}

TEST_CASE("transport: a full input buffer stops reading with UV_ENOBUFS until read_start") {
  Harness h;
  Pair p;
  TransportPtr t = TcpTransport::open(h.context(), p.ours);
  t->attach(&h, &h.in);
  const size_t block = h.buffers().block_size();
  std::string big(block + 100, 'x');
  REQUIRE(send(p.peer, big.data(), big.size(), 0) == static_cast<ssize_t>(big.size()));
  t->read_start();
  h.run_until([&] { return !h.reads.empty() && h.reads.back() == UV_ENOBUFS; });
  CHECK_FALSE(t->reading());
  CHECK(h.in.filled == block);
  // The owner makes room; the rest arrives.
  h.in.parsed = h.in.filled;
  h.in.restart(h.buffers());
  t->read_start();
  h.run_until([&] { return h.reads.back() == 100; });
  CHECK(text(h.in) == std::string(100, 'x'));
}

TEST_CASE("transport: a write the socket takes at once completes on return, with no callback") {
  Harness h;
  Pair p;
  TransportPtr t = TcpTransport::open(h.context(), p.ours);
  t->attach(&h, &h.in);
  Outbox out;
  out.head = "HTTP/1.1 200 OK\r\n\r\n";
  out.add_head();
  REQUIRE(t->write(out, true) == 0);
  CHECK_FALSE(out.in_flight());
  CHECK_FALSE(t->writing());
  h.run_nowait();
  CHECK(h.written.empty());
  CHECK(p.read_peer() == "HTTP/1.1 200 OK\r\n\r\n");
}

TEST_CASE("transport: a queued write reports its end after the Outbox was told") {
  Harness h;
  Pair p;
  TransportPtr t = TcpTransport::open(h.context(), p.ours);
  bool outbox_settled_first = false;
  Outbox out;
  struct Owner : Transport::Callbacks {
    Outbox* out;
    bool* settled;
    int status = 1;
    void on_transport_connected(int) override {}
    void on_transport_read(ssize_t) override {}
    void on_transport_written(int s) override {
      *settled = !out->in_flight();
      status = s;
    }
  } owner;
  owner.out = &out;
  owner.settled = &outbox_settled_first;
  t->attach(&owner, &h.in);
  out.head = "GET / HTTP/1.1\r\n\r\n";
  out.add_head();
  REQUIRE(t->write(out) == 0);
  CHECK(out.in_flight());
  CHECK(t->writing());
  h.run_until([&] { return owner.status != 1; });
  CHECK(owner.status == 0);
  CHECK(outbox_settled_first);
  CHECK(p.read_peer() == "GET / HTTP/1.1\r\n\r\n");
}

TEST_CASE("transport: close cuts a write in flight, frees its Outbox at once and reports nothing") {
  Harness h;
  Pair p;
  // A small send buffer, so a large write stays in flight.
  int small = 4096;
  setsockopt(p.ours, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  TransportPtr t = TcpTransport::open(h.context(), p.ours);
  t->attach(&h, &h.in);
  t->read_start();
  auto out = std::make_unique<Outbox>();
  std::string body(4 * 1024 * 1024, 'b');
  out->add_data_copy(body.data(), body.size());
  REQUIRE(t->write(*out, true) == 0);
  REQUIRE(out->in_flight());
  t.reset();  // the owner lets go
  CHECK_FALSE(out->in_flight());
  out.reset();  // the Outbox may go now: libuv reads none of its bytes after the close
  h.run_nowait();
  h.run_nowait();
  CHECK(h.written.empty());
  CHECK(h.reads.empty());
  // Less than the whole body ever reached the peer.
  CHECK(p.read_peer().size() < body.size());
}

TEST_CASE("transport: an owner may close and free itself inside a callback") {
  Harness h;
  Pair p;
  struct Owner final : Transport::Callbacks {
    TransportPtr t;
    InputBuffer in;
    BufferPool* pool;
    bool* freed;
    ~Owner() {
      t.reset();
      in.release(*pool);
      *freed = true;
    }
    void on_transport_connected(int) override {}
    void on_transport_read(ssize_t) override { delete this; }
    void on_transport_written(int) override {}
  };
  bool freed = false;
  auto* owner = new Owner;
  owner->pool = &h.buffers();
  owner->freed = &freed;
  owner->t = TcpTransport::open(h.context(), p.ours);
  owner->t->attach(owner, &owner->in);
  owner->t->read_start();
  REQUIRE(send(p.peer, "x", 1, 0) == 1);
  h.run_until([&] { return freed; });
}

TEST_CASE("transport: shutdown sends FIN after what is queued, and reading goes on") {
  Harness h;
  Pair p;
  TransportPtr t = TcpTransport::open(h.context(), p.ours);
  t->attach(&h, &h.in);
  t->read_start();
  Outbox out;
  out.head = "bye";
  out.add_head();
  REQUIRE(t->write(out) == 0);
  REQUIRE(t->shutdown() == 0);
  // The write ends (and the FIN goes) once the loop turns; the peer then reads the bytes and
  // the end of the stream (a blocking read with a timeout: nothing else wakes the loop).
  h.run_nowait();
  timeval timeout{5, 0};
  setsockopt(p.peer, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string got;
  while (true) {
    char buf[16];
    ssize_t n = recv(p.peer, buf, sizeof buf, 0);
    if (n <= 0) {
      CHECK(n == 0);  // EOF after the bytes
      break;
    }
    got.append(buf, static_cast<size_t>(n));
  }
  CHECK(got == "bye");
  REQUIRE(send(p.peer, "more", 4, 0) == 4);
  h.run_until([&] { return !h.reads.empty(); });
  CHECK(text(h.in) == "more");
}

TEST_CASE("transport: a refused connect is reported, a connect closed early reports nothing") {
  Harness h;
  sockaddr_in addr{};
  REQUIRE(uv_ip4_addr("127.0.0.1", testing::refused_port(), &addr) == 0);

  TransportPtr t = TcpTransport::create(h.context());
  t->attach(&h, &h.in);
  REQUIRE(t->connect(reinterpret_cast<sockaddr*>(&addr)) == 0);
  h.run_until([&] { return !h.connected.empty(); });
  CHECK(h.connected[0] == UV_ECONNREFUSED);

  Harness quiet;
  TransportPtr t2 = TcpTransport::create(quiet.context());
  t2->attach(&quiet, &quiet.in);
  REQUIRE(t2->connect(reinterpret_cast<sockaddr*>(&addr)) == 0);
  t2.reset();
  quiet.run_nowait();
  quiet.run_nowait();
  CHECK(quiet.connected.empty());
}

TEST_CASE("transport: a connect is reported, and a reset by the peer ends reading with an error") {
  Harness h;
  sockaddr_in addr;
  int listener = testing::bound_loopback_socket(addr);
  REQUIRE(listen(listener, 1) == 0);

  TransportPtr t = TcpTransport::create(h.context());
  t->attach(&h, &h.in);
  REQUIRE(t->connect(reinterpret_cast<sockaddr*>(&addr)) == 0);
  h.run_until([&] { return !h.connected.empty(); });
  CHECK(h.connected == std::vector<int>{0});
  int peer = accept(listener, nullptr, nullptr);
  REQUIRE(peer >= 0);
  ::close(listener);
  t->read_start();
  REQUIRE(send(peer, "hi", 2, 0) == 2);
  h.run_until([&] { return !h.reads.empty(); });
  CHECK(text(h.in) == "hi");
  // SO_LINGER 0: the close sends RST.
  linger hard{1, 0};
  setsockopt(peer, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  ::close(peer);
  h.run_until([&] { return h.reads.size() == 2; });
  CHECK(h.reads[1] == UV_ECONNRESET);
  CHECK_FALSE(t->reading());
  // Nothing more comes, and the loop does not spin on the dead socket.
  h.run_nowait();
  h.run_nowait();
  CHECK(h.reads.size() == 2);
}

TEST_CASE("transport: a write larger than the socket takes goes out in parts, then reports once") {
  Harness h;
  Pair p;
  int small = 4096;
  setsockopt(p.peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  TransportPtr t = TcpTransport::open(h.context(), p.ours);
  t->attach(&h, &h.in);
  Outbox out;
  out.head = "head:";
  out.add_head();
  std::string body(2 * 1024 * 1024, 'b');
  body.back() = 'z';
  out.add_data_copy(body.data(), body.size());
  REQUIRE(t->write(out, true) == 0);
  REQUIRE(out.in_flight());  // the socket took part of it
  CHECK(h.written.empty());
  // The peer reads everything: the rest goes as the socket drains, and one callback comes.
  std::string got;
  h.run_until([&] {
    got += p.read_peer();
    return !h.written.empty();
  });
  got += p.read_peer();
  CHECK(h.written == std::vector<int>{0});
  CHECK_FALSE(out.in_flight());
  REQUIRE(got.size() == 5 + body.size());
  CHECK(got.compare(0, 5, "head:") == 0);
  CHECK(got.back() == 'z');
}

}  // namespace
}  // namespace bulwark
