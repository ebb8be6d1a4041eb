/* bench/bench_batch.c: batched decode with exo_forward_batch.batch_invariant at
 * TinyLlama-1.1B shapes: aggregate tokens/s for 1, 4, 8, 16 sequences decoding together
 * (each at its own KV length), per format, next to the single-stream bandwidth roofline
 * (read bandwidth measured in the same round / weight bytes of one token) and to today's
 * default path at batch 1. One thread. Not a test: results in docs/BENCHMARKS.md.
 * Uses bench_formats' random f32 model directory (bench_formats writes it). */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor/dtype.h"
#include "tensor/forward.h"
#include "tensor/matmul.h"
#include "tensor/model.h"
#include "tensor/quant.h"

#define MAX_BATCH 16

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* This thread's CPU time: on a host shared with other jobs the wall clock also counts
 * the time they take the core away, CPU time only ours (memory stalls included). */
static double cpu_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
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

/* Streaming read bandwidth of one thread (4 chains of 64-byte loads), best of 3. */
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

static struct exo_weight *slot(struct exo_model *m, int l, int k)
{
  struct exo_layer_weights *w = &m->layers[l];
  struct exo_weight *s[7] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
  return s[k];
}

/* A copy of f32 matrix w in dt, in new memory (F32 copied too, so every format reads
 * anonymous memory). */
