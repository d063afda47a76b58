// studies/harness.hpp: the seed loop, the statistics over seeds, the CSV files and the plot that
// meap_demo and meap_finetune_study share.
#include "support/errors.hpp"
#include "support/tiny_model.hpp"

#include "harness.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

using meap_test::error_says;

namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A fresh directory under the system's temporary directory, removed at the end of the test.
struct scratch_directory {
  std::filesystem::path path;
  explicit scratch_directory(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("meap_studies_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
  }
  ~scratch_directory() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// What a study's per-seed result looks like to the harness.
struct toy_result {
  std::uint64_t seed = 0;
  double seconds = -1;
  double ntp = 0, meap = 0;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(harness)

BOOST_AUTO_TEST_CASE(csv_rows_expand_statistics_and_must_match_the_header) {
  scratch_directory dir("csv");
  std::filesystem::create_directories(dir.path);
  const auto c = meap_studies::paired_comparison(std::vector<double>{1, 2}, std::vector<double>{2, 4});
  meap_studies::csv_table table("label,seeds,base_mean,base_sd,a_mean,a_sd,b_mean,b_sd,d_mean,d_sd,t,p_t,p_flip");
  table.row("all", 2, meap_studies::summarize(std::vector<double>{3, 5}), c);
  table.write(dir.path / "table.csv");
  // d = {1, 2}: mean 1.5, sd 0.707107, t = 3, its p with 1 dof = 0.204833; sign flip: 2 of 4 patterns.
  BOOST_TEST(read_file(dir.path / "table.csv") ==
             "label,seeds,base_mean,base_sd,a_mean,a_sd,b_mean,b_sd,d_mean,d_sd,t,p_t,p_flip\n"
             "all,2,4,1.41421,1.5,0.707107,3,1.41421,1.5,0.707107,3,0.204833,0.5\n");
  BOOST_CHECK_THROW(table.row("too", "few"), meap::error);
  // Nothing but whole files under the final name: no temporary is left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path)) ++files;
  BOOST_TEST(files == 1);
}

BOOST_AUTO_TEST_CASE(model_description_names_its_size_and_shape) {
  // meap_demo's model (docs/demo.md): 139,968 parameters.
  auto c = meap_test::tiny_llama(307, 512, 64, 176);
  c.heads = 4;
  c.kv_heads = 4;
  BOOST_TEST(meap_studies::describe_model(c) == "139968-parameter LLaMA (d_model 64, 2 layers, 4 heads, vocab 307)");
}

BOOST_AUTO_TEST_CASE(output_directory_is_created_or_refused_with_the_option) {
  scratch_directory dir("out");
  meap_studies::prepare_output_directory("study", "--out", dir.path / "a" / "b");
  BOOST_TEST(std::filesystem::is_directory(dir.path / "a" / "b"));
  BOOST_TEST(std::filesystem::is_empty(dir.path / "a" / "b"));  // the probe is gone
  BOOST_CHECK_EXCEPTION(meap_studies::prepare_output_directory("study", "--out", "/dev/null/study"), meap::error,
                        error_says("study", "--out", {"/dev/null/study", "a directory that exists or can be created"}));
  BOOST_CHECK_EXCEPTION(meap_studies::prepare_output_directory("study", "--out", ""), meap::error,
                        error_says("study", "--out", {"\"\"", "a directory"}));
}

BOOST_AUTO_TEST_CASE(seed_loop_runs_every_seed_in_order_and_reports_after_each) {
  std::vector<std::uint64_t> seen;
  std::vector<std::size_t> sizes;
  const auto study = meap_studies::run_seeds<toy_result>(
      7, 3,
      [&](const meap_studies::seed_context& seed, toy_result& r) {
        seen.push_back(seed.seed);
        BOOST_TEST(r.seed == seed.seed);  // set before the seed runs
        BOOST_TEST(seed.count == 3);
        BOOST_TEST(seed.index == static_cast<int>(seed.seed - 7));
        seed.say("working");
        seed.say("still working");
        r.ntp = static_cast<double>(seed.seed);
      },
      [&](const std::vector<toy_result>& so_far) {
        sizes.push_back(so_far.size());
        BOOST_TEST(so_far.back().seconds >= 0.0);  // set before after_seed sees it
      });
  BOOST_TEST(seen == (std::vector<std::uint64_t>{7, 8, 9}), boost::test_tools::per_element());
  BOOST_TEST(sizes == (std::vector<std::size_t>{1, 2, 3}), boost::test_tools::per_element());
  BOOST_REQUIRE(study.results.size() == 3u);
  for (std::size_t i = 0; i < study.results.size(); ++i) {
    BOOST_TEST(study.results[i].seed == 7 + i);
    BOOST_TEST(study.results[i].ntp == static_cast<double>(7 + i));
  }
  BOOST_TEST(study.seconds >= study.results.back().seconds);
}

BOOST_AUTO_TEST_CASE(statistics_over_seeds_pair_the_members_per_seed) {
  const std::vector<toy_result> results{{1, 0, 50, 52}, {2, 0, 60, 63}, {3, 0, 55, 55}, {4, 0, 70, 75}, {5, 0, 65, 66}};
  const auto identity = [](double x) { return x; };
  const auto c = meap_studies::compare_over_seeds(results, &toy_result::ntp, &toy_result::meap, identity);
  const auto direct = meap_studies::paired_comparison(std::vector<double>{50, 60, 55, 70, 65},
                                                      std::vector<double>{52, 63, 55, 75, 66});
  BOOST_TEST(c.difference.mean == direct.difference.mean);
  BOOST_TEST(c.t == direct.t);
  BOOST_TEST(c.sign_flip_p == direct.sign_flip_p);
  const auto k = meap_studies::tally_over_seeds(results, &toy_result::ntp, &toy_result::meap, identity);
  BOOST_TEST(k.ahead == 4);
  BOOST_TEST(k.behind == 0);
  BOOST_TEST(k.level == 1);
  const auto s = meap_studies::summarize_over_seeds(results, [](const toy_result& r) { return r.ntp; });
  BOOST_TEST(s.mean == 60.0);
  BOOST_TEST(meap_studies::smallest_sign_flip_p(5) == 2.0 / 32);
  BOOST_TEST(meap_studies::smallest_sign_flip_p(8) == 2.0 / 256);
  BOOST_TEST(meap_studies::format_statistic(std::nan(""), "%.2f") == "-");
  BOOST_TEST(meap_studies::format_statistic(2.345, "%.2f") == "2.35");
}

BOOST_AUTO_TEST_CASE(plot_is_whole_or_absent) {
  scratch_directory dir("plot");
  std::filesystem::create_directories(dir.path);
  meap_studies::gnuplot_figure figure;
  figure.data = "$points << EOD\n1 1\n2 4\nEOD\n";
  figure.commands = "plot $points using 1:2 with lines title 'y'\n";
  figure.width = 200;
  figure.height = 150;
  // Without gnuplot on the PATH: a message, no PNG and nothing else written.
  const char* path = std::getenv("PATH");
  const std::string saved = path != nullptr ? path : "";
  ::setenv("PATH", (dir.path / "empty").c_str(), 1);
  const bool drawn_without = meap_studies::plot_png(dir.path, "figure", figure);
  ::setenv("PATH", saved.c_str(), 1);
  BOOST_TEST(!drawn_without);
  BOOST_TEST(std::filesystem::is_empty(dir.path));
  // With the machine's PATH: either a whole PNG (when gnuplot with pngcairo is installed) or none,
  // and never the temporary it draws into.
  const bool drawn = meap_studies::plot_png(dir.path, "figure", figure);
  BOOST_TEST(std::filesystem::exists(dir.path / "figure.png") == drawn);
  BOOST_TEST(!std::filesystem::exists(dir.path / ".figure.png.tmp"));
  if (drawn) BOOST_TEST(read_file(dir.path / "figure.png").substr(1, 3) == "PNG");
}

BOOST_AUTO_TEST_SUITE_END()
