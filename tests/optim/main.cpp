#define BOOST_TEST_MODULE meap optim
#include <boost/test/unit_test.hpp>
