# meap_pretrain from the command line, as a user runs it: a short run with micro-batches writes its
# loss curve and a checkpoint, --resume continues it, and bad arguments end with one clear line and
# a non-zero exit (never a crash). Run by CTest: cmake -DTOOL=<meap_pretrain> -DWORK=<dir> -P this.
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

function(run expect_success)
  execute_process(COMMAND ${TOOL} ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(last_stdout "${out}" PARENT_SCOPE)
  set(last_stderr "${err}" PARENT_SCOPE)
  if(expect_success AND NOT code EQUAL 0)
    message(FATAL_ERROR "meap_pretrain ${ARGN} failed (${code}):\n${out}\n${err}")
  endif()
  if(NOT expect_success AND code EQUAL 0)
    message(FATAL_ERROR "meap_pretrain ${ARGN} succeeded; it should have failed:\n${out}\n${err}")
  endif()
  if(err MATCHES "terminate called|Segmentation|Aborted")
    message(FATAL_ERROR "meap_pretrain ${ARGN} crashed:\n${err}")
  endif()
endfunction()

function(count_rows file expected)
  file(STRINGS "${file}" lines)
  list(LENGTH lines n)
  math(EXPR rows "${n} - 1")
  if(NOT rows EQUAL expected)
    message(FATAL_ERROR "${file}: ${rows} rows, expected ${expected}")
  endif()
endfunction()

set(common --steps 3 --batch 4 --micro-batches 2 --seq-len 16 --warmup 1 --out "${WORK}/run")
run(TRUE ${common})
count_rows("${WORK}/run/loss.csv" 3)
foreach(file model.safetensors trainer.safetensors config.json)
  if(NOT EXISTS "${WORK}/run/checkpoints/step-00000003/${file}")
    message(FATAL_ERROR "no ${file} in ${WORK}/run/checkpoints/step-00000003")
  endif()
endforeach()
file(READ_SYMLINK "${WORK}/run/checkpoints/latest" latest)
if(NOT latest STREQUAL "step-00000003")
  message(FATAL_ERROR "checkpoints/latest -> '${latest}', expected step-00000003")
endif()
if(NOT last_stderr MATCHES "in 2 micro-batch")
  message(FATAL_ERROR "the progress does not mention the micro-batches:\n${last_stderr}")
endif()
# More steps than the first run: the schedule's length differs, so --resume alone refuses and
# --allow-changes continues, listing the difference.
set(longer --steps 5 --batch 4 --micro-batches 2 --seq-len 16 --warmup 1 --out "${WORK}/run" --resume)
run(FALSE ${longer})
if(NOT last_stderr MATCHES "schedule.total_steps: checkpoint 3, now 5.*--allow-changes")
  message(FATAL_ERROR "--resume with other settings: unexpected message:\n${last_stderr}")
endif()
run(TRUE ${longer} --allow-changes)
count_rows("${WORK}/run/loss.csv" 5)
if(NOT last_stderr MATCHES "resumed from .*step-00000003 at step 3" OR NOT last_stderr MATCHES "warning: --allow-changes: schedule.total_steps")
  message(FATAL_ERROR "--resume did not continue at step 3 with a warning:\n${last_stderr}")
endif()

# Bad input: one line on stderr that matches the expectation, a non-zero exit, never a crash.
# Each case: a name, the expected first line (a regex), then the arguments.
function(expect_failure name pattern)
  run(FALSE ${ARGN})
  string(STRIP "${last_stderr}" text)
  string(REGEX REPLACE "\n.*" "" first_line "${text}")
  if(NOT first_line MATCHES "${pattern}")
    message(FATAL_ERROR "${name}: the first line of the message does not match '${pattern}':\n${text}")
  endif()
  message(STATUS "${name}: ${first_line}")
endfunction()

set(bad "${WORK}/bad")
file(MAKE_DIRECTORY "${bad}")
set(small --steps 2 --batch 2 --seq-len 8)
expect_failure("--steps 0" "--steps: Value 0 not in range" --steps 0 --out "${bad}/o")
expect_failure("--policy bert" "--policy: bert not in" --policy bert --out "${bad}/o")
expect_failure("--micro-batches 3" "argument '--micro-batches' = 3: expected a divisor of --batch = 8" --micro-batches 3 --out "${bad}/o")
expect_failure("--dtype fp64 on cuda" "argument '--dtype' = fp64" --dtype fp64 --device cuda --out "${bad}/o")
expect_failure("--dtype bf16 on the cpu" "argument '--dtype' = bf16" --dtype bf16 --out "${bad}/o")
expect_failure("--device tpu" "argument '--device' = tpu" --device tpu --out "${bad}/o")
expect_failure("unknown flag" "The following argument was not expected: --no-such-flag" --no-such-flag --out "${bad}/o")
expect_failure("--seed -1" "--seed: Value -1 is not an integer from 0 to 18446744073709551615" --seed -1 --out "${bad}/o")
expect_failure("--seq-len 100000000" "a run needing at least [0-9.]+ [KMGTPE]iB .*expected a run that fits in the [0-9.]+ [KMGTPE]iB available"
               --seq-len 100000000 --out "${bad}/o")
expect_failure("--resume without checkpoint" "argument '--resume' = .*: expected a directory holding a checkpoint"
               ${small} --resume --out "${bad}/empty")
expect_failure("--allow-changes without --resume" "--allow-changes requires --resume" --allow-changes --out "${bad}/o")

# Config files: each is refused with the field and the value, never converted or crashed on.
set(cases
  "array|[1, 2]|expected a JSON object of fields, found an array"
  "null|null|expected a JSON object of fields, found null"
  "string d_model|{\"d_model\": \"64\"}|d_model = a string \"64\": expected d_model as an integer in"
  "fractional d_model|{\"d_model\": 64.9}|d_model = a number 64.9: expected d_model as an integer in"
  "1e30 max_seq|{\"max_seq\": 1e30}|max_seq = a number 1e\\+30: expected max_seq as an integer in"
  "2^64 max_seq|{\"max_seq\": 18446744073709551616}|max_seq = a number .*: expected max_seq as an integer in"
  "zero heads|{\"heads\": 0}|heads = a number 0: expected heads as an integer in .1,"
  "unknown field|{\"layer\": 2}|with the field 'layer': expected the fields vocab"
  "huge vocabulary|{\"vocab\": 2000000000, \"d_model\": 4096, \"heads\": 32}|a run needing at least .*: expected a run that fits"
  "huge layer count|{\"layers\": 10000000}|a run needing at least .*: expected a run that fits"
  "too many parameters|{\"vocab\": 1000000000, \"d_model\": 1000000000, \"heads\": 7812500}|expected a model of fewer than 2\\^56 parameters")
foreach(case IN LISTS cases)
  string(REPLACE "|" ";" fields "${case}")
  list(GET fields 0 name)
  list(GET fields 1 json)
  list(GET fields 2 pattern)
  file(WRITE "${bad}/config.json" "${json}")
  expect_failure("config: ${name}" "${pattern}" ${small} --config "${bad}/config.json" --out "${bad}/o")
endforeach()

# Token files: an id that does not fit in int32 with room for [MASK]; an id whose vocabulary does
# not fit in memory; a FIFO (which must not hang the reader).
execute_process(COMMAND sh -c "printf '\\001\\000\\000\\000\\377\\377\\377\\377\\002\\000\\000\\000\\003\\000\\000\\000' > '${bad}/big_id.u32'")
execute_process(COMMAND sh -c "printf '\\001\\000\\000\\000\\000\\341\\365\\005\\002\\000\\000\\000\\003\\000\\000\\000' > '${bad}/huge_vocab.u32'")
expect_failure("token id 2^32-1" "token 4294967295 at index 1.*expected token ids of at most 2147483645"
               --data "${bad}/big_id.u32" --seq-len 2 --batch 2 --steps 1 --out "${bad}/o")
expect_failure("token id 10^8" "a run needing at least .*: expected a run that fits"
               --data "${bad}/huge_vocab.u32" --seq-len 2 --batch 2 --steps 1 --out "${bad}/o")
execute_process(COMMAND mkfifo "${bad}/fifo.u16" RESULT_VARIABLE fifo_code)
if(fifo_code EQUAL 0)
  expect_failure("FIFO as data" "fifo.u16': is not a regular file" --data "${bad}/fifo.u16" ${small} --out "${bad}/o")
  file(RENAME "${bad}/fifo.u16" "${bad}/fifo.json")
  expect_failure("FIFO as config" "fifo.json': is not a regular file" --config "${bad}/fifo.json" ${small} --out "${bad}/o")
endif()

# Output that cannot be written is found before the first step.
file(WRITE "${bad}/a_file" "")
expect_failure("--out under a file" "argument '--out' = .*a_file/run: expected a directory that exists or can be created"
               ${small} --out "${bad}/a_file/run")
if(IS_DIRECTORY /sys/kernel)
  expect_failure("read-only --out" "checkpoints: expected a (writable )?directory" ${small} --out /sys/kernel)
endif()

# A second run into a directory with checkpoints, without --resume, would mix two runs.
expect_failure("--out with checkpoints" "argument '--out' = .*: expected a directory without checkpoints" ${small}
               --out "${WORK}/run")

# Checkpoints that must be refused on --resume: no config.json; a flipped byte in the weights; a
# different model shape.
set(resumable --steps 2 --batch 2 --seq-len 8 --warmup 1)
run(TRUE ${resumable} --out "${bad}/ckpt")
file(RENAME "${bad}/ckpt/checkpoints/step-00000002/config.json" "${bad}/config.moved")
expect_failure("checkpoint without config.json" "expected a checkpoint with its config.json" ${resumable} --resume --out "${bad}/ckpt")
file(RENAME "${bad}/config.moved" "${bad}/ckpt/checkpoints/step-00000002/config.json")
execute_process(COMMAND sh -c "f='${bad}/ckpt/checkpoints/step-00000002/model.safetensors'; n=$(stat -c %s \"$f\"); printf '\\125' | dd of=\"$f\" bs=1 seek=$((n - 100)) conv=notrunc 2>/dev/null")
expect_failure("flipped byte" "the data buffer's CRC-32 is .* but the header records" ${resumable} --resume --out "${bad}/ckpt")
run(TRUE ${resumable} --out "${bad}/ckpt2")
file(WRITE "${bad}/wide.json" "{\"d_model\": 64}")
expect_failure("other model shape" "with hidden_size = 128: expected a checkpoint of the model being resumed .hidden_size = 64."
               ${resumable} --config "${bad}/wide.json" --resume --out "${bad}/ckpt2")

# loss.csv is replaced, never written through a symbolic link at its name.
file(MAKE_DIRECTORY "${bad}/linked")
file(WRITE "${bad}/victim.txt" "untouched\n")
file(CREATE_LINK "${bad}/victim.txt" "${bad}/linked/loss.csv" SYMBOLIC)
run(TRUE ${small} --out "${bad}/linked")
file(READ "${bad}/victim.txt" victim)
if(NOT victim STREQUAL "untouched\n" OR IS_SYMLINK "${bad}/linked/loss.csv")
  message(FATAL_ERROR "loss.csv was written through a symbolic link")
endif()
message(STATUS "meap_pretrain command line: passed")
