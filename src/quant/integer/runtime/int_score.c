/* The integer engine's one float step, beside int_lstm.c in the kernel library (not in the
 * standalone runtime, which dequantizes on its own in awd_int8.c): the decoder's int32 logits to
 * float32, for src/quant/integer/scoring.py's log-softmax. */
#include <stdint.h>
#include <stddef.h>

/* out[r][v] (row stride ostride) = (float)(acc[r][v] + bias[v]) * scale[v], r < R, v < V.
 * The add wraps as torch's int32 add_ does, the conversion rounds to nearest and the product is
 * one float32 multiply: the numbers of torch.mul(acc.add_(bias), scale), bit for bit, in one
 * pass instead of three (add, conversion, product). */
void awd_dequantize(int R, int V, const int32_t *acc, int astride, const int32_t *bias,
                    const float *scale, float *out, int ostride) {
    for (int r = 0; r < R; r++) {
        const int32_t *a = acc + (size_t)r * (size_t)astride;
        float *o = out + (size_t)r * (size_t)ostride;
        for (int v = 0; v < V; v++)
            o[v] = (float)(int32_t)((uint32_t)a[v] + (uint32_t)bias[v]) * scale[v];
    }
}
