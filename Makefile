# The two README commands. Both do all set-up (packages, pinned llama.cpp, build)
# and are idempotent.
.PHONY: all setup build demo demo-rpc test test-sanitize bench clean

all: build

setup build:
	./scripts/setup.sh

demo: build
	./scripts/demo.sh

# remote tiers: a ggml-rpc-server on 127.0.0.1 in its own memory cgroup holds part of a
# model larger than either memory (scripts/demo-rpc.sh)
demo-rpc: build
	./scripts/demo-rpc.sh

test: build
	./scripts/test.sh

# the suite on an ASan+UBSan build alone (test runs it too; HYPURA_SANITIZE_TESTS=0 skips it there)
test-sanitize: build
	./scripts/test-sanitize.sh

bench: build
	./bench/run-all.sh

clean:
	rm -rf build
