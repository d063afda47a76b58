# meapDist.cmake: how meap finds MPI for meap::dist (meap/dist/mpi.hpp: data-parallel training
# over MPI) and NCCL for meap::nccl (meap/dist/nccl.hpp: the same on GPUs). Used by meap's own
# CMakeLists and by the installed meapConfig.cmake, so both decide the same way. Optional:
# meap::meap never needs either.

include(${CMAKE_CURRENT_LIST_DIR}/meapOptional.cmake)

# meap_resolve_mpi(<out-var> <mode>): TRUE when MPI was found (Debian: libopenmpi-dev).
# <mode> is MEAP_ENABLE_MPI: AUTO (if found; silent otherwise), ON (required) or OFF.
function(meap_resolve_mpi out requested)
  meap_optional_mode(mode MEAP_ENABLE_MPI "${requested}")
  set(${out} FALSE PARENT_SCOPE)
  if(mode STREQUAL "OFF")
    return()
  endif()
  # The CXX component (a C++ project need not enable C), without the MPI-2 C++ bindings: meap
  # calls MPI's C API only.
  if(NOT TARGET MPI::MPI_CXX)
    set(MPI_CXX_SKIP_MPICXX ON)
    find_package(MPI QUIET COMPONENTS CXX)
  endif()
  if(TARGET MPI::MPI_CXX)
    set(${out} TRUE PARENT_SCOPE)
    set(MPIEXEC_EXECUTABLE "${MPIEXEC_EXECUTABLE}" PARENT_SCOPE)
  elseif(NOT mode STREQUAL "AUTO")
    message(FATAL_ERROR "meap: MEAP_ENABLE_MPI=${requested} but MPI was not found (on Debian: apt-get install libopenmpi-dev openmpi-bin)")
  endif()
endfunction()

# meap_dist_usage_requirements(<target> <meap-target>): meap::meap plus MPI's C library. meap
# calls the C API only, so OpenMPI's and MPICH's C++ bindings stay out of every translation unit.
function(meap_dist_usage_requirements target meap_target)
  target_link_libraries(${target} INTERFACE ${meap_target} MPI::MPI_CXX)
  # MEAP_HAS_MPI: meap/dist/launch.hpp starts MPI for a program launched by mpirun (without it,
  # such a launch is refused instead of running N independent copies).
  target_compile_definitions(${target} INTERFACE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1 MEAP_HAS_MPI=1)
endfunction()

# meap_resolve_nccl(<out-var>): TRUE when nccl.h and libnccl were found (the CUDA toolkit's, or a
# system install). Sets MEAP_NCCL_INCLUDE_DIR and MEAP_NCCL_LIBRARY in the caller's scope.
function(meap_resolve_nccl out)
  set(${out} FALSE PARENT_SCOPE)
  find_package(CUDAToolkit QUIET)
  set(hints "")
  if(CUDAToolkit_LIBRARY_ROOT)
    list(APPEND hints "${CUDAToolkit_LIBRARY_ROOT}")
  endif()
  if(CUDAToolkit_LIBRARY_DIR)
    list(APPEND hints "${CUDAToolkit_LIBRARY_DIR}" "${CUDAToolkit_LIBRARY_DIR}/..")
  endif()
  find_path(MEAP_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${hints} PATH_SUFFIXES include)
  find_library(MEAP_NCCL_LIBRARY nccl HINTS ${hints} PATH_SUFFIXES lib lib64)
  mark_as_advanced(MEAP_NCCL_INCLUDE_DIR MEAP_NCCL_LIBRARY)
  if(MEAP_NCCL_INCLUDE_DIR AND MEAP_NCCL_LIBRARY)
    set(${out} TRUE PARENT_SCOPE)
    set(MEAP_NCCL_INCLUDE_DIR "${MEAP_NCCL_INCLUDE_DIR}" PARENT_SCOPE)
    set(MEAP_NCCL_LIBRARY "${MEAP_NCCL_LIBRARY}" PARENT_SCOPE)
  endif()
endfunction()

# meap_nccl_usage_requirements(<target> <cuda-target>): meap::cuda plus NCCL. Not MPI: a program
# links meap::dist beside it to start its ranks with mpirun; a one-GPU program needs no MPI.
function(meap_nccl_usage_requirements target cuda_target)
  target_link_libraries(${target} INTERFACE ${cuda_target} "${MEAP_NCCL_LIBRARY}")
  target_include_directories(${target} SYSTEM INTERFACE "${MEAP_NCCL_INCLUDE_DIR}")
  # MEAP_HAS_NCCL: meap/dist/launch.hpp builds the NCCL group of a GPU rank started by mpirun.
  target_compile_definitions(${target} INTERFACE MEAP_HAS_NCCL=1)
endfunction()
