#include "filters/slow_start.h"

#include <doctest/doctest.h>

#include <chrono>

namespace bulwark::filters {
namespace {

using namespace std::chrono_literals;

config::SlowStartConfig ramp(double aggression, uint32_t min_percent) {
  config::SlowStartConfig c;
  c.window = 30s;
  c.aggression = aggression;
  c.min_weight_percent = min_percent;
  return c;
}

}  // namespace

TEST_CASE("slow start: a linear ramp from the floor to full weight over the window") {
  const auto c = ramp(1.0, 10);
  CHECK(slow_start_permille(c, 0) == 100);                 // the floor at once
  CHECK(slow_start_permille(c, to_micros(1500ms)) == 100);  // 5% of the way: still the floor
  CHECK(slow_start_permille(c, to_micros(15s)) == 500);
  CHECK(slow_start_permille(c, to_micros(27s)) == 900);
  CHECK(slow_start_permille(c, to_micros(30s)) == 1000);
  CHECK(slow_start_permille(c, to_micros(300s)) == 1000);
}

TEST_CASE("slow start: aggression above 1 gives more weight early, below 1 less") {
  const auto eager = ramp(2.0, 1);
  const auto shy = ramp(0.5, 1);
  // A quarter of the way: sqrt(0.25) = 0.5, 0.25^2 = 0.0625.
  CHECK(slow_start_permille(eager, to_micros(7500ms)) == 500);
  CHECK(slow_start_permille(shy, to_micros(7500ms)) == 63);
  CHECK(slow_start_permille(shy, 0) == 10);  // the floor, 1%
}

}  // namespace bulwark::filters
