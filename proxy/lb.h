#pragma once
// Load-balancing decisions over one worker's view of a cluster's endpoints. Pure logic: no I/O,
// no clock; the caller passes the candidates and a random source, so tests drive it directly.

#include <cstdint>
#include <vector>

#include "config/config.h"

namespace bulwark {

// A small, fast, per-worker random source (xorshift128+); never shared between threads.
class FastRandom {
 public:
  explicit FastRandom(uint64_t seed);
  uint64_t next();
  // Uniform in [0, bound), bound > 0.
  uint32_t below(uint32_t bound) { return static_cast<uint32_t>((next() >> 32) * bound >> 32); }

 private:
  uint64_t s0_, s1_;
};

struct LbCandidate {
  uint32_t weight = 1;
  uint32_t active_requests = 0;
  int64_t current_weight = 0;  // smooth weighted round robin state, owned by the balancer
};

class LoadBalancer {
 public:
  explicit LoadBalancer(config::LbPolicy policy) : policy_(policy) {}
  // What the weights of a candidate list add up to, and whether they are all the same: worked
  // out when the weights change (WorkerCluster's routing table), not at every pick.
  struct Weights {
    uint64_t total = 0;
    bool equal = true;
  };
  static Weights weights_of(const std::vector<LbCandidate>& candidates);

  // The index of the chosen candidate; candidates must not be empty. `weights` must be
  // weights_of(candidates).
  size_t pick(std::vector<LbCandidate>& candidates, FastRandom& random, const Weights& weights);
  size_t pick(std::vector<LbCandidate>& candidates, FastRandom& random) {
    return pick(candidates, random, weights_of(candidates));
  }

 private:
  config::LbPolicy policy_;
  size_t next_ = 0;  // plain round robin when all weights are equal
};

}  // namespace bulwark
