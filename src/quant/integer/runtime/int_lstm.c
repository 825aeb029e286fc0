/* Fused integer LSTM and mLSTM layers over one window: the loops of IntegerLSTMLayer.step
 * (awd_int_lstm_layer) and IntegerMLSTMLayer.step (awd_int_mlstm_layer, further below) in C.
 *
 * Bit-identical to src/quant/integer/engine.py (IntegerLSTMLayer.project_inputs + step, T times) and
 * src/quant/integer/engine_mlstm.py (IntegerMLSTMLayer.project_inputs + step, T times); every
 * operation below is the integer operation the torch reference performs, in the same order, on
 * the same types (int32 adds wrap as torch's int32 adds do; requantization is in int64). No
 * floating point anywhere. Built and loaded by src/quant/integer/kernel.py (ctypes), and
 * linked into the standalone runtime of `python -m src.export format=c` (awd_kernel.h);
 * tests/quant/test_kernel.py and test_kernel_mlstm.py check them against the torch paths, bit
 * for bit.
 *
 * Per step t, batch row b, gate channel j (G = 4H, gate order i, f, g, o):
 *   acc_h = sum_k W_hh[j,k] h[b,k] + bias_h[j]                    int32
 *   a_h   = sat16(MBQM(acc_h, M_h[j]))
 *   a_x   = sat16(MBQM(acc_x[t,b,j] + bias_x[j], M_x[j]))         acc_x: the window's GEMM
 *   z     = sat16(a_h + a_x)
 *   i, f, o = SIGMOID[z],  g = TANH[z]
 *   c     = sat16(RDP(RDP(f c, 15 + k - a) + RDP(i g, 30 - a), a - k)),  a = min(15 + k, 30)
 *   h     = sat_bits(MBQM(o TANH_CELL[c], M_o) + z_h)
 *
 * The recurrent GEMM uses AVX-512 VNNI (vpdpbusd: u8 x s8 -> s32) where the compiler targets it:
 * sum_k (h + 128) W = sum_k h W + 128 sum_k W, exact in int32, and the 128 sum_k W term is
 * subtracted again (corr). The packed weight is int8 [Gp/64][Kq][64][4] (each tile of 64
 * channels one contiguous slab) with Kq = ceil(H / 4) and Gp the gate count padded to 64
 * (zero rows and columns add nothing). AVX2 (AWD_AVX2, below) packs int16 pairs instead. Elsewhere a plain C loop on
 * the row-major int8 weight [G][H] computes the same exact sums.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "awd_kernel.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && !defined(AWD_GENERIC)
#include <immintrin.h>
#define AWD_VNNI 1
#else
#define AWD_VNNI 0
#endif
#if !AWD_VNNI && defined(__AVX2__) && !defined(AWD_GENERIC)
#include <immintrin.h>
#define AWD_AVX2 1
#else
#define AWD_AVX2 0
#endif
/* VNNI and AVX2 stage GEMM operand rows padded to a multiple of 4 and use packed weights */
#define AWD_QUADS (AWD_VNNI || AWD_AVX2)
#define AWD_TILE (AWD_VNNI ? 64 : 32) /* weight rows (gate channels) padded to this */

#define TILE_CHANNELS 64 /* 4 zmm of 16 int32 */
#define TILE_ROWS 4

int awd_abi(void) { return AWD_ABI; }

const char *awd_isa(void) { return AWD_VNNI ? "avx512-vnni" : (AWD_AVX2 ? "avx2" : "generic"); }

/* The weight layout: 1 packed for VNNI, 2 packed for AVX2 (see above); 0 row-major [G][H]. */
int awd_packed(void) { return AWD_VNNI ? 1 : (AWD_AVX2 ? 2 : 0); }

