#pragma once
// What the kernel says of bulwark's sockets on 127.0.0.1 (sock_diag): how many bytes bulwark has
// read from a peer and handed to it. Tests wait on these instead of on time: "bulwark has read
// the client's FIN", "bulwark holds a queued write".

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include "tests/support/harness.h"

namespace bulwark::test {

inline uint16_t port_of(int fd, bool peer) {
  sockaddr_in address{};
  socklen_t size = sizeof address;
  if (peer) {
    ::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &size);
  } else {
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  }
  return ntohs(address.sin_port);
}

// Bulwark's end of a TCP connection on 127.0.0.1 as the kernel sees it, from sock_diag.
struct KernelView {
  uint64_t bytes_received = 0;  // from the peer, in order; a FIN counts one
  uint64_t bytes_acked = 0;     // of what bulwark wrote, acknowledged by the peer
  uint32_t unread = 0;          // received and not yet read by bulwark (a FIN counts one)
  uint32_t unacked = 0;         // written by bulwark and not yet acknowledged
  uint32_t send_buffer = 0;
  uint32_t queued = 0;  // send queue memory (the kernel takes no more once it reaches send_buffer)

  // What bulwark has read from the socket (an end-of-stream it saw counts one).
  uint64_t taken() const { return bytes_received - unread; }
  // What bulwark has handed to the socket.
  uint64_t given() const { return bytes_acked + unacked; }
};

// Bulwark's socket 127.0.0.1:local_port <-> 127.0.0.1:remote_port, or nullopt when there is none.
// On a connection bulwark opened, the kernel counts the acknowledged SYN as one byte acked.
inline std::optional<KernelView> kernel_view(uint16_t local_port, uint16_t remote_port,
                                             bool opened_by_bulwark = false) {
  int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return std::nullopt;
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } message{};
  message.header.nlmsg_len = sizeof message;
  message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  message.request.sdiag_family = AF_INET;
  message.request.sdiag_protocol = IPPROTO_TCP;
  constexpr unsigned kTimeWait = 6, kListen = 10;  // TCP states (net/tcp_states.h)
  message.request.idiag_states = ~((1u << kTimeWait) | (1u << kListen));
  message.request.idiag_ext = (1u << (INET_DIAG_INFO - 1)) | (1u << (INET_DIAG_SKMEMINFO - 1));
  std::optional<KernelView> found;
  if (::send(fd, &message, sizeof message, 0) != static_cast<ssize_t>(sizeof message)) {
    ::close(fd);
    return found;
  }
  std::vector<char> buffer(64 * 1024);
  bool done = false;
  while (!done) {
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) break;
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        done = true;
        break;
      }
      auto* diag = static_cast<inet_diag_msg*>(NLMSG_DATA(h));
      if (ntohs(diag->id.idiag_sport) != local_port || ntohs(diag->id.idiag_dport) != remote_port ||
          diag->id.idiag_src[0] != htonl(INADDR_LOOPBACK)) {
        continue;
      }
      KernelView view;
      view.unread = diag->idiag_rqueue;
      view.unacked = diag->idiag_wqueue;
      int attributes = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *diag));
      for (auto* a = reinterpret_cast<rtattr*>(diag + 1); RTA_OK(a, attributes);
           a = RTA_NEXT(a, attributes)) {
        if (a->rta_type == INET_DIAG_INFO) {
          tcp_info info{};
          std::memcpy(&info, RTA_DATA(a), std::min<size_t>(RTA_PAYLOAD(a), sizeof info));
          view.bytes_received = info.tcpi_bytes_received;
          view.bytes_acked = info.tcpi_bytes_acked - (opened_by_bulwark ? 1 : 0);
        } else if (a->rta_type == INET_DIAG_SKMEMINFO &&
                   RTA_PAYLOAD(a) >= sizeof(uint32_t) * SK_MEMINFO_VARS) {
          auto* memory = static_cast<const uint32_t*>(RTA_DATA(a));
          view.send_buffer = memory[SK_MEMINFO_SNDBUF];
          view.queued = memory[SK_MEMINFO_WMEM_QUEUED];
        }
      }
      found = view;
    }
  }
  ::close(fd);
  return found;
}

// Looks at a socket of bulwark until two looks in a row agree: bulwark has done what the last
// event on its connections asked of it. Returns the last look.
inline std::optional<KernelView> settled(const std::function<std::optional<KernelView>()>& look) {
  std::optional<KernelView> before, now;
  eventually(
      [&] {
        before = now;
        now = look();
        return before && now && before->taken() == now->taken() && before->given() == now->given();
      },
      kDefaultTimeout, Millis{5});
  return now;
}

}  // namespace bulwark::test
