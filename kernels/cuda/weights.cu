/* Typed frozen weights on the GPU: bf16, NF4 (QLoRA) and the GGUF block types Q8_0, Q4_0, Q4_1, Q4_K
 * and Q6_K, element by element as float32.
 *
 * The linear ops widen a tile of a weight's rows into the caller's workspace with an_cuda_widen_rows
 * and run the float32 GEMM on it (matmul.cu); a decode step's few rows take the matrix-vector kernel
 * below instead, which reads each weight element once and never writes it out; the embedding lookup
 * widens the rows its ids name. Each
 * element's value is computed exactly as the CPU's reference dequantization computes it (ggml's
 * formulas in model/io/gguf_quants.c, NF4's in kernels/nf4_quant.c), with the same roundings in the
 * same order: the _rn intrinsics keep nvcc from fusing a multiply and an add the CPU rounds twice. So
 * a tile holds the very float32 values the CPU's weight stands for.
 *
 * One thread per element, each reading its block's scales itself: the tile is then one GEMM's input,
 * and the reads of a block's header by its 32..256 threads come from the same cache line. */
#include <string.h>

#include "kernels/cuda/cuda.h"

extern "C" {
#include "kernels/nf4.h"
}

/* Everything an element's value needs, passed by value to the kernels. */
struct weight_view {
    an_dtype dtype;
    int64_t cols;
    size_t row_bytes;    /* GGUF block types: the bytes of one row's blocks */
    const uint8_t *data; /* bf16 values, GGUF blocks, or NF4's packed codes */
    /* NF4 (an_nf4_device_layout) */
    const float *code4, *absmax, *absmax2, *code8;
    const uint8_t *qabsmax;
    float offset;
    int64_t blocksize, blocksize2;
};

/* IEEE half to float, exactly (subnormals included), from its bits: read bytewise, since GGUF blocks of
 * 18 or 34 bytes leave the scale at any alignment */
__device__ static inline float half_at(const uint8_t *p) {
    uint32_t h = (uint32_t)p[0] | (uint32_t)p[1] << 8;
    uint32_t sign = (h >> 15) << 31, exp = (h >> 10) & 31, mant = h & 1023;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in float32 */
        float v = __fmul_rn((float)mant, 5.9604644775390625e-8f);
        return sign ? -v : v;
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | mant << 13);
    return __uint_as_float(sign | (exp + 112) << 23 | mant << 13);
}

/* Q4_K's 6-bit scale and min of sub-block i (model/io/gguf_quants.c k_scale_min) */
__device__ static inline void k_scale_min(const uint8_t *s, int i, int *sc, int *mn) {
    if (i < 4) {
        *sc = s[i] & 63;
        *mn = s[i + 4] & 63;
    } else {
        *sc = (s[i + 4] & 15) | ((s[i - 4] >> 6) << 4);
        *mn = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
    }
}