#if AWD_VNNI
/* acc[r][j] = sum_q dot4(hu[r][4q..4q+3], wp[q][j][0..3]) for a tile of rows and 64 channels. */
static inline __attribute__((always_inline)) void gemm_tile(
    int nrows, int Kq, int Gp, int j0, const uint8_t *hu, int hstride, const int8_t *wp,
    int32_t *acc, int astride) {
    __m512i a[TILE_ROWS][4];
    for (int r = 0; r < nrows; r++)
        for (int v = 0; v < 4; v++) a[r][v] = _mm512_setzero_si512();
    for (int q = 0; q < Kq; q++) {
        const int8_t *w = wp + ((size_t)(j0 / TILE_CHANNELS) * Kq + q) * (4 * TILE_CHANNELS);
        __m512i w0 = _mm512_loadu_si512((const void *)(w));
        __m512i w1 = _mm512_loadu_si512((const void *)(w + 64));
        __m512i w2 = _mm512_loadu_si512((const void *)(w + 128));
        __m512i w3 = _mm512_loadu_si512((const void *)(w + 192));
        for (int r = 0; r < nrows; r++) {
            int32_t quad;
            memcpy(&quad, hu + (size_t)r * hstride + 4 * q, 4);
            __m512i hb = _mm512_set1_epi32(quad);
            a[r][0] = _mm512_dpbusd_epi32(a[r][0], hb, w0);
            a[r][1] = _mm512_dpbusd_epi32(a[r][1], hb, w1);
            a[r][2] = _mm512_dpbusd_epi32(a[r][2], hb, w2);
            a[r][3] = _mm512_dpbusd_epi32(a[r][3], hb, w3);
        }
    }
    for (int r = 0; r < nrows; r++)
        for (int v = 0; v < 4; v++)
            _mm512_storeu_si512((void *)(acc + (size_t)r * astride + j0 + 16 * v), a[r][v]);
}

/* Channel tiles outside, row tiles inside: each tile's weight slab (Kq x 64 x 4 bytes) is read
 * from memory once and reused by every row (the runtime's decoder has 64 rows, 10k channels). */
static void recurrent_gemm(int B, int Kq, int Gp, const uint8_t *hu, const int8_t *wp, int32_t *acc) {
    const int hstride = 4 * Kq;
    for (int j0 = 0; j0 < Gp; j0 += TILE_CHANNELS) {
        for (int b0 = 0; b0 < B; b0 += TILE_ROWS) {
            const int nrows = B - b0 < TILE_ROWS ? B - b0 : TILE_ROWS;
            const uint8_t *h = hu + (size_t)b0 * hstride;
            int32_t *out = acc + (size_t)b0 * Gp;
            switch (nrows) { /* constant row counts: the accumulators stay in registers */
            case 1: gemm_tile(1, Kq, Gp, j0, h, hstride, wp, out, Gp); break;
            case 2: gemm_tile(2, Kq, Gp, j0, h, hstride, wp, out, Gp); break;
            case 3: gemm_tile(3, Kq, Gp, j0, h, hstride, wp, out, Gp); break;
            default: gemm_tile(4, Kq, Gp, j0, h, hstride, wp, out, Gp); break;
            }
        }
    }
}
#endif

#if AWD_AVX2
/* AVX2 has no exact int8 dot product (vpmaddubsw saturates at int16), so the AVX2 layout is
 * int16: weight [K/2][Gp][2] (element [p][j][r] = w[j][2p + r]), operand rows widened to int16,
 * and vpmaddwd (s16 x s16, pairs summed into s32: |sum| <= 2^15, exact) accumulates in int32. */
#define AVX2_CHANNELS 32 /* 4 ymm of 8 int32 */
#define AVX2_ROWS 2      /* 8 accumulators + 4 weights + 1 operand: within the 16 ymm */

static inline __attribute__((always_inline)) void gemm_tile_avx2(
    int nrows, int K2, int Gp, int j0, const int16_t *x, int xstride, const int16_t *wp,
    int32_t *acc, int astride) {
    __m256i a[AVX2_ROWS][4];
    for (int r = 0; r < nrows; r++)
        for (int v = 0; v < 4; v++) a[r][v] = _mm256_setzero_si256();
    for (int p = 0; p < K2; p++) {
        const int16_t *w = wp + ((size_t)(j0 / AVX2_CHANNELS) * K2 + p) * (2 * AVX2_CHANNELS);
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(w));
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + 16));
        const __m256i w2 = _mm256_loadu_si256((const __m256i *)(w + 32));
        const __m256i w3 = _mm256_loadu_si256((const __m256i *)(w + 48));
        for (int r = 0; r < nrows; r++) {
            int32_t pair;
            memcpy(&pair, x + (size_t)r * xstride + 2 * p, 4);
            const __m256i xb = _mm256_set1_epi32(pair);
            a[r][0] = _mm256_add_epi32(a[r][0], _mm256_madd_epi16(xb, w0));
            a[r][1] = _mm256_add_epi32(a[r][1], _mm256_madd_epi16(xb, w1));
            a[r][2] = _mm256_add_epi32(a[r][2], _mm256_madd_epi16(xb, w2));
            a[r][3] = _mm256_add_epi32(a[r][3], _mm256_madd_epi16(xb, w3));
        }
    }
    for (int r = 0; r < nrows; r++)
        for (int v = 0; v < 4; v++)
            _mm256_storeu_si256((__m256i *)(acc + (size_t)r * astride + j0 + 8 * v), a[r][v]);
}

