#define BOOST_TEST_MODULE meap data
#include <boost/test/included/unit_test.hpp>
