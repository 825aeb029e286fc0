/* awd_int8: the integer AWD-LSTM of model.bin, standalone (C99, libc and libm only).
 *
 *   awd_int8 model.bin score FILE        loss and perplexity of a text file, batch 1
 *   awd_int8 model.bin generate [--seed S] [--tokens N] [--temperature T] [--prompt "..."]
 *   awd_int8 model.bin trace FILE        every layer's h and c codes at every step
 *   awd_int8 model.bin info              sizes, as JSON
 *
 * score reads FILE in the corpus format (whitespace tokens, <eos> at each line end, <unk> for
 * unknown words; per character for character-tokenized models), runs the network over the whole
 * file carrying the state, and prints as its last line one JSON object: tokens, loss, ppl,
 * tokens_per_s. The network is integer only (awd_model.c and the shared kernel int_lstm.c);
 * the one float step is the log-softmax of the dequantized logits, as in `src.eval engine=int8`.
 * generate samples like `python -m src.generate` (splitmix64 draws); --temperature 0 takes the
 * integer argmax of the logits and uses no float at all.
 * Errors: one line on stderr, exit status 1 (2 for a wrong command line).
 */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "awd_model.h"

#define WINDOW 64 /* tokens per network call (the state is carried: any length gives the same) */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("awd_int8: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void usage(void) {
    fputs("usage: awd_int8 MODEL.bin score FILE | generate [--seed S] [--tokens N] "
          "[--temperature T] [--prompt TEXT] | trace FILE | info\n", stderr);
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- text -> token ids (src/data/corpus.py: tokenize_word / tokenize_char) -------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} ids_t;

static void push(ids_t *a, int32_t id) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 4096;
        a->v = (int32_t *)realloc(a->v, a->cap * sizeof(int32_t));
        if (!a->v) die("out of memory");
    }
    a->v[a->n++] = id;
}

