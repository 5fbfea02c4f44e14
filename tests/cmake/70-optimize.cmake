# src/cache/hy_coact (co-activation statistics) and `hypura optimize` (experts
# reordered on disk by co-activation, routers permuted to match).

add_executable(test_coact ${PROJECT_SOURCE_DIR}/tests/test_coact.c)
target_link_libraries(test_coact PRIVATE hypura_core)
foreach(g record predict persist corrupt permute large)
  add_test(NAME coact_${g} COMMAND test_coact ${g} ${HY_TEST_WORK}/coact/${g})
endforeach()

# Each test makes its own tiny skewed MoE model in its own directory, with an
# isolated cache and data directory (the statistics kept per model land there).
set(OPT_MK $<TARGET_FILE:hypura-mkmodel>)
set(OPT_HY $<TARGET_FILE:hypura>)
set(OPT_W ${HY_TEST_WORK}/optimize)
set(OPT_PRE "set -e
  export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=\"$d/cache\" XDG_DATA_HOME=\"$d/data\"
  rm -rf \"$d\"; mkdir -p \"$d\"; cd \"$d\"
  '${OPT_MK}' -o m.gguf --dim 256 --layers 4 --ff 512 --experts 8 --top-k 2 --skew 1 --type q8_0 --quiet >/dev/null
  sum0=$(cksum < m.gguf)
  unchanged() { test \"$(cksum < m.gguf)\" = \"$sum0\" || { echo 'the input model changed'; exit 1; }; }
  dump() { '${OPT_HY}' run \"$1\" -p 'Once upon a time, in a land far away' -n 8 --temp 0 --no-repack -c 256 -t 2 \
             --dump-logits \"$2\" >/dev/null 2>\"$2.err\" || { cat \"$2.err\"; exit 1; }; }
")

# the central check: same logits bit for bit, the input untouched, the permutation recorded
add_test(NAME optimize_identity COMMAND sh -c "d='${OPT_W}/identity'; ${OPT_PRE}
  '${OPT_HY}' optimize m.gguf -o o.gguf --verify -t 2 >opt.out 2>opt.err || { cat opt.out opt.err; exit 1; }
  cat opt.out opt.err
  unchanged
  test -f o.gguf && test ! -e o.gguf.tmp
  grep -q 'calibrating on 256 tokens' opt.err
  grep -q 'logits identical' opt.out
  grep -qE 'moved [1-9]' opt.out || { echo 'no expert moved: the test proves nothing'; exit 1; }
  grep -aq 'hypura.optimize.permutation' o.gguf && grep -aq 'hypura.optimize.source_hash' o.gguf
  if cmp -s m.gguf o.gguf; then echo 'the output equals the input'; exit 1; fi
  dump m.gguf m.bin; dump o.gguf o.bin
  cmp m.bin o.bin && echo \"ok: $(stat -c %s m.bin) bytes of logits identical\"
  # the statistics were kept for this model: a second run uses them and gives the same file
  ls data/hypura/coact/*.json
  '${OPT_HY}' optimize m.gguf -o o2.gguf >opt2.out 2>opt2.err || { cat opt2.err; exit 1; }
  if grep -q calibrating opt2.err; then echo 'kept statistics not used'; exit 1; fi
  cmp o.gguf o2.gguf
  # explicit --stats: the same statistics, the same file
  '${OPT_HY}' optimize m.gguf -o o3.gguf --stats data/hypura/coact/*.json >/dev/null
  cmp o.gguf o3.gguf
  # the optimized file is a MoE model too: optimizing it again works and keeps the function
  '${OPT_HY}' optimize o.gguf -o oo.gguf --verify -t 2 >oo.out 2>oo.err || { cat oo.out oo.err; exit 1; }
  grep -q 'logits identical' oo.out
  unchanged")

# a negative control: the comparison sees a permutation applied to the router alone
add_test(NAME optimize_detects_mismatch COMMAND sh -c "d='${OPT_W}/mismatch'; ${OPT_PRE}
  '${OPT_HY}' inspect --json m.gguf > m.json
  cp m.gguf bad.gguf
  python3 -c 'import json, sys
t = [t for t in json.load(open(\"m.json\"))[\"tensors\"] if t[\"name\"] == \"blk.1.ffn_gate_inp.weight\"][0]
row = t[\"size\"] // 8
with open(\"bad.gguf\", \"r+b\") as f:
    f.seek(t[\"offset\"]); d = bytearray(f.read(t[\"size\"]))
    d[0:row], d[row:2 * row] = d[row:2 * row], d[0:row]
    f.seek(t[\"offset\"]); f.write(d)'
  dump m.gguf m.bin; dump bad.gguf bad.bin
  if cmp -s m.bin bad.bin; then echo 'swapping two router rows changed nothing: the identity check is blind'; exit 1; fi
  echo 'ok: a router permuted without its experts changes the logits'")

# --verify catches a wrong file (test hook: routers left unpermuted): exit 1, no output left
add_test(NAME optimize_verify_catches_fault COMMAND sh -c "d='${OPT_W}/fault'; ${OPT_PRE}
  rc=0; HYPURA_TEST_OPTIMIZE_FAULT=router '${OPT_HY}' optimize m.gguf -o o.gguf --verify -t 2 >opt.out 2>opt.err || rc=$?
  cat opt.out opt.err
  test $rc -eq 1 || { echo \"exit $rc, expected 1\"; exit 1; }
  grep -q 'verification failed: logits DIFFER' opt.err
  test ! -e o.gguf && test ! -e o.gguf.tmp
  unchanged")

# refusals: the output is the input (same path, symlink, hard link); a dense model; an existing output
add_test(NAME optimize_refuse_input_as_output COMMAND sh -c "d='${OPT_W}/same'; ${OPT_PRE}
  ln -s m.gguf link.gguf; ln m.gguf hard.gguf
  for out in m.gguf ./m.gguf \"$d/m.gguf\" link.gguf hard.gguf; do
    for f in '' --force; do
      if '${OPT_HY}' optimize m.gguf -o $out $f 2>err.txt; then echo \"accepted -o $out $f\"; exit 1; fi
      cat err.txt; grep -q 'is the input model' err.txt
      unchanged
    done
  done
  # the temporary name must not be the input either
  cp m.gguf x.gguf.tmp; s1=$(cksum < x.gguf.tmp)
  if '${OPT_HY}' optimize x.gguf.tmp -o x.gguf 2>err.txt; then echo 'accepted OUT.tmp == MODEL'; exit 1; fi
  cat err.txt; grep -q 'is the input model' err.txt
  test \"$(cksum < x.gguf.tmp)\" = \"$s1\"
  test ! -e x.gguf")
add_test(NAME optimize_refuse_dense COMMAND sh -c "d='${OPT_W}/dense'; ${OPT_PRE}
  '${OPT_MK}' -o dense.gguf --dim 256 --layers 2 --ff 512 --type q8_0 --quiet >/dev/null
  if '${OPT_HY}' optimize dense.gguf -o out.gguf 2>err.txt; then echo 'accepted a dense model'; exit 1; fi
  cat err.txt; grep -q 'not a mixture-of-experts model' err.txt
  test $(wc -l < err.txt) -eq 1
  test ! -e out.gguf && test ! -e out.gguf.tmp")
add_test(NAME optimize_refuse_existing COMMAND sh -c "d='${OPT_W}/exists'; ${OPT_PRE}
  echo keep > out.gguf
  if '${OPT_HY}' optimize m.gguf -o out.gguf 2>err.txt; then echo 'replaced an existing file'; exit 1; fi
  cat err.txt; grep -q 'exists (use --force' err.txt
  test \"$(cat out.gguf)\" = keep
  '${OPT_HY}' optimize m.gguf -o out.gguf --force >/dev/null 2>&1
  grep -aq 'hypura.optimize.permutation' out.gguf
  unchanged")

# statistics: a corrupt --stats is an error; a corrupt kept file is a warning and calibration
add_test(NAME optimize_stats_files COMMAND sh -c "d='${OPT_W}/stats'; ${OPT_PRE}
  echo '{\"format\": \"hypura-coact\", \"version\": 99}' > bad.json
  if '${OPT_HY}' optimize m.gguf -o o.gguf --stats bad.json 2>err.txt; then echo 'accepted bad --stats'; exit 1; fi
  cat err.txt; grep -q 'unsupported version 99' err.txt; test ! -e o.gguf
  if '${OPT_HY}' optimize m.gguf -o o.gguf --stats missing.json 2>err.txt; then echo 'accepted missing --stats'; exit 1; fi
  cat err.txt; test ! -e o.gguf
  '${OPT_HY}' optimize m.gguf -o o.gguf --calibrate 64 >/dev/null 2>err.txt
  grep -q 'calibrating on 64 tokens' err.txt
  kept=$(ls data/hypura/coact/*.json)
  head -c 100 \"$kept\" > cut.json; mv cut.json \"$kept\"
  '${OPT_HY}' optimize m.gguf -o o2.gguf 2>err.txt >/dev/null
  cat err.txt; grep -q 'warning: ignoring saved statistics' err.txt; grep -q calibrating err.txt
  # statistics of another model (another header) are refused
  '${OPT_MK}' -o m2.gguf --dim 256 --layers 4 --ff 256 --experts 8 --top-k 2 --skew 1 --type q8_0 --quiet >/dev/null
  if '${OPT_HY}' optimize m2.gguf -o o4.gguf --stats \"$kept\" 2>err.txt; then echo 'accepted foreign stats'; exit 1; fi
  cat err.txt; grep -q 'another model' err.txt
  unchanged")

add_test(NAME optimize_usage COMMAND sh -c "d='${OPT_W}/usage'; mkdir -p \"$d\"; cd \"$d\"
  '${OPT_HY}' optimize 2>/dev/null; test $? -eq 2 || exit 1
  '${OPT_HY}' optimize x.gguf 2>err.txt; test $? -eq 2 || exit 1; grep -q -- '-o OUT' err.txt
  '${OPT_HY}' optimize x.gguf -o y.gguf --bogus 2>/dev/null; test $? -eq 2 || exit 1
  '${OPT_HY}' optimize x.gguf -o y.gguf --calibrate 0 2>/dev/null; test $? -eq 2 || exit 1
  '${OPT_HY}' optimize /nonexistent.gguf -o y.gguf 2>err.txt; test $? -eq 1 || exit 1; cat err.txt
  '${OPT_HY}' optimize --help | grep -q 'usage: hypura optimize'
  '${OPT_HY}' --help | grep -q optimize")

# a full disk: a clear error, no temporary file left (needs a small tmpfs: root only)
add_test(NAME optimize_disk_full COMMAND sh -c "d='${OPT_W}/full'; ${OPT_PRE}
  mkdir -p small
  if ! mount -t tmpfs -o size=4m tmpfs small 2>/dev/null; then echo 'skip: cannot mount a tmpfs'; exit 0; fi
  rc=0; '${OPT_HY}' optimize m.gguf -o small/o.gguf >/dev/null 2>err.txt || rc=$?
  ls -A small > ls.txt; umount small
  cat err.txt
  test $rc -ne 0 && grep -q 'No space left' err.txt && test ! -s ls.txt
  unchanged")
