# grpo: the two-command quick start.
#   make demo   install missing Debian packages, build, run the main job:
#               recipes/tiny-zero.lua (eval, GRPO, eval on the tiny model)
#   make test   same set-up, then every test (normal build, then ASan+UBSan)
# Other targets: make build, make test-fast (normal build only),
# make test-asan, make test-slow, make bench, make fuzz, make clean.

# Debian packages the build needs (README lists why each is there).
DEBS := gcc libc6-dev make pkg-config meson ninja-build liblua5.4-dev libcmocka-dev \
        libcurl4-openssl-dev libssl-dev libpcre2-dev libcjson-dev libicu-dev gnuplot-nox python3 \
        libopenmpi-dev openmpi-bin

BUILD ?= build
ASAN_BUILD ?= build-asan
MESON_OPTS ?=
SHARED ?= $(CURDIR)/../shared

.PHONY: demo test test-fast test-asan test-slow build deps bench fuzz fuzz-deps clean

deps:
	@missing=""; \
	for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# float-cast-overflow: GCC's -fsanitize=undefined leaves it out, and a float ->
# integer conversion out of range is UB (untrusted numbers reach such casts).
$(ASAN_BUILD)/build.ninja: | deps
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Dbuildtype=debugoptimized -Dcuda=disabled \
	  -Dc_args=-fsanitize=float-cast-overflow -Dc_link_args=-fsanitize=float-cast-overflow $(MESON_OPTS)

demo: build
	./$(BUILD)/grpo run recipes/tiny-zero.lua --overwrite

test-fast: build
	SHARED_DIR=$(SHARED) meson test -C $(BUILD) --no-suite slow --print-errorlogs

test-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	SHARED_DIR=$(SHARED) meson test -C $(ASAN_BUILD) --no-suite slow --print-errorlogs --timeout-multiplier 4

test: test-fast test-asan

test-slow: build
	SHARED_DIR=$(SHARED) meson test -C $(BUILD) --suite slow --print-errorlogs

bench: build
	@ls $(BUILD)/bench/ 2>/dev/null | grep '^bench_' || true

# Coverage-guided fuzzing (docs/fuzzing.md): clang + libFuzzer + ASan/UBSan in
# its own build. make fuzz FUZZ_TARGET=NAME FUZZ_SECONDS=600 [FUZZ_ARGS=...]
# fuzzes tests/fuzz/fuzz_NAME.c from its seeds (tests/fuzz/corpus/NAME/) into
# a working corpus under $(FUZZ_BUILD)/corpus/NAME; crashes land in
# $(FUZZ_BUILD)/artifacts/NAME/. Not part of `make test`, which replays the
# checked-in corpora instead.
FUZZ_BUILD ?= build-fuzz
FUZZ_TARGET ?= st_header
FUZZ_SECONDS ?= 600
# Seed folders outside tests/fuzz/corpus (as fuzz_seeds in tests/fuzz/meson.build).
FUZZ_SEEDS_recipe = recipes
FUZZ_ARGS ?=
FUZZ_DEBS := clang libclang-rt-14-dev

fuzz-deps: deps
	@missing=""; \
	for p in $(FUZZ_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(FUZZ_BUILD)/build.ninja: | fuzz-deps
	CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true -Dtests=false -Dcuda=disabled \
	  -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized $(MESON_OPTS)

fuzz: fuzz-deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD) tests/fuzz/fuzz_$(FUZZ_TARGET)
	mkdir -p $(FUZZ_BUILD)/corpus/$(FUZZ_TARGET) $(FUZZ_BUILD)/artifacts/$(FUZZ_TARGET)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	./$(FUZZ_BUILD)/tests/fuzz/fuzz_$(FUZZ_TARGET) \
	  $$([ -f tests/fuzz/$(FUZZ_TARGET).dict ] && echo -dict=tests/fuzz/$(FUZZ_TARGET).dict) \
	  -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_BUILD)/artifacts/$(FUZZ_TARGET)/ $(FUZZ_ARGS) \
	  $(FUZZ_BUILD)/corpus/$(FUZZ_TARGET) tests/fuzz/corpus/$(FUZZ_TARGET) $(FUZZ_SEEDS_$(FUZZ_TARGET))

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
