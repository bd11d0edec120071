# The few helpers every CMakeLists in the tree uses.

set(SEPAL_WARNINGS -Wall -Wextra -Wpedantic -Wno-unused-parameter)
# Tests write protocol messages by their first fields and leave the rest at their defaults; the
# project's own code names every field.
set(SEPAL_TEST_WARNINGS ${SEPAL_WARNINGS} -Wno-missing-field-initializers)

# sepal_add_library(NAME SOURCES ... [DEPS public deps] [PRIVATE_DEPS ...])
function(sepal_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${SEPAL_WARNINGS}>)
endfunction()

# sepal_add_test(NAME SOURCES ... DEPS ... [LABELS ...] [TIMEOUT seconds])
# One gtest binary, one ctest entry, always with a timeout.
function(sepal_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  # A test's own sources build at -O1 (the code under test is the libraries', built as configured):
  # they are a third of the build, and -O1 compiles them about a third faster than -O3.
  target_compile_options(${name} PRIVATE ${SEPAL_TEST_WARNINGS} $<$<CONFIG:Release,RelWithDebInfo>:-O1>)
  target_compile_definitions(${name} PRIVATE
    SEPAL_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    SEPAL_BINARY_DIR="${PROJECT_BINARY_DIR}")
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}"
                       ENVIRONMENT "OMP_NUM_THREADS=2")
endfunction()

# sepal_add_script_test(NAME COMMAND ... [LABELS ...] [TIMEOUT seconds])
function(sepal_add_script_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${ARG_COMMAND})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()
