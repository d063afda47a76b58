# meapSentencePiece.cmake: how meap finds SentencePiece for meap::sentencepiece (the tokenizer of
# meap/text/sentencepiece.hpp). Used by meap's own CMakeLists and by the installed
# meapConfig.cmake, so both decide the same way. Changes no CMAKE_* variable of the including
# project. Optional: meap::meap never needs it.

include(${CMAKE_CURRENT_LIST_DIR}/meapOptional.cmake)

# meap_resolve_sentencepiece(<out-var> <mode>): TRUE when a usable SentencePiece was found. <mode>
# is MEAP_ENABLE_SENTENCEPIECE: AUTO (if found; silent otherwise), ON (required) or OFF. Sets
# MEAP_SENTENCEPIECE_LIBRARY and MEAP_SENTENCEPIECE_INCLUDE_DIR in the caller's scope when TRUE.
function(meap_resolve_sentencepiece out requested)
  meap_optional_mode(mode MEAP_ENABLE_SENTENCEPIECE "${requested}")
  set(${out} FALSE PARENT_SCOPE)
  if(mode STREQUAL "OFF")
    return()
  endif()
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(PC_SENTENCEPIECE QUIET sentencepiece)
  endif()
  find_path(MEAP_SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h HINTS ${PC_SENTENCEPIECE_INCLUDE_DIRS})
  find_library(MEAP_SENTENCEPIECE_LIBRARY sentencepiece HINTS ${PC_SENTENCEPIECE_LIBRARY_DIRS})
  mark_as_advanced(MEAP_SENTENCEPIECE_INCLUDE_DIR MEAP_SENTENCEPIECE_LIBRARY)
  set(usable FALSE)
  if(MEAP_SENTENCEPIECE_INCLUDE_DIR AND MEAP_SENTENCEPIECE_LIBRARY)
    # The header and the library must agree (a stray header of another version, a static library
    # without its dependencies).
    include(CheckCXXSourceCompiles)
    include(CMakePushCheckState)
    cmake_push_check_state(RESET)
    set(CMAKE_REQUIRED_INCLUDES "${MEAP_SENTENCEPIECE_INCLUDE_DIR}")
    set(CMAKE_REQUIRED_LIBRARIES "${MEAP_SENTENCEPIECE_LIBRARY}")
    set(CMAKE_REQUIRED_FLAGS "${CMAKE_CXX17_STANDARD_COMPILE_OPTION}")
    set(CMAKE_REQUIRED_QUIET ON)
    check_cxx_source_compiles([[
      #include <sentencepiece_processor.h>
      int main() {
        sentencepiece::SentencePieceProcessor processor;
        return processor.LoadFromSerializedProto("").ok() ? 1 : 0;
      }]] MEAP_SENTENCEPIECE_LINKS)
    cmake_pop_check_state()
    set(usable ${MEAP_SENTENCEPIECE_LINKS})
  endif()
  if(usable)
    set(${out} TRUE PARENT_SCOPE)
    set(MEAP_SENTENCEPIECE_LIBRARY "${MEAP_SENTENCEPIECE_LIBRARY}" PARENT_SCOPE)
    set(MEAP_SENTENCEPIECE_INCLUDE_DIR "${MEAP_SENTENCEPIECE_INCLUDE_DIR}" PARENT_SCOPE)
  elseif(NOT mode STREQUAL "AUTO")
    message(FATAL_ERROR "meap: MEAP_ENABLE_SENTENCEPIECE=${requested} but no usable SentencePiece was found "
                        "(sentencepiece_processor.h: ${MEAP_SENTENCEPIECE_INCLUDE_DIR}; libsentencepiece: "
                        "${MEAP_SENTENCEPIECE_LIBRARY}; on Debian: apt-get install libsentencepiece-dev)")
  endif()
endfunction()

# meap_sentencepiece_usage_requirements(<target>): meap::meap plus the library, and the macro
# meap/text/sentencepiece.hpp checks for.
function(meap_sentencepiece_usage_requirements target meap_target)
  target_link_libraries(${target} INTERFACE ${meap_target} "${MEAP_SENTENCEPIECE_LIBRARY}")
  target_compile_definitions(${target} INTERFACE MEAP_HAS_SENTENCEPIECE=1)
  if(NOT MEAP_SENTENCEPIECE_INCLUDE_DIR IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    target_include_directories(${target} SYSTEM INTERFACE "${MEAP_SENTENCEPIECE_INCLUDE_DIR}")
  endif()
endfunction()
