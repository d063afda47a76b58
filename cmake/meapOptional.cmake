# meapOptional.cmake: the AUTO / ON / OFF options of meap's optional dependencies
# (MEAP_ENABLE_SENTENCEPIECE, MEAP_ENABLE_DLPACK, MEAP_ENABLE_MPI, MEAP_ENABLE_TORCH), read the same
# way by meap's own CMakeLists and by the installed meapConfig.cmake.
include_guard(GLOBAL)

# meap_optional_mode(<out-var> <option> <value>): AUTO, ON (also TRUE, 1) or OFF (also FALSE, 0),
# in any case; any other value stops the configuration with a message naming the option.
function(meap_optional_mode out option value)
  string(TOUPPER "${value}" mode)
  if(mode MATCHES "^(OFF|FALSE|0)$")
    set(${out} OFF PARENT_SCOPE)
  elseif(mode MATCHES "^(ON|TRUE|1)$")
    set(${out} ON PARENT_SCOPE)
  elseif(mode STREQUAL "AUTO")
    set(${out} AUTO PARENT_SCOPE)
  else()
    message(FATAL_ERROR "meap: ${option}='${value}': expected AUTO, ON or OFF")
  endif()
endfunction()
