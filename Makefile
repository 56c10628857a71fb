# autoneg build. `make` builds build/libautoneg.a and build/autoneg.
#   make BLAS=0     plain-C GEMM fallback instead of OpenBLAS
#   make test       build and run every test (tests/test_*.c, one binary each)
#   make asan       the tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan       concurrent inference states, the request engine and the serve handler under ThreadSanitizer
#   make fuzz       every parser under libFuzzer (FUZZ_SECONDS each; FUZZ_TARGETS="gguf ..." for some)
#   make deps       install the Debian packages the build and tests need
#   make BUILD=dir  build somewhere else (parallel worktrees, sanitizer builds)
#   make CUDA=1     also build the CUDA backend (kernels/cuda/*.cu, nvcc, cuBLAS/cuBLASLt; docs/cuda.md);
#                   CUDA_ARCH="80" for one architecture while developing (default: sm_80, sm_90 + PTX)
#   make install    PREFIX/bin/autoneg, the man page PREFIX/share/man/man1/autoneg.1 and the bash
#                   completion PREFIX/share/bash-completion/completions/autoneg (PREFIX=/usr/local,
#                   DESTDIR for packaging); the last two are made by the binary from its option tables
#   make MPI=1      data-parallel training over MPI (train/comm_mpi.c, mpicc's flags; docs/distributed.md);
#                   without it the build has no MPI dependency; with CUDA=1 too, GPU ranks over NCCL
#                   (train/comm_nccl.c, the toolkit's libnccl)
#   make model      fetch a real small pretrained model (SmolLM2-135M-Instruct, Q4_1 GGUF, 93 MB) into
#                   ${AN_CACHE:-~/.cache/autoneg} and print its path (tools/fetch_model.sh)
CC      ?= gcc
BUILD   ?= build
BLAS    ?= 1
OPT     ?= -O3 -march=native
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -fno-math-errno -I. -MMD -MP
LDLIBS  += -lcjson -lz -lm -fopenmp -lmicrohttpd -lpthread

OPENBLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
ifeq ($(BLAS),1)
  CFLAGS += -DAN_BLAS=1 -I/usr/include/x86_64-linux-gnu/openblas-openmp
  LDLIBS += -L$(OPENBLAS_DIR) -Wl,-rpath,$(OPENBLAS_DIR) -lopenblas
endif

# MPI=1: the MPI communicator of train/comm.h, with the compile and link flags mpicc would add (so
# CC=clang still works); tests/test_train_mpi.c runs mpirun only in such a build.
MPI ?= 0
ifeq ($(MPI),1)
  CFLAGS += -DAN_MPI=1 $(shell mpicc --showme:compile)
  LDLIBS += $(shell mpicc --showme:link)
endif

# CUDA=1: the CUDA backend (docs/cuda.md). Without nvcc it says so once and builds without it.
CUDA    ?= 0
CUDA_HOME ?= /usr/local/cuda
NVCC    ?= $(CUDA_HOME)/bin/nvcc
CUDA_ARCH ?= 80 90
ifeq ($(CUDA),1)
  ifeq ($(wildcard $(NVCC)),)
    $(info make CUDA=1: no nvcc at $(NVCC) (set CUDA_HOME or NVCC): building without the CUDA backend)
    override CUDA := 0
  endif
endif
ifeq ($(CUDA),1)
  # a fat binary for every architecture asked for, plus PTX of the last one for newer GPUs
  CU_GENCODE := $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
                -gencode arch=compute_$(lastword $(CUDA_ARCH)),code=compute_$(lastword $(CUDA_ARCH))
  NVCCFLAGS ?= -O3 -g -lineinfo
  NVCCFLAGS += -std=c++17 $(CU_GENCODE) -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -I. -MMD -MP
  CFLAGS += -DAN_CUDA=1
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
endif

