# Install and export: the headers, libframestage (and libframestage_fortran, installed from
# fortran/), the CMake package `framestage` with the targets framestage::framestage and
# framestage::fortran, and pkg-config files for Make-based codes. Included from the top level,
# after every target exists.
include(CMakePackageConfigHelpers)

set(framestage_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/framestage)

install(TARGETS framestage EXPORT framestageTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/framestage DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")
install(EXPORT framestageTargets NAMESPACE framestage:: FILE framestageTargets.cmake
        DESTINATION ${framestage_cmake_dir})

# What the package config needs to find again: the CUDA toolkit this build used, if any.
if(CMAKE_CUDA_COMPILER)
  set(FRAMESTAGE_PACKAGE_HAS_CUDA 1)
  get_filename_component(FRAMESTAGE_PACKAGE_CUDA_ROOT "${CUDAToolkit_BIN_DIR}" DIRECTORY)
else()
  set(FRAMESTAGE_PACKAGE_HAS_CUDA 0)
  set(FRAMESTAGE_PACKAGE_CUDA_ROOT "")
endif()
configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/framestageConfig.cmake.in
  ${PROJECT_BINARY_DIR}/package/framestageConfig.cmake
  INSTALL_DESTINATION ${framestage_cmake_dir})
# 0.x: a minor version may break the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/framestageConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/framestageConfig.cmake
              ${PROJECT_BINARY_DIR}/package/framestageConfigVersion.cmake
        DESTINATION ${framestage_cmake_dir})

# pkg-config. The prefix is found from the .pc file's own place, so `cmake --install --prefix`
# anywhere gives a working file. A static libframestage needs its dependencies on the link line
# of every user (C and Fortran links included), a shared one only its own.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(FRAMESTAGE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(FRAMESTAGE_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  file(RELATIVE_PATH framestage_pc_up "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
  string(REGEX REPLACE "/$" "" framestage_pc_up "${framestage_pc_up}")
  set(FRAMESTAGE_PC_PREFIX "\${pcfiledir}/${framestage_pc_up}")
  set(FRAMESTAGE_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(FRAMESTAGE_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(FRAMESTAGE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
set(framestage_pc_deps "-lstdc++ -lm -pthread")
if(CMAKE_CUDA_COMPILER)
  # The runtime's directory goes in the rpath too: it is rarely on the loader's path.
  string(APPEND framestage_pc_deps
         " -L${CUDAToolkit_LIBRARY_DIR} -Wl,-rpath,${CUDAToolkit_LIBRARY_DIR} -lcudart")
endif()
get_target_property(framestage_type framestage TYPE)
if(framestage_type STREQUAL "STATIC_LIBRARY")
  set(FRAMESTAGE_PC_LIBS " ${framestage_pc_deps}")
  set(FRAMESTAGE_PC_LIBS_PRIVATE "")
else()
  set(FRAMESTAGE_PC_LIBS "")
  set(FRAMESTAGE_PC_LIBS_PRIVATE "${framestage_pc_deps}")
endif()
set(FRAMESTAGE_PC_HAS_CUDA ${FRAMESTAGE_PACKAGE_HAS_CUDA})
configure_file(${CMAKE_CURRENT_LIST_DIR}/framestage.pc.in ${PROJECT_BINARY_DIR}/package/framestage.pc
               @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/package/framestage.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(TARGET framestage_fortran)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/framestage-fortran.pc.in
                 ${PROJECT_BINARY_DIR}/package/framestage-fortran.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/package/framestage-fortran.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
