# meapDlpack.cmake: how meap finds DLPack for meap::dlpack (meap/interop/dlpack.hpp). Used by
# meap's own CMakeLists and by the installed meapConfig.cmake, so both decide the same way.
# DLPack is one C header (dlpack/dlpack.h; Debian: libdlpack-dev). Optional: meap::meap never
# needs it, and LibTorch users have ATen's copy of the same header, which meap/interop/dlpack.hpp
# also accepts.

include(${CMAKE_CURRENT_LIST_DIR}/meapOptional.cmake)

# meap_resolve_dlpack(<out-var> <mode>): TRUE when dlpack/dlpack.h of DLPack 0.5 or later was
# found. <mode> is MEAP_ENABLE_DLPACK: AUTO (if found; silent otherwise), ON (required) or OFF.
# Sets MEAP_DLPACK_INCLUDE_DIR in the caller's scope when TRUE.
function(meap_resolve_dlpack out requested)
  meap_optional_mode(mode MEAP_ENABLE_DLPACK "${requested}")
  set(${out} FALSE PARENT_SCOPE)
  if(mode STREQUAL "OFF")
    return()
  endif()
  find_path(MEAP_DLPACK_INCLUDE_DIR dlpack/dlpack.h)
  mark_as_advanced(MEAP_DLPACK_INCLUDE_DIR)
  set(version "")
  if(MEAP_DLPACK_INCLUDE_DIR)
    # DLPack 0.x writes DLPACK_VERSION 60 (0.6); 1.x writes DLPACK_MAJOR_VERSION 1.
    file(STRINGS "${MEAP_DLPACK_INCLUDE_DIR}/dlpack/dlpack.h" lines REGEX "#define DLPACK_(MAJOR_)?VERSION ")
    if(lines MATCHES "DLPACK_MAJOR_VERSION ([0-9]+)")
      set(version "${CMAKE_MATCH_1}00")
    elseif(lines MATCHES "DLPACK_VERSION ([0-9]+)")
      set(version "${CMAKE_MATCH_1}")
    endif()
  endif()
  if(version AND version GREATER_EQUAL 50)
    set(${out} TRUE PARENT_SCOPE)
    set(MEAP_DLPACK_INCLUDE_DIR "${MEAP_DLPACK_INCLUDE_DIR}" PARENT_SCOPE)
  elseif(NOT mode STREQUAL "AUTO")
    message(FATAL_ERROR "meap: MEAP_ENABLE_DLPACK=${requested} but no dlpack/dlpack.h of DLPack 0.5 or later was found "
                        "(found: '${MEAP_DLPACK_INCLUDE_DIR}', version '${version}'; on Debian: apt-get install libdlpack-dev)")
  endif()
endfunction()

# meap_dlpack_usage_requirements(<target> <meap-target>): meap::meap plus DLPack's include directory.
function(meap_dlpack_usage_requirements target meap_target)
  target_link_libraries(${target} INTERFACE ${meap_target})
  target_include_directories(${target} SYSTEM INTERFACE "${MEAP_DLPACK_INCLUDE_DIR}")
endfunction()
