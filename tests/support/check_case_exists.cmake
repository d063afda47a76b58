# Included by the scripts beside it: fails unless ${PROGRAM} has the test case ${FILTER}
# ("suite/case"). Boost.Test's --list_content needs no device (gpu_main.hpp), so a machine
# without a GPU checks the names too; it lists every case whatever --run_test says, hence the match.
execute_process(COMMAND "${PROGRAM}" --list_content OUTPUT_VARIABLE listing ERROR_VARIABLE listing
                RESULT_VARIABLE listing_result)
string(REGEX REPLACE "/.*$" "" suite "${FILTER}")
string(REGEX REPLACE "^.*/" "" case "${FILTER}")
if(NOT listing_result EQUAL 0 OR NOT listing MATCHES "(^|\n)${suite}\\*?\n" OR NOT listing MATCHES "\n    ${case}\\*?\n")
  message(FATAL_ERROR "${PROGRAM} has no test case ${FILTER}; it has:\n${listing}")
endif()
