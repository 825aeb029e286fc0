/* model.bin reader and the integer network at batch 1 (awd_model.h). C99, libc only. */
#include "awd_model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_I8 = 1, T_I16 = 2, T_I32 = 3, T_F32 = 4, T_U8 = 5 };
static const size_t TYPE_SIZE[] = {0, 1, 2, 4, 4, 1};
#define HEADER_BYTES 32
#define LAYER_INTS 24
#define TABLE 65536

typedef struct {
    const uint8_t *p;
    size_t n, off;
    char *err;
    size_t errlen;
    awd_model *m;
} reader;

static int fail(reader *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static uint32_t u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t crc32(const uint8_t *p, size_t n) { /* zlib's CRC-32 */
    uint32_t table[256], c = 0xFFFFFFFFu;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t v = i;
        for (int k = 0; k < 8; k++) v = v & 1 ? 0xEDB88320u ^ (v >> 1) : v >> 1;
        table[i] = v;
    }
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void *own(awd_model *m, size_t bytes) {
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **grown = (void **)realloc(m->owned, cap * sizeof(void *));
        if (!grown) return NULL;
        m->owned = grown;
        m->cap_owned = cap;
    }
    void *p = calloc(bytes ? bytes : 1, 1);
    if (p) m->owned[m->n_owned++] = p;
    return p;
}

/* The next record: its tag, type and count must be the expected ones (count 0: any). */
static const uint8_t *take(reader *r, const char *tag, int type, size_t count, size_t *got) {
    if (r->n - r->off < 12) return fail(r, "truncated before record %s", tag), NULL;
    const uint8_t *h = r->p + r->off;
    if (memcmp(h, tag, 4) != 0)
        return fail(r, "expected record %s, found %.4s at byte %zu", tag, (const char *)h,
                    r->off + HEADER_BYTES), NULL;
    const uint32_t t = u32le(h + 4), n = u32le(h + 8);
    if (t != (uint32_t)type || (count && n != count))
        return fail(r, "record %s: type %u count %u, expected type %d count %zu", tag, t, n, type,
                    count), NULL;
    const size_t bytes = (size_t)n * TYPE_SIZE[type], padded = bytes + (4 - bytes % 4) % 4;
    if (r->n - r->off - 12 < padded) return fail(r, "truncated inside record %s", tag), NULL;
    r->off += 12 + padded;
    if (got) *got = n;
    return h + 12;
}

static uint32_t *get32(reader *r, const char *tag, int type, size_t count) {
    const uint8_t *p = take(r, tag, type, count, NULL);
    uint32_t *out = p ? (uint32_t *)own(r->m, count * 4) : NULL;
    if (p && !out) fail(r, "out of memory");
    for (size_t i = 0; out && i < count; i++) out[i] = u32le(p + 4 * i);
    return out;
}

static int32_t *get_i32(reader *r, const char *tag, size_t count) {
    return (int32_t *)get32(r, tag, T_I32, count);
}

static int8_t *get_i8(reader *r, const char *tag, size_t count) {
    const uint8_t *p = take(r, tag, T_I8, count, NULL);
    int8_t *out = p ? (int8_t *)own(r->m, count) : NULL;
    if (p && !out) fail(r, "out of memory");
    if (out) memcpy(out, p, count);
    return out;
}

static int16_t *get_i16(reader *r, const char *tag, size_t count) {
    const uint8_t *p = take(r, tag, T_I16, count, NULL);
    int16_t *out = p ? (int16_t *)own(r->m, count * 2) : NULL;
    if (p && !out) fail(r, "out of memory");
    for (size_t i = 0; out && i < count; i++)
        out[i] = (int16_t)(uint16_t)((unsigned)p[2 * i] | (unsigned)p[2 * i + 1] << 8);
    return out;
}

/* (m0, shift) pairs -> int64 [3][n]: m0, left = max(shift, 0), right = max(-shift, 0). */
static int64_t *requantizer(reader *r, const char *mtag, const char *stag, size_t n) {
    int32_t *m0 = get_i32(r, mtag, n);
    int32_t *shift = m0 ? get_i32(r, stag, n) : NULL;
    int64_t *rq = shift ? (int64_t *)own(r->m, 3 * n * sizeof(int64_t)) : NULL;
    if (shift && !rq) return fail(r, "out of memory"), NULL;
    for (size_t i = 0; rq && i < n; i++) {
        if (m0[i] < 0 || shift[i] < -31 || shift[i] > 30)
            return fail(r, "record %s/%s: multiplier out of range", mtag, stag), NULL;
        rq[i] = m0[i];
        rq[n + i] = shift[i] > 0 ? shift[i] : 0;
        rq[2 * n + i] = shift[i] < 0 ? -shift[i] : 0;
    }
    return rq;
}

