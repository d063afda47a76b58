#define BOOST_TEST_MODULE meap io
#include <boost/test/unit_test.hpp>
