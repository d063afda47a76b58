# meapCuda.cmake: how meap decides on CUDA and what meap::cuda carries. Used by meap's own
# CMakeLists and by the installed meapConfig.cmake, so both define meap::cuda the same way.
# Changes no CMAKE_* variable of the including project.

# meap_resolve_cuda(<out-var> <mode>): TRUE when CUDA should be used. <mode> is the value of
# MEAP_ENABLE_CUDA: AUTO (when a CUDA toolkit with nvcc is found), ON (required) or OFF (never).
function(meap_resolve_cuda out requested)
  string(TOUPPER "${requested}" mode)
  if(mode STREQUAL "OFF" OR mode STREQUAL "FALSE" OR mode STREQUAL "0")
    set(${out} FALSE PARENT_SCOPE)
    return()
  endif()
  if(NOT mode MATCHES "^(AUTO|ON|TRUE|1)$")
    message(FATAL_ERROR "meap: MEAP_ENABLE_CUDA='${requested}': expected AUTO, ON or OFF")
  endif()
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND AND CUDAToolkit_NVCC_EXECUTABLE AND EXISTS "${CUDAToolkit_NVCC_EXECUTABLE}"
     AND TARGET CUDA::cudart AND TARGET CUDA::cublasLt)
    set(${out} TRUE PARENT_SCOPE)
  elseif(mode STREQUAL "AUTO")
    set(${out} FALSE PARENT_SCOPE)
  else()
    message(FATAL_ERROR "meap: MEAP_ENABLE_CUDA=${requested} but no CUDA toolkit with nvcc, cudart and "
                        "cuBLASLt was found (set CUDAToolkit_ROOT, or MEAP_ENABLE_CUDA=OFF)")
  endif()
endfunction()

# meap_cuda_usage_requirements(<target>): the INTERFACE requirements of meap::cuda.
function(meap_cuda_usage_requirements target)
  # The CUDA runtime: a target linked by nvcc already gets one, chosen by its CUDA_RUNTIME_LIBRARY
  # (static by default); adding CUDA::cudart there would put a second runtime in the process.
  # Targets linked by the host linker (e.g. C++ executables over .cu static libraries) get cudart.
  target_link_libraries(${target} INTERFACE meap::meap CUDA::cublasLt $<$<NOT:$<LINK_LANGUAGE:CUDA>>:CUDA::cudart>)
  # C++20 in CUDA translation units. CMake 3.25 does not know nvcc's C++20 flag (cuda_std_20 is
  # missing from CMAKE_CUDA_COMPILE_FEATURES), so where the feature is unknown, or CUDA is not
  # enabled yet, the flag is given directly.
  if("cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
    target_compile_features(${target} INTERFACE cuda_std_20)
  else()
    target_compile_options(${target} INTERFACE $<$<COMPILE_LANG_AND_ID:CUDA,NVIDIA>:-std=c++20>)
  endif()
  # CUDA 13 ships CCCL (CUB, Thrust, libcu++) under include/cccl; nvcc finds it by itself, a host
  # compiler needs the path.
  foreach(dir IN LISTS CUDAToolkit_INCLUDE_DIRS)
    if(EXISTS "${dir}/cccl/cub/cub.cuh")
      target_include_directories(${target} SYSTEM INTERFACE "${dir}/cccl")
    endif()
  endforeach()
endfunction()
