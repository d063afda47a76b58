#define BOOST_TEST_MODULE meap layers
#include <boost/test/unit_test.hpp>
