// The apps' runs on CUDA in fp16, instantiated once for meap_pretrain, meap_finetune and meap_eval
// (apps/runs.hpp): the model and trainer of this precision are compiled here and nowhere else.
#include <meap/cuda.hpp>

#include "runs.hpp"

MEAP_APPS_CUDA_FP16_RUNS()
