#include "filters/priority.h"

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace bulwark::filters {
namespace {

using P = std::vector<uint32_t>;

constexpr uint64_t kMaxRandom = std::numeric_limits<uint64_t>::max();

uint32_t sum(const PriorityLoad& l) {
  return std::accumulate(l.percent.begin(), l.percent.end(), 0u);
}

// The smallest random that picks r in [0, 100) of a 100-percent load (r × 2^64 / 100, rounded
// up): randoms below it pick r - 1 or less.
uint64_t random_for(uint32_t r) {
  const unsigned __int128 n = (static_cast<unsigned __int128>(r) << 64) + 99;
  return static_cast<uint64_t>(n / 100);
}

// ---- the split ----

TEST_CASE("priority: a healthy primary takes everything") {
  const auto l = compute_priority_load({{4, 4}, {4, 4}}, 50);
  CHECK(l.percent == P{100, 0});
  CHECK_FALSE(l.panic);
}

TEST_CASE("priority: a primary with half its endpoints routable has health 70") {
  const auto l = compute_priority_load({{10, 5}, {10, 10}}, 50);
  CHECK(l.percent == P{70, 30});
  CHECK_FALSE(l.panic);
}

TEST_CASE("priority: 72 percent routable still takes all the traffic (overprovisioning 1.4)") {
  CHECK(compute_priority_load({{100, 72}, {10, 10}}, 0).percent == P{100, 0});  // 100.8
  CHECK(compute_priority_load({{100, 71}, {10, 10}}, 0).percent == P{99, 1});   // 99.4
  CHECK(compute_priority_load({{5, 4}, {5, 5}}, 0).percent == P{100, 0});       // 112
  CHECK(compute_priority_load({{3, 2}, {3, 3}}, 0).percent == P{93, 7});        // 93.3
}

TEST_CASE("priority: a dead primary sends everything to the next group") {
  const auto l = compute_priority_load({{4, 0}, {4, 4}}, 0);
  CHECK(l.percent == P{0, 100});
  CHECK_FALSE(l.panic);
}

TEST_CASE("priority: the spill-over goes on down the groups") {
  // P0 health 42, P1 health 28 of what is left, P2 takes the rest.
  CHECK(compute_priority_load({{10, 3}, {10, 2}, {10, 10}}, 0).percent == P{42, 28, 30});
  // Later groups get nothing once the traffic is placed.
  CHECK(compute_priority_load({{10, 5}, {10, 10}, {10, 10}}, 0).percent == P{70, 30, 0});
  // A group takes its own health, at most what is left.
  CHECK(compute_priority_load({{10, 5}, {10, 1}, {10, 10}}, 0).percent == P{70, 14, 16});
}

TEST_CASE("priority: partly healthy groups are scaled up to sum to 100") {
  // Healths 70 and 14 sum to 84: 83.33 and 16.67, rounding lost 1, given to the first group.
  auto l = compute_priority_load({{10, 5}, {10, 1}}, 0);
  CHECK(l.percent == P{84, 16});
  CHECK(sum(l) == 100);
  // Healths 28 and 28: exactly 50/50.
  l = compute_priority_load({{10, 2}, {10, 2}}, 0);
  CHECK(l.percent == P{50, 50});
  // Healths 14, 14, 14: 33 each and 1 left over.
  l = compute_priority_load({{10, 1}, {10, 1}, {10, 1}}, 0);
  CHECK(l.percent == P{34, 33, 33});
  // The left-over goes to the first group with health, not to a dead one.
  l = compute_priority_load({{10, 0}, {10, 1}, {10, 1}, {10, 1}}, 0);
  CHECK(l.percent == P{0, 34, 33, 33});
  // One partly healthy group alone takes everything.
  l = compute_priority_load({{10, 1}}, 0);
  CHECK(l.percent == P{100});
}

TEST_CASE("priority: loads always sum to 100 when anything is routable") {
  for (uint32_t a = 0; a <= 7; ++a) {
    for (uint32_t b = 0; b <= 5; ++b) {
      for (uint32_t c = 0; c <= 3; ++c) {
        CAPTURE(a);
        CAPTURE(b);
        CAPTURE(c);
        const auto l = compute_priority_load({{7, a}, {5, b}, {3, c}}, 50);
        CHECK(sum(l) == (a + b + c == 0 ? 0u : 100u));
        // A group with no routable endpoint never gets traffic.
        if (a == 0) CHECK(l.percent[0] == 0);
        if (b == 0) CHECK(l.percent[1] == 0);
        if (c == 0) CHECK(l.percent[2] == 0);
      }
    }
  }
}

TEST_CASE("priority: empty groups get nothing and are skipped") {
  CHECK(compute_priority_load({{0, 0}, {4, 4}}, 50).percent == P{0, 100});
  CHECK(compute_priority_load({{4, 2}, {0, 0}, {4, 4}}, 0).percent == P{70, 0, 30});
  const auto none = compute_priority_load({{0, 0}, {0, 0}}, 50);
  CHECK(none.percent == P{0, 0});
  CHECK_FALSE(none.panic);
  const auto no_groups = compute_priority_load({}, 50);
  CHECK(no_groups.percent.empty());
  CHECK_FALSE(no_groups.panic);
}

TEST_CASE("priority: no routable endpoint at all is every load 0 and no panic") {
  const auto l = compute_priority_load({{3, 0}, {2, 0}}, 50);
  CHECK(l.percent == P{0, 0});
  CHECK_FALSE(l.panic);
  CHECK(choose_group(l, 0) == -1);
  CHECK(choose_group(l, kMaxRandom) == -1);
}

TEST_CASE("priority: routable counts above the total are taken as the total") {
  CHECK(compute_priority_load({{2, 5}, {2, 2}}, 50).percent == P{100, 0});
}

// ---- panic ----

TEST_CASE("priority: panic starts just under the threshold of all endpoints") {
  // 10 endpoints, threshold 50%: 5 routable is not panic, 4 is.
  auto l = compute_priority_load({{10, 5}}, 50);
  CHECK_FALSE(l.panic);
  l = compute_priority_load({{10, 4}}, 50);
  CHECK(l.panic);
  CHECK(l.percent == P{100});
  // Across groups: 3 of 4 and 0 of 4 is 37.5%.
  l = compute_priority_load({{4, 3}, {4, 0}}, 40);
  CHECK(l.panic);
  l = compute_priority_load({{4, 3}, {4, 0}}, 37);
  CHECK_FALSE(l.panic);
  l = compute_priority_load({{4, 3}, {4, 1}}, 50);  // exactly 50%
  CHECK_FALSE(l.panic);
}

TEST_CASE("priority: a panic threshold of 0 never panics") {
  const auto l = compute_priority_load({{100, 1}}, 0);
  CHECK_FALSE(l.panic);
  CHECK(l.percent == P{100});
}

TEST_CASE("priority: a panic threshold of 100 panics unless every endpoint is routable") {
  CHECK(compute_priority_load({{10, 9}}, 100).panic);
  CHECK_FALSE(compute_priority_load({{10, 10}}, 100).panic);
}

TEST_CASE("priority: a dead primary is not chosen in panic") {
  // 1 routable of 10: panic, but all of the traffic goes to the live backup group.
  const auto l = compute_priority_load({{9, 0}, {1, 1}}, 50);
  CHECK(l.panic);
  CHECK(l.percent == P{0, 100});
  CHECK(choose_group(l, 0) == 1);
  CHECK(choose_group(l, kMaxRandom) == 1);
}

// ---- choose_group ----

TEST_CASE("priority: choose_group follows the cumulative percents to their edges") {
  PriorityLoad l;
  l.percent = {70, 30};
  CHECK(choose_group(l, 0) == 0);
  CHECK(choose_group(l, random_for(70) - 1) == 0);
  CHECK(choose_group(l, random_for(70)) == 1);
  CHECK(choose_group(l, kMaxRandom) == 1);

  l.percent = {0, 25, 0, 75};
  CHECK(choose_group(l, 0) == 1);
  CHECK(choose_group(l, random_for(25) - 1) == 1);
  CHECK(choose_group(l, random_for(25)) == 3);
  CHECK(choose_group(l, kMaxRandom) == 3);

  l.percent = {100, 0};
  CHECK(choose_group(l, kMaxRandom) == 0);
  l.percent = {0, 0, 100};
  CHECK(choose_group(l, 0) == 2);
}

TEST_CASE("priority: choose_group gives a 1 percent group exactly one hundredth of the randoms") {
  PriorityLoad l;
  l.percent = {99, 1};
  CHECK(choose_group(l, random_for(99) - 1) == 0);
  CHECK(choose_group(l, random_for(99)) == 1);
  l.percent = {1, 99};
  CHECK(choose_group(l, random_for(1) - 1) == 0);
  CHECK(choose_group(l, random_for(1)) == 1);
}

TEST_CASE("priority: choose_group splits evenly spread randoms as the loads say") {
  PriorityLoad l;
  l.percent = {50, 30, 20};
  std::array<int, 3> hits{};
  constexpr uint64_t kDraws = 10000;
  constexpr uint64_t kStep = kMaxRandom / kDraws;
  for (uint64_t i = 0; i < kDraws; ++i) {
    const int g = choose_group(l, i * kStep + kStep / 2);  // the middle of each step
    REQUIRE(g >= 0);
    ++hits[static_cast<std::size_t>(g)];
  }
  CHECK(hits[0] == 5000);
  CHECK(hits[1] == 3000);
  CHECK(hits[2] == 2000);
}

TEST_CASE("priority: choose_group with every load 0 or no groups is -1") {
  PriorityLoad l;
  CHECK(choose_group(l, 0) == -1);
  l.percent = {0, 0, 0};
  CHECK(choose_group(l, 0) == -1);
  CHECK(choose_group(l, kMaxRandom) == -1);
}

}  // namespace
}  // namespace bulwark::filters
