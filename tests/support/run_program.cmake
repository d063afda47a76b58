# tests/support/run_program.cmake: run() for the command-line tests (meap_eval_cli,
# meap_finetune_cli): run(<program> <expect_success> <args>...) runs the program, keeps its output
# in last_stdout / last_stderr, and stops the test when the exit status is not the expected one or
# the program crashed (a crash is never an acceptable answer to bad input).
function(run tool expect_success)
  execute_process(COMMAND ${tool} ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(last_stdout "${out}" PARENT_SCOPE)
  set(last_stderr "${err}" PARENT_SCOPE)
  if(expect_success AND NOT code EQUAL 0)
    message(FATAL_ERROR "${tool} ${ARGN} failed (${code}):\n${out}\n${err}")
  endif()
  if(NOT expect_success AND code EQUAL 0)
    message(FATAL_ERROR "${tool} ${ARGN} succeeded; it should have failed:\n${out}\n${err}")
  endif()
  if(err MATCHES "terminate called|Segmentation|Aborted")
    message(FATAL_ERROR "${tool} ${ARGN} crashed:\n${err}")
  endif()
endfunction()
