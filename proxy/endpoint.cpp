#include "proxy/endpoint.h"

#include <algorithm>

namespace bulwark {

EndpointSet::Groups EndpointSet::groups() const {
  std::vector<uint8_t> priorities;
  for (const Endpoint& e : endpoints) priorities.push_back(e.priority);
  std::sort(priorities.begin(), priorities.end());
  priorities.erase(std::unique(priorities.begin(), priorities.end()), priorities.end());
  Groups g;
  g.health.resize(priorities.size());
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const auto rank =
        std::lower_bound(priorities.begin(), priorities.end(), endpoints[i].priority) -
        priorities.begin();
    g.group_of.push_back(static_cast<size_t>(rank));
    g.routable.push_back(routable(i));
    filters::GroupHealth& h = g.health[g.group_of.back()];
    ++h.total;
    if (g.routable.back()) ++h.routable;
  }
  return g;
}

}  // namespace bulwark