/* acc[r][j] = sum_k W[j,k] x[r,k] for R int8 rows of kstride (a multiple of 4) values; channel
 * tiles outside, row tiles inside (each weight slab is reused by every row from L1). */
static int avx2_gemm(int R, int kstride, int Gp, const int8_t *x8, const int8_t *w, int32_t *acc) {
    int16_t *x = (int16_t *)malloc(sizeof(int16_t) * (size_t)R * (size_t)kstride + 64);
    if (!x) return 1;
    for (size_t i = 0; i < (size_t)R * (size_t)kstride; i++) x[i] = x8[i];
    const int16_t *wp = (const int16_t *)(const void *)w;
    for (int j0 = 0; j0 < Gp; j0 += AVX2_CHANNELS) {
        for (int b0 = 0; b0 < R; b0 += AVX2_ROWS) {
            const int16_t *xr = x + (size_t)b0 * kstride;
            int32_t *out = acc + (size_t)b0 * Gp;
            if (R - b0 >= 2)
                gemm_tile_avx2(2, kstride / 2, Gp, j0, xr, kstride, wp, out, Gp);
            else
                gemm_tile_avx2(1, kstride / 2, Gp, j0, xr, kstride, wp, out, Gp);
        }
    }
    free(x);
    return 0;
}
#endif

/* Stage an int8 row of K values as a GEMM operand row of kstride bytes: u8 x + 128 padded with
 * 128 (VNNI; the padded weight columns are zero), the int8 values padded with 0 (AVX2), else
 * the int8 values themselves. */
static inline void stage_row(uint8_t *row, int kstride, const int8_t *x, int K) {
#if AWD_VNNI
    for (int kk = 0; kk < K; kk++) row[kk] = (uint8_t)(x[kk] + 128);
    for (int kk = K; kk < kstride; kk++) row[kk] = 128;
#else
    memcpy(row, x, (size_t)K);
    if (kstride > K) memset(row + K, 0, (size_t)(kstride - K));
#endif
}

static inline uint8_t staged(int64_t code) {
#if AWD_VNNI
    return (uint8_t)(code + 128);
#else
    return (uint8_t)(int8_t)code;
#endif
}

/* acc[r][j] (row stride Gp) = sum_k W[j,k] x[r,k] (+ 128 sum_k W[j,k] on VNNI), r < R, j < G.
 * Returns 1 when a scratch allocation fails. */
static int rows_gemm(int R, int K, int kstride, int G, int Gp, const uint8_t *x, const int8_t *w,
                     int32_t *acc) {
#if AWD_VNNI
    (void)K;
    (void)G;
    recurrent_gemm(R, kstride / 4, Gp, x, w, acc);
#elif AWD_AVX2
    (void)K;
    (void)G;
    return avx2_gemm(R, kstride, Gp, (const int8_t *)x, w, acc);
#else
    (void)kstride;
    for (int r = 0; r < R; r++) {
        const int8_t *xr = (const int8_t *)x + (size_t)r * K;
        for (int j = 0; j < G; j++) {
            const int8_t *wj = w + (size_t)j * K;
            int32_t s = 0;
            for (int kk = 0; kk < K; kk++) s += (int32_t)wj[kk] * (int32_t)xr[kk];
            acc[(size_t)r * Gp + j] = s;
        }
    }
#endif
    return 0;
}

/* Requantizer constants of one GEMM, per channel, in the narrow types the vector loops want:
 * y = sat32(acc 2^left) (only when any left > 0), y = (y m0 + 2^30) >> 31,
 * out = (y + nudge - ([y < 0] & negative)) >> right,  nudge = 2^(right-1) or 0, negative = 0/1. */
typedef struct {
    int32_t *m0, *left, *right, *nudge, *negative;
    int has_left;
} rq_t;

static int rq_init(rq_t *rq, int G, const int64_t *m0, const int64_t *left, const int64_t *right) {
    int32_t *buf = (int32_t *)malloc(sizeof(int32_t) * 5 * (size_t)G);
    if (!buf) return 1;
    rq->m0 = buf;
    rq->left = buf + G;
    rq->right = buf + 2 * G;
    rq->nudge = buf + 3 * G;
    rq->negative = buf + 4 * G;
    rq->has_left = 0;
    for (int j = 0; j < G; j++) {
        rq->m0[j] = (int32_t)m0[j];
        rq->left[j] = (int32_t)left[j];
        rq->right[j] = (int32_t)right[j];
        rq->nudge[j] = right[j] > 0 ? (int32_t)(1u << (right[j] - 1)) : 0;
        rq->negative[j] = right[j] > 0;
        rq->has_left |= left[j] > 0;
    }
    return 0;
}

