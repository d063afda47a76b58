// meap/eval/eval.hpp: checking what a trained model can do, for every device and precision:
// retrieval task generators and their scoring, generation with a key/value cache, target
// log-likelihoods and perplexity, the MEAP paper's attention analysis, and the sweep of all of them
// over a checkpoint that meap_eval runs (suite.hpp). docs/eval.md has the definitions. (The
// statistics of a comparison over seeds are study tooling: studies/statistics.hpp.)
#pragma once

#include <meap/eval/attention_analysis.hpp>
#include <meap/eval/generate.hpp>
#include <meap/eval/likelihood.hpp>
#include <meap/eval/scoring.hpp>
#include <meap/eval/suite.hpp>
#include <meap/eval/tasks.hpp>
#include <meap/eval/token_span.hpp>
