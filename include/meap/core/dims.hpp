// meap/core/dims.hpp: a small fixed-capacity list of extents or strides (rank <= max_rank),
// trivially copyable so that views built from it can be passed by value to CUDA kernels.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/error.hpp>

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace meap {

using index_t = std::int64_t;

inline constexpr int max_rank = 8;

class dims {
 public:
  constexpr dims() = default;

  // Throws meap::error when more than max_rank values are given.
  dims(std::initializer_list<index_t> values) { assign(values.begin(), values.size()); }
  explicit dims(std::span<const index_t> values) { assign(values.data(), values.size()); }

  MEAP_HOST_DEVICE constexpr int rank() const { return rank_; }
  MEAP_HOST_DEVICE constexpr index_t operator[](int i) const { return values_[i]; }
  MEAP_HOST_DEVICE constexpr index_t& operator[](int i) { return values_[i]; }
  MEAP_HOST_DEVICE constexpr const index_t* begin() const { return values_; }
  MEAP_HOST_DEVICE constexpr const index_t* end() const { return values_ + rank_; }

  // Product of the values (1 for rank 0).
  MEAP_HOST_DEVICE constexpr index_t product() const {
    index_t p = 1;
    for (int i = 0; i < rank_; ++i) p *= values_[i];
    return p;
  }

  // A copy with `value` appended / the dimension `axis` removed. Caller keeps the rank in range.
  MEAP_HOST_DEVICE constexpr dims appended(index_t value) const {
    dims d = *this;
    d.values_[d.rank_++] = value;
    return d;
  }
  MEAP_HOST_DEVICE constexpr dims erased(int axis) const {
    dims d;
    for (int i = 0; i < rank_; ++i)
      if (i != axis) d.values_[d.rank_++] = values_[i];
    return d;
  }

  friend constexpr bool operator==(const dims& a, const dims& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.values_[i] != b.values_[i]) return false;
    return true;
  }

 private:
  void assign(const index_t* values, std::size_t count) {
    check_argument(count <= static_cast<std::size_t>(max_rank), "meap::dims", "values", count,
                   "at most meap::max_rank (8) values");
    rank_ = static_cast<int>(count);
    for (int i = 0; i < rank_; ++i) values_[i] = values[i];
  }

  int rank_ = 0;
  index_t values_[max_rank] = {};
};

// "(2, 3, 4)"
inline std::string to_string(const dims& d) {
  std::string text = "(";
  for (int i = 0; i < d.rank(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(d[i]);
  }
  return text + ")";
}

// Row-major (C order) strides for `shape`, in elements.
MEAP_HOST_DEVICE constexpr dims contiguous_strides(const dims& shape) {
  dims strides = shape;
  index_t step = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    strides[i] = step;
    step *= shape[i];
  }
  return strides;
}

}  // namespace meap
