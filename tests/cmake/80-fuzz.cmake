# Fuzzing (tests/fuzz): three targets — the GGUF reader as `inspect` uses it,
# the planner on any parsed header, and the JSON request parsing of every
# HTTP route.
#  - fuzz_regress_*: every kept input (corpus/<target> seeds and regress/<target>
#    crash reproducers) replayed through the harness, built here with the
#    project's compiler and tests/fuzz/driver.c: runs without clang.
#  - fuzz_build, fuzz_smoke_*: the libFuzzer binaries (clang, ASan+UBSan) built by
#    tests/fuzz/build.sh into ${CMAKE_BINARY_DIR}/fuzz, each fuzzed for a few
#    seconds (HYPURA_FUZZ_SECONDS); skipped (77) when clang/libFuzzer is missing.
# Long runs: see tests/fuzz/README.md.
set(HY_FUZZ_SRC ${PROJECT_SOURCE_DIR}/tests/fuzz)
set(HY_FUZZ_OUT ${CMAKE_BINARY_DIR}/fuzz)

add_executable(fuzz_regress_gguf ${HY_FUZZ_SRC}/fuzz_gguf.c ${HY_FUZZ_SRC}/driver.c
               ${PROJECT_SOURCE_DIR}/src/cli/cmd_inspect.c)
add_executable(fuzz_regress_plan ${HY_FUZZ_SRC}/fuzz_plan.c ${HY_FUZZ_SRC}/driver.c)
add_executable(fuzz_regress_api ${HY_FUZZ_SRC}/fuzz_api.c ${HY_FUZZ_SRC}/driver.c)
foreach(t gguf plan api)
  target_link_libraries(fuzz_regress_${t} PRIVATE hypura_core)
  add_test(NAME fuzz_regress_${t}
           COMMAND fuzz_regress_${t} ${HY_FUZZ_SRC}/corpus/${t} ${HY_FUZZ_SRC}/regress/${t})
endforeach()

add_test(NAME fuzz_build COMMAND ${HY_FUZZ_SRC}/build.sh ${HY_FUZZ_OUT} ${LLAMA_CPP_DIR} ${LLAMA_BUILD_DIR})
set_tests_properties(fuzz_build PROPERTIES FIXTURES_SETUP hy_fuzz_bins SKIP_RETURN_CODE 77 TIMEOUT 600)
if(DEFINED ENV{HYPURA_FUZZ_SECONDS})
  set(HY_FUZZ_SECONDS $ENV{HYPURA_FUZZ_SECONDS})
else()
  set(HY_FUZZ_SECONDS 5)
endif()
foreach(t gguf plan api)
  add_test(NAME fuzz_smoke_${t} COMMAND ${HY_FUZZ_SRC}/smoke.sh ${HY_FUZZ_OUT} ${t} ${HY_FUZZ_SECONDS})
  set_tests_properties(fuzz_smoke_${t} PROPERTIES FIXTURES_REQUIRED hy_fuzz_bins SKIP_RETURN_CODE 77 TIMEOUT 120)
endforeach()
