# hypura serve: driven by real clients (the official `ollama` and `openai` npm
# packages, pinned in tests/node/package.json and installed by scripts/setup.sh)
# and by raw HTTP, against a tiny synthetic model made once for all of them.
# Each test starts its own server on a free port (--port 0). A test exits 77
# (skipped) with the reason when node or the npm clients are missing.

set(SRV_W ${HY_TEST_WORK}/server)
file(MAKE_DIRECTORY ${SRV_W})
set(SRV_NODE_DIR ${PROJECT_SOURCE_DIR}/tests/node)
find_program(NODE_EXE node)

# context 16384 so that a long generation (the cancellation test) has room
add_test(NAME server_model COMMAND sh -c "'$<TARGET_FILE:hypura-mkmodel>' --dim 256 --layers 2 --ff 512 \
  --type q8_0 --ctx 16384 --quiet -o '${SRV_W}/tiny.gguf.new' >/dev/null && mv '${SRV_W}/tiny.gguf.new' '${SRV_W}/tiny.gguf'")
set_tests_properties(server_model PROPERTIES FIXTURES_SETUP server_model)

foreach(part clients errors load cancel batch)
  if(NODE_EXE)
    add_test(NAME server_${part} COMMAND ${NODE_EXE} ${SRV_NODE_DIR}/server_${part}.test.mjs)
  else()
    add_test(NAME server_${part} COMMAND sh -c "echo 'skip: node is not installed'; exit 77")
  endif()
  set_tests_properties(server_${part} PROPERTIES
    FIXTURES_REQUIRED server_model
    SKIP_RETURN_CODE 77
    TIMEOUT 120
    ENVIRONMENT "HY_BIN=${HY_BIN};HY_TEST_WORK=${SRV_W};HYPURA_NO_STORAGE_PROFILE=1;XDG_CACHE_HOME=${SRV_W}/cache;NODE_NO_WARNINGS=1")
endforeach()
add_test(NAME server_streaming_modes
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/serve_streaming.sh ${HY_BIN} ${HY_TEST_WORK})
# serve --repack on a streamed model: resident weights repacked, every step padded to the
# repacked GEMM's 4 rows; 8 concurrent answers complete, how many differ from alone printed
add_test(NAME server_repack_streamed
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/serve_repack.sh ${HY_BIN} ${HY_TEST_WORK})
set_tests_properties(server_repack_streamed PROPERTIES TIMEOUT 300)
