#define BOOST_TEST_MODULE meap data
#include <boost/test/unit_test.hpp>
