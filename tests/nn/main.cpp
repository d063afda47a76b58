#define BOOST_TEST_MODULE meap nn
#include <boost/test/included/unit_test.hpp>
