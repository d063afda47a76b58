# Runs one Boost.Test case under compute-sanitizer: cmake -DSANITIZER=<compute-sanitizer>
#   -DTOOL=<memcheck|racecheck|synccheck|initcheck> -DPROGRAM=<test program> -DFILTER=<suite/case>
#   -P run_sanitizer.cmake
# Prints "SKIPPED: ..." (CTest's SKIP_REGULAR_EXPRESSION) without compute-sanitizer or without a
# CUDA device; fails when the sanitizer reports an error or the case fails.
# The case exists (listing needs no device, so a machine without a GPU checks the name too), there
# is a compute-sanitizer, and there is a device (gpu_main.hpp's --device_probe prints SKIPPED and
# exits 77 without one).
include(${CMAKE_CURRENT_LIST_DIR}/check_case_exists.cmake)
if(NOT SANITIZER OR NOT EXISTS "${SANITIZER}")
  message("SKIPPED: compute-sanitizer was not found with the CUDA toolkit; ${TOOL} on ${FILTER} did not run")
  return()
endif()
execute_process(COMMAND "${PROGRAM}" --device_probe OUTPUT_VARIABLE probe ERROR_VARIABLE probe)
if(probe MATCHES "SKIPPED:")
  message("${probe}")
  return()
endif()
set(tool_options)
if(TOOL STREQUAL "racecheck")
  set(tool_options --racecheck-report all)
elseif(TOOL STREQUAL "initcheck")
  set(tool_options --track-unused-memory no)
endif()
execute_process(COMMAND "${SANITIZER}" --tool ${TOOL} ${tool_options} --error-exitcode 86 --print-limit 20
                        "${PROGRAM}" --run_test=${FILTER} --color_output=no
                OUTPUT_VARIABLE output ERROR_VARIABLE output RESULT_VARIABLE result)
message("${output}")
if(NOT result EQUAL 0)
  message(FATAL_ERROR "compute-sanitizer --tool ${TOOL} on ${FILTER}: exit status ${result}"
                      " (86: the sanitizer found an error; other: the test case failed)")
endif()
message("compute-sanitizer --tool ${TOOL} on ${FILTER}: no error")