/* out[j] = sat16(MBQM(acc[j] (+ bias[j], int32 wrap) (- corr[j]), rq_j)) as int32, j < G. */
static inline void requantize_row(
    int G, const int32_t *restrict acc, const int32_t *restrict corr, const int32_t *restrict bias,
    const rq_t *rq, int32_t *restrict out) {
    const int32_t *restrict m0 = rq->m0, *restrict right = rq->right, *restrict nudge = rq->nudge;
    const int32_t *restrict negative = rq->negative, *restrict left = rq->left;
    if (rq->has_left) {
        for (int j = 0; j < G; j++) {
            int32_t v = corr ? acc[j] - corr[j] : acc[j];
            int64_t y = (int64_t)awd_wadd32(v, bias[j]) * ((int64_t)1 << left[j]);
            y = y > INT32_MAX ? INT32_MAX : (y < INT32_MIN ? INT32_MIN : y);
            y = (y * (int64_t)m0[j] + ((int64_t)1 << 30)) >> 31;
            y = (y + (int64_t)nudge[j] - (int64_t)((y < 0) & negative[j])) >> right[j];
            out[j] = (int32_t)(y < -32768 ? -32768 : (y > 32767 ? 32767 : y));
        }
        return;
    }
    for (int j = 0; j < G; j++) {
        int32_t v = corr ? acc[j] - corr[j] : acc[j];
        int64_t y = (int64_t)awd_wadd32(v, bias[j]);
        y = (y * (int64_t)m0[j] + ((int64_t)1 << 30)) >> 31;
        y = (y + (int64_t)nudge[j] - (int64_t)((y < 0) & negative[j])) >> right[j];
        out[j] = (int32_t)(y < -32768 ? -32768 : (y > 32767 ? 32767 : y));
    }
}

/* Returns 0 on success, 1 when a scratch allocation fails.
 *
 * rows    [row_begin, row_end): the batch rows this call computes (rows are independent, so
 *         calls on disjoint ranges may run in parallel threads); B is the full batch (strides)
 * acc_x   int32 [T][B][G]   the window's input GEMM sum_k W_ih[j,k] x[t,b,k] (no bias)
 * h0      int8  [B][H]      h_{-1}
 * c       int16 [B][H]      c_{-1} in, c_{T-1} out (updated in place)
 * h_out   int8  [T][B][H]   h_t for every step
 * w       int8              packed (awd_packed(): 1 VNNI, 2 AVX2; see awd_pack_weight), else row-major [G][H]
 * corr    int32 [G]         128 sum_k W_hh[j,k] (packed layout only; may be NULL otherwise)
 * rq*_*   int64 [G]         the Requantizer constants m0, left, right of M_x and M_h
 * out_*   int64             the output Requantizer's m0, left, right (per tensor)
 * sigmoid, tanh, tanh_cell  int16 [65536] direct tables indexed by code + 32768
 */
