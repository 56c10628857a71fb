# Sourced (sh) by run.sh and compare_train.sh, from the repository root: emu_make TARGET... builds the
# targets in $B (BUILD, default build-emu) with `make CUDA=1` against the emulation: emu.cpp becomes
# the fake cudart, cublas and cublasLt, and the targets are relinked, since the emulated libraries
# change without make knowing.
B=${BUILD:-build-emu}
emu_make() {
    mkdir -p "$B/fakecuda/lib64"
    g++ -std=c++17 -O1 -g -ffp-contract=off -Wall -Wextra -Werror -Itools/cuda_emu/include -c tools/cuda_emu/emu.cpp \
        -o "$B/fakecuda/emu.o"
    for l in cudart cublas cublasLt; do rm -f "$B/fakecuda/lib64/lib$l.a" && ar rcs "$B/fakecuda/lib64/lib$l.a" "$B/fakecuda/emu.o"; done
    rm -f "$B/libautoneg.a" "$@"
    make -j"${JOBS:-2}" CUDA=1 NVCC="$PWD/tools/cuda_emu/nvcc" CUDA_HOME="$PWD/$B/fakecuda" BUILD="$B" "$@"
}
