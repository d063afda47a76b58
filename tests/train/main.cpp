#define BOOST_TEST_MODULE meap train
#include <boost/test/included/unit_test.hpp>
