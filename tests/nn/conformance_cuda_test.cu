// Module conformance on CUDA: the same bodies as conformance_test.cpp (tests/nn/conformance.hpp),
// instantiated for meap::cuda in float32, bfloat16 (mixed) and half (mixed), each against the
// float64 CPU reference within the tolerance its rounding stages allow. Label `gpu`: skipped
// (exit 77) without a device.
#define BOOST_TEST_MODULE meap nn cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <meap/cuda.hpp>

#include "nn/conformance.hpp"
#include "support/cuda.hpp"
#include "support/gpu_main.hpp"

BOOST_FIXTURE_TEST_SUITE(conformance_cuda, meap_test::stream_fixture)

BOOST_AUTO_TEST_CASE(every_module_in_fp32_matches_fp64) { conformance::check_every_module<meap::fp32>(device); }

BOOST_AUTO_TEST_CASE(every_module_in_bf16_mixed_matches_fp64) {
  conformance::check_every_module<meap::bf16_mixed>(device);
}

BOOST_AUTO_TEST_CASE(every_module_in_fp16_mixed_matches_fp64) {
  conformance::check_every_module<meap::fp16_mixed>(device);
}

BOOST_AUTO_TEST_SUITE_END()
