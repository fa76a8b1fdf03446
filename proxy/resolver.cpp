#include "proxy/resolver.h"

#include <netdb.h>

#include <algorithm>
#include <cstring>

#include "proxy/log.h"
#include "proxy/net.h"

namespace bulwark {

ClusterResolver::ClusterResolver(uv_loop_t* loop, const config::ClusterConfig& cluster,
                                 Publish publish)
    : loop_(loop), cluster_(cluster), publish_(std::move(publish)) {
  const auto& eps = cluster.endpoints;
  answers_.resize(eps.size());
  for (size_t i = 0; i < eps.size(); ++i) {
    if (!eps[i].address.is_ip) {
      has_names_ = true;
      continue;
    }
    Endpoint e;
    e.name = eps[i].address.text();
    to_sockaddr(eps[i].address, &e.sockaddr);
    e.address = format_sockaddr(e.sockaddr);
    e.weight = eps[i].weight;
    e.priority = eps[i].priority;
    answers_[i].push_back(e);
  }
  timer_ = Timer::make<&ClusterResolver::resolve_all>(loop, this);
}

void ClusterResolver::start() {
  started_ = true;
  publish();
  if (has_names_) resolve_all();
}

void ClusterResolver::stop() {
  if (stopped_) return;
  stopped_ = true;
  timer_.close();
}

void ClusterResolver::resolve_all() {
  const auto& eps = cluster_.endpoints;
  for (size_t i = 0; i < eps.size(); ++i) {
    if (eps[i].address.is_ip) continue;
    auto* l = new Lookup{{}, this, i};
    l->req.data = l;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    ++outstanding_;
    int rc =
        uv_getaddrinfo(loop_, &l->req, &ClusterResolver::on_resolved, eps[i].address.host.c_str(),
                       std::to_string(eps[i].address.port).c_str(), &hints);
    if (rc != 0) {
      --outstanding_;
      log::warn("dns lookup failed")
          .str("cluster", cluster_.name)
          .str("name", eps[i].address.text())
          .str("error", uv_strerror(rc));
      delete l;
    }
  }
  if (outstanding_ == 0) schedule();
}

void ClusterResolver::on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  auto* l = static_cast<Lookup*>(req->data);
  ClusterResolver* self = l->self;
  size_t i = l->index;
  delete l;
  const config::EndpointConfig& ep = self->cluster_.endpoints[i];
  if (status == 0) {
    std::vector<Endpoint> found;
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
      Endpoint e;
      e.name = ep.address.text();
      std::memcpy(&e.sockaddr, a->ai_addr, a->ai_addrlen);
      e.address = format_sockaddr(e.sockaddr);
      e.weight = ep.weight;
      e.priority = ep.priority;
      bool dup = std::any_of(found.begin(), found.end(),
                             [&](const Endpoint& f) { return f.address == e.address; });
      if (!dup) found.push_back(e);
    }
    self->answers_[i] = std::move(found);
  } else {
    // Keep the last good answer.
    log::warn("dns lookup failed")
        .str("cluster", self->cluster_.name)
        .str("name", ep.address.text())
        .str("error", uv_strerror(status));
  }
  uv_freeaddrinfo(res);
  if (--self->outstanding_ == 0 && !self->stopped_) {
    self->publish();
    self->schedule();
  }
}

void ClusterResolver::schedule() {
  if (stopped_) return;
  timer_.start(static_cast<uint64_t>(std::max<int64_t>(1000, cluster_.dns_refresh.count())));
}

void ClusterResolver::publish() {
  auto set = std::make_shared<EndpointSet>();
  for (const auto& a : answers_) set->endpoints.insert(set->endpoints.end(), a.begin(), a.end());
  std::vector<std::string> now;
  for (const Endpoint& e : set->endpoints) {
    now.push_back(e.address + "/" + std::to_string(e.weight) + "/" + std::to_string(e.priority));
  }
  if (published_ && now == last_) return;
  if (published_) {
    log::info("cluster endpoints changed")
        .str("cluster", cluster_.name)
        .num("endpoints", static_cast<int64_t>(now.size()));
  }
  published_ = true;
  last_ = std::move(now);
  publish_(std::move(set));
}

}  // namespace bulwark
