# The fault table (issue #7): I/O faults injected by the hook in src/io
# (HYPURA_IO_FAULT: EIO, short reads, EAGAIN, a slow device; +LEN ranges and
# #COUNT transient faults) and the model file truncated or renamed over while
# in use, against `hypura run` in dense-FFN-streaming and expert-streaming and
# `hypura serve` in both. Each row asserts the observed behaviour: a one-line
# error naming tensor, file, offset and problem (exit 1 for run; for serve the
# failing request gets the error and the next one is answered in full), or
# logits bit-identical to the resident run where the fault is absorbed. No
# crash, no hang (every command under `timeout`).
set(HY_FAULT_ENV "HYPURA_NO_STORAGE_PROFILE=1")
foreach(kind dense experts)
  add_test(NAME faults_run_${kind}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/faults_run.sh ${HY_BIN} ${HY_TEST_WORK} ${kind})
  add_test(NAME faults_serve_${kind}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/faults_serve.sh ${HY_BIN} ${HY_TEST_WORK} ${kind})
  set_tests_properties(faults_run_${kind} faults_serve_${kind} PROPERTIES
    TIMEOUT 600 LABELS faults ENVIRONMENT "${HY_FAULT_ENV}")
endforeach()
# a model file cut in its header, in its data, or while it loads
add_test(NAME faults_load_truncated
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/faults_load.sh ${HY_BIN} ${HY_TEST_WORK})
# a model on tmpfs / ramfs (no O_DIRECT): buffered reads, one warning naming the
# filesystem, identical logits; skipped (77) without a writable tmpfs or ramfs
add_test(NAME faults_tmpfs
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/faults_tmpfs.sh ${HY_BIN} ${HY_TEST_WORK})
set_tests_properties(faults_load_truncated faults_tmpfs PROPERTIES
  TIMEOUT 300 LABELS faults ENVIRONMENT "${HY_FAULT_ENV}")
set_tests_properties(faults_tmpfs PROPERTIES SKIP_RETURN_CODE 77)
