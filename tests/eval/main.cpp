#define BOOST_TEST_MODULE meap eval
#include <boost/test/unit_test.hpp>
