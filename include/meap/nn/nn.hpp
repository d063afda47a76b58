// meap/nn/nn.hpp: the model blocks, for every device and precision: the parameter store, the
// modules, the LLaMA block and model, the key/value cache of generation, and vocabulary growth.
#pragma once

#include <meap/nn/config.hpp>
#include <meap/nn/kv_cache.hpp>
#include <meap/nn/llama.hpp>
#include <meap/nn/modules.hpp>
#include <meap/nn/parameter_store.hpp>
#include <meap/nn/vocabulary.hpp>
