#define BOOST_TEST_MODULE meap masking
#include <boost/test/unit_test.hpp>
