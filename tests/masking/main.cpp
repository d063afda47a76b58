#define BOOST_TEST_MODULE meap masking
#include <boost/test/included/unit_test.hpp>
