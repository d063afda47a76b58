# ctest driver: meap writes a model -> PyTorch checks it and writes a changed one -> meap checks that.
foreach(step IN ITEMS "${TOOL};write;${WORK}/from_meap" "${PYTHON};${SCRIPT};${WORK}/from_meap;${WORK}/from_torch"
                      "${TOOL};check;${WORK}/from_torch")
  execute_process(COMMAND ${step} RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "step failed (${result}): ${step}")
  endif()
endforeach()
