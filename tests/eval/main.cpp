#define BOOST_TEST_MODULE meap eval
#include <boost/test/included/unit_test.hpp>
