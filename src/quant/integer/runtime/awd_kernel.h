/* The integer recurrence of the project's integer engine (int_lstm.c): its API and the
 * fixed-point helpers every integer step uses.
 *
 * One copy of this arithmetic serves two programs: src/quant/integer/kernel.py compiles
 * int_lstm.c into the shared library that IntegerLM calls through ctypes, and
 * `python -m src.export format=c` copies int_lstm.c and this header beside the standalone
 * runtime (awd_int8.c, awd_model.c), which links it. No floating point in either file
 * (tests/quant/test_kernel.py checks the source).
 */
#ifndef AWD_KERNEL_H
#define AWD_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* Bumped on any change of a function signature or of awd_mlstm_args (kernel.py checks it). */
#define AWD_ABI 6

int awd_abi(void);

/* The code path this build runs: "avx512-vnni", "avx2" or "generic" (AWD_GENERIC, or a CPU
 * target without AVX2). */
const char *awd_isa(void);

/* The weight layout awd_pack_weight builds: 1 AVX-512 VNNI, 2 AVX2 (int16 pairs), 0 row-major
 * int8 [G][K]. */
int awd_packed(void);

/* int32 add that wraps like torch's int32 add (no undefined overflow). */
static inline int32_t awd_wadd32(int32_t a, int32_t b) {
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* round(x / 2^e), ties away from zero: (x + 2^(e-1) - [x < 0]) >> e, arithmetic shift. */
static inline int32_t awd_round_shift32(int32_t x, int e) {
    if (e == 0) return x;
    return awd_wadd32(x, (int32_t)((1u << (e - 1)) - (uint32_t)(x < 0))) >> e;
}

/* TFLite's MultiplyByQuantizedMultiplier in int64 (the engine's Requantizer, one channel):
 * y = sat32(y 2^left) (left > 0 only), y = (y m0 + 2^30) >> 31, then round(y / 2^right). */
static inline int64_t awd_requantize(int64_t y, int64_t m0, int64_t left, int64_t right) {
    if (left) {
        y = y * ((int64_t)1 << left);
        y = y > INT32_MAX ? INT32_MAX : (y < INT32_MIN ? INT32_MIN : y);
    }
    y = (y * m0 + ((int64_t)1 << 30)) >> 31;
    if (right) y = (y + ((int64_t)1 << (right - 1)) - (int64_t)(y < 0)) >> right;
    return y;
}

static inline int64_t awd_clamp64(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/* ---- weights: the GEMM layout ------------------------------------------------------------
 * awd_weight_stride(G): the accumulator row stride Gp the kernel wants for a weight of G rows
 * (G padded to 64 when packed, else G). awd_pack_weight: int8 w [G][K] row-major -> the
 * kernel's layout (VNNI: int8 [Gp/64][ceil(K/4)][64][4], zero padded, with corr[j] = 128 sum_k w[j][k];
 * AVX2: int16 [Gp/32][2 ceil(K/4)][32][2];
 * else a copy, corr untouched). `out` holds awd_packed_weight_bytes(G, K) bytes. */
int awd_weight_stride(int G);
size_t awd_packed_weight_bytes(int G, int K);
void awd_pack_weight(int G, int K, const int8_t *w, int8_t *out, int32_t *corr);

/* out[r][j] (row stride ostride) = sum_k W[j][k] x[r][k], exact int32, r < R, j < G; x int8
 * [R][K] row-major, w and corr from awd_pack_weight. Returns 0, or 1 when scratch allocation
 * fails. (The engine's input GEMMs and decoder are torch._int_mm; the runtime uses this.) */
int awd_int_gemm(int R, int K, int G, const int8_t *x, const int8_t *w, const int32_t *corr,
                 int32_t *out, int ostride);

/* ---- the integer LSTM layer (IntegerLSTMLayer.step, T steps); see int_lstm.c ------------- */
int awd_int_lstm_layer(
    int T, int B, int row_begin, int row_end, int H, int Gp, const int32_t *acc_x,
    const int8_t *h0, int16_t *c, int8_t *h_out, const int8_t *w, const int32_t *corr,
    const int32_t *bias_x, const int32_t *bias_h, const int64_t *rqx_m0,
    const int64_t *rqx_left, const int64_t *rqx_right, const int64_t *rqh_m0,
    const int64_t *rqh_left, const int64_t *rqh_right, int64_t out_m0, int64_t out_left,
    int64_t out_right, int cell_exponent, int hidden_zero_point, int bits,
    const int16_t *sigmoid, const int16_t *tanh_table, const int16_t *tanh_cell);

/* ---- the integer mLSTM layer (IntegerMLSTMLayer.step, T steps) ----------------------------
 * Every field is 8 bytes (no padding); kernel.py mirrors it as a ctypes.Structure and checks
 * awd_mlstm_args_size(). int64 [3][G] requantizer arrays hold the rows m0, left, right. */
typedef struct {
    int64_t hidden, proj;                /* H, P (P = H without a projection) */
    int64_t gp_v, gp_m, gp_r;            /* accumulator strides: Gp of the packed W_mh, W_hm,
                                            W_hr (their row counts in the plain layout) */
    int64_t cell_exponent, bits;
    int64_t product_zero_point, output_zero_point, hidden_zero_point;
    int64_t peephole;                    /* 0 / 1 */
    int64_t cell_clip, cell_lo, cell_hi; /* 0 / 1, bounds as int16 codes */
    int64_t projection;                  /* 0 / 1 */
    int64_t proj_clip, proj_lo, proj_hi; /* 0 / 1, bounds as codes */
    const int32_t *acc_in;               /* int32 [T][B][5H]: W_x x (4H) then W_mx x (H), no bias */
    const int8_t *h0;                    /* int8  [B][P] */
    int16_t *c;                          /* int16 [B][H], updated in place */
    int8_t *h_out;                       /* int8  [T][B][P] */
    const int8_t *w_mh, *w_hm, *w_hr;    /* packed (awd_pack_weight) when awd_packed(), else [G][K] */
    const int32_t *corr_mh, *corr_hm, *corr_hr; /* 128 sum_k W (packed only) */
    const int32_t *bias_x, *bias_u, *bias_v, *bias_m, *bias_r;
    const int64_t *rq_x, *rq_u, *rq_v, *rq_m, *rq_r; /* [3][4H], [3][H], [3][H], [3][4H], [3][P] */
    const int64_t *rq_product, *rq_output;           /* [3] (per tensor) */
    const int16_t *peephole_w;                       /* int16 [3][H]: w_ic, w_fc, w_oc */
    const int64_t *rq_peephole;                      /* [3][3]: one requantizer per vector */
    const int16_t *sigmoid, *tanh_table, *tanh_cell; /* direct tables [65536] */
} awd_mlstm_args;

int awd_mlstm_args_size(void);
int awd_int_mlstm_layer(int T, int B, int row_begin, int row_end, const awd_mlstm_args *a);

#endif /* AWD_KERNEL_H */
