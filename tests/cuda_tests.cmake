# The GPU test suites, included from tests/CMakeLists.txt when CMAKE_CUDA_COMPILER is set.
# They build wherever nvcc is present; at run time each test skips itself (GTEST_SKIP) when no
# CUDA device is there. FRAMESTAGE_TEST_QUICK=1 shrinks sizes and frame counts, for runs under
# compute-sanitizer.
#
# test_cuda_failure breaks its CUDA context on purpose (a sticky error), so it is an executable of
# its own, labelled cuda_fault rather than cuda; it faults by design, so compute-sanitizer runs
# leave it out (and it skips itself under FRAMESTAGE_TEST_QUICK=1).
set(framestage_cuda_tests
  test_cuda_backend
  test_cuda_broadcast
  test_cuda_coordinator
  test_cuda_readback
  test_cuda_failure
  test_cuda_concurrency
  test_cuda_soak
  test_cuda_frame_checker
  test_cuda_device_address_check
  test_cuda_tick_graph
)
#
# C++20 for nvcc is given as a flag, as the top-level CMakeLists.txt does (framestage_cuda_flags):
# CMake 3.25 knows no CUDA_STANDARD 20 for nvcc and refuses to configure a target that asks for it.
if(NOT DEFINED framestage_cuda_flags)
  set(framestage_cuda_flags $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 -Xcompiler=-Wall,-Wextra>)
endif()
foreach(name IN LISTS framestage_cuda_tests)
  add_executable(${name} ${name}.cu)
  target_link_libraries(${name} PRIVATE framestage::framestage GTest::gtest_main CUDA::cudart)
  target_compile_options(${name} PRIVATE ${framestage_cuda_flags})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  if(name STREQUAL "test_cuda_failure")
    set(label cuda_fault)
  else()
    set(label cuda)
  endif()
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS ${label})
endforeach()

# test_cuda_exhaustion takes nearly all device memory for a moment, so ctest runs it alone
# (RUN_SERIAL) rather than beside other GPU tests (tools/gpu-check runs ctest -j4).
add_executable(test_cuda_exhaustion test_cuda_exhaustion.cu)
target_link_libraries(test_cuda_exhaustion PRIVATE framestage::framestage GTest::gtest_main
                                                   CUDA::cudart)
target_compile_options(test_cuda_exhaustion PRIVATE ${framestage_cuda_flags})
set_target_properties(test_cuda_exhaustion PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                                                      ${CMAKE_CURRENT_BINARY_DIR})
gtest_discover_tests(test_cuda_exhaustion DISCOVERY_TIMEOUT 60
                     PROPERTIES LABELS cuda RUN_SERIAL TRUE)
