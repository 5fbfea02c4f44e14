# The two README commands. Both do all set-up (packages, pinned llama.cpp, build)
# and are idempotent.
.PHONY: all setup build demo test bench clean

all: build

setup build:
	./scripts/setup.sh

demo: build
	./scripts/demo.sh

test: build
	./scripts/test.sh

bench: build
	./bench/run-all.sh

clean:
	rm -rf build
