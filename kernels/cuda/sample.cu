/* The sampler on the GPU (sample_tokens): a batch of rows of logits in, one token id per row out, so a
 * decoding step copies B ids to the host instead of B x V logits, and the host sorts nothing.
 *
 * It draws what infer/sampler.c draws, in its order: the repetition penalty and the stop-id mask, NaN
 * as -inf, the temperature, then top-k, top-p and min-p, renormalised, and the first candidate whose
 * running sum of probabilities passes u, the candidates in the host's order: sorted best first (higher
 * logit, then lower id) for greedy, top-k or top-p, by id otherwise. Here:
 *  1. edit_logits: the penalty on the row's distinct history ids, then the stop ids to -inf;
 *  2. make_keys: a 64-bit key a token, (the logit's order, reversed) << 32 | id for a sorted row,
 *     id << 32 | (the logit's order) for the others, the row padded to a power of two P with all-ones
 *     keys, which sort last (under AN_SAMPLE_TOP only the rows in id order, unpadded);
 *  3. sort.cu sorts every row's P keys: candidate i of a row is key i;
 *  4. pick, a block a row: the sum of exp(logit - max) over the candidates in double (a fixed tree),
 *     top-p's cut and the draw by a block-wide scan of the probabilities in chunks of the block's width
 *     (the first candidate whose running sum reaches top_p / passes u), min-p by a count of the
 *     candidates above its floor (a prefix where sorted; elsewhere the others weigh 0 in the scan).
 * Sums run in a fixed order, so a row draws the same token on every run; it is not the host's
 * sequential order, hence the note on rounding in kernels/ops.h. The caller's promise (kernels/ops.h)
 * spares the sort, which for a 49,152-token vocabulary padded to 65,536 keys is 136 compare-exchange
 * stages over 512 KiB a row: a batch all greedy skips 2 to 4 (pick_greedy reads each row once for its
 * best candidate); a batch whose rows order at most AN_SAMPLE_TOP_MAX candidates replaces 3 by
 * select_top, which finds a row's k best keys by radix selection (a few reads of the row) and sorts
 * just those, in shared memory. */
#include <math.h>

#include "kernels/cuda/cuda.h"

#define PICK_THREADS 256 /* a block a row */
#define SELECT_THREADS AN_SAMPLE_TOP_MAX /* select_top: a block a row, a thread a selected key */

static size_t pow2_at_least(int V) {
    size_t P = 1;
    while (P < (size_t)V) P *= 2;
    return P;
}

