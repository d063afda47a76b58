// meap/eval/eval.hpp: checking what a trained model can do, for every device and precision:
// retrieval task generators and their scoring, generation with a key/value cache, target
// log-likelihoods and perplexity, the MEAP paper's attention analysis, and the statistics of a
// comparison over seeds. docs/eval.md has the definitions.
#pragma once

#include <meap/eval/attention_analysis.hpp>
#include <meap/eval/generate.hpp>
#include <meap/eval/likelihood.hpp>
#include <meap/eval/scoring.hpp>
#include <meap/eval/statistics.hpp>
#include <meap/eval/tasks.hpp>
#include <meap/eval/token_span.hpp>
