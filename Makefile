# The two README commands. Both do all set-up (packages, pinned llama.cpp, build)
# and are idempotent.
.PHONY: all setup build demo test test-sanitize bench clean

all: build

setup build:
	./scripts/setup.sh

demo: build
	./scripts/demo.sh

test: build
	./scripts/test.sh

# the suite on an ASan+UBSan build alone (test runs it too; HYPURA_SANITIZE_TESTS=0 skips it there)
test-sanitize: build
	./scripts/test-sanitize.sh

bench: build
	./bench/run-all.sh

clean:
	rm -rf build