static int scalar_rq(reader *r, int64_t *rq, int32_t m0, int32_t shift) {
    if (m0 < 0 || shift < -31 || shift > 30) return fail(r, "a layer multiplier is out of range");
    rq[0] = m0;
    rq[1] = shift > 0 ? shift : 0;
    rq[2] = shift < 0 ? -shift : 0;
    return 0;
}

/* The weight [rows][cols] in the kernel's layout, with its corr. */
static int8_t *packed(reader *r, const char *tag, int rows, int cols, int32_t **corr) {
    int8_t *w = get_i8(r, tag, (size_t)rows * cols);
    if (!w) return NULL;
    int8_t *out = (int8_t *)own(r->m, awd_packed_weight_bytes(rows, cols));
    *corr = (int32_t *)own(r->m, (size_t)rows * 4);
    if (!out || !*corr) return fail(r, "out of memory"), NULL;
    awd_pack_weight(rows, cols, w, out, *corr);
    return out;
}

static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

int awd_token_id(const awd_model *m, const char *tok, size_t len) {
    for (size_t i = fnv1a(tok, len) & m->hash_mask;; i = (i + 1) & m->hash_mask) {
        const int32_t id = m->hash[i];
        if (id < 0) return -1;
        if (strlen(m->itos[id]) == len && memcmp(m->itos[id], tok, len) == 0) return id;
    }
}

static int read_vocab(reader *r, awd_model *m) {
    const int V = m->vocab_size;
    int32_t *len = get_i32(r, "VOCL", (size_t)V);
    size_t total = 0, off = 0;
    const uint8_t *blob = len ? take(r, "VOCB", T_U8, 0, &total) : NULL;
    if (!blob) return -1;
    size_t cap = 1;
    while (cap < 2 * (size_t)V) cap <<= 1;
    m->itos = (char **)own(m, (size_t)V * sizeof(char *));
    m->hash = (int32_t *)own(m, cap * sizeof(int32_t));
    if (!m->itos || !m->hash) return fail(r, "out of memory");
    m->hash_mask = cap - 1;
    memset(m->hash, 0xFF, cap * sizeof(int32_t));
    for (int v = 0; v < V; v++) {
        if (len[v] <= 0 || (size_t)len[v] > total - off) return fail(r, "bad vocabulary entry %d", v);
        char *s = (char *)own(m, (size_t)len[v] + 1);
        if (!s) return fail(r, "out of memory");
        memcpy(s, blob + off, (size_t)len[v]);
        if (memchr(s, '\0', (size_t)len[v])) return fail(r, "vocabulary entry %d holds a NUL byte", v);
        if (awd_token_id(m, s, (size_t)len[v]) >= 0) return fail(r, "token %s appears twice", s);
        m->itos[v] = s;
        size_t i = fnv1a(s, (size_t)len[v]) & m->hash_mask;
        while (m->hash[i] >= 0) i = (i + 1) & m->hash_mask;
        m->hash[i] = v;
        off += (size_t)len[v];
    }
    return off == total ? 0 : fail(r, "vocabulary: %zu bytes left over", total - off);
}

static int code_ok(int64_t v, int bits) { return v >= -(1 << (bits - 1)) && v < (1 << (bits - 1)); }

static int read_lstm(reader *r, awd_model *m, awd_layer *L, const int32_t *hd) {
    const int H = L->hidden, G = 4 * H;
    L->in_rows = G;
    if (!(L->w_in = packed(r, "WIH_", G, L->input, &L->corr_in))) return -1;
    if (!(L->w_hh = packed(r, "WHH_", G, H, &L->corr_hh))) return -1;
    if (!(L->bias_x = get_i32(r, "BX__", G)) || !(L->bias_h = get_i32(r, "BH__", G))) return -1;
    if (!(L->rq_x = requantizer(r, "MX__", "SX__", G))) return -1;
    if (!(L->rq_h = requantizer(r, "MH__", "SH__", G))) return -1;
    L->gp = awd_weight_stride(G);
    (void)m;
    return scalar_rq(r, L->rq_out, hd[7], hd[8]);
}

