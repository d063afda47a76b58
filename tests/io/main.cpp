#define BOOST_TEST_MODULE meap io
#include <boost/test/included/unit_test.hpp>
