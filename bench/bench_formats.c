/* bench/bench_formats.c: decode speed of one TinyLlama-1.1B-shaped model with its
 * matrices held as F32, BF16, F16, Q8_0 and Q4_0, each next to its own bandwidth
 * roofline (streaming read bandwidth measured in the same round / weight bytes one
 * token reads). Not a test: run by hand, results in docs/BENCHMARKS.md.
 * Reuses bench_tensor's random f32 model directory (writes it if missing) and makes
 * each format (F32 too) in anonymous memory from it, one format at a time. */
#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tensor/dtype.h"
#include "tensor/forward.h"
#include "tensor/matmul.h"
#include "tensor/model.h"
#include "tensor/model_writer.h"
#include "tensor/quant.h"

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- read bandwidth (1 thread, 4 chains of 64-byte loads) ----------------------- */

typedef float exo_v16 __attribute__((vector_size(64)));

__attribute__((target("avx512f"))) static float bw_read(const float *p, size_t n)
{
  exo_v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
  const exo_v16 *v = (const exo_v16 *)p;
  for (size_t i = 0; i < n / 16; i += 4) {
    s0 += v[i];
    s1 += v[i + 1];
    s2 += v[i + 2];
    s3 += v[i + 3];
  }
  exo_v16 s = s0 + s1 + s2 + s3;
  return s[0] + s[5] + s[15];
}

static double bandwidth_gbs(const float *buf, size_t n)
{
  double best = 0;
  volatile float sink = 0;
  for (int r = 0; r < 3; r++) {
    double t0 = now();
    sink += bw_read(buf, n);
    double g = (double)n * 4 / (now() - t0) / 1e9;
    if (g > best)
      best = g;
  }
  (void)sink;
  return best;
}

/* ---- the model in another format ------------------------------------------------ */

static struct exo_weight *slot(struct exo_model *m, int l, int k)
{
  struct exo_layer_weights *w = &m->layers[l];
  struct exo_weight *s[7] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
  return s[k];
}

/* A copy of matrix w (f32) in dt, in new memory (or w's own data for F32). */
static int convert(struct exo_weight *w, enum exo_dtype dt, void **owned)
{
  *owned = NULL;
  const size_t rb = exo_dtype_row_bytes(dt, w->cols);
  unsigned char *p = aligned_alloc(64, (rb * (size_t)w->rows + 63) & ~(size_t)63);
  if (!p)
    return -1;
  const float *src = w->data;
  for (int64_t r = 0; r < w->rows; r++) {
    const float *s = src + (size_t)r * w->cols;
    unsigned char *d = p + (size_t)r * rb;
    if (dt == EXO_DTYPE_F32) /* a copy too: every format reads the same kind of memory */
      memcpy(d, s, rb);
    else if (dt == EXO_DTYPE_BF16)
      exo_f32_to_bf16_n(s, (uint16_t *)d, (size_t)w->cols);
    else if (dt == EXO_DTYPE_F16)
      exo_f16_pack(s, (uint16_t *)d, (size_t)w->cols);
    else if (dt == EXO_DTYPE_Q8_0)
      exo_q8_0_quantize(s, d, w->cols);
    else
      exo_q4_0_quantize(s, d, w->cols);
  }
  w->data = p;
  w->dtype = dt;
  *owned = p;
  return 0;
}

static double token_bytes(const struct exo_model *m)
{
  double b = 0;
  const int L = m->layer_end - m->layer_begin;
  for (int l = 0; l < L; l++)
    for (int k = 0; k < 7; k++) {
      const struct exo_weight *w = slot((struct exo_model *)m, l, k);
      b += (double)exo_dtype_row_bytes(w->dtype, w->cols) * w->rows;
    }
  b += (double)exo_dtype_row_bytes(m->lm_head.dtype, m->lm_head.cols) * m->lm_head.rows;
  return b + (double)L * 2 * m->cfg.hidden_size * 4;
}

/* Median decode step (tok/s) of steps single-token steps after a short prefill. */
static double decode_tps(const struct exo_model *m, int steps)
{
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  char err[256];
  float *logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
  double t[64];
  if (!logits || exo_forward_kv_new(m, 64, 64, &kv) ||
      exo_forward_scratch_new(m, 8, 64, &s, err, sizeof err))
    exit(1);
  int32_t tok[72];
  for (int i = 0; i < 72; i++)
    tok[i] = (int32_t)((i * 7919u + 13u) % (unsigned)m->cfg.vocab_size);
  struct exo_forward_seq seq = {.kv = kv, .n_tokens = 8, .start_pos = 0};
  struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = tok, .logits_last_only = 1};
  if (exo_forward(m, &b, logits, s, err, sizeof err)) {
    fprintf(stderr, "forward: %s\n", err);
    exit(1);
  }
  for (int i = 0; i < steps; i++) {
    seq = (struct exo_forward_seq){.kv = kv, .n_tokens = 1, .start_pos = 8 + i};
    b.tokens = tok + 8 + i;
    double t0 = now();
    if (exo_forward(m, &b, logits, s, err, sizeof err))
      exit(1);
    t[i] = now() - t0;
  }
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  free(logits);
  return 1.0 / median(t, steps);
}

