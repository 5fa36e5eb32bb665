# verge — build, test, sanitizers, fuzzing, benchmarks.
# `make dev` and `make test` are the two entry points (see README.md).

BUILD    ?= build
CC       ?= cc
PKGS     := libuv libfyaml jansson openssl lua5.4 libnghttp2 sqlite3 libarchive libnats libmaxminddb
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wno-missing-field-initializers
# h2o on its own evloop; libuv alongside (docs/decisions.md, "HTTP engine")
CPPFLAGS += -std=c11 -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -Isrc -I$(BUILD)/gen $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += -lh2o-evloop -llmdb $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lz -lpthread -lm
SANITIZE ?=

LIB_SRCS  := $(sort $(wildcard src/base/*.c src/geo/*.c src/conf/*.c src/net/*.c src/obs/*.c src/http/*.c src/proxy/*.c src/cache/*.c src/bundle/*.c src/bus/*.c src/state/*.c src/fn/*.c src/node/*.c src/control/*.c src/sched/*.c))
CLI_SRCS  := $(sort $(wildcard src/cli/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS  := $(CLI_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))

ALL_CFLAGS = $(CPPFLAGS) $(CFLAGS) $(WARN) $(SANITIZE)

.PHONY: all dev test unit e2e asan fuzz fuzz-build bench bench-trace bench-trace-ir bench-propagation cache-sim fmt fmt-check clean deps

all: $(BUILD)/verge

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# The bundled locations (docs/decisions.md, "Locations"): data/locations.csv
# becomes one C string literal, which src/geo reads like any other list.
$(BUILD)/gen/geo_locations_csv.inc: data/locations.csv
	@mkdir -p $(dir $@)
	@echo "  GEN   $@"
	@sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< >$@.tmp && mv $@.tmp $@
$(BUILD)/src/geo/geo_locations.o: $(BUILD)/gen/geo_locations_csv.inc

$(BUILD)/libverge.a: $(LIB_OBJS)
	@rm -f $@
	@ar rcs $@ $^

$(BUILD)/verge: $(CLI_OBJS) $(BUILD)/libverge.a
	@echo "  LD    $@"
	@$(CC) $(SANITIZE) -o $@ $(CLI_OBJS) $(BUILD)/libverge.a $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libverge.a
	@mkdir -p $(dir $@)
	@echo "  TEST  $@"
	@$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libverge.a $(LDLIBS) -lcmocka

unit: $(UNIT_BINS)

# Runs every unit and end-to-end test; ends with "N passed, N failed".
test: deps
	@$(MAKE) --no-print-directory all unit
	@BUILD=$(BUILD) tests/run.sh

# ASan + UBSan build; the whole suite runs against it. Request pools become
# plain mallocs there so ASan sees every overflow (see docs/internals).
asan:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" all unit
	@BUILD=build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 tests/run.sh

# libFuzzer targets (clang), each run for FUZZ_SECONDS over its corpus.
FUZZ_SECONDS ?= 30
fuzz-build: $(FUZZ_SRCS)
	@scripts/deps.sh
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPT=-O1 \
	  SANITIZE="-fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer" build-fuzz/libverge.a
	@for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); echo "  FUZZ  build-fuzz/$$n"; \
	  clang $(CPPFLAGS) -O1 -g -fsanitize=address,undefined,fuzzer -o build-fuzz/$$n $$f build-fuzz/libverge.a $(LDLIBS) || exit 1; done

fuzz: fuzz-build
	@for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); t=$${n#fuzz_}; \
	  mkdir -p build-fuzz/corpus/$$t; echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  build-fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -timeout=5 -artifact_prefix=build-fuzz/ \
	    build-fuzz/corpus/$$t tests/fuzz/corpus/$$t >build-fuzz/$$n.log 2>&1 \
	    || { tail -40 build-fuzz/$$n.log; echo "fuzz: $$n FAILED (input saved under build-fuzz/)"; exit 1; }; \
	  tail -1 build-fuzz/$$n.log; done

dev: deps all
	@scripts/dev.sh

bench: deps all
	@bench/run.sh

# verge.kv global propagation against raw NATS KV, 10 and 30 nodes
# (bench/README.md "propagation"); the raw peer is a small libnats program.
$(BUILD)/bench/kv_peer: bench/kv_peer.c
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< $(shell pkg-config --libs libnats) -lpthread

bench-propagation: all $(BUILD)/bench/kv_peer
	@BUILD=$(BUILD) bench/propagation.sh

# The cache store's eviction simulator and overhead measurement (not part
# of `make test`: it runs for a minute). Numbers: docs/decisions.md.
$(BUILD)/bench/cache_sim: bench/cache_sim.c $(BUILD)/libverge.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libverge.a $(LDLIBS)

cache-sim: $(BUILD)/bench/cache_sim
	@$(BUILD)/bench/cache_sim

# The cost of a trace span and of a request's whole trace (bench/trace_span.c).
$(BUILD)/bench/trace_span: bench/trace_span.c $(BUILD)/libverge.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libverge.a $(LDLIBS)

bench-trace: $(BUILD)/bench/trace_span
	@taskset -c 1 $(BUILD)/bench/trace_span

# Tracing's throughput cost from callgrind instructions and the user share
# of CPU (bench/trace_ir.sh; bench/README.md "trace overhead").
.PHONY: bench-trace-ir
bench-trace-ir: all
	@bench/trace_ir.sh

# The placement engine: full placement of 1,000 apps over 10,000 locations,
# one app's incremental update, placements/s, the optimality gap against
# exhaustive search (bench/sched_bench.c; numbers: docs/decisions.md).
$(BUILD)/bench/sched_bench: bench/sched_bench.c $(BUILD)/libverge.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libverge.a $(LDLIBS)

.PHONY: bench-sched
bench-sched: $(BUILD)/bench/sched_bench
	@taskset -c 1 $(BUILD)/bench/sched_bench

# A request's client area with --geoip: a worker's cache hit, a miss (the
# database's lookup), none (bench/geoip_area.c; numbers: docs/decisions.md).
# GEOIP_DB: a MaxMind DB (default: a synthetic one, bench/geoip_mkdb.pl).
GEOIP_DB ?= $(BUILD)/bench/geoip_bench.mmdb
$(BUILD)/bench/geoip_area: bench/geoip_area.c $(BUILD)/libverge.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libverge.a $(LDLIBS)

$(BUILD)/bench/geoip_bench.mmdb: bench/geoip_mkdb.pl
	@mkdir -p $(dir $@)
	@echo "  GEN   $@"
	@perl bench/geoip_mkdb.pl $@.tmp && mv $@.tmp $@

.PHONY: bench-geoip
bench-geoip: $(BUILD)/bench/geoip_area $(GEOIP_DB)
	@taskset -c 1 $(BUILD)/bench/geoip_area $(GEOIP_DB)

fmt:
	clang-format -i $(wildcard src/*/*.c src/*/*.h tests/unit/*/*.c tests/fuzz/*.c bench/*.c)

fmt-check:
	clang-format --dry-run -Werror $(wildcard src/*/*.c src/*/*.h tests/unit/*/*.c tests/fuzz/*.c bench/*.c)

clean:
	rm -rf build build-asan build-fuzz

# A flag change (e.g. H2O_USE_LIBUV) changes h2o's struct layouts: rebuild all.
$(LIB_OBJS) $(CLI_OBJS): Makefile

-include $(LIB_OBJS:.o=.d) $(CLI_OBJS:.o=.d)
