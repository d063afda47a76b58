#define BOOST_TEST_MODULE meap kernels
#include <boost/test/included/unit_test.hpp>
