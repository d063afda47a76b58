// tests/optim/support.hpp: parameters held in vectors, and the error check shared by the optim tests.
#pragma once

#include <meap/core/tensor_view.hpp>
#include <meap/optim/parameter.hpp>

#include <boost/test/unit_test.hpp>

#include "support/errors.hpp"

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace optim_test {

// One parameter whose value and gradient live in vectors.
template <class T>
struct stored_parameter {
  std::string name;
  meap::dims shape;
  std::vector<T> value;
  std::vector<T> grad;
  bool decay = true;

  stored_parameter(std::string n, meap::dims s, std::vector<T> v, bool d = true)
      : name(std::move(n)), shape(s), value(std::move(v)), grad(value.size(), T(0)), decay(d) {}

  meap::named_parameter<T, meap::cpu> parameter() {
    return {name, meap::make_view(std::span<T>(value), shape), meap::make_view(std::span<T>(grad), shape), decay};
  }
};

template <class T>
std::vector<meap::named_parameter<T, meap::cpu>> parameters(std::vector<stored_parameter<T>>& stored) {
  std::vector<meap::named_parameter<T, meap::cpu>> result;
  for (auto& s : stored) result.push_back(s.parameter());
  return result;
}

using meap_test::error_says;

}  // namespace optim_test
