# Sourced (sh) by run.sh and compare_train.sh, from the repository root: emu_make TARGET... builds the
# targets in $B (BUILD, default build-emu) with `make CUDA=1` against the emulation: emu.cpp becomes
# the fake cudart, cublas and cublasLt (emu_nccl.cpp the fake NCCL, where MPI is installed), and the
# targets are relinked, since the emulated libraries change without make knowing. Arguments of the
# form NAME=VALUE (MPI=1) go to make as they are. CUDA_EMU_CXXFLAGS (e.g. -fsanitize=address,undefined)
# goes to every compile, the kernels' and the emulation's included, and to the link: the kernels'
# reads and writes of device and shared memory then run under the sanitizers (tools/cuda_emu/README.md).
B=${BUILD:-build-emu}
emu_make() {
    mkdir -p "$B/fakecuda/lib64"
    # (getcontext returns twice, like setjmp: gcc's -Wclobbered then suspects the loop counters around it
    # under the sanitizers; makecontext's coroutines never return into those frames)
    # shellcheck disable=SC2086
    g++ -std=c++17 -O1 -g -ffp-contract=off $CUDA_EMU_CXXFLAGS -Wall -Wextra -Werror -Wno-clobbered -Itools/cuda_emu/include -c tools/cuda_emu/emu.cpp \
        -o "$B/fakecuda/emu.o"
    for l in cudart cublas cublasLt; do rm -f "$B/fakecuda/lib64/lib$l.a" && ar rcs "$B/fakecuda/lib64/lib$l.a" "$B/fakecuda/emu.o"; done
    # NCCL (for an MPI=1 build's GPU ranks, tools/cuda_emu/nccl.sh): MPI's collectives on host memory
    mkdir -p "$B/fakecuda/include"
    cp tools/cuda_emu/include/nccl.h "$B/fakecuda/include/"
    if command -v mpicxx > /dev/null 2>&1; then
        g++ -std=c++17 -O1 -g -Wall -Wextra -Werror -Itools/cuda_emu/include $(mpicxx --showme:compile) \
            -c tools/cuda_emu/emu_nccl.cpp -o "$B/fakecuda/emu_nccl.o"
        rm -f "$B/fakecuda/lib64/libnccl.a" && ar rcs "$B/fakecuda/lib64/libnccl.a" "$B/fakecuda/emu_nccl.o"
    fi
    rm -f "$B/libautoneg.a" "$@"
    if [ -n "${CUDA_EMU_CXXFLAGS:-}" ]; then
        make -j"${JOBS:-2}" CUDA=1 NVCC="$PWD/tools/cuda_emu/nvcc" CUDA_HOME="$PWD/$B/fakecuda" BUILD="$B" \
            OPT="-O1 -g $CUDA_EMU_CXXFLAGS" "$@"
    else
        make -j"${JOBS:-2}" CUDA=1 NVCC="$PWD/tools/cuda_emu/nvcc" CUDA_HOME="$PWD/$B/fakecuda" BUILD="$B" "$@"
    fi
}