/* the float's bits as an unsigned integer in the floats' order (no NaN here) */
__device__ static inline uint32_t float_order(float l) {
    uint32_t b = __float_as_uint(l);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ static inline float order_float(uint32_t order) {
    return __uint_as_float((order & 0x80000000u) ? (order & 0x7fffffffu) : ~order);
}

/* The host sorts a row's candidates (best first: higher logit, then lower id) only for greedy
 * decoding, top-k or top-p; otherwise it keeps them, and draws through them, in id order. A key puts
 * whichever comes first in the high half: (reversed logit order, id) for a sorted row, (id, logit
 * order) for the others, which sort.cu then leaves in id order. */
__device__ static inline int sorts(const an_sample_row *r) {
    return r->temperature == 0.0f || r->top_k > 0 || r->top_p < 1.0f;
}

/* the key of token v with logit l (NaN: -inf, never drawn; -0 as +0, the host's equal logits, so the
 * lower id decides between them) */
__device__ static inline uint64_t token_key(float l, size_t v, int sorted) {
    if (isnan(l)) l = -INFINITY;
    if (l == 0.0f) l = 0.0f;
    return sorted ? (uint64_t)~float_order(l) << 32 | (uint64_t)v : (uint64_t)v << 32 | (uint64_t)float_order(l);
}

/* the key of token v whose logit l the temperature t scales (0: greedy, unscaled) */
__device__ static inline uint64_t scaled_key(float l, float t, size_t v, int sorted) {
    return token_key(t != 0.0f ? __fdiv_rn(l, t) : l, v, sorted);
}

__device__ static inline float key_logit(uint64_t key, int sorted) {
    return sorted ? order_float(~(uint32_t)(key >> 32)) : order_float((uint32_t)key);
}

__device__ static inline int32_t key_id(uint64_t key, int sorted) {
    return (int32_t)(sorted ? key & 0xffffffffu : key >> 32);
}

/* Block b: row b's penalty (each listed id once, infer/sampler.c's formula), then its stop ids, after
 * the penalty so that an id in both lists ends at -inf whichever order the threads take. */
__global__ static void edit_logits(float *logits, int V, const an_sample_row *rows, const int32_t *ids) {
    const an_sample_row *r = &rows[blockIdx.x];
    float *row = logits + (size_t)blockIdx.x * V, penalty = r->repeat_penalty;
    if (penalty != 1.0f)
        for (int t = threadIdx.x; t < r->n_penalised; t += blockDim.x) {
            int32_t id = ids[r->ids_at + t];
            if (id < 0 || id >= V) continue;
            float l = row[id];
            row[id] = l > 0 ? __fdiv_rn(l, penalty) : __fmul_rn(l, penalty);
        }
    __syncthreads();
    for (int t = threadIdx.x; t < r->n_masked; t += blockDim.x) {
        int32_t id = ids[r->ids_at + r->n_penalised + t];
        if (id >= 0 && id < V) row[id] = -INFINITY;
    }
}

/* Every row's keys, padded to P for the sort; under AN_SAMPLE_TOP, which sorts nothing, only the V keys
 * of the rows in id order, which pick reads as they are (select_top writes the others' first k). */
__global__ static void make_keys(uint64_t *keys, const float *logits, int B, int V, size_t P,
                                 const an_sample_row *rows, int promise) {
    size_t total = (size_t)B * P;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t b = i / P, v = i % P;
        if (promise == AN_SAMPLE_TOP && (v >= (size_t)V || AN_SAMPLE_ORDERED(&rows[b], V) != 0)) continue;
        keys[i] = v >= (size_t)V ? ~(uint64_t)0 : scaled_key(logits[b * V + v], rows[b].temperature, v, sorts(&rows[b]));
    }
}

/* Block b: when row b orders k <= AN_SAMPLE_TOP_MAX candidates (AN_SAMPLE_ORDERED), its k smallest sorted
 * keys, in order, as the row's first k keys (where pick reads them, as the sort would have left them);
 * rows in id order, or with more to order, are left alone.
 * The k-th smallest key is found a byte at a time from the top (radix selection): a histogram of the
 * next byte of the keys that share the bytes fixed so far, then the byte whose bucket holds the k-th,
 * until that bucket holds just the keys still wanted (often after three or four of the eight bytes).
 * Keys are distinct (they end in the id), so exactly k of them share or precede the fixed bytes; they
 * are gathered in any order and sorted by a bitonic network in shared memory, which makes the result
 * the one sorted order whatever order the threads gathered them in. */
