// netdelay: adds a fixed delay to the packets of one netfilter queue, for the network-chaos
// scenarios of loadtest/run, on kernels without `tc netem` (this one has no sch_netem).
//
//   netdelay --queue N --delay-ms D
//
// Every packet iptables sends to queue N (-j NFQUEUE --queue-num N) is held D milliseconds, then
// accepted; nothing is dropped or reordered. Run it in the network namespace of the rule (a
// queue belongs to its namespace), before the rule goes in: a queue nobody listens on drops what
// it gets. Speaks the nfnetlink_queue protocol over a raw netlink socket (no libnetfilter_queue),
// asks for packet metadata only (no payload copy), and accepts held packets in batches: the
// delay is the same for all, so they are due in the order they came, and one verdict accepts
// every packet up to the latest due. Prints "netdelay queue N delay D ms" once bound; SIGTERM
// and SIGINT accept what is held and exit 0.

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

uint64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
}

// A netlink message under construction: header, nfgenmsg, then attributes.
class Message {
 public:
  Message(uint16_t type, uint16_t queue, uint8_t family) {
    auto* nlh = header();
    nlh->nlmsg_len = NLMSG_LENGTH(sizeof(nfgenmsg));
    nlh->nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_QUEUE << 8) | type);
    nlh->nlmsg_flags = NLM_F_REQUEST;
    auto* nfg = static_cast<nfgenmsg*>(NLMSG_DATA(nlh));
    nfg->nfgen_family = family;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons(queue);
  }
  void add(uint16_t type, const void* data, size_t size) {
    auto* nlh = header();
    auto* attr = reinterpret_cast<nlattr*>(buf_ + NLMSG_ALIGN(nlh->nlmsg_len));
    attr->nla_type = type;
    attr->nla_len = static_cast<uint16_t>(NLA_HDRLEN + size);
    std::memcpy(reinterpret_cast<char*>(attr) + NLA_HDRLEN, data, size);
    nlh->nlmsg_len = NLMSG_ALIGN(nlh->nlmsg_len) + NLA_ALIGN(attr->nla_len);
  }
  bool send(int fd) const {
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf_);
    return sendto(fd, buf_, nlh->nlmsg_len, 0, reinterpret_cast<const sockaddr*>(&kernel),
                  sizeof kernel) == static_cast<ssize_t>(nlh->nlmsg_len);
  }

 private:
  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buf_); }
  alignas(nlmsghdr) char buf_[256] = {};
};

bool configure(int fd, uint16_t queue) {
  Message bind(NFQNL_MSG_CONFIG, queue, AF_UNSPEC);
  nfqnl_msg_config_cmd cmd{};
  cmd.command = NFQNL_CFG_CMD_BIND;
  bind.add(NFQA_CFG_CMD, &cmd, sizeof cmd);
  Message params(NFQNL_MSG_CONFIG, queue, AF_UNSPEC);
  nfqnl_msg_config_params p{};
  p.copy_range = htonl(0);
  p.copy_mode = NFQNL_COPY_META;
  params.add(NFQA_CFG_PARAMS, &p, sizeof p);
  const uint32_t maxlen = htonl(65536);  // packets held at once (a second at 65 k packets/s)
  params.add(NFQA_CFG_QUEUE_MAXLEN, &maxlen, sizeof maxlen);
  return bind.send(fd) && params.send(fd);
}

void accept_up_to(int fd, uint16_t queue, uint32_t id) {
  Message verdict(NFQNL_MSG_VERDICT_BATCH, queue, AF_UNSPEC);
  nfqnl_msg_verdict_hdr v{};
  v.verdict = htonl(NF_ACCEPT);
  v.id = htonl(id);
  verdict.add(NFQA_VERDICT_HDR, &v, sizeof v);
  if (!verdict.send(fd)) std::perror("netdelay: verdict");
}

// The packet id of an NFQNL_MSG_PACKET message, or false.
bool packet_id(const nlmsghdr* nlh, uint32_t* id) {
  const size_t header = NLMSG_LENGTH(sizeof(nfgenmsg));
  if (nlh->nlmsg_len < header) return false;
  const char* at = reinterpret_cast<const char*>(nlh) + NLMSG_ALIGN(header);
  const char* end = reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len;
  while (at + NLA_HDRLEN <= end) {
    const auto* attr = reinterpret_cast<const nlattr*>(at);
    if (attr->nla_len < NLA_HDRLEN || at + attr->nla_len > end) return false;
    if ((attr->nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR &&
        attr->nla_len >= NLA_HDRLEN + sizeof(nfqnl_msg_packet_hdr)) {
      nfqnl_msg_packet_hdr hdr;
      std::memcpy(&hdr, at + NLA_HDRLEN, sizeof hdr);
      *id = ntohl(hdr.packet_id);
      return true;
    }
    at += NLA_ALIGN(attr->nla_len);
  }
  return false;
}

bool parse_number(std::string_view text, unsigned long max, unsigned long* out) {
  if (text.empty() || text.size() > 9) return false;
  unsigned long v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned long>(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long queue = 0, delay_ms = 0;
  bool have_queue = false, have_delay = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view flag = argv[i];
    if (flag == "--queue") {
      have_queue = parse_number(argv[i + 1], 65535, &queue);
    } else if (flag == "--delay-ms") {
      have_delay = parse_number(argv[i + 1], 60'000, &delay_ms);
    }
  }
  if (!have_queue || !have_delay || argc != 5) {
    std::fprintf(stderr, "usage: netdelay --queue N --delay-ms D (D up to 60000)\n");
    return 2;
  }
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) {
    std::perror("netdelay: netlink socket");
    return 1;
  }
  int rcvbuf = 16 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      !configure(fd, static_cast<uint16_t>(queue))) {
    std::perror("netdelay: bind the queue");
    return 1;
  }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::printf("netdelay queue %lu delay %lu ms\n", queue, delay_ms);
  std::fflush(stdout);

  struct Held {
    uint32_t id;
    uint64_t due_ms;
  };
  std::deque<Held> held;
  alignas(nlmsghdr) static char buf[1 << 16];
  while (!g_stop) {
    int timeout = -1;
    if (!held.empty()) {
      const uint64_t now = now_ms();
      timeout = held.front().due_ms > now ? static_cast<int>(held.front().due_ms - now) : 0;
    }
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(&p, 1, timeout);
    if (ready < 0 && errno != EINTR) {
      std::perror("netdelay: poll");
      break;
    }
    if (ready > 0) {
      // Everything queued now, without blocking.
      while (true) {
        const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
          if (errno == ENOBUFS) continue;  // the kernel dropped messages: packets it holds still
          break;
        }
        const uint64_t due = now_ms() + delay_ms;
        int left = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nlh, left);
             nlh = NLMSG_NEXT(nlh, left)) {
          uint32_t id = 0;
          if ((nlh->nlmsg_type & 0xff) == NFQNL_MSG_PACKET && packet_id(nlh, &id))
            held.push_back({id, due});
        }
      }
    }
    const uint64_t now = now_ms();
    uint32_t last = 0;
    bool any = false;
    while (!held.empty() && held.front().due_ms <= now) {
      last = held.front().id;
      any = true;
      held.pop_front();
    }
    if (any) accept_up_to(fd, static_cast<uint16_t>(queue), last);
  }
  if (!held.empty()) accept_up_to(fd, static_cast<uint16_t>(queue), held.back().id);
  close(fd);
  return 0;
}