static int convert(struct exo_weight *w, enum exo_dtype dt, void **owned)
{
  const size_t rb = exo_dtype_row_bytes(dt, w->cols);
  unsigned char *p = aligned_alloc(64, (rb * (size_t)w->rows + 63) & ~(size_t)63);
  if (!p)
    return -1;
  const float *src = w->data;
  for (int64_t r = 0; r < w->rows; r++) {
    const float *s = src + (size_t)r * w->cols;
    unsigned char *d = p + (size_t)r * rb;
    if (dt == EXO_DTYPE_F32)
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

static double token_bytes(struct exo_model *m)
{
  double b = 0;
  for (int l = 0; l < m->layer_end; l++)
    for (int k = 0; k < 7; k++) {
      const struct exo_weight *w = slot(m, l, k);
      b += (double)exo_dtype_row_bytes(w->dtype, w->cols) * w->rows;
    }
  return b + (double)exo_dtype_row_bytes(m->lm_head.dtype, m->lm_head.cols) * m->lm_head.rows;
}

/* Median decode step of n sequences decoding together (sequence i prefilled with
 * 8 + 3 * i tokens first, so KV lengths differ); returns aggregate tokens/s of wall
 * time, and of CPU time in *cpu_tps. */
static double decode_tps(const struct exo_model *m, int n, int steps, int invariant,
                         double *cpu_tps)
{
  struct exo_kv_cache *kv[MAX_BATCH] = {0};
  struct exo_forward_seq seqs[MAX_BATCH];
  struct exo_forward_scratch *s = NULL;
  char err[256] = "";
  const int V = m->cfg.vocab_size;
  float *logits = malloc((size_t)n * V * sizeof(float));
  int32_t tok[MAX_BATCH * (8 + 3 * MAX_BATCH)];
  double t[64], tc[64];
  int total = 0;
  for (int i = 0; i < n; i++) {
    if (exo_forward_kv_new(m, 128, 128, &kv[i]))
      exit(1);
    seqs[i] = (struct exo_forward_seq){.kv = kv[i], .n_tokens = 8 + 3 * i, .start_pos = 0};
    for (int j = 0; j < 8 + 3 * i; j++, total++)
      tok[total] = (int32_t)(((unsigned)total * 7919u + 13u) % (unsigned)V);
  }
  if (!logits || exo_forward_scratch_new(m, total, 128, &s, err, sizeof err))
    exit(1);
  struct exo_forward_batch b = {.n_seqs = n, .seqs = seqs, .tokens = tok,
                                .logits_last_only = 1, .batch_invariant = invariant};
  for (int step = -1; step < steps; step++) { /* step -1: the prefill, not timed */
    double t0 = now(), c0 = cpu_now();
    if (exo_forward(m, &b, logits, s, err, sizeof err)) {
      fprintf(stderr, "forward: %s\n", err);
      exit(1);
    }
    if (step >= 0) {
      t[step] = now() - t0;
      tc[step] = cpu_now() - c0;
    }
    for (int i = 0; i < n; i++) {
      seqs[i].start_pos += seqs[i].n_tokens;
      seqs[i].n_tokens = 1;
      tok[i] = (int32_t)((seqs[i].start_pos * 31u + (unsigned)i) % (unsigned)V);
    }
  }
  exo_forward_scratch_free(s);
  for (int i = 0; i < n; i++)
    exo_kv_cache_free(kv[i]);
  free(logits);
  *cpu_tps = n / median(tc, steps);
  return n / median(t, steps);
}

int main(int argc, char **argv)
{
  const char *dir = "/tmp/exo-bench-tinyllama-f32";
  int steps = 5, rounds = 3, nf = 2;
  enum exo_dtype fmts[5] = {EXO_DTYPE_F32, EXO_DTYPE_BF16};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--decode-steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--all-formats")) {
      const enum exo_dtype all[5] = {EXO_DTYPE_F32, EXO_DTYPE_BF16, EXO_DTYPE_F16,
                                     EXO_DTYPE_Q8_0, EXO_DTYPE_Q4_0};
      memcpy(fmts, all, sizeof all);
      nf = 5;
    } else
      steps = 0;
  }
  if (steps < 1 || steps > 64 || rounds < 1 || rounds > 9) {
    fprintf(stderr, "usage: bench_batch [--dir DIR] [--decode-steps 1..64] [--rounds 1..9] "
                    "[--all-formats]\n");
    return 2;
  }
  openblas_set_num_threads(1);
  char err[512];
  struct exo_model *m = NULL;
  if (exo_model_load(dir, 0, -1, &m, err, sizeof err)) {
    fprintf(stderr, "load %s: %s (run bench_formats once to write it)\n", dir, err);
    return 1;
  }
  const size_t bw_n = (size_t)1 << 28; /* 1 GiB */
  float *buf = aligned_alloc(64, bw_n * sizeof(float));
  if (!buf)
    return 1;
  for (size_t i = 0; i < bw_n; i++)
    buf[i] = (float)(i & 1023);
  static const int batches[] = {1, 4, 8, 16};
  enum { NB = 4 };
  const int L = m->layer_end;
  printf("cpu path: %s; 1 thread (OpenBLAS too); decode step = median of %d steps after a "
         "prefill (sequence i: 8 + 3i tokens); each figure the median of %d rounds\n",
         exo_cpu_path_name(exo_cpu_path()), steps, rounds);
  printf("tok/s aggregate over the batch; 'cpu' rows divide by this thread's CPU time "
         "instead of wall time\n");
  printf("| format | clock | GB / token | read GB/s | roofline tok/s | default b1 tok/s | "
         "inv b1 | inv b4 | inv b8 | inv b16 | b4/b1 | b8/b1 | b16/b1 |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  fflush(stdout);
  for (int f = 0; f < nf; f++) {
    struct exo_model v = *m;
    struct exo_layer_weights *layers = malloc((size_t)L * sizeof *layers);
    void **owned = calloc((size_t)(7 * L + 1), sizeof *owned);
    if (!layers || !owned)
      return 1;
    memcpy(layers, m->layers, (size_t)L * sizeof *layers);
    v.layers = layers;
    for (int l = 0; l < L; l++)
      for (int k = 0; k < 7; k++)
        if (convert(slot(&v, l, k), fmts[f], &owned[7 * l + k]))
          return 1;
    if (convert(&v.lm_head, fmts[f], &owned[7 * L]))
      return 1;
    const double bytes = token_bytes(&v);
    double junk;
    decode_tps(&v, 1, 1, 1, &junk); /* warm-up: fault the pages in */
    double r_bw[9], r_def[2][9], r_inv[2][NB][9];
    for (int r = 0; r < rounds; r++) {
      r_bw[r] = bandwidth_gbs(buf, bw_n);
      r_def[0][r] = decode_tps(&v, 1, steps, 0, &r_def[1][r]);
      for (int bi = 0; bi < NB; bi++)
        r_inv[0][bi][r] = decode_tps(&v, batches[bi], steps, 1, &r_inv[1][bi][r]);
      fprintf(stderr, "  %s round %d: %.1f GB/s, default %.2f, inv %.2f %.2f %.2f %.2f tok/s\n",
              exo_dtype_name(fmts[f]), r, r_bw[r], r_def[0][r], r_inv[0][0][r], r_inv[0][1][r],
              r_inv[0][2][r], r_inv[0][3][r]);
    }
    const double gbs = median(r_bw, rounds);
    for (int c = 0; c < 2; c++) {
      const double def = median(r_def[c], rounds);
      double inv[NB];
      for (int bi = 0; bi < NB; bi++)
        inv[bi] = median(r_inv[c][bi], rounds);
      printf("| %s | %s | %.2f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2fx | "
             "%.2fx | %.2fx |\n",
             exo_dtype_name(fmts[f]), c ? "cpu" : "wall", bytes / 1e9, gbs, gbs * 1e9 / bytes,
             def, inv[0], inv[1], inv[2], inv[3], inv[1] / inv[0], inv[2] / inv[0],
             inv[3] / inv[0]);
    }
    fflush(stdout);
    for (int i = 0; i <= 7 * L; i++)
      free(owned[i]);
    free(owned);
    free(layers);
  }
  free(buf);
  exo_model_free(m);
  return 0;
}
