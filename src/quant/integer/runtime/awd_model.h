/* The integer AWD-LSTM of model.bin: loading (awd_model_load) and the network at batch 1
 * (awd_forward): embedding, LSTM / mLSTM layers (the shared kernel, awd_kernel.h), int32
 * logits. Integer arithmetic only; the caller does the one float step (log-softmax).
 * The file layout: src/quant/integer/model_bin.py and docs/quantization.md. C99.
 */
#ifndef AWD_MODEL_H
#define AWD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "awd_kernel.h"

#define AWD_MODEL_VERSION 1

typedef struct {
    int cell;                /* 0: LSTM, 1: mLSTM */
    int input, hidden, output;
    int in_rows;             /* rows of the input GEMM: 4H (LSTM) or 5H (mLSTM: W_x then W_mx) */
    int8_t *w_in;            /* the input weight(s), packed (awd_pack_weight) */
    int32_t *corr_in;
    /* LSTM */
    int8_t *w_hh;
    int32_t *corr_hh, *bias_x, *bias_h;
    int64_t *rq_x, *rq_h;    /* [3][4H]: m0, left, right */
    int64_t rq_out[3];
    int gp, cell_exponent, bits, hidden_zero_point;
    const int16_t *tanh_cell;
    /* mLSTM: constants and weights; acc_in, h0, c and h_out are set per call */
    awd_mlstm_args args;
} awd_layer;

typedef struct {
    int vocab_size, emb_size, num_layers, dec_input;
    int char_tokens;         /* 1: every character is a token (data.tokenizer=char) */
    int char_level;          /* 1: a character-level corpus (prompts and text per character) */
    int eos_id, unk_id;      /* unk_id -1: no <unk> (an unknown token is an error) */
    char **itos;             /* token strings (UTF-8, NUL-terminated) */
    int32_t *hash;           /* open addressing over itos, -1 empty */
    size_t hash_mask;
    int8_t *emb_w;           /* [V][E] row-major */
    int64_t *rq_emb;         /* [3][V] */
    int emb_zero_point, emb_bits;
    int16_t *sigmoid, *tanh;
    awd_layer *layers;
    int8_t *dec_w;           /* packed [V][dec_input] */
    int32_t *dec_corr, *dec_bias;
    uint32_t *dec_scale;     /* float32 bit patterns (generate at T = 0 reads them as integers) */
    void **owned;            /* every allocation, freed by awd_model_free */
    size_t n_owned, cap_owned;
} awd_model;

/* Reads and checks the file (magic, version, size, CRC-32, every record's tag, type and count,
 * value ranges). Returns 0, or -1 with a one-line reason in err. */
int awd_model_load(const char *path, awd_model *m, char *err, size_t errlen);
void awd_model_free(awd_model *m);

/* The id of a token (len bytes), or -1. */
int awd_token_id(const awd_model *m, const char *tok, size_t len);

typedef struct {
    int window;              /* most tokens per awd_forward call */
    int8_t *x, *y;           /* [window][widest layer] activations */
    int32_t *acc;            /* [window][widest input GEMM] */
    int8_t **h;              /* per layer: h int8 [output] */
    int16_t **c;             /* per layer: c int16 [hidden] */
} awd_state;

int awd_state_init(const awd_model *m, awd_state *s, int window);
void awd_state_reset(const awd_model *m, awd_state *s); /* h = zero point, c = 0 */
void awd_state_free(const awd_model *m, awd_state *s);

/* tokens[0..T) (T <= window) through the network, carrying s; logits int32 [T][V] when not
 * NULL. Returns 0, or -1 when scratch memory runs out. */
int awd_forward(const awd_model *m, awd_state *s, const int32_t *tokens, int T, int32_t *logits);

#endif /* AWD_MODEL_H */