static int read_mlstm(reader *r, awd_model *m, awd_layer *L, const int32_t *hd) {
    const int H = L->hidden, P = L->output, I = L->input, G = 4 * H;
    awd_mlstm_args *a = &L->args;
    int8_t *w_x = get_i8(r, "WIH_", (size_t)G * I), *w_mx = w_x ? get_i8(r, "WMX_", (size_t)H * I) : NULL;
    int8_t *w_in = w_mx ? (int8_t *)own(m, (size_t)5 * H * I) : NULL;
    if (!w_in) return -1;
    memcpy(w_in, w_x, (size_t)G * I); /* one input GEMM: W_x rows, then W_mx rows */
    memcpy(w_in + (size_t)G * I, w_mx, (size_t)H * I);
    L->in_rows = 5 * H;
    L->w_in = (int8_t *)own(m, awd_packed_weight_bytes(5 * H, I));
    L->corr_in = (int32_t *)own(m, (size_t)5 * H * 4);
    if (!L->w_in || !L->corr_in) return fail(r, "out of memory");
    awd_pack_weight(5 * H, I, w_in, L->w_in, L->corr_in);
    int32_t *corr_mh, *corr_hm, *corr_hr = NULL;
    const int8_t *w_mh = packed(r, "WMH_", H, P, &corr_mh);
    const int8_t *w_hm = w_mh ? packed(r, "WHM_", G, H, &corr_hm) : NULL;
    if (!w_hm) return -1;
    const int64_t *rq[4];
    const int32_t *bias[4];
    const char *tags[4][3] = {{"BX__", "MX__", "SX__"}, {"BU__", "MU__", "SU__"},
                              {"BV__", "MV__", "SV__"}, {"BM__", "MM__", "SM__"}};
    const int rows[4] = {G, H, H, G};
    for (int i = 0; i < 4; i++)
        if (!(bias[i] = get_i32(r, tags[i][0], rows[i])) ||
            !(rq[i] = requantizer(r, tags[i][1], tags[i][2], rows[i])))
            return -1;
    int64_t *scal = (int64_t *)own(m, 6 * sizeof(int64_t)); /* output, then product */
    if (!scal) return fail(r, "out of memory");
    if (scalar_rq(r, scal, hd[7], hd[8]) || scalar_rq(r, scal + 3, hd[10], hd[11])) return -1;
    memset(a, 0, sizeof(*a));
    if (hd[13]) {
        if (!(a->peephole_w = get_i16(r, "PEEP", (size_t)3 * H))) return -1;
        if (!(a->rq_peephole = requantizer(r, "PEM_", "PES_", 3))) return -1;
    }
    if (hd[14]) {
        int32_t *corr;
        if (!(a->w_hr = packed(r, "WHR_", P, H, &corr))) return -1;
        corr_hr = corr;
        if (!(a->bias_r = get_i32(r, "BR__", P)) || !(a->rq_r = requantizer(r, "MR__", "SR__", P)))
            return -1;
    } else if (P != H) {
        return fail(r, "an mLSTM layer without projection must output its hidden size");
    }
    a->hidden = H, a->proj = P, a->cell_exponent = hd[4], a->bits = hd[5];
    a->gp_v = awd_weight_stride(H), a->gp_m = awd_weight_stride(G);
    a->gp_r = hd[14] ? awd_weight_stride(P) : P;
    a->hidden_zero_point = hd[6], a->output_zero_point = hd[9], a->product_zero_point = hd[12];
    a->peephole = hd[13], a->projection = hd[14];
    a->cell_clip = hd[15], a->cell_lo = hd[16], a->cell_hi = hd[17];
    a->proj_clip = hd[18], a->proj_lo = hd[19], a->proj_hi = hd[20];
    a->w_mh = w_mh, a->w_hm = w_hm, a->corr_mh = corr_mh, a->corr_hm = corr_hm, a->corr_hr = corr_hr;
    a->bias_x = bias[0], a->bias_u = bias[1], a->bias_v = bias[2], a->bias_m = bias[3];
    a->rq_x = rq[0], a->rq_u = rq[1], a->rq_v = rq[2], a->rq_m = rq[3];
    a->rq_output = scal, a->rq_product = scal + 3;
    a->sigmoid = m->sigmoid, a->tanh_table = m->tanh;
    if ((a->cell_clip && (a->cell_lo < -32768 || a->cell_hi > 32767)) ||
        (a->proj_clip && !(code_ok(a->proj_lo, 8) && code_ok(a->proj_hi, 8))) ||
        !code_ok(a->output_zero_point, (int)a->bits) || !code_ok(a->product_zero_point, (int)a->bits))
        return fail(r, "an mLSTM bound or zero point is out of range");
    return 0;
}