/* The float32 value of element (row, col). */
__device__ static float weight_at(const weight_view &w, int64_t row, int64_t col) {
    const uint8_t *r = w.data + (size_t)row * w.row_bytes;
    switch (w.dtype) {
    case AN_BF16: return an_cuda_widen_bf16(((const uint16_t *)w.data)[row * w.cols + col]);
    case AN_Q8_0: { /* 34 bytes: f16 d, 32 int8; q * d */
        const uint8_t *b = r + (size_t)(col / 32) * 34;
        return __fmul_rn((float)(int8_t)b[2 + col % 32], half_at(b));
    }
    case AN_Q4_0: { /* 18 bytes: f16 d, nibbles (element j < 16 the low one of byte j); d * (q - 8) */
        const uint8_t *b = r + (size_t)(col / 32) * 18;
        int j = (int)(col % 32), q = j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4;
        return __fmul_rn(half_at(b), (float)(q - 8));
    }
    case AN_Q4_1: { /* 20 bytes: f16 d, f16 m, nibbles as Q4_0; d * q + m, rounded twice */
        const uint8_t *b = r + (size_t)(col / 32) * 20;
        int j = (int)(col % 32), q = j < 16 ? b[4 + j] & 15 : b[4 + j - 16] >> 4;
        return __fadd_rn(__fmul_rn(half_at(b), (float)q), half_at(b + 2));
    }
    case AN_Q4_K: { /* 144 bytes for 256: f16 d, f16 dmin, 12 bytes of scales, 128 of nibbles */
        const uint8_t *b = r + (size_t)(col / 256) * 144;
        int e = (int)(col % 256), i = e / 32, l = e % 32, s, m;
        k_scale_min(b + 4, i, &s, &m);
        float ds = __fmul_rn(half_at(b), (float)s), dm = __fmul_rn(half_at(b + 2), (float)m);
        int q = (b[16 + 32 * (i / 2) + l] >> (4 * (i % 2))) & 15;
        return __fsub_rn(__fmul_rn(ds, (float)q), dm);
    }
    case AN_Q6_K: { /* 210 bytes for 256: ql[128], qh[64], int8 scales[16], f16 d; (d * scale) * (q - 32) */
        const uint8_t *b = r + (size_t)(col / 256) * 210;
        int e = (int)(col % 256), h = e / 128, k = e % 128, rr = k / 32, l = k % 32;
        int lo = (b[64 * h + k % 64] >> (4 * (k / 64))) & 15;
        int hi = (b[128 + 32 * h + l] >> (2 * rr)) & 3;
        float ds = __fmul_rn(half_at(b + 208), (float)(int8_t)b[192 + e / 16]);
        return __fmul_rn(ds, (float)((lo | hi << 4) - 32));
    }
    case AN_NF4: { /* flattened row-major; element 2k the high nibble of byte k */
        int64_t i = row * w.cols + col, blk = i / w.blocksize;
        uint8_t byte = w.data[i >> 1];
        int nib = (i & 1) ? byte & 15 : byte >> 4;
        float s = w.absmax ? w.absmax[blk]
                           : __fadd_rn(__fmul_rn(w.code8[w.qabsmax[blk]], w.absmax2[blk / w.blocksize2]), w.offset);
        return __fmul_rn(w.code4[nib], s);
    }
    default: return __int_as_float(0x7fc00000); /* supports() said no */
    }
}

/* The view of w (device pointers), or dtype 0 when this backend cannot read it. */
static weight_view view_of(const an_weight *w) {
    weight_view v;
    memset(&v, 0, sizeof v);
    v.dtype = w->dtype;
    v.cols = w->cols;
    if (w->dtype == AN_NF4) {
        const an_nf4_tensor *t = (const an_nf4_tensor *)w->data;
        if (!t || !t->device) { /* quantized, never given to this backend */
            v.dtype = (an_dtype)0;
            return v;
        }
        an_nf4_device_layout l = an_nf4_device_layout_of(t);
        const uint8_t *d = (const uint8_t *)t->device;
        v.data = d + l.packed;
        v.code4 = (const float *)(const void *)(d + l.code4);
        if (t->double_quant) {
            v.qabsmax = d + l.qabsmax;
            v.absmax2 = (const float *)(const void *)(d + l.absmax2);
            v.code8 = (const float *)(const void *)(d + l.code8);
            v.offset = t->offset;
            v.blocksize2 = t->blocksize2;
        } else {
            v.absmax = (const float *)(const void *)(d + l.absmax);
        }
        v.blocksize = t->blocksize;
        return v;
    }
    v.data = (const uint8_t *)w->data;
    if (an_dtype_is_ggml(w->dtype)) v.row_bytes = (size_t)(w->cols / an_dtype_block(w->dtype)) * an_dtype_block_bytes(w->dtype);
    return v;
}

int an_cuda_weight_readable(an_dtype t) {
    return t == AN_BF16 || t == AN_NF4 || t == AN_Q8_0 || t == AN_Q4_0 || t == AN_Q4_1 || t == AN_Q4_K || t == AN_Q6_K;
}