int main(int argc, char **argv)
{
  const char *dir = "/tmp/exo-bench-tinyllama-f32";
  int steps = 10, rounds = 3;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--decode-steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else
      steps = 0;
  }
  if (steps < 1 || steps > 64 || rounds < 1 || rounds > 9) {
    fprintf(stderr, "usage: bench_formats [--dir DIR] [--decode-steps 1..64] [--rounds 1..9]\n");
    return 2;
  }
  openblas_set_num_threads(1);
  char path[4200], err[512];
  struct stat sb;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (stat(path, &sb)) {
    struct exo_model_spec spec = {.arch = EXO_MODEL_ARCH_LLAMA, .vocab_size = 32000,
                                  .hidden_size = 2048, .intermediate_size = 5632, .n_layers = 22,
                                  .n_heads = 32, .n_kv_heads = 4, .dtype = EXO_DTYPE_F32,
                                  .seed = 1, .max_position_embeddings = 2048};
    printf("writing TinyLlama-shaped f32 model to %s ...\n", dir);
    fflush(stdout);
    if (exo_model_write_random(dir, &spec, NULL, err, sizeof err)) {
      fprintf(stderr, "write: %s\n", err);
      return 1;
    }
  }
  struct exo_model *m = NULL;
  if (exo_model_load(dir, 0, -1, &m, err, sizeof err)) {
    fprintf(stderr, "load: %s\n", err);
    return 1;
  }
  const size_t bw_n = (size_t)1 << 28; /* 1 GiB */
  float *buf = aligned_alloc(64, bw_n * sizeof(float));
  if (!buf)
    return 1;
  for (size_t i = 0; i < bw_n; i++)
    buf[i] = (float)(i & 1023);

  const enum exo_dtype fmts[] = {EXO_DTYPE_F32, EXO_DTYPE_BF16, EXO_DTYPE_F16, EXO_DTYPE_Q8_0,
                                 EXO_DTYPE_Q4_0};
  enum { NF = 5 };
  double tps[NF], roof[NF], gbs[NF], bytes[NF];
  const int L = m->layer_end;
  printf("cpu path: %s; 1 thread (OpenBLAS too); decode = median of %d steps after an 8-token "
         "prefill; every figure the median of %d rounds\n",
         exo_cpu_path_name(exo_cpu_path()), steps, rounds);
  fflush(stdout);
  for (int f = 0; f < NF; f++) {
    struct exo_model v = *m;
    struct exo_layer_weights *layers = malloc((size_t)L * sizeof *layers);
    void **owned = calloc((size_t)(7 * L + 1), sizeof *owned);
    if (!layers || !owned)
      return 1;
    memcpy(layers, m->layers, (size_t)L * sizeof *layers);
    v.layers = layers;
    double t0 = now();
    for (int l = 0; l < L; l++)
      for (int k = 0; k < 7; k++)
        if (convert(slot(&v, l, k), fmts[f], &owned[7 * l + k]))
          return 1;
    if (convert(&v.lm_head, fmts[f], &owned[7 * L]))
      return 1;
    const double t_conv = now() - t0;
    bytes[f] = token_bytes(&v);
    decode_tps(&v, 2); /* warm-up: fault the pages in */
    double r_tps[9], r_bw[9];
    for (int r = 0; r < rounds; r++) {
      r_bw[r] = bandwidth_gbs(buf, bw_n);
      r_tps[r] = decode_tps(&v, steps);
    }
    tps[f] = median(r_tps, rounds);
    gbs[f] = median(r_bw, rounds);
    roof[f] = gbs[f] * 1e9 / bytes[f];
    fprintf(stderr, "  %s: converted in %.1f s\n", exo_dtype_name(fmts[f]), t_conv);
    for (int i = 0; i <= 7 * L; i++)
      free(owned[i]);
    free(owned);
    free(layers);
  }
  printf("| format | weight GB / token | read GB/s | roofline tok/s | decode tok/s | "
         "%% of roofline | x f32 decode |\n|---|---|---|---|---|---|---|\n");
  for (int f = 0; f < NF; f++)
    printf("| %s | %.2f | %.1f | %.2f | %.2f | %.0f%% | %.2f |\n", exo_dtype_name(fmts[f]),
           bytes[f] / 1e9, gbs[f], roof[f], tps[f], 100.0 * tps[f] / roof[f], tps[f] / tps[0]);
  free(buf);
  exo_model_free(m);
  return 0;
}
