# hypura-mkmodel: synthetic GGUF models are the fixtures of every other test,
# so check they are deterministic, loadable by the pinned libllama, that bad
# arguments are refused, and that --skew skews MoE routing.

set(MK $<TARGET_FILE:hypura-mkmodel>)
set(MKW ${HY_TEST_WORK}/mkmodel)
file(MAKE_DIRECTORY ${MKW})
set(MK_TINY "--dim 256 --layers 2 --ff 512 --heads 4 --kv-heads 2 --quiet")

# same arguments => same bytes, whatever the thread count; another seed => other bytes
add_test(NAME mkmodel_determinism_dense_q4k COMMAND sh -c "set -e
  '${MK}' ${MK_TINY} --type q4_k --seed 3 --threads 1 -o '${MKW}/det_d1.gguf' >/dev/null
  '${MK}' ${MK_TINY} --type q4_k --seed 3 --threads 2 -o '${MKW}/det_d2.gguf' >/dev/null
  '${MK}' ${MK_TINY} --type q4_k --seed 4 --threads 2 -o '${MKW}/det_d3.gguf' >/dev/null
  cmp '${MKW}/det_d1.gguf' '${MKW}/det_d2.gguf'
  if cmp -s '${MKW}/det_d1.gguf' '${MKW}/det_d3.gguf'; then echo 'seed 4 gave the same bytes as seed 3'; exit 1; fi
  rm -f '${MKW}'/det_d?.gguf")
add_test(NAME mkmodel_determinism_moe_q8 COMMAND sh -c "set -e
  '${MK}' ${MK_TINY} --type q8_0 --experts 4 --top-k 2 --skew 0.5 --threads 1 -o '${MKW}/det_m1.gguf' >/dev/null
  '${MK}' ${MK_TINY} --type q8_0 --experts 4 --top-k 2 --skew 0.5 --threads 2 -o '${MKW}/det_m2.gguf' >/dev/null
  '${MK}' ${MK_TINY} --type q8_0 --experts 4 --top-k 2 --skew 0.5 --threads 2 --seed 9 -o '${MKW}/det_m3.gguf' >/dev/null
  cmp '${MKW}/det_m1.gguf' '${MKW}/det_m2.gguf'
  if cmp -s '${MKW}/det_m1.gguf' '${MKW}/det_m3.gguf'; then echo 'seed 9 gave the same bytes as seed 1'; exit 1; fi
  rm -f '${MKW}'/det_m?.gguf")

# every supported type loads in llama-completion and generates (greedy)
foreach(t f16 q8_0 q4_0 q4_k q6_k)
  add_test(NAME mkmodel_loadable_${t} COMMAND sh -c "set -e
    '${MK}' ${MK_TINY} --type ${t} -o '${MKW}/load_${t}.gguf' >/dev/null
    '${HY_LLAMA_BIN_DIR}/llama-completion' -m '${MKW}/load_${t}.gguf' -p hello -n 4 --temp 0 -no-cnv \
      -t 2 --no-warmup -c 256 </dev/null >'${MKW}/load_${t}.out' 2>'${MKW}/load_${t}.err' ||
      { tail -5 '${MKW}/load_${t}.err'; exit 1; }
    rm -f '${MKW}/load_${t}.gguf' '${MKW}/load_${t}.out' '${MKW}/load_${t}.err'")
endforeach()
add_test(NAME mkmodel_loadable_moe COMMAND sh -c "set -e
  '${MK}' ${MK_TINY} --type q4_k --experts 8 --top-k 2 --skew 1 -o '${MKW}/load_moe.gguf' >/dev/null
  '${HY_LLAMA_BIN_DIR}/llama-completion' -m '${MKW}/load_moe.gguf' -p hello -n 4 --temp 0 -no-cnv \
    -t 2 --no-warmup -c 256 </dev/null >'${MKW}/load_moe.out' 2>'${MKW}/load_moe.err' ||
    { tail -5 '${MKW}/load_moe.err'; exit 1; }
  rm -f '${MKW}/load_moe.gguf' '${MKW}/load_moe.out' '${MKW}/load_moe.err'")

# --target-size picks the layer count: within one layer of the target
add_test(NAME mkmodel_target_size COMMAND sh -c "set -e
  '${MK}' --dim 256 --ff 512 --type q8_0 --target-size 40M --quiet -o '${MKW}/target.gguf' >/dev/null
  s=$(stat -c %s '${MKW}/target.gguf'); rm -f '${MKW}/target.gguf'
  echo size=$s
  test $s -gt 38000000 && test $s -lt 46000000")

# bad arguments: non-zero exit, one line naming the problem, no file left behind
set(MK_BAD_CASES
  "no_output|--dim 256|-o OUT"
  "heads|--heads 3 -o X|must divide --dim"
  "kv_heads|--heads 4 --kv-heads 3 -o X|must divide --heads"
  "kquant_rows|--type q4_k --dim 320 --heads 4 -o X|multiples of 256"
  "topk|--experts 4 --top-k 5 -o X|--top-k"
  "skew_range|--experts 4 --skew 2 -o X|--skew"
  "skew_dense|--skew 0.5 -o X|MoE"
  "type|--type q5_x -o X|unknown --type"
  "number|--dim abc -o X|--dim"
  "unknown|--bogus 1 -o X|unknown option"
  "vocab|--vocab /nonexistent.gguf -o X|vocab"
  "target|--target-size 1K -o X|smaller than")
foreach(c ${MK_BAD_CASES})
  string(REPLACE "|" ";" parts "${c}")
  list(GET parts 0 name)
  list(GET parts 1 args)
  list(GET parts 2 expect)
  string(REPLACE " X" " '${MKW}/bad_${name}.gguf'" args "${args}")
  add_test(NAME mkmodel_error_${name} COMMAND sh -c "
    if '${MK}' ${args} --quiet >/dev/null 2>'${MKW}/bad_${name}.err'; then echo 'exit 0 for: ${args}'; exit 1; fi
    cat '${MKW}/bad_${name}.err'
    grep -qF -- '${expect}' '${MKW}/bad_${name}.err' || { echo 'message lacks: ${expect}'; exit 1; }
    test ! -e '${MKW}/bad_${name}.gguf' && test ! -e '${MKW}/bad_${name}.gguf.tmp'")
endforeach()

# the vocab is never overwritten, even when it is the output
add_test(NAME mkmodel_error_vocab_is_output COMMAND sh -c "set -e
  cp '${LLAMA_CPP_DIR}/models/ggml-vocab-llama-spm.gguf' '${MKW}/vocab_copy.gguf'
  before=$(cksum < '${MKW}/vocab_copy.gguf')
  if '${MK}' --vocab '${MKW}/vocab_copy.gguf' -o '${MKW}/vocab_copy.gguf' --quiet; then echo 'exit 0'; exit 1; fi
  test \"$(cksum < '${MKW}/vocab_copy.gguf')\" = \"$before\"
  rm -f '${MKW}/vocab_copy.gguf'")

# a full disk gives a clear error and leaves no temp file (needs a small tmpfs: root only)
add_test(NAME mkmodel_error_disk_full COMMAND sh -c "
  d='${MKW}/full'; mkdir -p \"$d\"
  if ! mount -t tmpfs -o size=2m tmpfs \"$d\" 2>/dev/null; then echo 'skip: cannot mount a tmpfs'; exit 0; fi
  '${MK}' ${MK_TINY} --type f32 -o \"$d/m.gguf\" 2>\"${MKW}/full.err\" >/dev/null; rc=$?
  ls -A \"$d\" > '${MKW}/full.ls'; umount \"$d\"
  cat '${MKW}/full.err'
  test $rc -ne 0 && grep -q 'No space left' '${MKW}/full.err' && test ! -s '${MKW}/full.ls'")

# --skew 1 concentrates routing, --skew 0 does not (reads ffn_moe_topk via cb_eval)
add_executable(test_mkmodel_skew ${PROJECT_SOURCE_DIR}/tests/test_mkmodel_skew.c)
target_link_libraries(test_mkmodel_skew PRIVATE hypura_core)
add_test(NAME mkmodel_skew COMMAND test_mkmodel_skew ${MK} ${MKW})
