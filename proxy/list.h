#pragma once
// A minimal intrusive doubly-linked list: the element carries its own links, so linking and
// unlinking never allocate. An element is in at most one list per hook.

#include <cstddef>

namespace bulwark {

template <typename T>
struct ListHook {
  T* prev = nullptr;
  T* next = nullptr;
  bool linked = false;
};

template <typename T, ListHook<T> T::*Hook>
class IntrusiveList {
 public:
  bool empty() const { return head_ == nullptr; }
  size_t size() const { return size_; }
  T* front() const { return head_; }
  T* back() const { return tail_; }
  static T* next(T* x) { return (x->*Hook).next; }

  void push_back(T* x) {
    ListHook<T>& h = x->*Hook;
    h.prev = tail_;
    h.next = nullptr;
    h.linked = true;
    if (tail_ != nullptr)
      (tail_->*Hook).next = x;
    else
      head_ = x;
    tail_ = x;
    ++size_;
  }
  void push_front(T* x) {
    ListHook<T>& h = x->*Hook;
    h.prev = nullptr;
    h.next = head_;
    h.linked = true;
    if (head_ != nullptr)
      (head_->*Hook).prev = x;
    else
      tail_ = x;
    head_ = x;
    ++size_;
  }
  // Unlinks x if it is linked (in this list: the caller knows which list x is in).
  void remove(T* x) {
    ListHook<T>& h = x->*Hook;
    if (!h.linked) return;
    if (h.prev != nullptr)
      (h.prev->*Hook).next = h.next;
    else
      head_ = h.next;
    if (h.next != nullptr)
      (h.next->*Hook).prev = h.prev;
    else
      tail_ = h.prev;
    h.prev = h.next = nullptr;
    h.linked = false;
    --size_;
  }
  T* pop_front() {
    T* x = head_;
    if (x != nullptr) remove(x);
    return x;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
  size_t size_ = 0;
};

}  // namespace bulwark
