# the tier scheduler: plan unit tests (no files), streaming identity, budgets
add_executable(test_plan ${CMAKE_CURRENT_SOURCE_DIR}/test_plan.c)
target_link_libraries(test_plan PRIVATE hypura_core)
add_test(NAME plan_unit COMMAND test_plan)
add_test(NAME stream_identity
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/stream_identity.sh ${HY_BIN} ${HY_TEST_WORK})
add_test(NAME stream_cgroup_budget
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/cgroup_budget.sh ${HY_BIN} ${HY_TEST_WORK} dense)
set_tests_properties(stream_cgroup_budget PROPERTIES SKIP_RETURN_CODE 77 RUN_SERIAL TRUE)
add_executable(test_place ${CMAKE_CURRENT_SOURCE_DIR}/test_place.c)
target_link_libraries(test_place PRIVATE hypura_core)
add_test(NAME place_unit COMMAND test_place)