/* Bytes of the UTF-8 character at p (strict, like Python's decoder), 0 if invalid. */
static size_t utf8_char(const unsigned char *p, size_t n, unsigned long *cp) {
    static const unsigned long min[5] = {0, 0, 0x80, 0x800, 0x10000};
    const size_t len = p[0] < 0x80 ? 1 : p[0] >> 5 == 6 ? 2 : p[0] >> 4 == 14 ? 3 : p[0] >> 3 == 30 ? 4 : 0;
    if (!len || len > n) return 0;
    unsigned long c = len == 1 ? p[0] : p[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        c = c << 6 | (p[i] & 0x3F);
    }
    if (c < min[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

static int is_space(unsigned long c) { /* str.split()'s whitespace */
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

static int32_t token(const awd_model *m, const char *s, size_t len, const char *where, long line) {
    const int id = awd_token_id(m, s, len);
    if (id >= 0) return id;
    if (m->unk_id < 0)
        die("%s line %ld: token '%.*s' is not in the vocabulary (which has no <unk>)", where, line,
            (int)(len > 60 ? 60 : len), s);
    return m->unk_id;
}

/* One line (without its newline) -> ids; `sub_space`: a space is the token "_" (PTB-char). */
static size_t tokenize(const awd_model *m, const char *s, size_t n, int per_char, int sub_space,
                       const char *where, long line, ids_t *out) {
    size_t count = 0, start = 0, i = 0;
    int in_word = 0;
    while (i < n) {
        unsigned long c;
        const size_t len = utf8_char((const unsigned char *)s + i, n - i, &c);
        if (!len) die("%s line %ld: invalid UTF-8 (the file must be UTF-8 encoded)", where, line);
        if (per_char) {
            push(out, sub_space && c == ' ' ? token(m, "_", 1, where, line)
                                            : token(m, s + i, len, where, line));
            count++;
        } else if (is_space(c) && in_word) {
            push(out, token(m, s + start, i - start, where, line));
            count++, in_word = 0;
        } else if (!is_space(c) && !in_word) {
            start = i, in_word = 1;
        }
        i += len;
    }
    if (in_word) push(out, token(m, s + start, n - start, where, line)), count++;
    return count;
}

static void read_text(const awd_model *m, const char *path, ids_t *out) {
    FILE *f = fopen(path, "rb");
    if (!f) die("%s: cannot open", path);
    size_t n = 0, cap = 1 << 20;
    char *buf = (char *)malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) buf = (char *)realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) die("out of memory");
    long line = 1;
    for (size_t pos = 0; pos < n; line++) {
        const char *nl = (const char *)memchr(buf + pos, '\n', n - pos);
        const size_t len = nl ? (size_t)(nl - (buf + pos)) : n - pos;
        const size_t count = tokenize(m, buf + pos, len, m->char_tokens, 0, path, line, out);
        if (nl || count) push(out, m->eos_id); /* a last line without newline: only if not empty */
        pos += len + 1;
    }
    free(buf);
}

/* ---- the one float step ------------------------------------------------------------------ */

static void dequantize(const awd_model *m, const int32_t *acc, float *logit) {
    for (int v = 0; v < m->vocab_size; v++) { /* as IntegerDecoder.dequantize: float32 */
        float s;
        memcpy(&s, &m->dec_scale[v], sizeof s);
        logit[v] = (float)acc[v] * s;
    }
}

/* e^x for x <= 0 in float (Cephes' expf: x = n ln2 + r, a degree-7 polynomial in r, 2^n from
 * the exponent bits; relative error below 1e-7), written so that compilers vectorize the loops
 * below; round to nearest by adding and subtracting 1.5 2^23 (no -ffast-math, which may fold
 * it). e^x below e^-87 counts as e^-87 (under 2e-38: nothing beside the maximum's 1): the
 * clamp is its own loop, which lets AVX2 compilers vectorize both (AVX-512 ones did already). */
static inline float exp_neg(float x) { /* x in [-87, 0]: the caller clamps (see nll) */
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#define LANES 16 /* independent partial maxima and sums: vectorizable, the sum in double */

/* -log softmax(logit)[target]: max + log(sum_v e^(logit_v - max)) - logit[target]. */
static double nll(const float *restrict logit, int V, int target, float *restrict e) {
    float lane[LANES];
    int v = 0;
    for (int k = 0; k < LANES; k++) lane[k] = logit[0];
    for (; v + LANES <= V; v += LANES)
        for (int k = 0; k < LANES; k++) lane[k] = logit[v + k] > lane[k] ? logit[v + k] : lane[k];
    float top = lane[0];
    for (int k = 1; k < LANES; k++) top = lane[k] > top ? lane[k] : top;
    for (; v < V; v++) top = logit[v] > top ? logit[v] : top;
    for (v = 0; v < V; v++) e[v] = logit[v] - top < -87.0f ? -87.0f : logit[v] - top;
    for (v = 0; v < V; v++) e[v] = exp_neg(e[v]);
    double sum[LANES] = {0}, total = 0.0;
    for (v = 0; v + LANES <= V; v += LANES)
        for (int k = 0; k < LANES; k++) sum[k] += (double)e[v + k];
    for (int k = 0; k < LANES; k++) total += sum[k];
    for (; v < V; v++) total += (double)e[v];
    return (double)top + log(total) - (double)logit[target];
}

static void score(const awd_model *m, const char *path) {
    ids_t ids = {0};
    read_text(m, path, &ids);
    if (ids.n < 2) die("%s: fewer than 2 tokens to score", path);
    const int V = m->vocab_size;
    awd_state s;
    int32_t *logits = (int32_t *)malloc((size_t)WINDOW * V * sizeof(int32_t));
    float *row = (float *)malloc((size_t)V * sizeof(float)), *e = (float *)malloc((size_t)V * sizeof(float));
    if (awd_state_init(m, &s, WINDOW) || !logits || !row || !e) die("out of memory");
    const size_t n = ids.n - 1; /* predictions: every token after the first */
    double total = 0.0;
    const double start = now();
    for (size_t at = 0; at < n; at += WINDOW) {
        const int T = n - at < WINDOW ? (int)(n - at) : WINDOW;
        if (awd_forward(m, &s, ids.v + at, T, logits)) die("out of memory");
        for (int t = 0; t < T; t++) {
            dequantize(m, logits + (size_t)t * V, row);
            total += nll(row, V, ids.v[at + t + 1], e);
        }
    }
    const double seconds = now() - start, loss = total / (double)n;
    const double ppl = exp(loss < 700.0 ? loss : 700.0), rate = (double)n / (seconds > 1e-9 ? seconds : 1e-9);
    printf("%s: %zu tokens, loss %.4f, perplexity %.2f, %.0f tokens/s\n", path, n, loss, ppl, rate);
    printf("{\"tokens\": %zu, \"loss\": %.17g, \"ppl\": %.17g, \"tokens_per_s\": %.1f}\n", n, loss, ppl, rate);
    awd_state_free(m, &s);
    free(logits), free(row), free(e), free(ids.v);
}

/* ---- generate ---------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* acc * scale exactly, as (p, e): p 2^e with p = acc * mantissa (|p| < 2^55), integers only. */
static void exact(int32_t acc, uint32_t bits, int64_t *p, int *e) {
    const int ex = (int)(bits >> 23 & 0xFF);
    const int64_t mant = ex ? (int64_t)(bits & 0x7FFFFF) | 0x800000 : (int64_t)(bits & 0x7FFFFF);
    *p = (bits >> 31 ? -1 : 1) * (int64_t)acc * mant;
    *e = ex ? ex - 150 : -149;
}

static int msb(uint64_t x) {
    int b = -1;
    while (x) x >>= 1, b++;
    return b;
}

/* The sign of p1 2^e1 - p2 2^e2, exactly (|p| < 2^55). */
static int compare(int64_t p1, int e1, int64_t p2, int e2) {
    const int s1 = (p1 > 0) - (p1 < 0), s2 = (p2 > 0) - (p2 < 0);
    if (s1 != s2 || s1 == 0) return (s1 > s2) - (s1 < s2);
    uint64_t a = (uint64_t)(p1 < 0 ? -p1 : p1), b = (uint64_t)(p2 < 0 ? -p2 : p2);
    const int ta = msb(a) + e1, tb = msb(b) + e2; /* exponents of the leading bits */
    int mag;
    if (ta != tb) {
        mag = ta > tb ? 1 : -1;
    } else { /* same leading exponent: align (the shift keeps the value below 2^55) */
        if (e1 >= e2) a <<= e1 - e2;
        else b <<= e2 - e1;
        mag = (a > b) - (a < b);
    }
    return s1 * mag;
}

static int argmax(const awd_model *m, const int32_t *acc) { /* first of the largest */
    int best = 0, be;
    int64_t bp;
    exact(acc[0], m->dec_scale[0], &bp, &be);
    for (int v = 1; v < m->vocab_size; v++) {
        int64_t p;
        int e;
        exact(acc[v], m->dec_scale[v], &p, &e);
        if (compare(p, e, bp, be) > 0) best = v, bp = p, be = e;
    }
    return best;
}

static int sample(const awd_model *m, const int32_t *acc, double temperature, uint64_t *rng,
                  float *logit, double *w) {
    const int V = m->vocab_size;
    dequantize(m, acc, logit);
    float top = logit[0];
    for (int v = 1; v < V; v++) top = logit[v] > top ? logit[v] : top;
    double total = 0.0;
    for (int v = 0; v < V; v++) total += w[v] = exp(((double)logit[v] - (double)top) / temperature);
    const double u = (double)(splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0) * total;
    double cum = 0.0;
    int last = 0;
    for (int v = 0; v < V; v++) {
        cum += w[v];
        if (w[v] > 0) last = v;
        if (cum > u) return v;
    }
    return last;
}

static void emit(const awd_model *m, int id, int spaced, int *line_start) {
    const char *tok = m->itos[id];
    if (id == m->eos_id) {
        fputc('\n', stdout);
        *line_start = 1;
        return;
    }
    if (m->char_level) {
        fputs(spaced && strcmp(tok, "_") == 0 ? " " : tok, stdout);
    } else {
        if (!*line_start) fputc(' ', stdout);
        fputs(tok, stdout);
    }
    *line_start = 0;
}

static void generate(const awd_model *m, const char *prompt, long n, double temperature, uint64_t seed) {
    const int V = m->vocab_size, spaced = !m->char_tokens;
    ids_t start = {0};
    if (prompt && *prompt)
        tokenize(m, prompt, strlen(prompt), m->char_level, m->char_level && spaced, "prompt", 1, &start);
    if (start.n == 0) push(&start, m->eos_id);
    awd_state s;
    int32_t *logits = (int32_t *)malloc((size_t)WINDOW * V * sizeof(int32_t));
    float *logit = (float *)malloc((size_t)V * sizeof(float));
    double *w = (double *)malloc((size_t)V * sizeof(double));
    if (awd_state_init(m, &s, WINDOW) || !logits || !logit || !w) die("out of memory");
    int T = 0;
    for (size_t at = 0; at < start.n; at += WINDOW) {
        T = start.n - at < WINDOW ? (int)(start.n - at) : WINDOW;
        if (awd_forward(m, &s, start.v + at, T, logits)) die("out of memory");
    }
    const int32_t *last = logits + (size_t)(T - 1) * V;
    uint64_t rng = seed;
    int line_start = 1;
    if (prompt && *prompt) fputs(prompt, stdout);
    for (long i = 0; i < n; i++) {
        const int32_t id = temperature == 0 ? argmax(m, last) : sample(m, last, temperature, &rng, logit, w);
        if (i == 0 && prompt && *prompt && !m->char_level && id != m->eos_id) fputc(' ', stdout);
        emit(m, id, spaced, &line_start);
        if (awd_forward(m, &s, &id, 1, logits)) die("out of memory");
        last = logits;
    }
    if (n == 0 && prompt && *prompt && !m->char_level) fputc(' ', stdout);
    fputc('\n', stdout);
    awd_state_free(m, &s);
    free(logits), free(logit), free(w), free(start.v);
}

/* ---- trace, info ------------------------------------------------------------------------- */

static void trace(const awd_model *m, const char *path) {
    ids_t ids = {0};
    read_text(m, path, &ids);
    awd_state s;
    if (awd_state_init(m, &s, 1)) die("out of memory");
    for (size_t t = 0; t < ids.n; t++) {
        if (awd_forward(m, &s, ids.v + t, 1, NULL)) die("out of memory");
        for (int l = 0; l < m->num_layers; l++) {
            printf("h %zu %d", t, l);
            for (int k = 0; k < m->layers[l].output; k++) printf(" %d", s.h[l][k]);
            printf("\nc %zu %d", t, l);
            for (int k = 0; k < m->layers[l].hidden; k++) printf(" %d", s.c[l][k]);
            fputc('\n', stdout);
        }
    }
    awd_state_free(m, &s);
    free(ids.v);
}

static void info(const awd_model *m) {
    printf("{\"vocab_size\": %d, \"emb_size\": %d, \"packed\": %d, \"char_tokens\": %d, \"layers\": [",
           m->vocab_size, m->emb_size, awd_packed(), m->char_tokens);
    for (int l = 0; l < m->num_layers; l++) {
        const awd_layer *L = &m->layers[l];
        printf("%s{\"cell\": \"%s\", \"input\": %d, \"hidden\": %d, \"output\": %d}", l ? ", " : "",
               L->cell ? "mlstm" : "lstm", L->input, L->hidden, L->output);
    }
    printf("]}\n");
}

static double number(const char *flag, const char *text, int integer) {
    char *end;
    const double v = integer ? (double)strtoull(text, &end, 10) : strtod(text, &end);
    if (end == text || *end || !(v >= 0) || v > 1.8e19 || (integer && text[0] == '-')) {
        fprintf(stderr, "awd_int8: %s expects %s >= 0, got '%s'\n", flag,
                integer ? "an integer" : "a number", text);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    const char *cmd = argv[2];
    int known = !strcmp(cmd, "score") || !strcmp(cmd, "trace") || !strcmp(cmd, "generate") || !strcmp(cmd, "info");
    if (!known || ((!strcmp(cmd, "score") || !strcmp(cmd, "trace")) && argc != 4) ||
        (!strcmp(cmd, "info") && argc != 3))
        usage();
    const char *prompt = NULL;
    double temperature = 1.0, tokens = 100;
    uint64_t seed = 141;
    for (int i = 3; !strcmp(cmd, "generate") && i < argc; i += 2) {
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--seed")) {
            number("--seed", argv[i + 1], 1);
            seed = strtoull(argv[i + 1], NULL, 10);
        } else if (!strcmp(argv[i], "--tokens")) tokens = number("--tokens", argv[i + 1], 1);
        else if (!strcmp(argv[i], "--temperature")) temperature = number("--temperature", argv[i + 1], 0);
        else if (!strcmp(argv[i], "--prompt")) prompt = argv[i + 1];
        else usage();
    }
    awd_model m;
    char err[512];
    if (awd_model_load(argv[1], &m, err, sizeof err)) die("%s", err);
    if (!strcmp(cmd, "score")) score(&m, argv[3]);
    else if (!strcmp(cmd, "trace")) trace(&m, argv[3]);
    else if (!strcmp(cmd, "info")) info(&m);
    else generate(&m, prompt, (long)tokens, temperature, seed);
    awd_model_free(&m);
    return 0;
}