__global__ static void select_top(uint64_t *keys, const float *logits, int V, size_t P, const an_sample_row *rows) {
    __shared__ uint64_t chosen[SELECT_THREADS];
    __shared__ int hist[256];
    __shared__ int found_digit, found_before, count;
    const an_sample_row *r = &rows[blockIdx.x];
    int k = AN_SAMPLE_ORDERED(r, V);
    if (k == 0 || k > SELECT_THREADS) return;
    const float *row = logits + (size_t)blockIdx.x * V;
    float t = r->temperature;
    uint64_t prefix = 0, mask = 0; /* the bytes fixed so far, and which they are */
    int need = k;                 /* how many keys sharing them are still wanted */
    for (int shift = 56; shift >= 0; shift -= 8) {
        hist[threadIdx.x] = 0;
        __syncthreads();
        for (int v = threadIdx.x; v < V; v += SELECT_THREADS) {
            uint64_t key = scaled_key(row[v], t, (size_t)v, 1);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1);
        }
        __syncthreads();
        /* an inclusive scan of the 256 buckets; the one thread whose bucket holds the need-th key says so */
        int own = hist[threadIdx.x];
        for (int d = 1; d < 256; d *= 2) {
            int add = (int)threadIdx.x >= d ? hist[threadIdx.x - d] : 0;
            __syncthreads();
            hist[threadIdx.x] += add;
            __syncthreads();
        }
        int upto = hist[threadIdx.x];
        if (upto - own < need && need <= upto) found_digit = (int)threadIdx.x, found_before = upto - own;
        __syncthreads();
        int digit = found_digit, before = found_before, all = hist[digit] == need; /* the scan: keys up to the bucket */
        __syncthreads(); /* every thread has read the scan before the next pass clears it */
        need -= before;
        prefix |= (uint64_t)digit << shift;
        mask |= (uint64_t)255 << shift;
        if (all) break; /* the bucket is exactly the keys still wanted */
    }
    /* the k keys at or before the prefix, in any order, then sorted */
    if (threadIdx.x == 0) count = 0;
    chosen[threadIdx.x] = ~(uint64_t)0;
    __syncthreads();
    for (int v = threadIdx.x; v < V; v += SELECT_THREADS) {
        uint64_t key = scaled_key(row[v], t, (size_t)v, 1);
        if ((key & mask) <= prefix) chosen[atomicAdd(&count, 1)] = key;
    }
    for (int size = 2; size <= SELECT_THREADS; size *= 2)
        for (int j = size / 2; j > 0; j /= 2) {
            __syncthreads();
            int i = (int)threadIdx.x, partner = i ^ j;
            if (partner > i) {
                uint64_t x = chosen[i], y = chosen[partner];
                if ((x > y) == ((i & size) == 0)) chosen[i] = y, chosen[partner] = x;
            }
        }
    __syncthreads();
    if ((int)threadIdx.x < k) keys[blockIdx.x * P + threadIdx.x] = chosen[threadIdx.x];
}

/* the sum (max 0) or the largest (max 1) of every thread's x by a fixed tree, returned to every thread */
__device__ static double block_reduce(double *s, double x, int max) {
    s[threadIdx.x] = x;
    for (int stride = PICK_THREADS / 2; stride > 0; stride /= 2) {
        __syncthreads();
        if ((int)threadIdx.x < stride) {
            double y = s[threadIdx.x + stride];
            s[threadIdx.x] = max ? (y > s[threadIdx.x] ? y : s[threadIdx.x]) : s[threadIdx.x] + y;
        }
    }
    __syncthreads();
    double total = s[0];
    __syncthreads();
    return total;
}

/* the smallest of every thread's x, returned to every thread */
__device__ static int block_min(int *s, int x) {
    s[threadIdx.x] = x;
    for (int stride = PICK_THREADS / 2; stride > 0; stride /= 2) {
        __syncthreads();
        if ((int)threadIdx.x < stride && s[threadIdx.x + stride] < s[threadIdx.x]) s[threadIdx.x] = s[threadIdx.x + stride];
    }
    __syncthreads();
    int m = s[0];
    __syncthreads();
    return m;
}

/* A row being sampled: its keys, and what the steps so far have fixed. */
typedef struct row_state {
    const uint64_t *k;
    int sorted;
    double mx, sum;   /* the largest logit; the sum of exp(logit - mx) over the candidates */
    double floor_p;   /* min-p's least probability (0: none) */
    double sum2;      /* the sum of the kept probabilities (0: not yet renormalised) */
} row_state;

/* candidate i's probability as the host forms it: exp(logit - max) / sum, 0 below min-p's floor, then
 * / sum2 once renormalised */
__device__ static inline double prob(const row_state *st, int i) {
    double p = exp((double)key_logit(st->k[i], st->sorted) - st->mx) / st->sum;
    if (p < st->floor_p) return 0.0;
    return st->sum2 != 0.0 ? p / st->sum2 : p;
}

/* The first candidate below n whose running sum of probabilities reaches target (strict: passes it);
 * n when none does. A chunk of PICK_THREADS candidates at a time: a Hillis-Steele scan in shared memory
 * plus the chunks before it. */
