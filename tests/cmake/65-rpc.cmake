# Remote tiers (issue 16): ggml's RPC backend. The plan's unit test needs no
# server; the others start ggml-rpc-server processes of the pinned build on
# 127.0.0.1 and skip (77) where that build has no RPC backend.
add_executable(test_plan_rpc ${CMAKE_CURRENT_SOURCE_DIR}/test_plan_rpc.c)
target_link_libraries(test_plan_rpc PRIVATE hypura_core)
add_test(NAME plan_rpc_unit COMMAND test_plan_rpc)
# logits of runs split over two servers (resident and streamed local part,
# dense and MoE) equal the resident run's bit for bit
add_test(NAME rpc_identity
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/rpc_identity.sh ${HY_BIN} ${HY_LLAMA_BIN_DIR} ${HY_TEST_WORK})
# a server killed or stopped mid-run, refused endpoints, serve going on without a lost server
add_test(NAME rpc_faults
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/rpc_faults.sh ${HY_BIN} ${HY_LLAMA_BIN_DIR} ${HY_TEST_WORK})
set_tests_properties(rpc_identity rpc_faults PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS rpc)
