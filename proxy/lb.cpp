#include "proxy/lb.h"

namespace bulwark {

FastRandom::FastRandom(uint64_t seed) {
  // splitmix64 to spread any seed over both words.
  auto mix = [](uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  s0_ = mix(seed);
  s1_ = mix(seed);
}

uint64_t FastRandom::next() {
  uint64_t x = s0_;
  const uint64_t y = s1_;
  s0_ = y;
  x ^= x << 23;
  s1_ = x ^ y ^ (x >> 17) ^ (y >> 26);
  return s1_ + y;
}

LoadBalancer::Weights LoadBalancer::weights_of(const std::vector<LbCandidate>& c) {
  Weights w;
  for (const LbCandidate& x : c) {
    w.total += x.weight;
    w.equal = w.equal && x.weight == c[0].weight;
  }
  return w;
}

size_t LoadBalancer::pick(std::vector<LbCandidate>& c, FastRandom& random, const Weights& w) {
  const size_t n = c.size();
  if (n == 1) return 0;
  switch (policy_) {
    case config::LbPolicy::kRoundRobin: {
      if (w.equal) return next_++ % n;
      const auto total = static_cast<int64_t>(w.total);
      // Smooth weighted round robin (as nginx): spreads a heavy endpoint's turns evenly.
      size_t best = 0;
      for (size_t i = 0; i < n; ++i) {
        c[i].current_weight += c[i].weight;
        if (c[i].current_weight > c[best].current_weight) best = i;
      }
      c[best].current_weight -= total;
      return best;
    }
    case config::LbPolicy::kLeastRequest: {
      // Power of two choices: two distinct random candidates, the less loaded wins, the first
      // one on a tie. With weights that differ (configured, or slow start), each is drawn with
      // probability by weight: idle endpoints always tie, and then the draw alone honours the
      // weights.
      size_t a = 0, b = 0;
      const uint64_t total = w.total;
      if (w.equal) {
        a = random.below(static_cast<uint32_t>(n));
        b = random.below(static_cast<uint32_t>(n - 1));
        if (b >= a) ++b;
      } else {
        auto draw = [&](uint64_t r) {
          for (size_t i = 0; i < n; ++i) {
            if (r < c[i].weight) return i;
            r -= c[i].weight;
          }
          return n - 1;
        };
        a = draw(random.next() % total);
        // b from the others: a draw over the total without a's share, stepping over it.
        uint64_t a_start = 0;
        for (size_t i = 0; i < a; ++i) a_start += c[i].weight;
        uint64_t r = random.next() % (total - c[a].weight);
        if (r >= a_start) r += c[a].weight;
        b = draw(r);
      }
      // Weight scales capacity: compare active/weight without division.
      uint64_t la = static_cast<uint64_t>(c[a].active_requests) * c[b].weight;
      uint64_t lb = static_cast<uint64_t>(c[b].active_requests) * c[a].weight;
      return lb < la ? b : a;
    }
    case config::LbPolicy::kRandom: {
      uint64_t r = random.next() % w.total;
      for (size_t i = 0; i < n; ++i) {
        if (r < c[i].weight) return i;
        r -= c[i].weight;
      }
      return n - 1;
    }
  }
  return 0;
}

}  // namespace bulwark