__device__ static int first_reaching(double *s, int *si, const row_state *st, int n, double target, int strict) {
    double carry = 0.0;
    for (int base = 0; base < n; base += PICK_THREADS) {
        int i = base + (int)threadIdx.x;
        s[threadIdx.x] = i < n ? prob(st, i) : 0.0;
        for (int d = 1; d < PICK_THREADS; d *= 2) {
            __syncthreads();
            double add = (int)threadIdx.x >= d ? s[threadIdx.x - d] : 0.0;
            __syncthreads();
            s[threadIdx.x] += add;
        }
        __syncthreads();
        double cum = carry + s[threadIdx.x];
        int hit = i < n && (strict ? target < cum : cum >= target);
        carry += s[PICK_THREADS - 1];
        int first = block_min(si, hit ? i : n);
        if (first < n) return first;
    }
    return n;
}

/* Block b: row b's token from its sorted keys into out[2b], the number kept into out[2b + 1]; none where
 * the keys were selected (AN_SAMPLE_TOP) and the row orders more than select_top does. */
__global__ static void pick(int32_t *out, const uint64_t *keys, int V, size_t P, const an_sample_row *rows, int promise) {
    __shared__ double s[PICK_THREADS];
    __shared__ int si[PICK_THREADS];
    const an_sample_row *r = &rows[blockIdx.x];
    row_state st = {keys + blockIdx.x * P, sorts(r), 0.0, 1.0, 0.0, 0.0};
    int32_t *o = out + 2 * blockIdx.x;
    if (promise == AN_SAMPLE_TOP && AN_SAMPLE_ORDERED(r, V) > AN_SAMPLE_TOP_MAX) {
        if (threadIdx.x == 0) o[0] = -1, o[1] = 0;
        return;
    }
    int n = r->top_k > 0 && r->top_k < V ? r->top_k : V;
    if (st.sorted) {
        st.mx = key_logit(st.k[0], 1);
    } else {
        double m = -INFINITY;
        for (int i = threadIdx.x; i < V; i += PICK_THREADS) m = fmax(m, (double)key_logit(st.k[i], 0));
        st.mx = block_reduce(s, m, 1);
    }
    /* greedy: the best candidate, none when even it is -inf. Sampling: none when the best is -inf (all
     * impossible) or +inf (the temperature overflowed it, and inf - inf is NaN) */
    if (!isfinite(st.mx) && (r->temperature != 0.0f || st.mx == -INFINITY)) {
        if (threadIdx.x == 0) o[0] = -1, o[1] = 0;
        return;
    }
    if (r->temperature == 0.0f) {
        if (threadIdx.x == 0) o[0] = key_id(st.k[0], 1), o[1] = 1;
        return;
    }
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += PICK_THREADS) acc += exp((double)key_logit(st.k[i], st.sorted) - st.mx);
    st.sum = block_reduce(s, acc, 0);
    if (r->top_p < 1.0f) { /* (sorted) keep while the mass before a candidate is below top_p */
        int last = first_reaching(s, si, &st, n, (double)r->top_p, 0);
        n = last < n ? last + 1 : n;
    }
    int kept = n;
    if (r->min_p > 0.0f) { /* the candidates at least min_p times as likely as the likeliest */
        double floor_p = (double)r->min_p * (1.0 / st.sum); /* the likeliest: exp(0) / sum */
        int count = 0;
        for (int i = threadIdx.x; i < n; i += PICK_THREADS) count += prob(&st, i) >= floor_p;
        kept = (int)block_reduce(s, (double)count, 0);
        st.floor_p = floor_p;
        if (st.sorted) n = kept; /* descending probabilities: the kept are a prefix */
    }
    acc = 0.0;
    for (int i = threadIdx.x; i < n; i += PICK_THREADS) acc += prob(&st, i);
    st.sum2 = block_reduce(s, acc, 0);
    /* one kept: it, without u (the first of positive probability); else the first passing u */
    int chosen = first_reaching(s, si, &st, n, kept > 1 ? (double)r->u : 0.0, 1);
    if (chosen >= n) { /* u within rounding of 1: the last kept */
        int last = -1;
        for (int i = threadIdx.x; i < n; i += PICK_THREADS)
            if (st.floor_p == 0.0 || prob(&st, i) > 0.0) last = i;
        chosen = (int)block_reduce(s, (double)last, 1);
    }
    if (threadIdx.x == 0) o[0] = key_id(st.k[chosen], st.sorted), o[1] = kept;
}

