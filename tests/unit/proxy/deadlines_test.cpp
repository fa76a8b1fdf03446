#include "proxy/deadlines.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <vector>

#include "tests/unit/proxy/test_loop.h"

namespace bulwark {
namespace {

using testing::Loop;

struct Waiter : DeadlineList::Entry {
  Waiter(int id, std::vector<int>* fired) : id(id), fired(fired) {}
  void on_deadline() override {
    fired->push_back(id);
    if (then) then(*this);
  }
  int id;
  std::vector<int>* fired;
  std::function<void(Waiter&)> then;
};

TEST_CASE("deadlines: entries fire in the order they joined, each once") {
  Loop l;
  std::vector<int> fired;
  {
    DeadlineList list(&l.loop, 10);
    Waiter a(1, &fired), b(2, &fired), c(3, &fired);
    list.add(a);
    list.add(b);
    list.add(c);
    CHECK(list.size() == 3);
    CHECK(a.deadline() <= b.deadline());
    l.run_until([&] { return fired.size() == 3; });
    CHECK(fired == std::vector<int>{1, 2, 3});
    CHECK_FALSE(a.waiting());
    CHECK(list.size() == 0);
  }
}

TEST_CASE("deadlines: a cancelled or destroyed entry never fires, the next one still does") {
  Loop l;
  std::vector<int> fired;
  DeadlineList list(&l.loop, 10);
  Waiter first(1, &fired), last(3, &fired);
  list.add(first);
  {
    Waiter gone(2, &fired);
    list.add(gone);
  }  // destroyed while waiting
  list.add(last);
  first.cancel();  // the one the timer was armed for
  CHECK(list.size() == 1);
  l.run_until([&] { return !fired.empty(); });
  CHECK(fired == std::vector<int>{3});
}

TEST_CASE("deadlines: joining again moves an entry to the end, from any list") {
  Loop l;
  std::vector<int> fired;
  DeadlineList short_list(&l.loop, 5), long_list(&l.loop, 40);
  Waiter a(1, &fired), b(2, &fired);
  short_list.add(a);
  short_list.add(b);
  short_list.add(a);  // a starts over, behind b
  CHECK(short_list.size() == 2);
  long_list.add(b);  // b leaves the short list for the long one
  CHECK(short_list.size() == 1);
  CHECK(long_list.size() == 1);
  l.run_until([&] { return fired.size() == 2; });
  CHECK(fired == std::vector<int>{1, 2});
}

TEST_CASE("deadlines: an entry may join again from its own callback") {
  Loop l;
  std::vector<int> fired;
  DeadlineList list(&l.loop, 5);
  Waiter a(1, &fired);
  int rounds = 0;
  a.then = [&](Waiter& w) {
    if (++rounds < 3) list.add(w);
  };
  list.add(a);
  l.run_until([&] { return fired.size() == 3; });
  CHECK_FALSE(a.waiting());
}

}  // namespace
}  // namespace bulwark
