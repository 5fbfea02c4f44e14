# Shared by the VRAM expert cache's identity scripts (vxc_identity.sh, vxc_nvme_identity.sh);
# sourced after HY_BIN and WORK are set: the environment, run(), and the three layouts both
# check (Mixtral-like; qwen3moe, fine-grained Q4_K; gpt-oss, experts with per-expert biases),
# made into $WORK/{mixtral,qwen3moe,gpt-oss}.gguf.
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 HYPURA_NO_PERSIST_STATS=1 XDG_CACHE_HOME=$WORK/cache XDG_DATA_HOME=$WORK/data
fail=0
# run MODEL ARGS...: greedy `hypura run` with plain kernels (stderr in $WORK/last.err)
run() { "$HY_BIN/hypura" run "$@" --temp 0 -c 256 -t 2 --no-repack 2>"$WORK/last.err"; }
p="In a hole in the ground there lived a hobbit"
mk() { "$HY_BIN/hypura-mkmodel" -o "$WORK/$1.gguf" --layers 4 --seed 9 --quiet "${@:2}" >/dev/null; }
mk mixtral --dim 256 --ff 512 --experts 8 --top-k 2 --skew 0.5 --type q4_k
mk qwen3moe --arch qwen3moe --dim 256 --heads 4 --kv-heads 2 --head-dim 64 --experts 32 --top-k 4 --expert-ff 256 --type q4_k --routing zipf
mk gpt-oss --arch gpt-oss --dim 256 --heads 8 --kv-heads 2 --head-dim 64 --experts 32 --top-k 4 --expert-ff 256 --type q8_0 --routing zipf
