# speculative decoding (issue 14): early-exit drafts from mkmodel, run --draft on a
# streamed target against plain decoding, refusals
add_test(NAME spec_decode
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/scripts/spec_decode.sh ${HY_BIN} ${HY_LLAMA_BIN_DIR} ${HY_TEST_WORK}
          ${LLAMA_CPP_DIR}/models)
