#define BOOST_TEST_MODULE meap kernels
#include <boost/test/unit_test.hpp>
