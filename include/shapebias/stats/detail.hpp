// SPDX-License-Identifier: MIT
// Helpers shared by the statistics templates: a contiguous row-major view of any xtensor
// expression, and a parallel loop over independent work items.
#pragma once

#include <xtensor/xarray.hpp>
#include <xtensor/xutils.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace shapebias::stats::detail {

/// The values of an expression as one row-major block: the expression's own memory when it is
/// already laid out that way (a container, an adaptor of numpy memory, a contiguous view), or an
/// evaluated copy otherwise.
template <class T>
class row_major_block {
 public:
  template <class E>
  explicit row_major_block(const xt::xexpression<E>& e) {
    const auto& d = e.derived_cast();
    shape_.assign(d.shape().begin(), d.shape().end());
    if constexpr (xt::has_data_interface<E>::value &&
                  std::is_same_v<std::remove_cv_t<typename E::value_type>, T>) {
      if (is_row_major(d)) {
        data_ = d.data() + d.data_offset();
        return;
      }
    }
    copy_ = d;
    data_ = copy_.data();
  }
  const T* data() const noexcept { return data_; }
  const std::vector<std::size_t>& shape() const noexcept { return shape_; }

 private:
  template <class E>
  static bool is_row_major(const E& d) {
    std::size_t expect = 1;
    for (std::size_t k = d.dimension(); k-- > 0;) {
      if (d.shape()[k] != 1 && static_cast<std::size_t>(d.strides()[k]) != expect) return false;
      expect *= d.shape()[k];
    }
    return true;
  }
  std::vector<std::size_t> shape_;
  xt::xarray<T, xt::layout_type::row_major> copy_;
  const T* data_ = nullptr;
};

/// "[2, 3, 4]", for error messages.
inline std::string shape_string(const std::vector<std::size_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

/// Runs f(begin, end) over [0, n) split into `threads` contiguous parts, each on its own thread
/// (the first on the caller's). Rethrows the first exception. Work items must be independent:
/// the result then does not depend on the thread count.
template <class F>
void parallel_for(std::size_t n, unsigned threads, F&& f) {
  const std::size_t parts = std::max<std::size_t>(1, std::min<std::size_t>(threads, n));
  if (parts == 1) {
    f(std::size_t{0}, n);
    return;
  }
  std::vector<std::exception_ptr> errors(parts);
  std::vector<std::thread> pool;
  auto run = [&](std::size_t k) {
    try {
      f(n * k / parts, n * (k + 1) / parts);
    } catch (...) {
      errors[k] = std::current_exception();
    }
  };
  for (std::size_t k = 1; k < parts; ++k) pool.emplace_back(run, k);
  run(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

/// Sorts finite floats ascending, as std::sort does (-0 and +0 compare equal, in either order).
/// An LSD radix sort of the order-preserving integer image of the bits, 11 bits a pass: a few times
/// faster than std::sort on the thousands of samples a quantile sketch compacts at once.
inline void sort_floats(std::vector<float>& v) {
  const std::size_t n = v.size();
  if (n < 512) {
    std::sort(v.begin(), v.end());
    return;
  }
  const auto key = [](float f) {
    std::uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  };
  thread_local std::vector<std::uint32_t> a, b;
  a.resize(n);
  b.resize(n);
  std::array<std::array<std::uint32_t, 2048>, 3> count{};
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t k = key(v[i]);
    a[i] = k;
    ++count[0][k & 2047u];
    ++count[1][(k >> 11) & 2047u];
    ++count[2][k >> 22];
  }
  for (int pass = 0; pass < 3; ++pass) {
    auto& c = count[static_cast<std::size_t>(pass)];
    std::uint32_t sum = 0;
    for (auto& x : c) {
      const std::uint32_t t = x;
      x = sum;
      sum += t;
    }
    const int shift = 11 * pass;
    for (std::size_t i = 0; i < n; ++i) b[c[(a[i] >> shift) & 2047u]++] = a[i];
    a.swap(b);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t k = a[i];
    const std::uint32_t bits = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    std::memcpy(&v[i], &bits, sizeof bits);
  }
}

}  // namespace shapebias::stats::detail
