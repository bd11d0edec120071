# Every third-party dependency, found once, as imported targets.
find_package(PkgConfig REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)
pkg_check_modules(SentencePiece REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

# OpenBLAS, OpenMP flavour: its threads then share the OpenMP pool our kernels use,
# and a call made inside one of our parallel regions runs single-threaded.
find_path(SEPAL_OPENBLAS_INCLUDE cblas.h
          HINTS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/openblas
          NO_DEFAULT_PATH)
find_library(SEPAL_OPENBLAS_LIB openblas
             HINTS /usr/lib/x86_64-linux-gnu/openblas-openmp NO_DEFAULT_PATH)
if(NOT SEPAL_OPENBLAS_INCLUDE OR NOT SEPAL_OPENBLAS_LIB)
  message(FATAL_ERROR "OpenBLAS (OpenMP build) not found: apt-get install libopenblas-openmp-dev")
endif()
add_library(sepal_openblas INTERFACE IMPORTED)
target_include_directories(sepal_openblas INTERFACE ${SEPAL_OPENBLAS_INCLUDE})
target_link_libraries(sepal_openblas INTERFACE ${SEPAL_OPENBLAS_LIB})

if(SEPAL_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

find_package(Threads REQUIRED)
find_package(MPI REQUIRED COMPONENTS CXX)
pkg_check_modules(UCX REQUIRED IMPORTED_TARGET ucx)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
