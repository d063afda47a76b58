#define BOOST_TEST_MODULE meap studies
#include <boost/test/unit_test.hpp>
