# Determinism across processes: runs a test case that prints "meap-digest: <hex>" twice, in two
# processes, and requires the same digest. cmake -DPROGRAM=<test program> -DFILTER=<suite/case>
#   -P same_digest_twice.cmake
# Prints "SKIPPED: ..." without a CUDA device (the program says so itself).
include(${CMAKE_CURRENT_LIST_DIR}/check_case_exists.cmake)
foreach(run 1 2)
  execute_process(COMMAND "${PROGRAM}" --run_test=${FILTER} --color_output=no
                  OUTPUT_VARIABLE output ERROR_VARIABLE errors RESULT_VARIABLE result)
  if(output MATCHES "SKIPPED:")
    message("${output}")
    return()
  endif()
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "run ${run} of ${FILTER} failed (exit status ${result}):\n${output}\n${errors}")
  endif()
  string(REGEX MATCH "meap-digest: [0-9a-f]+" digest${run} "${output}")
  if(NOT digest${run})
    message(FATAL_ERROR "run ${run} of ${FILTER} printed no digest:\n${output}")
  endif()
endforeach()
if(NOT digest1 STREQUAL digest2)
  message(FATAL_ERROR "two processes gave different results: ${digest1} and ${digest2}")
endif()
message("two processes, the same bits: ${digest1}")
