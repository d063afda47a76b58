# meap_finetune from the command line, as a user runs it: meap_pretrain writes a small model, then
# meap_finetune fine-tunes it with MEAP on token-id JSONL (the vocabulary grown for [MASK], or the
# pretraining [MASK] reused), writes the Hugging Face model, and a --resume from an earlier
# checkpoint reproduces the loss curve and the model byte for byte; bad input ends with one clear
# line and a non-zero exit (never a crash).
# Run by CTest: cmake -DFINETUNE=<meap_finetune> -DPRETRAIN=<meap_pretrain> -DWORK=<dir> -P this.
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

include(${CMAKE_CURRENT_LIST_DIR}/../support/run_program.cmake)

# `args` must fail with one stderr line matching `pattern`.
function(refused pattern)
  run(${FINETUNE} FALSE ${ARGN})
  string(STRIP "${last_stderr}" err)
  if(NOT err MATCHES "${pattern}" OR err MATCHES "\n")
    message(FATAL_ERROR "meap_finetune ${ARGN}: expected one line matching '${pattern}', got:\n${last_stderr}")
  endif()
endfunction()

# The base model: 64 synthetic ids plus the pretraining [MASK] (id 64).
file(WRITE "${WORK}/model.json" "{\"d_model\": 32, \"layers\": 1, \"heads\": 2, \"kv_heads\": 1, \"ffn\": 64, \"max_seq\": 64}")
run(${PRETRAIN} TRUE --data synthetic --steps 4 --batch 2 --seq-len 32 --config "${WORK}/model.json" --out "${WORK}/base")
set(base "${WORK}/base/checkpoints/step-00000004")

# 12 examples: a 3-token prompt, a 6-token answer continuing x -> (5 x + 3) mod 60 (+1); the
# last four records in the chat form.
set(jsonl "")
foreach(i RANGE 0 11)
  math(EXPR p0 "(${i} * 7) % 60 + 1")
  math(EXPR p1 "(${i} * 11) % 60 + 1")
  math(EXPR x "(${i} * 13) % 60")
  set(answer "")
  foreach(t RANGE 0 5)
    math(EXPR x "(5 * ${x} + 3) % 60")
    math(EXPR id "${x} + 1")
    list(APPEND answer ${id})
  endforeach()
  math(EXPR p2 "${x} % 60 + 1")
  string(REPLACE ";" ", " answer_ids "${answer}")
  if(i LESS 8)
    string(APPEND jsonl "{\"prompt\": [${p0}, ${p1}, ${p2}], \"answer\": [${answer_ids}]}\n")
  else()
    string(APPEND jsonl "{\"messages\": [{\"role\": \"user\", \"content\": [${p0}, ${p1}, ${p2}]}, "
                        "{\"role\": \"assistant\", \"content\": [${answer_ids}]}]}\n")
  endif()
endforeach()
file(WRITE "${WORK}/train.jsonl" "${jsonl}")

# MEAP, the vocabulary grown by one row for [MASK]: 2 epochs, a checkpoint every 2 steps.
set(common --model "${base}" --data "${WORK}/train.jsonl" --policy meap --min-answer-tokens 4 --mask-ratio 0.34
           --epochs 2 --batch 2 --seq-len 32 --lr 1e-3 --checkpoint-every 2 --keep-checkpoints 10)
run(${FINETUNE} TRUE ${common} --out "${WORK}/grown")
if(NOT last_stderr MATCHES "vocab 66, one row added for \\[MASK\\]" OR NOT last_stderr MATCHES "\\[MASK\\] = 65"
   OR NOT last_stderr MATCHES "12 examples \\(12 with a masked copy")
  message(FATAL_ERROR "meap_finetune: unexpected summary:\n${last_stderr}")
