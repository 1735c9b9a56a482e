# grpo: the two-command quick start.
#   make demo   install missing Debian packages, build, run the main job:
#               recipes/tiny-zero.lua (eval, GRPO, eval on the tiny model)
#   make test   same set-up, then every test (normal build, then ASan+UBSan)
# Other targets: make build, make test-fast (normal build only),
# make test-asan, make test-slow, make bench, make clean.

# Debian packages the build needs (README lists why each is there).
DEBS := gcc libc6-dev make pkg-config meson ninja-build liblua5.4-dev libcmocka-dev \
        libcurl4-openssl-dev libssl-dev libpcre2-dev libcjson-dev libicu-dev gnuplot-nox python3

BUILD ?= build
ASAN_BUILD ?= build-asan
MESON_OPTS ?=
SHARED ?= $(CURDIR)/../shared

.PHONY: demo test test-fast test-asan test-slow build deps bench clean

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

$(ASAN_BUILD)/build.ninja: | deps
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Dbuildtype=debugoptimized -Dcuda=disabled $(MESON_OPTS)

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

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