LIB_DIRS := core kernels model data train infer serve
LIB_SRC  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c $(d)/*/*.c))
ifneq ($(MPI),1)
  LIB_SRC := $(filter-out train/comm_mpi.c,$(LIB_SRC))
endif
# the NCCL communicator: GPU ranks, both MPI and CUDA (its headers and libnccl come with the toolkit)
ifeq ($(MPI)$(CUDA),11)
  CFLAGS += -I$(CUDA_HOME)/include
  LDLIBS += -L$(CUDA_HOME)/lib64 -lnccl $(shell mpicc --showme:link)
else
  LIB_SRC := $(filter-out train/comm_nccl.c,$(LIB_SRC))
endif
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
ifeq ($(CUDA),1)
  CU_SRC := $(wildcard kernels/cuda/*.cu)
  LIB_OBJ += $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
endif
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_COMMON := $(filter-out tests/test_%.c,$(wildcard tests/*.c))
TEST_COMMON_OBJ := $(TEST_COMMON:%.c=$(BUILD)/%.o)
# fuzz/: the parsers' fuzz targets (fuzz/fuzz.h), linked into the replay test and, by fuzz/run.sh, into
# one libFuzzer binary per target
FUZZ_SRC := $(filter-out fuzz/libfuzzer_main.c,$(wildcard fuzz/*.c))
FUZZ_OBJ := $(FUZZ_SRC:%.c=$(BUILD)/%.o)

.SECONDARY:
.PHONY: all install test asan tsan fuzz deps demo bench check-compat clean fixtures model
all: $(BUILD)/libautoneg.a $(BUILD)/autoneg

# CUDA=1 changes CFLAGS (AN_CUDA): a build folder remembers which it was built with, and switching
# rebuilds every object, so `make` and `make CUDA=1` can share build/.
CONFIG_FLAG := $(BUILD)/config.cuda
$(shell mkdir -p $(BUILD) && (echo $(CUDA) | cmp -s - $(CONFIG_FLAG) || echo $(CUDA) > $(CONFIG_FLAG)))

$(BUILD)/%.o: %.c $(CONFIG_FLAG)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libautoneg.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/autoneg: $(CLI_OBJ) $(BUILD)/libautoneg.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libautoneg.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_COMMON_OBJ) $(BUILD)/libautoneg.a
	$(CC) $(CFLAGS) -o $@ $< $(TEST_COMMON_OBJ) $(BUILD)/libautoneg.a $(LDLIBS)

# The man page and the bash completion, from the option tables of cli/ (autoneg help man / completion bash).
$(BUILD)/autoneg.1: $(BUILD)/autoneg
	$< help man > $@.tmp && mv $@.tmp $@
$(BUILD)/autoneg.bash-completion: $(BUILD)/autoneg
	$< completion bash > $@.tmp && mv $@.tmp $@

PREFIX  ?= /usr/local
install: all $(BUILD)/autoneg.1 $(BUILD)/autoneg.bash-completion
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 755 $(BUILD)/autoneg $(DESTDIR)$(PREFIX)/bin/autoneg
	install -m 644 $(BUILD)/autoneg.1 $(DESTDIR)$(PREFIX)/share/man/man1/autoneg.1
	install -m 644 $(BUILD)/autoneg.bash-completion $(DESTDIR)$(PREFIX)/share/bash-completion/completions/autoneg

# tests/test_no_alloc.c counts every allocation autoneg's own code makes: the linker sends our objects'
# calls to its __wrap_ functions.
$(BUILD)/tests/test_no_alloc: LDLIBS += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc,--wrap=posix_memalign

$(BUILD)/tests/test_fuzz_replay: $(BUILD)/tests/test_fuzz_replay.o $(FUZZ_OBJ) $(TEST_COMMON_OBJ) $(BUILD)/libautoneg.a
	$(CC) $(CFLAGS) -o $@ $(filter %.o,$^) $(BUILD)/libautoneg.a $(LDLIBS)

# Every test binary runs from the repository root; tests/run.sh sums their results.
test: all $(TEST_BIN)
	@BUILD=$(BUILD) sh tests/run.sh $(TEST_BIN) tests/test_serve_curl.sh

asan:
	$(MAKE) BUILD=build-asan CC=clang OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	        LDLIBS_EXTRA= test

# Two inference states on one model from two threads (tests/test_infer_threads.c) and the request engine
# with a submitting thread beside the stepping one (tests/test_engine.c), and the serve handler's jobs filled
# by an engine thread while the test's thread reads them (tests/test_serve_handler.c) under ThreadSanitizer,
# with one OpenMP thread: libgomp is not instrumented, and its own threads would only add false reports.
TSAN_TESTS := test_infer_threads test_engine test_serve_handler
tsan:
	$(MAKE) BUILD=build-tsan CC=clang OPT="-O1 -fno-omit-frame-pointer -fsanitize=thread" $(TSAN_TESTS:%=build-tsan/tests/%)
	for t in $(TSAN_TESTS); do OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ignore_noninstrumented_modules=1" build-tsan/tests/$$t || exit 1; done

# Every parser under libFuzzer + ASan + UBSan for FUZZ_SECONDS each (fuzz/run.sh; clang's fuzzer
# runtime). Findings land in build-fuzz/findings/NAME/; fixed ones go to fuzz/regressions/NAME/.
FUZZ_SECONDS ?= 30
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh fuzz/run.sh

deps:
	@sh tools/deps.sh

# The file is checked against pinned sha256s and never enters the tree; a second call only re-checks it.
model:
	@sh tools/fetch_model.sh

# The demo (tools/demo.sh): train a small model and its tokenizer from scratch on datasets/, ~5 min.
demo:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tools/demo.sh

# Python reference checks of what autoneg writes (needs a venv: AN_VENV, see tests/ref/check_compat.sh).
# Benchmarks against the Python peers, each measured in the same run as autoneg (bench/*.sh).
# PYTHON: a python with torch, transformers, tokenizers and sentencepiece; by default the virtual
# environment `make check-compat` makes ($AN_VENV or ~/.cache/autoneg-venv).
bench: all
	@PY=$${PYTHON:-$${AN_VENV:-$$HOME/.cache/autoneg-venv}/bin/python}; \
	 bash bench/train.sh $$PY 3 && bash bench/generate.sh $$PY 3 && PYTHON=$$PY sh bench/bench_tokenizer.sh

check-compat: all
	@BUILD=$(BUILD) sh tests/ref/check_compat.sh

clean:
	rm -rf build build-asan build-*

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:=.d) $(TEST_COMMON_OBJ:.o=.d) $(FUZZ_OBJ:.o=.d)
