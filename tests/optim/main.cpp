#define BOOST_TEST_MODULE meap optim
#include <boost/test/included/unit_test.hpp>
