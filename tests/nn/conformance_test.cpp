// Module conformance on the CPU: the float64 instantiation of every module against finite
// differences, the float32 one against float64 (tests/nn/conformance.hpp). The CUDA
// instantiations of the same bodies are in conformance_cuda_test.cu.
#include "nn/conformance.hpp"

#include <boost/test/unit_test.hpp>

BOOST_AUTO_TEST_SUITE(conformance_cpu)

BOOST_AUTO_TEST_CASE(every_module_in_fp64_matches_finite_differences) {
  conformance::check_every_module<meap::fp64>(meap::cpu{});
}

BOOST_AUTO_TEST_CASE(every_module_in_fp32_matches_fp64) { conformance::check_every_module<meap::fp32>(meap::cpu{}); }

BOOST_AUTO_TEST_SUITE_END()