static int read_layer(reader *r, awd_model *m, awd_layer *L, int input) {
    const int32_t *hd = get_i32(r, "LAYR", LAYER_INTS);
    if (!hd) return -1;
    L->cell = hd[0], L->input = hd[1], L->hidden = hd[2], L->output = hd[3];
    L->cell_exponent = hd[4], L->bits = hd[5], L->hidden_zero_point = hd[6];
    if ((L->cell != 0 && L->cell != 1) || L->input != input || L->hidden < 1 || L->hidden > 65536 ||
        L->output < 1 || L->output > 65536 || (L->cell == 0 && L->output != L->hidden))
        return fail(r, "layer sizes do not fit (cell %d, %d -> %d -> %d)", hd[0], hd[1], hd[2], hd[3]);
    if (L->cell_exponent < 0 || L->cell_exponent > 30 || L->bits < 2 || L->bits > 8 ||
        !code_ok(L->hidden_zero_point, L->bits))
        return fail(r, "a layer exponent, bit width or zero point is out of range");
    if ((L->cell == 0 ? read_lstm(r, m, L, hd) : read_mlstm(r, m, L, hd)) != 0) return -1;
    L->tanh_cell = get_i16(r, "TCEL", TABLE);
    L->args.tanh_cell = L->tanh_cell;
    return L->tanh_cell ? 0 : -1;
}

static int parse(reader *r, awd_model *m) {
    const int32_t *info = get_i32(r, "INFO", 10);
    if (!info) return -1;
    m->vocab_size = info[0], m->emb_size = info[1], m->num_layers = info[2];
    m->char_tokens = info[3], m->char_level = info[4], m->eos_id = info[5], m->unk_id = info[6];
    const int tied = info[7], V = info[0], E = info[1];
    m->dec_input = info[9];
    if (V < 1 || E < 1 || E > 65536 || m->num_layers < 1 || m->num_layers > 256 ||
        m->eos_id < 0 || m->eos_id >= V || m->unk_id < -1 || m->unk_id >= V)
        return fail(r, "bad model sizes (vocabulary %d, embedding %d, %d layers)", V, E, info[2]);
    if (read_vocab(r, m)) return -1;
    if (!(m->emb_w = get_i8(r, "EMBW", (size_t)V * E))) return -1;
    if (!(m->rq_emb = requantizer(r, "EMBM", "EMBS", V))) return -1;
    const int32_t *z = get_i32(r, "EMBZ", 2);
    if (!z) return -1;
    m->emb_zero_point = z[0], m->emb_bits = z[1];
    if (m->emb_bits < 2 || m->emb_bits > 8 || !code_ok(m->emb_zero_point, m->emb_bits))
        return fail(r, "embedding zero point or bit width out of range");
    if (!(m->sigmoid = get_i16(r, "SIGM", TABLE)) || !(m->tanh = get_i16(r, "TANH", TABLE))) return -1;
    if (!(m->layers = (awd_layer *)own(m, (size_t)m->num_layers * sizeof(awd_layer))))
        return fail(r, "out of memory");
    for (int l = 0; l < m->num_layers; l++)
        if (read_layer(r, m, &m->layers[l], l ? m->layers[l - 1].output : E)) return -1;
    if (m->layers[m->num_layers - 1].output != m->dec_input || (tied && m->dec_input != E))
        return fail(r, "the decoder does not fit the last layer");
    const int8_t *dec = tied ? m->emb_w : get_i8(r, "DECW", (size_t)V * m->dec_input);
    if (!dec) return -1;
    m->dec_w = (int8_t *)own(m, awd_packed_weight_bytes(V, m->dec_input));
    m->dec_corr = (int32_t *)own(m, (size_t)V * 4);
    if (!m->dec_w || !m->dec_corr) return fail(r, "out of memory");
    awd_pack_weight(V, m->dec_input, dec, m->dec_w, m->dec_corr);
    if (!(m->dec_bias = get_i32(r, "DECB", V))) return -1;
    if (!(m->dec_scale = get32(r, "DECS", T_F32, V))) return -1;
    for (int v = 0; v < V; v++) /* finite float32 (exponent bits not all ones) */
        if ((m->dec_scale[v] >> 23 & 0xFF) == 0xFF) return fail(r, "decoder scale %d is not finite", v);
    if (!take(r, "END_", T_U8, 0, NULL)) return -1;
    return r->off == r->n ? 0 : fail(r, "%zu unexpected bytes after the last record", r->n - r->off);
}

