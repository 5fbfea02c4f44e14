# GPU tier (#6): bit-identity of streamed vs resident runs with the same GPU
# placement. Needs a GPU build of libllama and a GPU; skips (77) otherwise, so
# CI (no GPU) reports it skipped. bench/gpu_vs_llama.sh runs it on the H100.
add_test(NAME gpu_identity
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/gpu_identity.sh ${HY_BIN} ${HY_TEST_WORK})
set_tests_properties(gpu_identity PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600
  ENVIRONMENT "HYPURA_NO_STORAGE_PROFILE=1;HYPURA_NO_PERSIST_STATS=1")
