# meapPrograms.cmake: helpers for meap's own tests, examples and benchmarks (never installed).

# meap_configure_program(<target> [GPU_CHECK]): warnings, CUDA architectures, and the library it
# tests. GPU_CHECK marks a program of the GPU check (tools/gpu_check.sh): it is built to run on
# another machine than this one, so without a CBLAS (the CPU references in GPU tests are small;
# Eigen does them) and, like every CUDA translation unit, without -march=native.
function(meap_configure_program target)
  cmake_parse_arguments(arg "GPU_CHECK" "" "" ${ARGN})
  if(arg_GPU_CHECK)
    set_target_properties(${target} PROPERTIES MEAP_WITHOUT_BLAS ON)
    set_property(GLOBAL APPEND PROPERTY MEAP_GPU_CHECK_PROGRAMS ${target})
  endif()
  get_target_property(sources ${target} SOURCES)
  set(uses_cuda FALSE)
  foreach(source IN LISTS sources)
    if(source MATCHES "\\.cu$")
      set(uses_cuda TRUE)
    endif()
  endforeach()
  if(uses_cuda)
    target_link_libraries(${target} PRIVATE meap::cuda)
    set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES "${MEAP_CUDA_ARCHITECTURES}")
    if(MEAP_ENABLE_OPENMP)
      # OpenMP::OpenMP_CXX gives -fopenmp to C++ translation units only; the host code of a .cu
      # file (the CPU references of the GPU tests, meap::cpu calls in a CUDA program) needs it too.
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fopenmp>)
    endif()
  else()
    target_link_libraries(${target} PRIVATE meap::meap)
  endif()
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
  if(MEAP_NATIVE_ARCH)
    # AVX2/FMA (or better) for Eigen's GEMMs: about 4x the SSE2 baseline on the machines we measured.
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 at -O3 reports a bogus -Wrestrict inside libstdc++'s std::string operator+ (GCC bug
    # 105329), which every error message that concatenates strings reaches.
    # nvcc's host pass runs the same GCC: CUDA translation units that instantiate the trainer and
    # the checkpoint code reach the same libstdc++ inlines.
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-restrict>
                                             $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wno-restrict>)
    # On AVX-512 machines (-march=native), GCC 12 reports -Wmaybe-uninitialized inside its own
    # avx512fintrin.h (`__m512 __Y = __Y;`, the idiom for an undefined vector) once Eigen's packing
    # code is inlined; the location is a system header, but the middle end ignores that. GCC 13
    # no longer does this.
    # Boost.Test's own boost::function copies trip the same warning in large CUDA test files.
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-maybe-uninitialized>
                                             $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wno-maybe-uninitialized>)
  endif()
  if(MEAP_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-Werror>
      $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Werror>)
  endif()
endfunction()

# meap_link_boost_test(<target>): Boost.Test as its shared library; each test program defines
# BOOST_TEST_MODULE in one file (main() comes from the library's header then, or from
# tests/support/gpu_main.hpp with BOOST_TEST_NO_MAIN).
function(meap_link_boost_test target)
  target_link_libraries(${target} PRIVATE Boost::unit_test_framework)
  target_compile_definitions(${target} PRIVATE BOOST_TEST_DYN_LINK)
endfunction()

# meap_add_test(<name> SOURCES <files...> LABELS <labels...>)
# One Boost.Test executable per area. A test labelled `gpu` exits with 77 when no CUDA device is
# present, which CTest reports as skipped (never as passed).
function(meap_add_test name)
  cmake_parse_arguments(arg "" "" "SOURCES;LABELS" ${ARGN})
  add_executable(${name} ${arg_SOURCES})
  if("gpu" IN_LIST arg_LABELS)
    meap_configure_program(${name} GPU_CHECK)
  else()
    meap_configure_program(${name})
  endif()
  meap_link_boost_test(${name})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  # One translation unit per test program (MEAP_TEST_UNITY_BUILD, default ON): the files of an area
  # share meap's, Eigen's and Boost's headers and most template instantiations, which the compiler
  # then parses and instantiates once instead of once per file (about a third of the tests' build).
  if(MEAP_TEST_UNITY_BUILD)
    set_target_properties(${name} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 0)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${arg_LABELS}" SKIP_RETURN_CODE 77 TIMEOUT 600)
endfunction()

# meap_add_compile_fail_test(<name> SOURCE <file> REGEX <regex>)
# Passes when compiling <file> fails with a diagnostic matching <regex>.
function(meap_add_compile_fail_test name)
  cmake_parse_arguments(arg "" "SOURCE;REGEX" "" ${ARGN})
  add_library(${name} OBJECT EXCLUDE_FROM_ALL ${arg_SOURCE})
  meap_configure_program(${name})
  add_test(NAME ${name}
           COMMAND ${CMAKE_COMMAND} --build ${PROJECT_BINARY_DIR} --target ${name} --config $<CONFIG>)
  # Builds in one tree must not run concurrently.
  set_tests_properties(${name} PROPERTIES LABELS "cpu;compile" PASS_REGULAR_EXPRESSION "${arg_REGEX}"
                       RESOURCE_LOCK meap_build_tree TIMEOUT 600)
endfunction()