int awd_model_load(const char *path, awd_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof(*m));
    reader r = {NULL, 0, 0, err, errlen, m};
    FILE *f = fopen(path, "rb");
    if (!f) return fail(&r, "%s: cannot open", path);
    uint8_t head[HEADER_BYTES];
    const size_t n = fread(head, 1, HEADER_BYTES, f);
    if (n < 8 || memcmp(head, "AWDINT8M", 8) != 0) {
        fclose(f);
        return fail(&r, "%s: not an awd_int8 model (bad magic; write one with python -m src.export "
                        "format=c)", path);
    }
    if (n < HEADER_BYTES) {
        fclose(f);
        return fail(&r, "%s: truncated (%zu bytes, the header alone has %d)", path, n, HEADER_BYTES);
    }
    const uint32_t version = u32le(head + 8), header = u32le(head + 12), crc = u32le(head + 24);
    const uint64_t payload = (uint64_t)u32le(head + 16) | (uint64_t)u32le(head + 20) << 32;
    if (version != AWD_MODEL_VERSION || header != HEADER_BYTES) {
        fclose(f);
        return fail(&r, "%s: model file version %u, this runtime reads version %d (export it again "
                        "with python -m src.export format=c)", path, version, AWD_MODEL_VERSION);
    }
    uint8_t *buf = payload < ((uint64_t)1 << 40) ? (uint8_t *)malloc((size_t)payload + 1) : NULL;
    if (!buf) {
        fclose(f);
        return fail(&r, "%s: cannot read a payload of %llu bytes", path, (unsigned long long)payload);
    }
    const size_t got = fread(buf, 1, (size_t)payload + 1, f);
    fclose(f);
    int status = 0;
    if (got != payload)
        status = fail(&r, "%s: %s (%zu payload bytes, the header says %llu)", path,
                      got < payload ? "truncated" : "trailing bytes", got, (unsigned long long)payload);
    else if (crc32(buf, got) != crc)
        status = fail(&r, "%s: corrupted (CRC-32 mismatch)", path);
    else {
        r.p = buf, r.n = got;
        if (parse(&r, m)) {
            char detail[400];
            snprintf(detail, sizeof detail, "%s", err);
            status = fail(&r, "%s: %s", path, detail);
        }
    }
    free(buf);
    if (status) awd_model_free(m);
    return status;
}

void awd_model_free(awd_model *m) {
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    memset(m, 0, sizeof(*m));
}

/* ---- the network ------------------------------------------------------------------------- */

static int widest(const awd_model *m, int *act, int *gemm) {
    *act = m->emb_size, *gemm = 0;
    for (int l = 0; l < m->num_layers; l++) {
        const awd_layer *L = &m->layers[l];
        *act = L->output > *act ? L->output : *act;
        *gemm = L->in_rows > *gemm ? L->in_rows : *gemm;
    }
    return 0;
}

