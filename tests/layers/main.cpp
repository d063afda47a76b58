#define BOOST_TEST_MODULE meap layers
#include <boost/test/included/unit_test.hpp>
