/* Fused integer LSTM layer over one window: the loop of IntegerLSTMLayer.step in C.
 *
 * Bit-identical to src/quant/engine.py (IntegerLSTMLayer.project_inputs + step, T times); every
 * operation below is the integer operation the torch reference performs, in the same order, on
 * the same types (int32 adds wrap as torch's int32 adds do; requantization is in int64). No
 * floating point anywhere. Built and loaded by src/quant/kernel.py (ctypes);
 * tests/quant/test_kernel.py checks it against the torch path, bit for bit.
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
 * subtracted again (corr). The packed weight is int8 [Kq][Gp][4] with Kq = ceil(H / 4) and Gp
 * the gate count padded to 64 (zero rows and columns add nothing). Elsewhere a plain C loop on
 * the row-major int8 weight [G][H] computes the same exact sums.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && !defined(AWD_GENERIC)
#include <immintrin.h>
#define AWD_VNNI 1
#else
#define AWD_VNNI 0
#endif

#define AWD_ABI 2
#define TILE_CHANNELS 64 /* 4 zmm of 16 int32 */
#define TILE_ROWS 4

int awd_abi(void) { return AWD_ABI; }

/* 1: the weight must be packed for VNNI (see above); 0: row-major int8 [G][H]. */
int awd_packed(void) { return AWD_VNNI; }

static inline int32_t wadd32(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }

/* round_shift on int32: (x + 2^(e-1) - [x < 0]) >> e, arithmetic shift; int32 wrap like torch. */
static inline int32_t round_shift32(int32_t x, int e) {
    if (e == 0) return x;
    return wadd32(x, (int32_t)((1u << (e - 1)) - (uint32_t)(x < 0))) >> e;
}

/* Requantizer.forward for one channel: MBQM in int64. */
static inline int64_t requantize(int64_t y, int64_t m0, int64_t left, int64_t right) {
    if (left) {
        y = y * ((int64_t)1 << left);
        y = y > INT32_MAX ? INT32_MAX : (y < INT32_MIN ? INT32_MIN : y);
    }
    y = (y * m0 + ((int64_t)1 << 30)) >> 31;
    if (right) y = (y + ((int64_t)1 << (right - 1)) - (int64_t)(y < 0)) >> right;
    return y;
}

static inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

#if AWD_VNNI
/* acc[r][j] = sum_q dot4(hu[r][4q..4q+3], wp[q][j][0..3]) for a tile of rows and 64 channels. */
static inline __attribute__((always_inline)) void gemm_tile(
    int nrows, int Kq, int Gp, int j0, const uint8_t *hu, int hstride, const int8_t *wp,
    int32_t *acc, int astride) {
    __m512i a[TILE_ROWS][4];
    for (int r = 0; r < nrows; r++)
        for (int v = 0; v < 4; v++) a[r][v] = _mm512_setzero_si512();
    for (int q = 0; q < Kq; q++) {
        const int8_t *w = wp + ((size_t)q * Gp + j0) * 4;
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

static void recurrent_gemm(int B, int Kq, int Gp, const uint8_t *hu, const int8_t *wp, int32_t *acc) {
    const int hstride = 4 * Kq;
    for (int b0 = 0; b0 < B; b0 += TILE_ROWS) {
        const int nrows = B - b0 < TILE_ROWS ? B - b0 : TILE_ROWS;
        const uint8_t *h = hu + (size_t)b0 * hstride;
        int32_t *out = acc + (size_t)b0 * Gp;
        for (int j0 = 0; j0 < Gp; j0 += TILE_CHANNELS) {
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
            int64_t y = (int64_t)wadd32(v, bias[j]) * ((int64_t)1 << left[j]);
            y = y > INT32_MAX ? INT32_MAX : (y < INT32_MIN ? INT32_MIN : y);
            y = (y * (int64_t)m0[j] + ((int64_t)1 << 30)) >> 31;
            y = (y + (int64_t)nudge[j] - (int64_t)((y < 0) & negative[j])) >> right[j];
            out[j] = (int32_t)(y < -32768 ? -32768 : (y > 32767 ? 32767 : y));
        }
        return;
    }
    for (int j = 0; j < G; j++) {
        int32_t v = corr ? acc[j] - corr[j] : acc[j];
        int64_t y = (int64_t)wadd32(v, bias[j]);
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
 * w       int8              packed [Kq][Gp][4] when awd_packed(), else row-major [G][H]
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
    const int astride = AWD_VNNI ? Gp : G;
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
#if AWD_VNNI
        for (int r = 0; r < R; r++) {
            uint8_t *row = hu + (size_t)r * 4 * Kq;
            const int8_t *hb = h + (size_t)(b0 + r) * H;
            for (int kk = 0; kk < H; kk++) row[kk] = (uint8_t)(hb[kk] + 128);
            for (int kk = H; kk < 4 * Kq; kk++) row[kk] = 128;
        }
        recurrent_gemm(R, Kq, Gp, hu, w, acc);
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
                const int32_t fc = round_shift32(fg * (int32_t)cb[u], fc_shift);
                const int32_t igp = round_shift32(ig * gg, ig_shift);
                const int32_t cs = round_shift32(wadd32(fc, igp), out_shift);
                const int16_t cn = (int16_t)(cs < -32768 ? -32768 : (cs > 32767 ? 32767 : cs));
                cb[u] = cn;
                p[u] = (int32_t)sig[yh[3 * H + u]] * (int32_t)tc[cn]; /* o tanh(c) at 2^-30 */
            }
            int8_t *hb = hn + (size_t)b * H;
            for (int u = 0; u < H; u++) {
                const int64_t y = requantize(p[u], out_m0, out_left, out_right) + hidden_zero_point;
                hb[u] = (int8_t)clamp64(y, h_lo, h_hi);
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
