// SPDX-License-Identifier: MIT
// A small bounded blocking queue for the dump pipeline (loader → model → writer), so that memory
// stays at a fixed number of batches whatever the data set size.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

namespace shapebias::tools {

template <class T>
class bounded_queue {
 public:
  explicit bounded_queue(std::size_t capacity) : cap_(capacity) {}

  /// Blocks while full. Returns false (dropping v) when the queue was closed.
  bool push(T v) {
    std::unique_lock lk(m_);
    not_full_.wait(lk, [&] { return q_.size() < cap_ || closed_; });
    if (closed_) return false;
    q_.push_back(std::move(v));
    not_empty_.notify_one();
    return true;
  }

  /// Blocks while empty. Returns nullopt once the queue is closed and drained.
  std::optional<T> pop() {
    std::unique_lock lk(m_);
    not_empty_.wait(lk, [&] { return !q_.empty() || closed_; });
    if (q_.empty()) return std::nullopt;
    T v = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return v;
  }

  /// No more pushes; pending items can still be popped.
  void close() {
    std::lock_guard lk(m_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  std::size_t cap_;
  std::deque<T> q_;
  bool closed_ = false;
  std::mutex m_;
  std::condition_variable not_full_, not_empty_;
};

}  // namespace shapebias::tools
