# run: resident generation through libllama, checked against llama.cpp's own
add_test(NAME run_matches_llama_completion
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/run_vs_llama.sh ${HY_BIN} ${HY_LLAMA_BIN_DIR} ${HY_TEST_WORK})
# resident with repacking: hypura's HYPURA_REPACK load gives libllama's own logits
add_test(NAME run_repack_identity
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/repack_identity.sh ${HY_BIN} ${HY_TEST_WORK})
add_test(NAME run_errors
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/run_errors.sh ${HY_BIN} ${HY_TEST_WORK})
add_test(NAME run_interactive
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/run_interactive.sh ${HY_BIN} ${HY_TEST_WORK})
add_test(NAME bench_smoke
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/bench_smoke.sh ${HY_BIN} ${HY_TEST_WORK})
