# meapBlas.cmake: how meap decides on an optimized BLAS for its large CPU GEMMs. Used by meap's
# own CMakeLists and by the installed meapConfig.cmake, so both decide the same way.
# Changes no CMAKE_* variable of the including project.
#
# Without a BLAS every GEMM runs through Eigen. With one, the large GEMMs (linear layers, the LM
# head) call cblas_sgemm / cblas_dgemm: OpenBLAS reaches about 1.4x Eigen's float GEMM on the AVX2
# machines we measured (docs/performance.md). Reference (netlib) BLAS is slower than Eigen, so
# AUTO accepts OpenBLAS only; ON takes whatever BLA_VENDOR names (FindBLAS's own default: any).

# meap_resolve_blas(<out-var> <mode>): TRUE when a CBLAS was found and should be used. <mode> is
# MEAP_BLAS: AUTO (OpenBLAS if found), ON (required; honours BLA_VENDOR) or OFF (Eigen only).
# Sets MEAP_CBLAS_LIBRARIES and MEAP_CBLAS_INCLUDE_DIR in the caller's scope when TRUE.
function(meap_resolve_blas out requested)
  string(TOUPPER "${requested}" mode)
  set(${out} FALSE PARENT_SCOPE)
  if(mode STREQUAL "OFF" OR mode STREQUAL "FALSE" OR mode STREQUAL "0")
    return()
  endif()
  if(NOT mode MATCHES "^(AUTO|ON|TRUE|1)$")
    message(FATAL_ERROR "meap: MEAP_BLAS='${requested}': expected AUTO, ON or OFF")
  endif()
  if(mode STREQUAL "AUTO")
    set(BLA_VENDOR OpenBLAS)  # function scope: the caller's BLA_VENDOR is untouched
  endif()
  find_package(BLAS QUIET)
  # Debian puts OpenBLAS's cblas.h under include/<multiarch>/ or include/openblas*/.
  find_path(MEAP_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas openblas-openmp openblas-pthread)
  set(usable FALSE)
  if(BLAS_FOUND AND MEAP_CBLAS_INCLUDE_DIR)
    # The header and the library must agree on cblas_sgemm (a Fortran-only BLAS has no CBLAS).
    include(CheckCXXSourceCompiles)
    include(CMakePushCheckState)
    cmake_push_check_state(RESET)
    set(CMAKE_REQUIRED_INCLUDES "${MEAP_CBLAS_INCLUDE_DIR}")
    set(CMAKE_REQUIRED_LIBRARIES "${BLAS_LIBRARIES}")
    set(CMAKE_REQUIRED_QUIET ON)
    check_cxx_source_compiles([[
      #include <cblas.h>
      int main() {
        float a = 1, b = 1, c = 0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
        return c == 1.0f ? 0 : 1;
      }]] MEAP_CBLAS_LINKS)
    cmake_pop_check_state()
    set(usable ${MEAP_CBLAS_LINKS})
  endif()
  if(usable)
    set(${out} TRUE PARENT_SCOPE)
    set(MEAP_CBLAS_LIBRARIES "${BLAS_LIBRARIES}" PARENT_SCOPE)
  elseif(NOT mode STREQUAL "AUTO")
    message(FATAL_ERROR "meap: MEAP_BLAS=${requested} but no BLAS with a CBLAS interface was found "
                        "(BLA_VENDOR='${BLA_VENDOR}'; on Debian: apt-get install libopenblas-openmp-dev)")
  endif()
endfunction()

# meap_blas_usage_requirements(<target>): what a consumer of the BLAS path needs.
function(meap_blas_usage_requirements target)
  target_compile_definitions(${target} INTERFACE MEAP_HAS_CBLAS=1)
  target_link_libraries(${target} INTERFACE ${MEAP_CBLAS_LIBRARIES})
  if(NOT MEAP_CBLAS_INCLUDE_DIR IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    target_include_directories(${target} SYSTEM INTERFACE "${MEAP_CBLAS_INCLUDE_DIR}")
  endif()
endfunction()
