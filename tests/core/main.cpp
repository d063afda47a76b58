#define BOOST_TEST_MODULE meap core
#include <boost/test/unit_test.hpp>
