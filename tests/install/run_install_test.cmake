# The install test: `cmake --install` the build into a fresh prefix, check that the installed
# `framestage` program runs, then build and run the consumers against it: a CMake project
# (find_package, C++ and C, CUDA where the build had nvcc, Fortran where there is one), and a
# Makefile that takes its flags from pkg-config (where pkg-config and make are).
#   -DBUILD_DIR=  the framestage build tree      -DWORK_DIR=  scratch space (emptied first)
#   -DSOURCE_DIR= this directory                 -DGENERATOR= -DBUILD_TYPE= as the build's
#   -DC_COMPILER= -DCXX_COMPILER= -DFortran_COMPILER= (empty: no Fortran)
#   -DCUDA_COMPILER= -DCUDA_ARCHITECTURES= (empty compiler: no CUDA consumer)
#   -DCLI=        ON where the build has the framestage program (FRAMESTAGE_BUILD_TOOLS)
#   -DLINK_FLAGS= what every link of the build got (the sanitizer's flags), as a ;-list
cmake_minimum_required(VERSION 3.25)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT status EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "install test: `${command}` failed (${status}):\n${out}")
  endif()
  message(STATUS "${out}")
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(installed include/framestage/framestage.h include/framestage/framestage.hpp)
  if(NOT EXISTS ${prefix}/${installed})
    message(FATAL_ERROR "install test: ${installed} was not installed")
  endif()
endforeach()

# The program, from the prefix: its default suite is compiled in, so it needs nothing else.
if(CLI)
  run(${prefix}/bin/framestage --help)
  run(${prefix}/bin/framestage bench --list)
endif()

list(JOIN LINK_FLAGS " " link_flags)
set(fortran OFF)
set(cuda OFF)
set(compilers -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
if(Fortran_COMPILER)
  set(fortran ON)
  list(APPEND compilers -DCMAKE_Fortran_COMPILER=${Fortran_COMPILER})
endif()
if(CUDA_COMPILER)
  set(cuda ON)
  list(APPEND compilers -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER}
       "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}")
endif()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/consumer -B ${WORK_DIR}/cmake -G ${GENERATOR}
    -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_PREFIX_PATH=${prefix} ${compilers}
    -DCONSUMER_FORTRAN=${fortran} -DCONSUMER_CUDA=${cuda} "-DCMAKE_EXE_LINKER_FLAGS=${link_flags}")
run(${CMAKE_COMMAND} --build ${WORK_DIR}/cmake)
set(programs consumer_cpp consumer_c)
if(fortran)
  list(APPEND programs consumer_fortran)
endif()
if(cuda)
  list(APPEND programs consumer_cuda)
else()
  message(STATUS "install test: this build has no CUDA compiler; the CUDA consumer is not built")
endif()
foreach(program IN LISTS programs)
  run(${WORK_DIR}/cmake/${program})
endforeach()

find_program(pkg_config pkg-config)
find_program(make NAMES make gmake)
if(NOT pkg_config OR NOT make)
  message(STATUS "install test: no pkg-config or make here; the pkg-config consumer is not built")
  return()
endif()
file(GLOB_RECURSE pc_files ${prefix}/framestage.pc)
list(GET pc_files 0 pc_file)
get_filename_component(pc_dir ${pc_file} DIRECTORY)
file(MAKE_DIRECTORY ${WORK_DIR}/make)
set(make_fortran 0)
if(fortran)
  set(make_fortran 1)
endif()
run(${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${pc_dir}
    ${make} -f ${SOURCE_DIR}/make/Makefile -C ${WORK_DIR}/make SRC=${SOURCE_DIR}/consumer
    CC=${C_COMPILER} FC=${Fortran_COMPILER} FORTRAN=${make_fortran}
    "EXTRA_LDFLAGS=${link_flags}")
run(${WORK_DIR}/make/consumer_c_make)
if(fortran)
  run(${WORK_DIR}/make/consumer_fortran_make)
endif()