endif()
file(READ "${WORK}/grown/model/config.json" config)
string(JSON vocab GET "${config}" vocab_size)
file(READ "${WORK}/grown/model/meap_finetune.json" roles)
string(JSON mask_id GET "${roles}" mask_id)
if(NOT vocab EQUAL 66 OR NOT mask_id EQUAL 65)
  message(FATAL_ERROR "the fine-tuned model: vocab_size ${vocab}, mask_id ${mask_id}; expected 66 and 65")
endif()
file(STRINGS "${WORK}/grown/loss.csv" rows)
list(LENGTH rows n)
if(n LESS 5)
  message(FATAL_ERROR "loss.csv: ${n} lines")
endif()

# Resume from an earlier checkpoint (the newest removed, as if killed just before it): the same
# loss curve and the same model, byte for byte.
file(COPY_FILE "${WORK}/grown/loss.csv" "${WORK}/loss_straight.csv")
file(SHA256 "${WORK}/grown/model/model.safetensors" straight_model)
file(GLOB checkpoints LIST_DIRECTORIES true "${WORK}/grown/checkpoints/step-*")
list(SORT checkpoints)
list(POP_BACK checkpoints newest)
file(REMOVE_RECURSE "${newest}" "${WORK}/grown/model")
run(${FINETUNE} TRUE ${common} --out "${WORK}/grown" --resume)
file(SHA256 "${WORK}/grown/loss.csv" resumed_loss)
file(SHA256 "${WORK}/loss_straight.csv" straight_loss)
file(SHA256 "${WORK}/grown/model/model.safetensors" resumed_model)
if(NOT resumed_loss STREQUAL straight_loss OR NOT resumed_model STREQUAL straight_model)
  message(FATAL_ERROR "--resume did not reproduce the run:\n${last_stderr}")
endif()

# NTP, and MEAP with the pretraining [MASK] reused (--mask-id 64: no growth), saved as bfloat16 in shards.
run(${FINETUNE} TRUE --model "${base}" --data "${WORK}/train.jsonl" --policy ntp --epochs 1 --batch 2 --seq-len 32
    --out "${WORK}/ntp")
run(${FINETUNE} TRUE ${common} --mask-id 64 --save-dtype bf16 --shard-gib 0.00001 --out "${WORK}/reused")
if(NOT EXISTS "${WORK}/reused/model/model.safetensors.index.json")
  message(FATAL_ERROR "--shard-gib: no model.safetensors.index.json")
endif()
file(READ "${WORK}/reused/model/config.json" config)
string(JSON vocab GET "${config}" vocab_size)
string(JSON dtype GET "${config}" torch_dtype)
if(NOT vocab EQUAL 65 OR NOT dtype STREQUAL "bfloat16")
  message(FATAL_ERROR "--mask-id 64 --save-dtype bf16: vocab_size ${vocab}, torch_dtype ${dtype}")
endif()

# Bad input: one line, non-zero, before any training.
file(WRITE "${WORK}/broken.jsonl" "{\"prompt\": [1, 2], \"answer\": [3]}\n{\"prompt\": [1, 2], \"answer\": }\n")
refused("broken.jsonl.*line 2" --model "${base}" --data "${WORK}/broken.jsonl" --out "${WORK}/x1")
file(WRITE "${WORK}/empty_answer.jsonl" "{\"prompt\": [1, 2], \"answer\": []}\n")
refused("line 1.*empty answer|empty answer.*line 1" --model "${base}" --data "${WORK}/empty_answer.jsonl" --out "${WORK}/x2")
file(WRITE "${WORK}/has_mask.jsonl" "{\"prompt\": [1, 64], \"answer\": [3, 4]}\n")
refused("line 1.*mask_id = 64" --model "${base}" --data "${WORK}/has_mask.jsonl" --mask-id 64 --out "${WORK}/x3")
refused("meap_finetune: argument '--seq-len' = 65" --model "${base}" --data "${WORK}/train.jsonl" --seq-len 65 --out "${WORK}/x4")
refused("prompts of --seq-len tokens or more" --model "${base}" --data "${WORK}/train.jsonl" --seq-len 3 --out "${WORK}/x5")
refused("config.json" --model "${WORK}/nowhere" --data "${WORK}/train.jsonl" --out "${WORK}/x6")
refused("--dtype.*bf16" --model "${base}" --data "${WORK}/train.jsonl" --dtype bf16 --out "${WORK}/x7")
refused("missing.spm.*cannot open|--tokenizer.*SentencePiece" --model "${base}" --data "${WORK}/train.jsonl"
        --tokenizer "${WORK}/missing.spm" --out "${WORK}/x8")
