/* NF4 quantization and dequantization, bit for bit as bitsandbytes 0.50 does it on CPU
 * (bitsandbytes/backends/default/ops.py for the 4-bit codes, csrc/cpu_ops.cpp for the 8-bit
 * double quantization of the scales). */
#include "kernels/nf4.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/dynamic_map.h"

/* Bit-exactness needs every product rounded on its own; clang would otherwise fuse a*b+c. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

const float an_nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

/* torch.bucketize(v, midpoints, right=False): the number of midpoints strictly below v, so a value
 * exactly on a midpoint takes the lower code. The midpoints are (code[i] + code[i+1]) / 2 in float32. */
static uint8_t nf4_bucket(const float mid[15], float v) {
    int lo = 0, hi = 15; /* answer in [lo, hi] */
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (mid[m] < v) lo = m + 1;
        else hi = m;
    }
    return (uint8_t)lo;
}

static int valid_blocksize(int bs) {
    return bs >= 32 && bs <= 4096 && (bs & (bs - 1)) == 0;
}

int an_nf4_quantize(const float *w, int64_t n, int blocksize, uint8_t *packed, float *absmax, an_error *err) {
    if (n < 1) return an_fail(err, "nf4: cannot quantize %lld elements", (long long)n);
    if (!valid_blocksize(blocksize))
        return an_fail(err, "nf4: blocksize %d is not a power of two in 32..4096", blocksize);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(w[i])) return an_fail(err, "nf4: element %lld is %g, cannot quantize", (long long)i, w[i]);
    float mid[15];
    for (int i = 0; i < 15; i++) mid[i] = (an_nf4_code[i] + an_nf4_code[i + 1]) / 2.0f;
    memset(packed, 0, (size_t)((n + 1) / 2));
    for (int64_t b0 = 0, b = 0; b0 < n; b0 += blocksize, b++) {
        int64_t end = b0 + blocksize < n ? b0 + blocksize : n;
        float am = 0.0f;
        for (int64_t i = b0; i < end; i++) am = fmaxf(am, fabsf(w[i]));
        /* the divisor is clamped to 1e-38 so an all-zero block gives zeros, not NaN */
        float div = fmaxf(am, 1e-38f);
        int full = end - b0 == blocksize;
        /* bitsandbytes multiplies full blocks by a float32 reciprocal but divides the short last
         * block, and stores the clamped value as the short block's absmax */
        float recip = 1.0f / div;
        absmax[b] = full ? am : div;
        for (int64_t i = b0; i < end; i++) {
            float s = full ? w[i] * recip : w[i] / div;
            s = fminf(fmaxf(s, -1.0f), 1.0f);
            uint8_t q = nf4_bucket(mid, s);
            packed[i >> 1] |= (i & 1) ? q : (uint8_t)(q << 4);
        }
    }
    return 0;
}

void an_nf4_dequantize(const uint8_t *packed, const float *absmax, int64_t n, int blocksize, float *out) {
    for (int64_t i = 0; i < n; i++) {
        uint8_t byte = packed[i >> 1];
        int q = (i & 1) ? (byte & 15) : (byte >> 4);
        out[i] = an_nf4_code[q] * absmax[i / blocksize];
    }
}

/* One lane-wise 8-float vector, as torch's Vectorized<float> on AVX2. */
typedef struct vec8 {
    float v[8];
} vec8;

static void vec8_add(vec8 *a, const vec8 *b) {
    for (int l = 0; l < 8; l++) a->v[l] += b->v[l];
}

static int64_t ceil_log2(int64_t x) { /* at::native::utils::CeilLog2 */
    if (x <= 2) return 1;
    int64_t r = 0;
    uint64_t y = (uint64_t)x - 1;
    while (y) {
        r++;
        y >>= 1;
    }
    return r;
}