/* tile[i] = element i of the rows from r0 on, as float32, or rounded to bf16 (nearest even) when bf16 */
__global__ static void widen_kernel(void *tile, int bf16, weight_view w, int64_t r0, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = weight_at(w, r0 + (int64_t)(i / (size_t)w.cols), (int64_t)(i % (size_t)w.cols));
        if (bf16) ((uint16_t *)tile)[i] = an_cuda_round_bf16(__float_as_uint(x));
        else ((float *)tile)[i] = x;
    }
}

static int widen(const an_ops *o, void *tile, int bf16, const an_weight *w, int64_t r0, int rows, const char *what) {
    weight_view v = view_of(w);
    if (!an_cuda_weight_readable(v.dtype)) return -1;
    size_t n = (size_t)rows * (size_t)w->cols;
    if (!n) return 0;
    widen_kernel<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(tile, bf16, v, r0, n);
    AN_CUDA_LAUNCHED(what);
    return 0;
}

int an_cuda_widen_rows(const an_ops *o, float *tile, const an_weight *w, int64_t r0, int rows, const char *what) {
    return widen(o, tile, 0, w, r0, rows, what);
}

int an_cuda_widen_rows_bf16(const an_ops *o, uint16_t *tile, const an_weight *w, int64_t r0, int rows, const char *what) {
    return widen(o, tile, 1, w, r0, rows, what);
}

__global__ static void lookup_kernel(float *out, const int32_t *ids, weight_view w, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = weight_at(w, ids[i / (size_t)w.cols], (int64_t)(i % (size_t)w.cols));
}

int an_cuda_lookup_rows(const an_ops *o, float *out, const int32_t *ids, const an_weight *w, int N) {
    weight_view v = view_of(w);
    if (!an_cuda_weight_readable(v.dtype)) return -1;
    size_t n = (size_t)N * (size_t)w->cols;
    if (!n) return 0;
    lookup_kernel<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(out, ids, v, n);
    AN_CUDA_LAUNCHED("embedding_lookup");
    return 0;
}

/* A warp per weight row, its lanes striding the row's columns: one step of the warp is one block of 32
 * (a GGUF block, or an eighth of a k-quant's 256), read as adjacent bytes. Each element is dequantized
 * once and multiplied into every input row's lane sum (fmaf, one rounding); the warp's butterfly then
 * adds the 32 lane sums. A decode step is bound by reading the weights: the tile path wrote each element
 * out as float32 and read it back, 5 to 9 times the bytes of a 4-bit block. */
enum { MATVEC_WARPS = 4 };

__global__ static void matvec_kernel(float *out, const float *inp, weight_view w, const float *bias, int N, int OC) {
    int row = blockIdx.x * MATVEC_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= OC) return; /* the whole warp: row is the warp's */
    float acc[AN_CUDA_MATVEC_ROWS];
    for (int n = 0; n < AN_CUDA_MATVEC_ROWS; n++) acc[n] = 0.0f;
    for (int64_t c = lane; c < w.cols; c += 32) {
        float v = weight_at(w, row, c);
#pragma unroll
        for (int n = 0; n < AN_CUDA_MATVEC_ROWS; n++)
            if (n < N) acc[n] = fmaf(v, inp[(size_t)n * (size_t)w.cols + (size_t)c], acc[n]);
    }
    for (int n = 0; n < N; n++) {
        float s = acc[n];
        for (int mask = 16; mask > 0; mask /= 2) s += __shfl_xor_sync(0xffffffffu, s, mask);
        if (lane == 0) out[(size_t)n * OC + row] = bias ? s + bias[row] : s;
    }
}

int an_cuda_typed_matvec(const an_ops *o, float *out, const float *inp, const an_weight *w, const float *bias, int N) {
    weight_view v = view_of(w);
    if (!an_cuda_weight_readable(v.dtype) || N < 1 || N > AN_CUDA_MATVEC_ROWS) return -1;
    int OC = (int)w->rows;
    if (OC < 1) return 0;
    matvec_kernel<<<(OC + MATVEC_WARPS - 1) / MATVEC_WARPS, 32 * MATVEC_WARPS, 0, an_cuda(o)->stream>>>(out, inp, v, bias,
                                                                                                        N, OC);
    AN_CUDA_LAUNCHED("linear_forward (matvec)");
    return 0;
}