refused("--out.*--resume" ${common} --out "${WORK}/grown")
refused("--mask-id.*65" --model "${base}" --data "${WORK}/train.jsonl" --mask-id 65 --out "${WORK}/x9")
file(WRITE "${WORK}/text.jsonl" "{\"prompt\": \"hello\", \"answer\": \"world\"}\n")
refused("text.jsonl.*line 1.*tokenizer" --model "${base}" --data "${WORK}/text.jsonl" --out "${WORK}/x10")
# Text records through a real SentencePiece model (when meap was built with SentencePiece and
# spm_train is installed): the tokenizer's own [MASK] piece is used, no row is added; a truncated
# tokenizer file is refused.
if(SPM_TRAIN AND EXISTS "${SPM_TRAIN}")
  set(corpus "")
  set(jsonl "")
  foreach(i RANGE 0 59)
    math(EXPR a "(${i} * 7) % 23")
    math(EXPR b "(${i} * 5) % 17")
    string(APPEND corpus "record ${i} keeps the value ${a} under the key ${b}, and the next record follows it.\n")
    if(i LESS 12)
      string(APPEND jsonl "{\"prompt\": \"which value does record ${i} keep?\", "
                          "\"answer\": \"record ${i} keeps the value ${a} under the key ${b}.\"}\n")
    endif()
  endforeach()
  file(WRITE "${WORK}/corpus.txt" "${corpus}")
  file(WRITE "${WORK}/text_records.jsonl" "${jsonl}")
  execute_process(COMMAND ${SPM_TRAIN} --input=${WORK}/corpus.txt --model_prefix=${WORK}/spm --vocab_size=100
                          --hard_vocab_limit=false --model_type=bpe --character_coverage=1.0
                          --user_defined_symbols=[MASK] --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=3
                  RESULT_VARIABLE code OUTPUT_QUIET ERROR_VARIABLE spm_log)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "spm_train failed:\n${spm_log}")
  endif()
  file(WRITE "${WORK}/model128.json" "{\"vocab\": 128, \"d_model\": 32, \"layers\": 1, \"heads\": 2, \"kv_heads\": 1, \"ffn\": 64, \"max_seq\": 96}")
  run(${PRETRAIN} TRUE --data synthetic --steps 2 --batch 2 --seq-len 32 --config "${WORK}/model128.json" --out "${WORK}/base128")
  run(${FINETUNE} TRUE --model "${WORK}/base128/checkpoints/step-00000002" --data "${WORK}/text_records.jsonl"
      --tokenizer "${WORK}/spm.model" --policy meap --min-answer-tokens 4 --epochs 1 --batch 2 --seq-len 96
      --out "${WORK}/text")
  if(NOT last_stderr MATCHES "vocab 128\\)" OR NOT last_stderr MATCHES "\\[MASK\\] = 4" OR NOT last_stderr MATCHES "12 examples")
    message(FATAL_ERROR "meap_finetune --tokenizer: unexpected summary:\n${last_stderr}")
  endif()
  execute_process(COMMAND sh -c "head -c 200 '${WORK}/spm.model' > '${WORK}/truncated.model'")
  refused("truncated.model" --model "${WORK}/base128/checkpoints/step-00000002" --data "${WORK}/text_records.jsonl"
          --tokenizer "${WORK}/truncated.model" --out "${WORK}/x11")
else()
  message(STATUS "meap_finetune_cli: no SentencePiece or spm_train; the text-record checks did not run")
endif()
message(STATUS "meap_finetune_cli: all checks passed")
