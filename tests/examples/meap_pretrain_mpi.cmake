# meap_pretrain and meap_finetune under mpirun, as a user runs them (docs/distributed.md): 2 ranks
# train the same run as one process (loss.csv within 1e-6 relative, replicated and --zero1), a
# checkpoint written by 2 ranks resumes on 1, a bad launch ends every rank with one clear line,
# and 2 ranks fine-tune as one process does.
#   cmake -DMPIRUN=<mpiexec;-n;2;--oversubscribe> -DTOOL=<meap_pretrain> [-DFINETUNE=<meap_finetune>]
#         -DWORK=<dir> -P this
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

include(${CMAKE_CURRENT_LIST_DIR}/../support/run_program.cmake)
# launch(<expect_success> <command>...): run() for a command that may start with the launcher.
list(GET MPIRUN 0 mpiexec)
list(SUBLIST MPIRUN 1 -1 mpiexec_flags)
macro(launch expect_success program)
  run(${program} ${expect_success} ${ARGN})
endmacro()

# The loss column of two loss.csv files, row by row, within 1e-6 relative (rows first..last).
function(same_losses a b first last)
  file(STRINGS "${a}" rows_a)
  file(STRINGS "${b}" rows_b)
  foreach(i RANGE ${first} ${last})
    list(GET rows_a ${i} row_a)
    list(GET rows_b ${i} row_b)
    string(REPLACE "," ";" fields_a "${row_a}")
    string(REPLACE "," ";" fields_b "${row_b}")
    list(GET fields_a 1 loss_a)
    list(GET fields_b 1 loss_b)
    # CMake has no floating point: awk compares.
    execute_process(COMMAND awk -v x=${loss_a} -v y=${loss_b}
                            "BEGIN { d = x - y; if (d < 0) d = -d; exit !(d <= 1e-6 * (y < 0 ? -y : y)) }"
                    RESULT_VARIABLE differ)
    if(NOT differ EQUAL 0)
      message(FATAL_ERROR "row ${i}: loss ${loss_a} (${a}) and ${loss_b} (${b}) differ by more than 1e-6 relative")
    endif()
  endforeach()
  message(STATUS "${a} and ${b}: rows ${first}..${last} equal within 1e-6")
endfunction()

set(run_args --steps 6 --batch 4 --seq-len 16 --warmup 1 --checkpoint-every 3)
launch(TRUE ${TOOL} ${run_args} --out "${WORK}/one")
launch(TRUE ${mpiexec} ${mpiexec_flags} ${TOOL} ${run_args} --out "${WORK}/two")
if(NOT last_stderr MATCHES "data parallel: 2 ranks of 2 rows each")
  message(FATAL_ERROR "the 2-rank run does not say it is data parallel:\n${last_stderr}")
endif()
same_losses("${WORK}/one/loss.csv" "${WORK}/two/loss.csv" 1 6)
launch(TRUE ${mpiexec} ${mpiexec_flags} ${TOOL} ${run_args} --zero1 --out "${WORK}/zero1")
if(NOT last_stderr MATCHES "ZeRO-1")
  message(FATAL_ERROR "the --zero1 run does not say so:\n${last_stderr}")
endif()
same_losses("${WORK}/one/loss.csv" "${WORK}/zero1/loss.csv" 1 6)

# The 2-rank ZeRO-1 run's step-3 checkpoint resumed by one process: steps 4..6 as before.
file(REMOVE_RECURSE "${WORK}/zero1/checkpoints/step-00000006")
file(COPY "${WORK}/zero1/loss.csv" DESTINATION "${WORK}/uninterrupted")
launch(TRUE ${TOOL} ${run_args} --out "${WORK}/zero1" --resume)
if(NOT last_stderr MATCHES "resumed from .*step-00000003 at step 3")
  message(FATAL_ERROR "the one-process resume did not start at step 3:\n${last_stderr}")
endif()
same_losses("${WORK}/uninterrupted/loss.csv" "${WORK}/zero1/loss.csv" 4 6)

# A batch the ranks cannot split: every rank stops with the same line, nobody waits.
launch(FALSE ${mpiexec} ${mpiexec_flags} ${TOOL} --steps 2 --batch 3 --seq-len 16 --out "${WORK}/bad")
if(NOT last_stderr MATCHES "meap_pretrain: argument '--batch' = 3: expected a multiple of --micro-batches \\(1\\) times the 2 ranks")
  message(FATAL_ERROR "unexpected message for an odd batch on 2 ranks:\n${last_stderr}")
endif()
# --zero1 without mpirun.
launch(FALSE ${TOOL} --steps 2 --zero1 --out "${WORK}/bad")
if(NOT last_stderr MATCHES "argument '--zero1' = set: expected a run started by mpirun")
  message(FATAL_ERROR "unexpected message for --zero1 on one process:\n${last_stderr}")
endif()

# meap_finetune under mpirun: the pretrained model above fine-tuned with MEAP by 2 ranks (ZeRO-1)
# and by one process: the same losses; rank 0 writes the model.
if(FINETUNE)
  set(jsonl "")
  foreach(i RANGE 0 15)
    math(EXPR p0 "(${i} * 7) % 60 + 1")
    math(EXPR p1 "(${i} * 11) % 60 + 1")
    math(EXPR a0 "(${i} * 13) % 60 + 1")
    math(EXPR a1 "(${i} * 5 + 3) % 60 + 1")
    string(APPEND jsonl "{\"prompt\": [${p0}, ${p1}], \"answer\": [${a0}, ${a1}, ${p0}, ${a1}]}\n")
  endforeach()
  file(WRITE "${WORK}/train.jsonl" "${jsonl}")
  set(tune_args --model "${WORK}/one/checkpoints/step-00000006" --data "${WORK}/train.jsonl" --policy meap
                --min-answer-tokens 1 --mask-ratio 0.5 --epochs 2 --batch 4 --seq-len 16 --lr 1e-3)
  launch(TRUE ${FINETUNE} ${tune_args} --out "${WORK}/tune_one")
  launch(TRUE ${mpiexec} ${mpiexec_flags} ${FINETUNE} ${tune_args} --zero1 --out "${WORK}/tune_two")
  if(NOT last_stderr MATCHES "data parallel: 2 ranks of 2 rows each, AdamW state sharded")
    message(FATAL_ERROR "the 2-rank fine-tuning does not say it is data parallel:\n${last_stderr}")
  endif()
  file(STRINGS "${WORK}/tune_one/loss.csv" rows)
  list(LENGTH rows count)
  math(EXPR last "${count} - 1")
  same_losses("${WORK}/tune_one/loss.csv" "${WORK}/tune_two/loss.csv" 1 ${last})
  if(NOT EXISTS "${WORK}/tune_two/model/model.safetensors" OR NOT EXISTS "${WORK}/tune_two/model/meap_finetune.json")
    message(FATAL_ERROR "the 2-rank fine-tuning wrote no model")
  endif()
endif()
