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
  # The tensor-core attention kernels need sm_80+: check, once the project is configured, every
  # target that links meap::cuda.
  meap_check_cuda_architectures_later()
  # CUDA 13 ships CCCL (CUB, Thrust, libcu++) under include/cccl; nvcc finds it by itself, a host
  # compiler needs the path.
  foreach(dir IN LISTS CUDAToolkit_INCLUDE_DIRS)
    if(EXISTS "${dir}/cccl/cub/cub.cuh")
      target_include_directories(${target} SYSTEM INTERFACE "${dir}/cccl")
    endif()
  endforeach()
endfunction()

# meap's attention kernels use mma.sync, ldmatrix and cp.async, which exist from sm_80 on: code
# generated for an older architecture compiles them to traps (the runtime then refuses the
# tensor-core path and says why, see kernels/cuda/attention.hpp). nvcc 13 defaults to sm_75, so a
# consumer that names no architecture gets exactly that. At the end of configuration (a deferred
# call in the top-level directory), every target that links meap::cuda has its CUDA_ARCHITECTURES
# read, and each entry below 80 (or `all`, which includes them) draws a warning naming the target.
# Set MEAP_CUDA_ARCHITECTURE_CHECK=FATAL to make it an error, OFF to skip it.
function(meap_check_cuda_architectures_later)
  get_property(scheduled GLOBAL PROPERTY MEAP_CUDA_ARCHITECTURE_CHECK_SCHEDULED)
  if(scheduled)
    return()
  endif()
  set_property(GLOBAL PROPERTY MEAP_CUDA_ARCHITECTURE_CHECK_SCHEDULED TRUE)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL meap_check_cuda_architectures "${CMAKE_SOURCE_DIR}")
endfunction()

function(meap_check_cuda_architectures directory)
  if(DEFINED MEAP_CUDA_ARCHITECTURE_CHECK AND MEAP_CUDA_ARCHITECTURE_CHECK STREQUAL "OFF")
    return()
  endif()
  set(mode WARNING)
  if(MEAP_CUDA_ARCHITECTURE_CHECK STREQUAL "FATAL")
    set(mode FATAL_ERROR)
  endif()
  set(directories "${directory}")
  while(directories)
    list(POP_FRONT directories current)
    get_property(children DIRECTORY "${current}" PROPERTY SUBDIRECTORIES)
    list(APPEND directories ${children})
    get_property(targets DIRECTORY "${current}" PROPERTY BUILDSYSTEM_TARGETS)
    foreach(target IN LISTS targets)
      get_target_property(type ${target} TYPE)
      if(type STREQUAL "INTERFACE_LIBRARY" OR type STREQUAL "UTILITY")
        continue()
      endif()
      get_target_property(libraries ${target} LINK_LIBRARIES)
      if(NOT libraries OR NOT ("meap::cuda" IN_LIST libraries OR "meap_cuda" IN_LIST libraries))
        continue()
      endif()
      get_target_property(architectures ${target} CUDA_ARCHITECTURES)
      if(NOT architectures)
        set(architectures "${CMAKE_CUDA_ARCHITECTURES}")
      endif()
      set(too_old "")
      foreach(entry IN LISTS architectures)
        if(entry MATCHES "^all")
          list(APPEND too_old "${entry}")
        elseif(entry MATCHES "^([0-9]+)")
          if(CMAKE_MATCH_1 LESS 80)
            list(APPEND too_old "${entry}")
          endif()
        endif()
      endforeach()
      if(too_old)
        list(JOIN too_old ", " listed)
        message(${mode} "meap: target '${target}' links meap::cuda with CUDA_ARCHITECTURES '${architectures}': "
                        "${listed} is below sm_80, where meap's tensor-core attention kernels are traps. Name only "
                        "80 or newer (e.g. set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES \"80;90\")); "
                        "meap refuses the tensor-core path at run time on such code.")
      endif()
    endforeach()
  endwhile()
endfunction()