static float torch_cascade_sum(const float *x, int64_t n) {
    /* torch's vectorized_inner_sum -> row_sum -> multi_row_sum: the row of n/8 vectors is read as
     * rows of 4 vectors; each of the 4 columns is summed by a cascade whose level 0 takes 16 rows
     * at a time and whose higher levels flush upwards every 16 chunks. */
    int64_t vec_size = n / 8, size = vec_size / 4;
    int64_t level_power = ceil_log2(size) / 4;
    if (level_power < 4) level_power = 4;
    int64_t level_step = (int64_t)1 << level_power, level_mask = level_step - 1;
    vec8 acc[4][4];
    memset(acc, 0, sizeof acc);
    int64_t i = 0;
    for (; i + level_step <= size;) {
        for (int64_t j = 0; j < level_step; ++j, ++i)
            for (int k = 0; k < 4; k++) vec8_add(&acc[0][k], (const vec8 *)(x + (i * 4 + k) * 8));
        for (int j = 1; j < 4; ++j) {
            for (int k = 0; k < 4; k++) {
                vec8_add(&acc[j][k], &acc[j - 1][k]);
                memset(&acc[j - 1][k], 0, sizeof(vec8));
            }
            if ((i & (level_mask << (j * level_power))) != 0) break;
        }
    }
    for (; i < size; ++i)
        for (int k = 0; k < 4; k++) vec8_add(&acc[0][k], (const vec8 *)(x + (i * 4 + k) * 8));
    for (int j = 1; j < 4; ++j)
        for (int k = 0; k < 4; k++) vec8_add(&acc[0][k], &acc[j][k]);
    vec8 p[4];
    for (int k = 0; k < 4; k++) p[k] = acc[0][k];
    for (int64_t v = size * 4; v < vec_size; v++) vec8_add(&p[0], (const vec8 *)(x + v * 8));
    for (int k = 1; k < 4; k++) vec8_add(&p[0], &p[k]);
    float total = 0.0f;
    for (int64_t k = vec_size * 8; k < n; k++) total += x[k];
    for (int l = 0; l < 8; l++) total += p[0].v[l];
    return total;
}

/* torch reduces 32768 elements or more on several threads: at::parallel_for gives each of
 * T = min(threads, ceil(n / 32768)) threads a chunk of ceil(n / T) elements, each chunk is summed
 * as above into a buffer of `threads` partial sums (unused ones 0), and the buffer is summed the
 * same way. */
float an_torch_mean_f32_threads(const float *x, int64_t n, int threads) {
    const int64_t grain = 32768;
    if (n < grain || threads <= 1) return torch_cascade_sum(x, n) / (float)n;
    if (threads > 256) threads = 256; /* beyond any machine torch runs on; keeps parts[] bounded */
    int64_t t = (n + grain - 1) / grain;
    if (t > threads) t = threads;
    int64_t chunk = (n + t - 1) / t;
    float parts[256] = {0};
    for (int64_t i = 0; i < t && i * chunk < n; i++) {
        int64_t len = n - i * chunk < chunk ? n - i * chunk : chunk;
        parts[i] = torch_cascade_sum(x + i * chunk, len);
    }
    return torch_cascade_sum(parts, threads) / (float)n;
}

float an_torch_mean_f32(const float *x, int64_t n) {
    return an_torch_mean_f32_threads(x, n, 1);
}

/* ---- the tensor ---- */

static size_t part_end(size_t off, size_t bytes) { return (off + bytes + 255) / 256 * 256; }

an_nf4_device_layout an_nf4_device_layout_of(const an_nf4_tensor *t) {
    an_nf4_device_layout l = {0};
    size_t end = part_end(0, sizeof an_nf4_code); /* code4 at 0 */
    l.packed = end;
    end = part_end(end, (size_t)((t->n + 1) / 2));
    if (t->double_quant) {
        l.qabsmax = end;
        end = part_end(end, (size_t)t->n_blocks);
        l.absmax2 = end;
        end = part_end(end, (size_t)t->n_blocks2 * sizeof(float));
        l.code8 = end;
        end = part_end(end, sizeof t->code8);
    } else {
        l.absmax = end;
        end = part_end(end, (size_t)t->n_blocks * sizeof(float));
    }
    l.bytes = end;
    return l;
}

void an_nf4_device_image(const an_nf4_tensor *t, void *dst) {
    an_nf4_device_layout l = an_nf4_device_layout_of(t);
    uint8_t *d = dst;
    memset(d, 0, l.bytes);
    memcpy(d + l.code4, an_nf4_code, sizeof an_nf4_code);
    memcpy(d + l.packed, t->packed, (size_t)((t->n + 1) / 2));
    if (t->double_quant) {
        memcpy(d + l.qabsmax, t->qabsmax, (size_t)t->n_blocks);
        memcpy(d + l.absmax2, t->absmax2, (size_t)t->n_blocks2 * sizeof(float));
        memcpy(d + l.code8, t->code8, sizeof t->code8);
    } else {
        memcpy(d + l.absmax, t->absmax, (size_t)t->n_blocks * sizeof(float));
    }
}

void an_nf4_tensor_free(an_nf4_tensor *t) {
    if (!t) return;
    free(t->packed);
    free(t->absmax);
    free(t->qabsmax);
    free(t->absmax2);
    memset(t, 0, sizeof *t);
}

