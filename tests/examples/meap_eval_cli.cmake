# meap_eval from the command line, as a user runs it: meap_pretrain writes a small checkpoint, then
# meap_eval runs every suite on it and writes its CSV files (and PNGs when gnuplot is installed);
# bad input ends with one clear line and a non-zero exit before any work (never a crash).
# Run by CTest: cmake -DEVAL=<meap_eval> -DPRETRAIN=<meap_pretrain> -DWORK=<dir> -P this.
cmake_policy(SET CMP0007 NEW)  # keep the empty CSV fields (MQAR's depth) as list elements
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

include(${CMAKE_CURRENT_LIST_DIR}/../support/run_program.cmake)

# The lines of a CSV file after its header, which must be `header`.
function(read_csv file header out_rows)
  if(NOT EXISTS "${file}")
    message(FATAL_ERROR "no ${file}")
  endif()
  file(STRINGS "${file}" lines)
  list(POP_FRONT lines first)
  if(NOT first STREQUAL "${header}")
    message(FATAL_ERROR "${file}: header '${first}', expected '${header}'")
  endif()
  set(${out_rows} "${lines}" PARENT_SCOPE)
endfunction()

function(expect_count what list expected)
  list(LENGTH list n)
  if(NOT n EQUAL expected)
    message(FATAL_ERROR "${what}: ${n} rows, expected ${expected}")
  endif()
endfunction()

# Little-endian uint16 token files written through printf's octal escapes: `count` tokens cycling
# over 1 .. `modulus`.
function(write_tokens path count modulus)
  set(escapes "")
  foreach(i RANGE 1 ${count})
    math(EXPR id "(${i} % ${modulus}) + 1")
    math(EXPR d2 "${id} / 64")
    math(EXPR d1 "(${id} / 8) % 8")
    math(EXPR d0 "${id} % 8")
    string(APPEND escapes "\\${d2}${d1}${d0}\\000")
  endforeach()
  execute_process(COMMAND sh -c "printf '${escapes}' > '${path}'" RESULT_VARIABLE code)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "cannot write ${path}")
  endif()
endfunction()

# A checkpoint whose vocabulary holds the tasks' ids: 128 ids, the last [MASK]; the tasks take
# 63 of them at least (default_id_vocabulary).
file(WRITE "${WORK}/model.json"
     "{\"vocab\": 128, \"d_model\": 64, \"layers\": 2, \"heads\": 4, \"kv_heads\": 2, \"ffn\": 128, \"max_seq\": 128}")
run(${PRETRAIN} TRUE --data synthetic --steps 20 --batch 4 --seq-len 64 --config "${WORK}/model.json" --out "${WORK}/run")
set(model "${WORK}/run/checkpoints/step-00000020")
write_tokens("${WORK}/tokens.u16" 600 60)

# Every suite. 5 depth tasks x 2 lengths x 5 depths + MQAR (no depth) x 2 lengths = 52 cells.
run(${EVAL} TRUE --model "${model}" --suite all --data "${WORK}/tokens.u16" --rows 2 --lengths 64,128 --out "${WORK}/eval")
read_csv("${WORK}/eval/retrieval.csv" "task,length,depth_percent,rows,correct,accuracy,mean_answer_log_likelihood" cells)
expect_count("retrieval.csv" "${cells}" 52)
foreach(cell IN LISTS cells)
  string(REPLACE "," ";" fields "${cell}")
  list(GET fields 3 rows)
  list(GET fields 5 accuracy)
  if(NOT rows EQUAL 2 OR NOT accuracy MATCHES "^(0|1|0\\.[0-9]+)$")
    message(FATAL_ERROR "retrieval.csv: a cell with rows '${rows}' or accuracy '${accuracy}' outside [0, 1]: ${cell}")
  endif()
endforeach()
if(NOT ";${cells};" MATCHES ";mqar,128,,2,[0-9],")
  message(FATAL_ERROR "retrieval.csv: no MQAR row at length 128 without a depth:\n${cells}")
endif()
# 2 layers x 4 heads, one average per layer, one overall row.
read_csv("${WORK}/eval/attention.csv"
         "layer,head,masked_mass_clean,masked_mass_masked,decay,pooled_decay,variance_clean,variance_masked,variance_change,answer_share_clean,answer_share_masked"
         heads)
expect_count("attention.csv" "${heads}" 11)
list(GET heads -1 overall)
list(GET heads -2 last_layer)
if(NOT overall MATCHES "^all,all,[0-9]" OR NOT last_layer MATCHES "^1,all,[0-9]")
  message(FATAL_ERROR "attention.csv: no layer-average or overall row:\n${last_layer}\n${overall}")
endif()
read_csv("${WORK}/eval/perplexity.csv" "data,seq_len,windows,tokens,mean_nll,perplexity" ppl)
expect_count("perplexity.csv" "${ppl}" 1)
if(NOT ppl MATCHES ",128,4,512,[0-9.]+,[0-9.]+$")  # (600 - 1) / 128 windows of 128 predictions
  message(FATAL_ERROR "perplexity.csv: unexpected row '${ppl}'")
