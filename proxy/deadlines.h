#pragma once
// Deadlines shared by many objects with the same duration: a listener's idle timeout, its
// request-headers timeout, the lingering close. Entries join a list in the order of their
// deadlines (each is "now + the list's duration"), so one libuv timer per list, armed for the
// first entry, serves them all: joining and leaving are O(1) and touch the timer only when the
// first entry changes. An object waiting on one holds a list hook, not a libuv timer (an idle
// keep-alive connection is smaller by a timer handle and its allocation).

#include <cstdint>

#include "proxy/list.h"
#include "proxy/uv_handle.h"

namespace bulwark {

class DeadlineList {
 public:
  // Something with a deadline in a list. Destroying it takes it out.
  class Entry {
   public:
    Entry() = default;
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;
    // The deadline passed (the entry is out of its list already).
    virtual void on_deadline() = 0;
    // Leaves its list, if in one.
    void cancel();
    bool waiting() const { return list_ != nullptr; }
    uint64_t deadline() const { return deadline_; }

    ListHook<Entry> hook;

   protected:
    ~Entry() { cancel(); }

   private:
    friend class DeadlineList;
    DeadlineList* list_ = nullptr;
    uint64_t deadline_ = 0;
  };

  DeadlineList(uv_loop_t* loop, uint64_t duration_ms);
  DeadlineList(const DeadlineList&) = delete;
  DeadlineList& operator=(const DeadlineList&) = delete;
  ~DeadlineList();

  uint64_t duration_ms() const { return duration_ms_; }
  // `e` leaves the list it is in and waits here until now + duration_ms().
  void add(Entry& e);
  size_t size() const { return entries_.size(); }

 private:
  void remove(Entry& e);
  void arm();
  void on_timer();

  uv_loop_t* loop_;
  uint64_t duration_ms_;
  IntrusiveList<Entry, &Entry::hook> entries_;  // deadlines ascending
  Timer timer_;
  uint64_t armed_for_ = 0;  // the deadline the timer is armed for; 0: not armed
};

}  // namespace bulwark
