#define BOOST_TEST_MODULE meap nn
#include <boost/test/unit_test.hpp>