int awd_state_init(const awd_model *m, awd_state *s, int window) {
    int act, gemm;
    widest(m, &act, &gemm);
    memset(s, 0, sizeof(*s));
    s->window = window;
    s->x = (int8_t *)malloc((size_t)window * act);
    s->y = (int8_t *)malloc((size_t)window * act);
    s->acc = (int32_t *)malloc((size_t)window * gemm * sizeof(int32_t));
    s->h = (int8_t **)calloc((size_t)m->num_layers, sizeof(int8_t *));
    s->c = (int16_t **)calloc((size_t)m->num_layers, sizeof(int16_t *));
    if (!s->x || !s->y || !s->acc || !s->h || !s->c) return -1;
    for (int l = 0; l < m->num_layers; l++) {
        s->h[l] = (int8_t *)malloc((size_t)m->layers[l].output);
        s->c[l] = (int16_t *)malloc((size_t)m->layers[l].hidden * sizeof(int16_t));
        if (!s->h[l] || !s->c[l]) return -1;
    }
    awd_state_reset(m, s);
    return 0;
}

void awd_state_reset(const awd_model *m, awd_state *s) {
    for (int l = 0; l < m->num_layers; l++) {
        memset(s->h[l], m->layers[l].hidden_zero_point & 0xFF, (size_t)m->layers[l].output);
        memset(s->c[l], 0, (size_t)m->layers[l].hidden * sizeof(int16_t));
    }
}

void awd_state_free(const awd_model *m, awd_state *s) {
    for (int l = 0; s->h && l < m->num_layers; l++) free(s->h[l]);
    for (int l = 0; s->c && l < m->num_layers; l++) free(s->c[l]);
    free(s->h), free(s->c), free(s->x), free(s->y), free(s->acc);
    memset(s, 0, sizeof(*s));
}

/* IntegerEmbedding: x = sat_bits(MBQM(E[v], M_v) + z_x), one multiplier per word. */
static void embed(const awd_model *m, const int32_t *tokens, int T, int8_t *x) {
    const int E = m->emb_size, V = m->vocab_size;
    const int64_t lo = -((int64_t)1 << (m->emb_bits - 1)), hi = ((int64_t)1 << (m->emb_bits - 1)) - 1;
    for (int t = 0; t < T; t++) {
        const int v = tokens[t];
        const int8_t *row = m->emb_w + (size_t)v * E;
        const int64_t m0 = m->rq_emb[v], left = m->rq_emb[V + v], right = m->rq_emb[2 * V + v];
        for (int e = 0; e < E; e++)
            x[(size_t)t * E + e] =
                (int8_t)awd_clamp64(awd_requantize(row[e], m0, left, right) + m->emb_zero_point, lo, hi);
    }
}

int awd_forward(const awd_model *m, awd_state *s, const int32_t *tokens, int T, int32_t *logits) {
    if (T <= 0) return 0;
    int8_t *x = s->x, *y = s->y;
    embed(m, tokens, T, x);
    for (int l = 0; l < m->num_layers; l++) {
        const awd_layer *L = &m->layers[l];
        if (awd_int_gemm(T, L->input, L->in_rows, x, L->w_in, L->corr_in, s->acc, L->in_rows)) return -1;
        int status;
        if (L->cell == 0) {
            status = awd_int_lstm_layer(
                T, 1, 0, 1, L->hidden, L->gp, s->acc, s->h[l], s->c[l], y, L->w_hh, L->corr_hh,
                L->bias_x, L->bias_h, L->rq_x, L->rq_x + 4 * L->hidden, L->rq_x + 8 * L->hidden,
                L->rq_h, L->rq_h + 4 * L->hidden, L->rq_h + 8 * L->hidden, L->rq_out[0],
                L->rq_out[1], L->rq_out[2], L->cell_exponent, L->hidden_zero_point, L->bits,
                m->sigmoid, m->tanh, L->tanh_cell);
        } else {
            awd_mlstm_args a = L->args;
            a.acc_in = s->acc, a.h0 = s->h[l], a.c = s->c[l], a.h_out = y;
            status = awd_int_mlstm_layer(T, 1, 0, 1, &a);
        }
        if (status) return -1;
        memcpy(s->h[l], y + (size_t)(T - 1) * L->output, (size_t)L->output);
        int8_t *swap = x;
        x = y, y = swap;
    }
    if (!logits) return 0;
    const int V = m->vocab_size;
    if (awd_int_gemm(T, m->dec_input, V, x, m->dec_w, m->dec_corr, logits, V)) return -1;
    for (int t = 0; t < T; t++) /* + bias, wrapping like torch's int32 add_ */
        for (int v = 0; v < V; v++)
            logits[(size_t)t * V + v] = awd_wadd32(logits[(size_t)t * V + v], m->dec_bias[v]);
    return 0;
}
