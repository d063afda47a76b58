// tests/support/gradient_check.hpp: the finite-difference side of the float64 gradient checks.
#pragma once

namespace meap_test {

// (f(x + h) - f(x - h)) / 2h at the coordinate x (a reference into the inputs f reads), which is
// restored afterwards. Central differences in float64 with h = 1e-6 leave an error of about 1e-9
// for the smooth functions tested here, far below the tests' 1e-6 relative tolerances.
template <class F>
double central_difference(double& x, F&& f, double h = 1e-6) {
  const double saved = x;
  x = saved + h;
  const double up = f();
  x = saved - h;
  const double down = f();
  x = saved;
  return (up - down) / (2 * h);
}

}  // namespace meap_test