/* Greedy rows (AN_SAMPLE_GREEDY): block b finds row b's best candidate, the smallest sorted
 * key (higher logit, then lower id: the sorted road's first), in one read of the row; -1 when even it
 * is -inf, or when the row is not at temperature 0 after all (no wrong token). */
__global__ static void pick_greedy(int32_t *out, const float *logits, int V, const an_sample_row *rows) {
    __shared__ uint64_t s[PICK_THREADS];
    const float *row = logits + (size_t)blockIdx.x * V;
    uint64_t best = ~(uint64_t)0;
    for (int v = threadIdx.x; v < V; v += PICK_THREADS) {
        uint64_t key = token_key(row[v], (size_t)v, 1);
        best = key < best ? key : best;
    }
    s[threadIdx.x] = best;
    for (int stride = PICK_THREADS / 2; stride > 0; stride /= 2) {
        __syncthreads();
        if ((int)threadIdx.x < stride && s[threadIdx.x + stride] < s[threadIdx.x]) s[threadIdx.x] = s[threadIdx.x + stride];
    }
    if (threadIdx.x != 0) return;
    int32_t *o = out + 2 * blockIdx.x;
    int ok = rows[blockIdx.x].temperature == 0.0f && key_logit(s[0], 1) != -INFINITY;
    o[0] = ok ? key_id(s[0], 1) : -1, o[1] = ok;
}

__global__ static void none_drawn(int32_t *out, int B) {
    for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < B; b += gridDim.x * blockDim.x) out[2 * b] = -1, out[2 * b + 1] = 0;
}

size_t an_cuda_sample_work_bytes(const an_ops *o, int B, int V) {
    (void)o;
    return B > 0 && V > 0 ? (size_t)B * pow2_at_least(V) * sizeof(uint64_t) : 0;
}

void an_cuda_sample_tokens(const an_ops *o, int32_t *out, float *logits, int B, int V, const an_sample_row *rows,
                           const int32_t *ids, int promise, void *work, size_t work_bytes) {
    if (B <= 0 || V <= 0) return;
    cudaStream_t st = an_cuda(o)->stream;
    size_t P = pow2_at_least(V);
    if (!work || work_bytes < an_cuda_sample_work_bytes(o, B, V)) { /* never a wrong token: none */
        none_drawn<<<1, 256, 0, st>>>(out, B);
        AN_CUDA_LAUNCHED("sample_tokens");
        return;
    }
    uint64_t *keys = (uint64_t *)work;
    edit_logits<<<(unsigned)B, 128, 0, st>>>(logits, V, rows, ids);
    if (promise == AN_SAMPLE_GREEDY) { /* one read of each row: no keys, no sort */
        pick_greedy<<<(unsigned)B, PICK_THREADS, 0, st>>>(out, logits, V, rows);
        AN_CUDA_LAUNCHED("sample_tokens (greedy)");
        return;
    }
    make_keys<<<an_cuda_blocks((size_t)B * P), AN_CUDA_THREADS, 0, st>>>(keys, logits, B, V, P, rows, promise);
    if (promise == AN_SAMPLE_TOP) /* the few best of each row, selected; rows in id order keep make_keys' */
        select_top<<<(unsigned)B, SELECT_THREADS, 0, st>>>(keys, logits, V, P, rows);
    else
        an_cuda_sort_u64(o, keys, (size_t)B * P, P);
    pick<<<(unsigned)B, PICK_THREADS, 0, st>>>(out, keys, V, P, rows, promise);
    AN_CUDA_LAUNCHED("sample_tokens");
}