endif()
if(NOT last_stdout MATCHES "task \\\\ length +64 +128" OR NOT last_stdout MATCHES "\nall +[-0-9.]+ +[-0-9.]+")
  message(FATAL_ERROR "the table on stdout lacks the retrieval or attention summary:\n${last_stdout}")
endif()
if(NOT last_stderr MATCHES "multidoc_qa +length +128: accuracy +[0-9.]+%  cells 52/52  elapsed [0-9:]+  ETA [0-9:]+")
  message(FATAL_ERROR "no progress line with the cell count and an ETA:\n${last_stderr}")
endif()
find_program(GNUPLOT gnuplot)
if(GNUPLOT)
  foreach(png needle_heatmap multikey_needle_heatmap multivalue_needle_heatmap passkey_heatmap multidoc_qa_heatmap
              accuracy_by_length attention)
    if(NOT EXISTS "${WORK}/eval/${png}.png")
      message(FATAL_ERROR "gnuplot is installed but there is no ${png}.png:\n${last_stdout}")
    endif()
  endforeach()
  file(GLOB leftovers "${WORK}/eval/.*.tmp")
  if(leftovers)
    message(FATAL_ERROR "temporary plot files left behind: ${leftovers}")
  endif()
else()
  message(STATUS "gnuplot not installed: the PNGs are not checked")
endif()

# Bad input: one line on stderr that matches the expectation, a non-zero exit, never a crash,
# and nothing written. Each case: a name, the expected first line (a regex), then the arguments.
function(expect_failure name pattern)
  run(${EVAL} FALSE ${ARGN} --out "${WORK}/bad_out")
  string(STRIP "${last_stderr}" text)
  string(REGEX REPLACE "\n.*" "" first_line "${text}")
  if(NOT first_line MATCHES "${pattern}")
    message(FATAL_ERROR "${name}: the first line of the message does not match '${pattern}':\n${text}")
  endif()
  if(EXISTS "${WORK}/bad_out/retrieval.csv" OR EXISTS "${WORK}/bad_out/attention.csv")
    message(FATAL_ERROR "${name}: results were written before the input was refused")
  endif()
  message(STATUS "${name}: ${first_line}")
endfunction()

file(MAKE_DIRECTORY "${WORK}/no_config")
file(MAKE_DIRECTORY "${WORK}/no_weights")
file(COPY "${model}/config.json" DESTINATION "${WORK}/no_weights")
# A model of 18 ids (a token file of ids 1 .. 16, and [MASK]): too few for the tasks' ids.
write_tokens("${WORK}/tiny.u16" 64 16)
run(${PRETRAIN} TRUE --data "${WORK}/tiny.u16" --steps 1 --batch 2 --seq-len 16 --out "${WORK}/tiny_run")

expect_failure("unknown suite" "argument '--suite' = bogus: expected a comma-separated list of needle, .*, retrieval, attention, perplexity, all"
               --model "${model}" --suite needle,bogus)
expect_failure("directory without config.json" "'.*no_config/config.json': cannot open the config.json" --model "${WORK}/no_config")
expect_failure("directory without weights" "no_weights: expected a model directory holding model.safetensors or model.safetensors.index.json" --model "${WORK}/no_weights")
expect_failure("not a directory" "argument '--model' = .*: expected a checkpoint directory" --model "${WORK}/nowhere")
expect_failure("length above max_seq" "argument '--lengths' = 256: expected lengths of at most the model's max_seq = 128"
               --model "${model}" --lengths 64,256)
expect_failure("length below a task's minimum" "argument '--lengths' = 20: expected lengths of at least [0-9]+ positions for multidoc_qa"
               --model "${model}" --suite multidoc_qa --lengths 20)
expect_failure("vocabulary too small" "expected a vocabulary the tasks' ids fit in: meap::eval::default_id_vocabulary: .*expected at least 63 ids"
               --model "${WORK}/tiny_run/checkpoints/step-00000001")
expect_failure("perplexity without --data" "argument '--suite' = perplexity: expected --data" --model "${model}" --suite perplexity)
expect_failure("perplexity windows above max_seq" "argument '--perplexity-seq-len' = 129: expected windows of at most the model's max_seq = 128"
               --model "${model}" --suite perplexity --data "${WORK}/tokens.u16" --perplexity-seq-len 129)
expect_failure("token file too short" "tiny.u16': holds 64 tokens, fewer than one window of seq_len \\+ 1 = 129"
               --model "${model}" --suite perplexity --data "${WORK}/tiny.u16")
expect_failure("bf16 on the cpu" "argument '--dtype' = bf16: expected fp32 on the CPU" --model "${model}" --dtype bf16)
expect_failure("unknown scoring" "--scoring: exact_matches not in" --model "${model}" --scoring exact_matches)
message(STATUS "meap_eval command line: passed")
