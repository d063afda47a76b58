// meap/nn/nn.hpp: the model blocks (CPU): modules, the LLaMA block and model.
#pragma once

#include <meap/nn/config.hpp>
#include <meap/nn/llama.hpp>
#include <meap/nn/modules.hpp>
