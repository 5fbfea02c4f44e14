# LeakSanitizer (with ASan+UBSan) on `hypura run` and on served sessions, and a
# negative control that shows the check can fail. They need a -DHYPURA_SANITIZE=ON
# build (scripts/test-sanitize.sh makes one, `make test` runs it) and are skipped (77)
# in the normal build. Reports go to one file per process; see tests/scripts/leak_lib.sh.
if(HYPURA_SANITIZE)
  add_executable(leak_control ${PROJECT_SOURCE_DIR}/tests/sanitize/leak_control.c)
  set(HY_LEAK_CONTROL $<TARGET_FILE:leak_control>)
else()
  set(HY_LEAK_CONTROL /nonexistent)
endif()
add_test(NAME leak_control
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/leak_control.sh ${HY_LEAK_CONTROL} ${HY_TEST_WORK} ${HYPURA_SANITIZE}
          ${CMAKE_C_COMPILER_ID})
add_test(NAME leak_run
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/leak_run.sh ${HY_BIN} ${HY_TEST_WORK} ${HYPURA_SANITIZE})
add_test(NAME leak_serve
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/leak_serve.sh ${HY_BIN} ${HY_TEST_WORK} ${HYPURA_SANITIZE})
set_tests_properties(leak_control leak_run leak_serve PROPERTIES
  SKIP_RETURN_CODE 77 TIMEOUT 600 LABELS sanitize)
