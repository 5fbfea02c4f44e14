# src/gguf (the hardened GGUF header reader) and `hypura inspect`.
# Models are written at test time with ggml's own gguf.h writer, so these tests
# do not depend on hypura-mkmodel and compare against an independent reader.

add_executable(test_gguf ${PROJECT_SOURCE_DIR}/tests/test_gguf.c)
target_link_libraries(test_gguf PRIVATE hypura_core)

set(GGW ${HY_TEST_WORK}/gguf)
file(MAKE_DIRECTORY ${GGW})

add_test(NAME gguf_roles COMMAND test_gguf roles)
# dense and MoE files from gguf.h: every offset, size, type, shape, role, layer,
# expert stride and the per-role / per-layer totals match gguf.h and the spec
add_test(NAME gguf_crosscheck COMMAND test_gguf crosscheck ${GGW})
# real headers: llama.cpp's vocabulary files (large string arrays, many KV types)
file(GLOB HY_VOCAB_GGUFS ${LLAMA_CPP_DIR}/models/ggml-vocab-*.gguf)
list(SORT HY_VOCAB_GGUFS)
add_test(NAME gguf_real_vocab_llama_spm COMMAND test_gguf real ${LLAMA_CPP_DIR}/models/ggml-vocab-llama-spm.gguf)
if(HY_VOCAB_GGUFS)
  add_test(NAME gguf_real_vocab_all COMMAND test_gguf real ${HY_VOCAB_GGUFS})
endif()
# truncations, hostile counts / lengths / types / offsets, byte flips
add_test(NAME gguf_corrupt COMMAND test_gguf corrupt ${GGW})

# the CLI: human and JSON output on generated files
set(HY_INSPECT $<TARGET_FILE:hypura>)
add_test(NAME inspect_cli_output COMMAND sh -c "set -e
  d='${GGW}/cli'; rm -rf \"$d\"; mkdir -p \"$d\"
  '$<TARGET_FILE:test_gguf>' mkfiles \"$d\"
  '${HY_INSPECT}' inspect \"$d/dense.gguf\" > \"$d/dense.txt\"
  for w in 'architecture   llama' 'quantization mix' 'by role' 'by layer' q4_K iq4_xs attention ffn 'layers 3'; do
    grep -qF -- \"$w\" \"$d/dense.txt\" || { cat \"$d/dense.txt\"; echo \"missing: $w\"; exit 1; }
  done
  if grep -q 'expert tensors' \"$d/dense.txt\"; then echo 'dense model shows experts'; exit 1; fi
  '${HY_INSPECT}' inspect \"$d/moe.gguf\" --tensors > \"$d/moe.txt\"
  for w in 'architecture   qwen3moe' 'experts 8, used per token (top-k) 2' 'expert tensors' ffn_gate_exps.weight \
           ffn_up_exps.bias router 'blk.3.ffn_gate_up_exps.weight' '[256, 192, 8]'; do
    grep -qF -- \"$w\" \"$d/moe.txt\" || { cat \"$d/moe.txt\"; echo \"missing: $w\"; exit 1; }
  done
  '${HY_INSPECT}' inspect --help | grep -q 'usage: hypura inspect'
  for f in dense moe; do
    '${HY_INSPECT}' inspect --json \"$d/$f.gguf\" > \"$d/$f.json\"
    python3 -c 'import json,sys
j = json.load(open(sys.argv[1]))
need = [\"path\",\"architecture\",\"name\",\"file_size\",\"n_params\",\"n_tensors\",\"data_offset\",\"alignment\",
        \"header_hash\",\"file_type\",\"hparams\",\"quant_mix\",\"roles\",\"layers\",\"tensors\",\"moe\"]
miss = [k for k in need if k not in j]
assert not miss, miss
assert len(j[\"tensors\"]) == j[\"n_tensors\"] > 0
t = j[\"tensors\"][0]
for k in [\"name\",\"role\",\"layer\",\"type\",\"shape\",\"size\",\"offset\",\"n_experts\",\"expert_stride\"]:
    assert k in t, k
assert sum(r[\"bytes\"] for r in j[\"roles\"].values()) == sum(t[\"size\"] for t in j[\"tensors\"])
assert len(j[\"layers\"]) == j[\"hparams\"][\"n_layer\"]
assert sum(q[\"n_tensors\"] for q in j[\"quant_mix\"]) == j[\"n_tensors\"]
if sys.argv[2] == \"moe\":
    assert j[\"moe\"] and j[\"hparams\"][\"n_expert\"] == 8 and j[\"hparams\"][\"n_expert_used\"] == 2
    ex = [t for t in j[\"tensors\"] if t[\"role\"] == \"expert\"]
    assert ex and all(t[\"n_experts\"] * t[\"expert_stride\"] == t[\"size\"] for t in ex)
else:
    assert not j[\"moe\"]
' \"$d/$f.json\" $f
  done")

# errors: exit 1 and exactly one line on stderr naming the problem; usage errors exit 2
set(HY_INSPECT_BAD
  "missing|/nonexistent/model.gguf|No such file"
  "directory|DIR|is a directory"
  "empty|DIR/empty.gguf|empty file"
  "bad_magic|DIR/bad_magic.gguf|bad magic"
  "truncated|DIR/truncated.gguf|truncated"
  "bad_type|DIR/bad_type.gguf|unknown type 99"
  "overlap|DIR/overlap.gguf|overlap")
foreach(c ${HY_INSPECT_BAD})
  string(REPLACE "|" ";" parts "${c}")
  list(GET parts 0 name)
  list(GET parts 1 file)
  list(GET parts 2 expect)
  string(REPLACE "DIR" "${GGW}/err_${name}" file "${file}")
  add_test(NAME inspect_cli_error_${name} COMMAND sh -c "
    d='${GGW}/err_${name}'; mkdir -p \"$d\"
    '$<TARGET_FILE:test_gguf>' mkfiles \"$d\" || exit 1
    for fmt in '' --json; do
      '${HY_INSPECT}' inspect $fmt '${file}' >\"$d/${name}.out\" 2>\"$d/${name}.err\"; rc=$?
      cat \"$d/${name}.err\"
      test $rc -eq 1 || { echo \"exit $rc, expected 1\"; exit 1; }
      test $(wc -l < \"$d/${name}.err\") -eq 1 || { echo 'expected exactly one line on stderr'; exit 1; }
      grep -q '^hypura inspect: ' \"$d/${name}.err\" || { echo 'no hypura inspect: prefix'; exit 1; }
      grep -qF -- '${expect}' \"$d/${name}.err\" || { echo 'message lacks: ${expect}'; exit 1; }
      test ! -s \"$d/${name}.out\" || { echo 'stdout not empty'; exit 1; }
    done")
endforeach()
add_test(NAME inspect_cli_usage COMMAND sh -c "
  '${HY_INSPECT}' inspect 2>/dev/null; test $? -eq 2 || exit 1
  '${HY_INSPECT}' inspect --bogus x.gguf 2>/dev/null; test $? -eq 2 || exit 1
  '${HY_INSPECT}' inspect a.gguf b.gguf 2>/dev/null; test $? -eq 2 || exit 1
  '${HY_INSPECT}' inspect --help >/dev/null; test $? -eq 0")