int an_nf4_tensor_quantize(an_nf4_tensor *t, const float *w, int64_t rows, int64_t cols, int blocksize,
                           int double_quant, an_error *err) {
    return an_nf4_tensor_quantize_ex(t, w, rows, cols, blocksize, double_quant, 1, err);
}

int an_nf4_tensor_quantize_ex(an_nf4_tensor *t, const float *w, int64_t rows, int64_t cols, int blocksize,
                              int double_quant, int torch_threads, an_error *err) {
    memset(t, 0, sizeof *t);
    if (rows < 1 || cols < 1 || rows > INT64_MAX / cols)
        return an_fail(err, "nf4: cannot quantize a [%lld, %lld] weight", (long long)rows, (long long)cols);
    t->rows = rows;
    t->cols = cols;
    t->n = rows * cols;
    t->blocksize = blocksize;
    if (!valid_blocksize(blocksize))
        return an_fail(err, "nf4: blocksize %d is not a power of two in 32..4096", blocksize);
    t->n_blocks = (t->n + blocksize - 1) / blocksize;
    t->packed = malloc((size_t)((t->n + 1) / 2));
    float *absmax = malloc((size_t)t->n_blocks * sizeof(float));
    if (!t->packed || !absmax) {
        free(absmax);
        an_nf4_tensor_free(t);
        return an_fail(err, "nf4: out of memory quantizing a [%lld, %lld] weight", (long long)rows, (long long)cols);
    }
    if (an_nf4_quantize(w, t->n, blocksize, t->packed, absmax, err)) {
        free(absmax);
        an_nf4_tensor_free(t);
        return -1;
    }
    if (!double_quant) {
        t->absmax = absmax;
        return 0;
    }
    /* compress_statistics=True: offset = mean(absmax), then absmax - offset in 8 bits per 256-block */
    t->double_quant = 1;
    t->blocksize2 = AN_NF4_NESTED_BLOCKSIZE;
    t->n_blocks2 = (t->n_blocks + t->blocksize2 - 1) / t->blocksize2;
    t->offset = an_torch_mean_f32_threads(absmax, t->n_blocks, torch_threads);
    t->qabsmax = malloc((size_t)t->n_blocks);
    t->absmax2 = malloc((size_t)t->n_blocks2 * sizeof(float));
    if (!t->qabsmax || !t->absmax2) {
        free(absmax);
        an_nf4_tensor_free(t);
        return an_fail(err, "nf4: out of memory quantizing a [%lld, %lld] weight", (long long)rows, (long long)cols);
    }
    for (int64_t b = 0; b < t->n_blocks; b++) absmax[b] -= t->offset;
    an_dynamic_map_signed8(t->code8);
    int rc = an_quantize_blockwise8(absmax, t->n_blocks, t->blocksize2, t->code8, t->qabsmax, t->absmax2);
    free(absmax);
    if (rc) {
        an_nf4_tensor_free(t);
        return an_fail(err, "nf4: out of memory quantizing a [%lld, %lld] weight", (long long)rows, (long long)cols);
    }
    return 0;
}

void an_nf4_tensor_dequantize_range(const an_nf4_tensor *t, int64_t start, int64_t count, float *out) {
    int64_t i = start, end = start + count;
    while (i < end) {
        int64_t b = i / t->blocksize;
        int64_t bend = (b + 1) * t->blocksize;
        if (bend > end) bend = end;
        float s = an_nf4_block_scale(t, b);
        const uint8_t *p = t->packed;
        if (i & 1) { /* odd start: the low nibble of a byte */
            *out++ = an_nf4_code[p[i >> 1] & 15] * s;
            i++;
        }
        for (; i + 1 < bend; i += 2) {
            uint8_t byte = p[i >> 1];
            out[0] = an_nf4_code[byte >> 4] * s;
            out[1] = an_nf4_code[byte & 15] * s;
            out += 2;
        }
        if (i < bend) {
            *out++ = an_nf4_code[p[i >> 1] >> 4] * s;
            i++;
        }
    }
}

void an_nf4_tensor_dequantize(const an_nf4_tensor *t, float *out) {
    an_nf4_tensor_dequantize_range(t, 0, t->n, out);
}

size_t an_nf4_tensor_bytes(const an_nf4_tensor *t) {
    size_t bytes = (size_t)((t->n + 1) / 2);
    if (t->double_quant)
        bytes += (size_t)t->n_blocks + (size_t)t->n_blocks2 * sizeof(float) + sizeof(float) + sizeof t->code8;
    else
        bytes += (size_t)t->n_blocks * sizeof(float);
    return bytes;
}

double an_nf4_bytes_per_param(const an_nf4_tensor *t) {
    return (double)an_nf4_tensor_bytes(t) / (double)t->n;
}
