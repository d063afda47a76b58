#define BOOST_TEST_MODULE meap train
#include <boost/test/unit_test.hpp>
