# hypura-mkmodel: synthetic GGUF models are the fixtures of every other test,
# so check they are deterministic, loadable by the pinned libllama (every
# architecture layout), that bad arguments are refused, and that --skew and
# --routing zipf shape MoE routing as documented.

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

# the llama layout is what it always was: the same bytes as the version before the other
# layouts were added (sha256 recorded from it; a change here breaks every benchmark's
# comparability with earlier results: change it only on purpose), and --arch llama is the default
add_test(NAME mkmodel_llama_unchanged COMMAND sh -c "set -e
  '${MK}' ${MK_TINY} --type q4_k --seed 3 -o '${MKW}/gold_d.gguf' >/dev/null
  '${MK}' ${MK_TINY} --type q8_0 --experts 4 --top-k 2 --skew 0.5 -o '${MKW}/gold_m.gguf' >/dev/null
  '${MK}' ${MK_TINY} --type q8_0 --experts 4 --top-k 2 --skew 0.5 --arch llama --routing skew -o '${MKW}/gold_m2.gguf' >/dev/null
  cmp '${MKW}/gold_m.gguf' '${MKW}/gold_m2.gguf'
  echo '7e46d919b4ad90044cdcadec5042659ab6bbdb3b437cad7aab1b2a3258e2e3c7  ${MKW}/gold_d.gguf
26690e7a600580fd52ee3af68addd49600492aa422f8bfa064d02e72b78551b9  ${MKW}/gold_m.gguf' | sha256sum -c
  rm -f '${MKW}'/gold_*.gguf")

# the MoE layouts of today's fine-grained models; tiny shapes (the real ones in the README)
set(MK_ARCH_qwen3moe "--arch qwen3moe --experts 16 --top-k 4 --expert-ff 256 --head-dim 128 --type q4_k --routing zipf")
set(MK_ARCH_gpt-oss "--arch gpt-oss --dim 288 --heads 8 --head-dim 64 --experts 8 --top-k 2 --expert-ff 288 --type q8_0")
set(MK_ARCH_qwen2moe "--arch qwen2moe --experts 8 --top-k 2 --expert-ff 256 --shared-ff 512 --type q8_0 --skew 1")
# what libllama must report loading each (print_info, the loader's type counts)
set(MK_EXPECT_qwen3moe "arch += qwen3moe$" "n_expert += 16$" "n_ff_exp += 256$" "n_embd_head_k += 128$"
  "type q4_K: +[0-9]+ tensors")
set(MK_EXPECT_gpt-oss "arch += gpt-oss$" "n_swa += 128$" "n_ff_exp += 288$" "n_embd_head_k += 64$"
  "rope scaling += yarn" "file type += MXFP4 MoE" "type mxfp4: +6 tensors")
set(MK_EXPECT_qwen2moe "arch += qwen2moe$" "n_ff_exp += 256$" "n_ff_shexp += 512$")
foreach(a qwen3moe gpt-oss qwen2moe)
  set(args "--dim 256 --layers 2 --heads 4 --kv-heads 2 --quiet ${MK_ARCH_${a}}")
  add_test(NAME mkmodel_determinism_${a} COMMAND sh -c "set -e
    '${MK}' ${args} --threads 1 -o '${MKW}/det_${a}1.gguf' >/dev/null
    '${MK}' ${args} --threads 2 -o '${MKW}/det_${a}2.gguf' >/dev/null
    '${MK}' ${args} --threads 2 --seed 5 -o '${MKW}/det_${a}3.gguf' >/dev/null
    cmp '${MKW}/det_${a}1.gguf' '${MKW}/det_${a}2.gguf'
    if cmp -s '${MKW}/det_${a}1.gguf' '${MKW}/det_${a}3.gguf'; then echo 'seed 5 gave the same bytes as seed 1'; exit 1; fi
    rm -f '${MKW}'/det_${a}?.gguf")
  # loads in llama-completion (the loader checks every name and shape), generates, and
  # has the architecture's metadata and tensor types as libllama reads them
  set(checks "")
  foreach(pat ${MK_EXPECT_${a}})
    string(APPEND checks "grep -qE '${pat}' '${MKW}/load_${a}.err' || { echo 'libllama did not report: ${pat}'; exit 1; }\n")
  endforeach()
  add_test(NAME mkmodel_loadable_${a} COMMAND sh -c "set -e
    '${MK}' ${args} -o '${MKW}/load_${a}.gguf' >/dev/null
    '${HY_LLAMA_BIN_DIR}/llama-completion' -m '${MKW}/load_${a}.gguf' -p 'The capital of France is' -n 8 --temp 0 -no-cnv \
      -t 2 --no-warmup -c 256 -v </dev/null >'${MKW}/load_${a}.out' 2>'${MKW}/load_${a}.err' ||
      { tail -5 '${MKW}/load_${a}.err'; exit 1; }
    grep -E 'print_info: (arch|n_expert|n_expert_used|n_ff_exp|n_ff_shexp|n_swa|n_embd_head_k|file type) |llama_model_loader: - type' '${MKW}/load_${a}.err'
    ${checks}
    test -s '${MKW}/load_${a}.out'
    rm -f '${MKW}/load_${a}.gguf' '${MKW}/load_${a}.out' '${MKW}/load_${a}.err'")
endforeach()

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
  "arch|--arch mixtral -o X|unknown --arch"
  "arch_dense|--arch qwen3moe -o X|give --experts"
  "expert_ff_dense|--expert-ff 256 -o X|MoE models only"
  "expert_ff_llama|--experts 4 --expert-ff 256 -o X|--arch qwen3moe"
  "shared_ff|--arch qwen3moe --experts 4 --shared-ff 256 -o X|qwen2moe only"
  "sliding_window|--arch qwen3moe --experts 4 --sliding-window 64 -o X|gpt-oss only"
  "head_dim_llama|--head-dim 128 -o X|--head-dim needs"
  "head_dim_odd|--arch qwen3moe --experts 4 --head-dim 63 -o X|must be even"
  "gpt_oss_dim|--arch gpt-oss --experts 4 --dim 300 --heads 4 --head-dim 64 -o X|gpt-oss: MXFP4 experts need --dim and --expert-ff to be multiples of 32 (got dim 300"
  "gpt_oss_expert_ff|--arch gpt-oss --experts 4 --dim 288 --heads 4 --head-dim 64 --expert-ff 100 -o X|multiples of 32 (got dim 288, expert-ff 100"
  "qwen3moe_q4k_ff|--arch qwen3moe --experts 4 --type q4_k --expert-ff 128 -o X|multiples of 256"
  "expert_type|--experts 4 --expert-type q3_k -o X|unknown --expert-type"
  "routing|--experts 4 --routing hot -o X|unknown --routing"
  "routing_dense|--routing zipf -o X|MoE models only"
  "routing_skew|--experts 4 --routing zipf --skew 0.5 -o X|--routing skew only"
  "zipf_dim|--experts 4 --routing zipf --dim 32 --heads 2 --kv-heads 2 -o X|--dim >= 72"
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

# --skew 1 concentrates routing, --skew 0 does not; --routing zipf: the top 10 % of the
# experts take 60-90 % of the selections, hot sets per layer and per prompt (reads
# ffn_moe_topk via cb_eval)
add_executable(test_mkmodel_skew ${PROJECT_SOURCE_DIR}/tests/test_mkmodel_skew.c)
target_link_libraries(test_mkmodel_skew PRIVATE hypura_core)
add_test(NAME mkmodel_skew COMMAND test_mkmodel_skew ${MK} ${MKW})