int awd_int_lstm_layer(
    int T, int B, int row_begin, int row_end, int H, int Gp, const int32_t *acc_x, const int8_t *h0, int16_t *c,
    int8_t *h_out, const int8_t *w, const int32_t *corr, const int32_t *bias_x,
    const int32_t *bias_h, const int64_t *rqx_m0, const int64_t *rqx_left,
    const int64_t *rqx_right, const int64_t *rqh_m0, const int64_t *rqh_left,
    const int64_t *rqh_right, int64_t out_m0, int64_t out_left, int64_t out_right,
    int cell_exponent, int hidden_zero_point, int bits, const int16_t *sigmoid,
    const int16_t *tanh_table, const int16_t *tanh_cell) {
    const int G = 4 * H;
    const int Kq = (H + 3) / 4;
    const int k = cell_exponent;
    const int a = 15 + k < 30 ? 15 + k : 30;
    const int fc_shift = 15 + k - a, ig_shift = 30 - a, out_shift = a - k;
    const int64_t h_lo = -((int64_t)1 << (bits - 1)), h_hi = ((int64_t)1 << (bits - 1)) - 1;
    const int16_t *sig = sigmoid + 32768, *tnh = tanh_table + 32768, *tc = tanh_cell + 32768;
    const int astride = AWD_QUADS ? Gp : G;
    const int R = row_end - row_begin; /* rows of this call; scratch row r is batch row b0 + r */
    const int b0 = row_begin;
    if (R <= 0) return 0;

    rq_t rqx = {0}, rqh = {0};
    int32_t *acc = (int32_t *)malloc(sizeof(int32_t) * (size_t)R * (size_t)astride);
    int32_t *yh = (int32_t *)malloc(sizeof(int32_t) * (size_t)G);
    int32_t *yx = (int32_t *)malloc(sizeof(int32_t) * (size_t)G);
    int32_t *p = (int32_t *)malloc(sizeof(int32_t) * (size_t)H);
    uint8_t *hu = (uint8_t *)malloc((size_t)R * 4 * (size_t)Kq + 64);
    int status = 0;
    if (!acc || !yh || !yx || !p || !hu || rq_init(&rqx, G, rqx_m0, rqx_left, rqx_right) ||
        rq_init(&rqh, G, rqh_m0, rqh_left, rqh_right)) {
        status = 1;
        goto done;
    }
    const int32_t *hcorr = AWD_VNNI ? corr : NULL;
    for (int t = 0; t < T; t++) {
        const int8_t *h = t == 0 ? h0 : h_out + (size_t)(t - 1) * B * H;
        int8_t *hn = h_out + (size_t)t * B * H;
#if AWD_QUADS
        for (int r = 0; r < R; r++) stage_row(hu + (size_t)r * 4 * Kq, 4 * Kq, h + (size_t)(b0 + r) * H, H);
        if (rows_gemm(R, H, 4 * Kq, G, Gp, hu, w, acc)) {
            status = 1;
            goto done;
        }
#else
        for (int r = 0; r < R; r++) {
            const int8_t *hb = h + (size_t)(b0 + r) * H;
            for (int j = 0; j < G; j++) {
                const int8_t *wj = w + (size_t)j * H;
                int32_t s = 0;
                for (int kk = 0; kk < H; kk++) s += (int32_t)wj[kk] * (int32_t)hb[kk];
                acc[(size_t)r * G + j] = s;
            }
        }
#endif
        for (int r = 0; r < R; r++) {
            const int b = b0 + r;
            requantize_row(G, acc + (size_t)r * astride, hcorr, bias_h, &rqh, yh);
            requantize_row(G, acc_x + ((size_t)t * B + b) * G, NULL, bias_x, &rqx, yx);
            for (int j = 0; j < G; j++) { /* z = sat16(a_h + a_x), kept in yh */
                const int32_t s = yh[j] + yx[j];
                yh[j] = s < -32768 ? -32768 : (s > 32767 ? 32767 : s);
            }
            int16_t *cb = c + (size_t)b * H;
            for (int u = 0; u < H; u++) {
                const int32_t ig = sig[yh[u]], fg = sig[yh[H + u]], gg = tnh[yh[2 * H + u]];
                const int32_t fc = awd_round_shift32(fg * (int32_t)cb[u], fc_shift);
                const int32_t igp = awd_round_shift32(ig * gg, ig_shift);
                const int32_t cs = awd_round_shift32(awd_wadd32(fc, igp), out_shift);
                const int16_t cn = (int16_t)(cs < -32768 ? -32768 : (cs > 32767 ? 32767 : cs));
                cb[u] = cn;
                p[u] = (int32_t)sig[yh[3 * H + u]] * (int32_t)tc[cn]; /* o tanh(c) at 2^-30 */
            }
            int8_t *hb = hn + (size_t)b * H;
            for (int u = 0; u < H; u++) {
                const int64_t y = awd_requantize(p[u], out_m0, out_left, out_right) + hidden_zero_point;
                hb[u] = (int8_t)awd_clamp64(y, h_lo, h_hi);
            }
        }
    }
done:
    free(acc);
    free(yh);
    free(yx);
    free(p);
    free(hu);
    free(rqx.m0);
    free(rqh.m0);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * The integer mLSTM (src/quant/integer/engine_mlstm.py, whose docstring gives the equations).
 *
 * Per step t and batch row b, in the order of IntegerMLSTMLayer.step:
 *   v   = sat16(MBQM(W_mh h_{t-1} + bias_v, M_v))                 W_mh [H][P], GEMM 1
 *   u   = sat16(MBQM(acc_in[t,b,4H:] + bias_u, M_u))               acc_in: the window's GEMM
 *   m   = sat_bits(MBQM(u v, M_p) + z_m)                           u v in int64 (exact)
 *   a_m = sat16(MBQM(W_hm m + bias_m, M_m))                        W_hm [4H][H], GEMM 2
 *   a_x = sat16(MBQM(acc_in[t,b,:4H] + bias_x, M_x))
 *   z   = sat16(a_m + a_x);  z_i,f += sat16(MBQM(w_ic,fc c_{t-1}, M_pc)) (sat16; peepholes)
 *   c   = clamp(cell_update(SIGMOID[z_f], c, SIGMOID[z_i], TANH[z_g]), c_lo, c_hi)  (cell clip)
 *   z_o = sat16(z_o + sat16(MBQM(w_oc c_t, M_pc)))                  (peepholes)
 *   r   = sat_bits(MBQM(SIGMOID[z_o] TANH_CELL[c], M_o) + z_o')
 *   h   = r, or clamp(sat_bits(MBQM(W_hr r + bias_r, M_r) + z_h), h_lo, h_hi)  W_hr [P][H], GEMM 3
 *
 * The three recurrent GEMMs use the LSTM's VNNI GEMM on weights packed like W_hh (the operand
 * rows staged as u8 x + 128, corr = 128 sum_k W subtracted), or the plain C loop.
 * ------------------------------------------------------------------------------------------ */

int awd_mlstm_args_size(void) { return (int)sizeof(awd_mlstm_args); }

static inline int32_t sat16_32(int64_t v) { return (int32_t)awd_clamp64(v, -32768, 32767); }

static inline int rq_init3(rq_t *rq, int G, const int64_t *rows) {
    return rq_init(rq, G, rows, rows + G, rows + 2 * G);
}

/* sat16(MBQM(w c, M_pc)) with the per-vector requantizer n of rq [3][3]. */
static inline int32_t peephole_term(const int64_t *rq, int n, int32_t w, int32_t c) {
    return sat16_32(awd_requantize((int64_t)(w * c), rq[n], rq[3 + n], rq[6 + n]));
}

/* Returns 0 on success, 1 when a scratch allocation fails. Rows [row_begin, row_end) of the
 * batch of B (rows are independent: disjoint ranges may run in parallel threads). */
int awd_int_mlstm_layer(int T, int B, int row_begin, int row_end, const awd_mlstm_args *a) {
    const int H = (int)a->hidden, P = (int)a->proj, G = 4 * H, S = 5 * H;
    const int gp_v = (int)a->gp_v, gp_m = (int)a->gp_m, gp_r = (int)a->gp_r;
    const int k = (int)a->cell_exponent;
    const int ac = 15 + k < 30 ? 15 + k : 30;
    const int fc_shift = 15 + k - ac, ig_shift = 30 - ac, out_shift = ac - k;
    const int64_t lo = -((int64_t)1 << (a->bits - 1)), hi = ((int64_t)1 << (a->bits - 1)) - 1;
    const int16_t *sig = a->sigmoid + 32768, *tnh = a->tanh_table + 32768, *tc = a->tanh_cell + 32768;
    const int64_t zm = a->product_zero_point, zo = a->output_zero_point, zh = a->hidden_zero_point;
    const int64_t *rp = a->rq_product, *ro = a->rq_output, *rpc = a->rq_peephole;
    const int peephole = (int)a->peephole, projection = (int)a->projection;
    const int32_t clo = (int32_t)a->cell_lo, chi = (int32_t)a->cell_hi;
    const int64_t plo = a->proj_lo, phi = a->proj_hi;
    const int16_t *w_ic = a->peephole_w, *w_fc = w_ic + H, *w_oc = w_ic + 2 * H;
    const int KP = AWD_QUADS ? 4 * ((P + 3) / 4) : P; /* staged row strides */
    const int KH = AWD_QUADS ? 4 * ((H + 3) / 4) : H;
    const int R = row_end - row_begin, b0 = row_begin;
    if (R <= 0) return 0;
    int gp_max = gp_v > gp_m ? gp_v : gp_m;
    gp_max = gp_r > gp_max ? gp_r : gp_max;
    const int kmax = KP > KH ? KP : KH;

    rq_t rqx = {0}, rqu = {0}, rqv = {0}, rqm = {0};
    int32_t *acc = (int32_t *)malloc(sizeof(int32_t) * (size_t)R * (size_t)gp_max);
    uint8_t *stage = (uint8_t *)malloc((size_t)R * (size_t)kmax + 64);
    int32_t *yv = (int32_t *)malloc(sizeof(int32_t) * (size_t)H);
    int32_t *yu = (int32_t *)malloc(sizeof(int32_t) * (size_t)H);
    int32_t *ym = (int32_t *)malloc(sizeof(int32_t) * (size_t)G);
    int32_t *yx = (int32_t *)malloc(sizeof(int32_t) * (size_t)G);
    int status = 0;
    if (!acc || !stage || !yv || !yu || !ym || !yx || rq_init3(&rqx, G, a->rq_x) ||
        rq_init3(&rqu, H, a->rq_u) || rq_init3(&rqv, H, a->rq_v) || rq_init3(&rqm, G, a->rq_m)) {
        status = 1;
        goto done;
    }
    const int32_t *corr_mh = AWD_VNNI ? a->corr_mh : NULL, *corr_hm = AWD_VNNI ? a->corr_hm : NULL;
    const int32_t *corr_hr = AWD_VNNI ? a->corr_hr : NULL;
    const int64_t *rq_r = a->rq_r;
    for (int t = 0; t < T; t++) {
        const int8_t *hp = t == 0 ? a->h0 : a->h_out + (size_t)(t - 1) * B * P;
        int8_t *hn = a->h_out + (size_t)t * B * P;
        /* GEMM 1: W_mh h_{t-1} */
        for (int r = 0; r < R; r++) stage_row(stage + (size_t)r * KP, KP, hp + (size_t)(b0 + r) * P, P);
        if (rows_gemm(R, P, KP, H, gp_v, stage, a->w_mh, acc)) {
            status = 1;
            goto done;
        }
        for (int r = 0; r < R; r++) { /* m_t, staged for GEMM 2 */
            const int32_t *in = a->acc_in + ((size_t)t * B + (b0 + r)) * S;
            requantize_row(H, acc + (size_t)r * gp_v, corr_mh, a->bias_v, &rqv, yv);
            requantize_row(H, in + G, NULL, a->bias_u, &rqu, yu);
            uint8_t *row = stage + (size_t)r * KH;
            for (int j = 0; j < H; j++) {
                const int64_t product = (int64_t)yu[j] * (int64_t)yv[j];
                row[j] = staged(awd_clamp64(awd_requantize(product, rp[0], rp[1], rp[2]) + zm, lo, hi));
            }
            for (int j = H; j < KH; j++) row[j] = staged(0);
        }
        /* GEMM 2: W_hm m_t */
        if (rows_gemm(R, H, KH, G, gp_m, stage, a->w_hm, acc)) {
            status = 1;
            goto done;
        }
        for (int r = 0; r < R; r++) {
            const int b = b0 + r;
            requantize_row(G, acc + (size_t)r * gp_m, corr_hm, a->bias_m, &rqm, ym);
            requantize_row(G, a->acc_in + ((size_t)t * B + b) * S, NULL, a->bias_x, &rqx, yx);
            for (int j = 0; j < G; j++) { /* z = sat16(a_m + a_x), kept in ym */
                const int32_t s = ym[j] + yx[j];
                ym[j] = s < -32768 ? -32768 : (s > 32767 ? 32767 : s);
            }
            int16_t *cb = a->c + (size_t)b * H;
            uint8_t *row = stage + (size_t)r * KH;
            int8_t *hb = hn + (size_t)b * P;
            for (int u = 0; u < H; u++) {
                int32_t zi = ym[u], zf = ym[H + u], zog = ym[3 * H + u];
                const int32_t cprev = cb[u];
                if (peephole) {
                    zi = sat16_32((int64_t)zi + peephole_term(rpc, 0, w_ic[u], cprev));
                    zf = sat16_32((int64_t)zf + peephole_term(rpc, 1, w_fc[u], cprev));
                }
                const int32_t ig = sig[zi], fg = sig[zf], gg = tnh[ym[2 * H + u]];
                const int32_t fc = awd_round_shift32(fg * cprev, fc_shift);
                const int32_t igp = awd_round_shift32(ig * gg, ig_shift);
                const int32_t cs = awd_round_shift32(awd_wadd32(fc, igp), out_shift);
                int32_t cn = cs < -32768 ? -32768 : (cs > 32767 ? 32767 : cs);
                if (a->cell_clip) { /* torch clamp(lo, hi): min(max(c, lo), hi) */
                    cn = cn < clo ? clo : cn;
                    cn = cn > chi ? chi : cn;
                }
                cb[u] = (int16_t)cn;
                if (peephole) zog = sat16_32((int64_t)zog + peephole_term(rpc, 2, w_oc[u], cn));
                const int32_t p = (int32_t)sig[zog] * (int32_t)tc[cn]; /* o tanh(c) at 2^-30 */
                const int64_t rr = awd_clamp64(awd_requantize(p, ro[0], ro[1], ro[2]) + zo, lo, hi);
                if (projection)
                    row[u] = staged(rr);
                else
                    hb[u] = (int8_t)rr;
            }
            if (projection)
                for (int j = H; j < KH; j++) row[j] = staged(0);
        }
        if (!projection) continue;
        /* GEMM 3: W_hr r_t */
        if (rows_gemm(R, H, KH, P, gp_r, stage, a->w_hr, acc)) {
            status = 1;
            goto done;
        }
        for (int r = 0; r < R; r++) {
            const int32_t *ar = acc + (size_t)r * gp_r;
            int8_t *hb = hn + (size_t)(b0 + r) * P;
            for (int j = 0; j < P; j++) {
                const int32_t s = corr_hr ? ar[j] - corr_hr[j] : ar[j];
                const int64_t y = awd_requantize(awd_wadd32(s, a->bias_r[j]), rq_r[j], rq_r[P + j], rq_r[2 * P + j]);
                int64_t hv = awd_clamp64(y + zh, lo, hi);
                if (a->proj_clip) {
                    hv = hv < plo ? plo : hv;
                    hv = hv > phi ? phi : hv;
                }
                hb[j] = (int8_t)hv;
            }
        }
    }
done:
    free(acc);
    free(stage);
    free(yv);
    free(yu);
    free(ym);
    free(yx);
    free(rqx.m0);
    free(rqu.m0);
    free(rqv.m0);
    free(rqm.m0);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * A plain int8 GEMM on the same packed layout, for callers without torch._int_mm (the
 * standalone runtime's input projections and decoder): exact int32 sums, like the engine's.
 * ------------------------------------------------------------------------------------------ */

int awd_weight_stride(int G) { return AWD_QUADS ? (G + AWD_TILE - 1) / AWD_TILE * AWD_TILE : G; }

size_t awd_packed_weight_bytes(int G, int K) {
#if AWD_VNNI
    return (size_t)((K + 3) / 4) * (size_t)awd_weight_stride(G) * 4;
#elif AWD_AVX2
    return (size_t)((K + 3) / 4) * (size_t)awd_weight_stride(G) * 8; /* 2 pairs of int16 */
#else
    return (size_t)G * (size_t)K;
#endif
}

/* The layout kernel.py's pack_weight builds with torch: element [q][j][r] = w[j][4q + r]. */
void awd_pack_weight(int G, int K, const int8_t *w, int8_t *out, int32_t *corr) {
#if AWD_VNNI
    const int Kq = (K + 3) / 4;
    memset(out, 0, awd_packed_weight_bytes(G, K));
    for (int j = 0; j < G; j++) {
        int32_t sum = 0;
        for (int k = 0; k < K; k++) {
            out[(((size_t)(j / TILE_CHANNELS) * Kq + k / 4) * TILE_CHANNELS + j % TILE_CHANNELS) * 4 + k % 4] =
                w[(size_t)j * K + k];
            sum += w[(size_t)j * K + k];
        }
        corr[j] = 128 * sum;
    }
#elif AWD_AVX2
    (void)corr;
    const size_t K2 = 2 * (size_t)((K + 3) / 4);
    int16_t *o = (int16_t *)(void *)out;
    memset(out, 0, awd_packed_weight_bytes(G, K));
    for (int j = 0; j < G; j++)
        for (int k = 0; k < K; k++)
            o[(((size_t)(j / AVX2_CHANNELS) * K2 + k / 2) * AVX2_CHANNELS + j % AVX2_CHANNELS) * 2 + k % 2] =
                w[(size_t)j * K + k];
#else
    (void)corr;
    memcpy(out, w, (size_t)G * (size_t)K);
#endif
}

int awd_int_gemm(int R, int K, int G, const int8_t *x, const int8_t *w, const int32_t *corr,
                 int32_t *out, int ostride) {
    if (R <= 0) return 0;
#if AWD_QUADS
    const int kstride = 4 * ((K + 3) / 4), Gp = awd_weight_stride(G);
    uint8_t *stage = (uint8_t *)malloc((size_t)R * (size_t)kstride + 64);
    int32_t *acc = (int32_t *)malloc(sizeof(int32_t) * (size_t)R * (size_t)Gp);
    if (!stage || !acc) {
        free(stage);
        free(acc);
        return 1;
    }
    for (int r = 0; r < R; r++) stage_row(stage + (size_t)r * kstride, kstride, x + (size_t)r * K, K);
    const int failed = rows_gemm(R, K, kstride, G, Gp, stage, w, acc);
    for (int r = 0; r < R && !failed; r++) /* VNNI: (x + 128) W - 128 sum W, exact (int32 wrap) */
        for (int j = 0; j < G; j++)
            out[(size_t)r * ostride + j] =
                AWD_VNNI ? (int32_t)((uint32_t)acc[(size_t)r * Gp + j] - (uint32_t)corr[j])
                         : acc[(size_t)r * Gp + j];
    free(stage);
    free(acc);
    if (failed) return 1;
#else
    (void)corr;
    rows_gemm(R, K, K, G, ostride, (const uint8_t *)x, w, out);
#endif
    return 0;
}
