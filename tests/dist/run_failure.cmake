# run_failure.cmake: one rank of a 2-rank run fails; the run must end non-zero within LIMIT
# seconds with a clear message, and the checkpoints written before must resume to the end.
#   -DMPIEXEC=... -DPROGRAM=... -DWORK=... -DHOW=kill|hang -DLIMIT=seconds
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
set(launch ${MPIEXEC})
string(TIMESTAMP started "%s")
execute_process(COMMAND ${launch} ${PROGRAM} ${WORK}/checkpoints ${HOW} 5 3
                RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT ${LIMIT})
string(TIMESTAMP ended "%s")
math(EXPR seconds "${ended} - ${started}")
message(STATUS "${HOW}: exit '${result}' after ${seconds} s\n${out}${err}")
if(result STREQUAL "0" OR result MATCHES "timeout|Process terminated due to timeout")
  message(FATAL_ERROR "${HOW}: expected a non-zero exit within ${LIMIT} s, got '${result}'")
endif()
if(HOW STREQUAL "hang" AND NOT err MATCHES "waited 3.0 s for the other ranks: one of them died or hangs")
  message(FATAL_ERROR "hang: rank 0 did not say that it waited for the other ranks:\n${err}")
endif()
if(out MATCHES "finished")
  message(FATAL_ERROR "${HOW}: the run finished although a rank failed")
endif()
# The checkpoints committed before the failure: the newest is complete and resumes to the end.
execute_process(COMMAND ${launch} ${PROGRAM} ${WORK}/checkpoints none -1 30 resume
                RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
message(STATUS "resume: exit '${result}'\n${out}${err}")
if(NOT result STREQUAL "0" OR NOT out MATCHES "resumed at step [2468]" OR NOT out MATCHES "finished at step 12")
  message(FATAL_ERROR "the run did not resume from its last checkpoint and finish")
endif()
