# MoE expert streaming: cache policy (no files), expert-streaming identity and budget
add_executable(test_xcache ${CMAKE_CURRENT_SOURCE_DIR}/test_xcache.c)
target_link_libraries(test_xcache PRIVATE hypura_core)
add_test(NAME xcache_policy COMMAND test_xcache)
add_test(NAME expert_identity
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/expert_identity.sh ${HY_BIN} ${HY_TEST_WORK})
add_test(NAME expert_cgroup_budget
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/cgroup_budget.sh ${HY_BIN} ${HY_TEST_WORK} moe)
set_tests_properties(expert_cgroup_budget PROPERTIES SKIP_RETURN_CODE 77 RUN_SERIAL TRUE)
# the fine-grained layouts: qwen3moe (Q4_K), gpt-oss (MXFP4 experts with biases), qwen2moe (shared expert)
foreach(a qwen3moe gpt-oss qwen2moe)
  add_test(NAME expert_identity_${a}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/expert_identity_arch.sh ${HY_BIN} ${HY_TEST_WORK} ${a})
endforeach()
# the VRAM expert cache's mechanism (#15) with its arenas on the CPU device: bit-identity
add_test(NAME vxc_identity
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/vxc_identity.sh ${HY_BIN} ${HY_TEST_WORK})
add_test(NAME vxc_nvme_identity
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/vxc_nvme_identity.sh ${HY_BIN} ${HY_TEST_WORK})
add_executable(test_vxc ${CMAKE_CURRENT_SOURCE_DIR}/test_vxc.c)
target_link_libraries(test_vxc PRIVATE hypura_core)
add_test(NAME vxc_unit COMMAND test_vxc)
