#define BOOST_TEST_MODULE meap core
#include <boost/test/included/unit_test.hpp>
