# Every third-party dependency, found once, as imported targets.
find_package(PkgConfig REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)
pkg_check_modules(SentencePiece REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
# cpp-httplib (Debian builds it as a library): the HTTP server of `sepal serve-api`.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

# OpenBLAS, pthreads flavour: the kernels call it from their own thread pool on panels of a
# product (kernels/parallel.h), with its own threading set to 1. Not the serial flavour: Debian
# builds that one without locking, and concurrent calls corrupt each other's packing buffers.
# Not the OpenMP flavour: it would start a libgomp team for every pool thread that calls it.
# Linked by full path, which also gives the binaries a run path to this flavour's
# libopenblas.so.0 whichever flavour Debian's alternatives point at.
find_path(SEPAL_OPENBLAS_INCLUDE cblas.h
          HINTS /usr/include/x86_64-linux-gnu/openblas-pthread NO_DEFAULT_PATH)
find_library(SEPAL_OPENBLAS_LIB openblas
             HINTS /usr/lib/x86_64-linux-gnu/openblas-pthread NO_DEFAULT_PATH)
if(NOT SEPAL_OPENBLAS_INCLUDE OR NOT SEPAL_OPENBLAS_LIB)
  message(FATAL_ERROR "OpenBLAS (pthreads build) not found: apt-get install libopenblas-pthread-dev")
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
# HDF5 (Debian's serial build): prompt-tuning checkpoints (model/tuning_checkpoint.h).
find_package(HDF5 REQUIRED COMPONENTS C)
