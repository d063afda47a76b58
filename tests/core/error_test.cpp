// meap::error messages: function, argument, value and expectation, in that order.
#include <meap/meap.hpp>

#include <boost/test/unit_test.hpp>

#include <string>

BOOST_AUTO_TEST_SUITE(errors)

BOOST_AUTO_TEST_CASE(message_names_function_argument_value_and_expectation) {
  try {
    meap::check_argument(false, "meap::fixed_ratio", "ratio", 1.5, "a ratio in (0, 1)");
    BOOST_FAIL("check_argument did not throw");
  } catch (const meap::error& e) {
    BOOST_TEST(std::string(e.what()) == "meap::fixed_ratio: argument 'ratio' = 1.5: expected a ratio in (0, 1)");
    BOOST_TEST(e.function() == "meap::fixed_ratio");
    BOOST_TEST(e.argument() == "ratio");
  }
  BOOST_CHECK_NO_THROW(meap::check_argument(true, "f", "x", 0, "anything"));
  BOOST_CHECK_EXCEPTION(meap::throw_argument_error("f", "flag", true, "false"), meap::error,
                        [](const meap::error& e) { return std::string(e.what()) == "f: argument 'flag' = true: expected false"; });
  BOOST_CHECK_EXCEPTION(meap::throw_argument_error("f", "id", std::int8_t{-3}, "a small id"), meap::error,
                        [](const meap::error& e) { return std::string(e.what()).find("= -3:") != std::string::npos; });
  // meap::error is a std::runtime_error, so generic handlers catch it too.
  BOOST_CHECK_THROW(meap::throw_argument_error("f", "x", 1, "2"), std::runtime_error);
}

BOOST_AUTO_TEST_SUITE_END()
