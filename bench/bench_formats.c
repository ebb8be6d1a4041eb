/* bench/bench_formats.c: decode speed of one TinyLlama-1.1B-shaped model with its
 * matrices held as F32, BF16, F16, Q8_0 and Q4_0, each next to its own bandwidth
 * roofline (streaming read bandwidth measured in the same round / weight bytes one
 * token reads), for 1 matmul thread and for --threads N (tensor/pool.h; default 2),
 * interleaved in each round; the roofline of N threads uses N threads' read bandwidth.
 * Not a test: run by hand, results in docs/BENCHMARKS.md.
 * Reuses bench_tensor's random f32 model directory (writes it if missing) and makes
 * each format (F32 too) in anonymous memory from it, one format at a time. */
#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bench/bench_common.h"
#include "tensor/dtype.h"
#include "tensor/forward.h"
#include "tensor/matmul.h"
#include "tensor/model.h"
#include "tensor/pool.h"
#include "tensor/quant.h"

/* ---- read bandwidth (1 thread, 4 chains of 64-byte loads) ----------------------- */

/* ---- the model in another format ------------------------------------------------ */

static double token_bytes(const struct exo_model *m)
{
  double b = 0;
  const int L = m->layer_end - m->layer_begin;
  for (int l = 0; l < L; l++)
    for (int k = 0; k < 7; k++) {
      const struct exo_weight *w = exo_bench_slot((struct exo_model *)m, l, k);
      b += (double)exo_dtype_row_bytes(w->dtype, w->cols) * w->rows;
    }
  b += (double)exo_dtype_row_bytes(m->lm_head.dtype, m->lm_head.cols) * m->lm_head.rows;
  return b + (double)L * 2 * m->cfg.hidden_size * 4;
}

/* Median decode step (tok/s) of steps single-token steps after a short prefill. */
static double decode_tps(const struct exo_model *m, int steps, int threads)
{
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  char err[256];
  float *logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
  double t[64];
  if (!logits || exo_forward_kv_new(m, 64, 64, &kv) ||
      exo_forward_scratch_new(m, 8, 64, &s, err, sizeof err) ||
      exo_forward_scratch_set_threads(s, threads))
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
    double t0 = exo_bench_now();
    if (exo_forward(m, &b, logits, s, err, sizeof err))
      exit(1);
    t[i] = exo_bench_now() - t0;
  }
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  free(logits);
  return 1.0 / exo_bench_median(t, steps);
}

int main(int argc, char **argv)
{
  const char *dir = EXO_BENCH_TINYLLAMA_DIR;
  int steps = 10, rounds = 3, nt = 2;
  const char *only = NULL; /* comma-separated dtype names; NULL: all */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--decode-steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      nt = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--formats") && i + 1 < argc)
      only = argv[++i];
    else
      steps = 0;
  }
  if (steps < 1 || steps > 64 || rounds < 1 || rounds > 9 || nt < 2 ||
      nt > EXO_POOL_MAX_THREADS) {
    fprintf(stderr, "usage: bench_formats [--dir DIR] [--decode-steps 1..64] [--rounds 1..9] "
                    "[--threads 2..%d] [--formats f32,bf16,f16,q8_0,q4_0]\n", EXO_POOL_MAX_THREADS);
    return 2;
  }
  const enum exo_dtype fmts[] = {EXO_DTYPE_F32, EXO_DTYPE_BF16, EXO_DTYPE_F16, EXO_DTYPE_Q8_0,
                                 EXO_DTYPE_Q4_0};
  enum { NF = 5 };
  /* --formats: each comma-separated name one of fmts (any case); none given: all */
  int run[NF];
  for (int f = 0; f < NF; f++)
    run[f] = !only;
  for (const char *p = only; p && *p; p += strcspn(p, ","), p += *p == ',') {
    const size_t n = strcspn(p, ",");
    int found = 0;
    for (int f = 0; f < NF; f++) {
      const char *name = exo_dtype_name(fmts[f]);
      if (n == strlen(name) && !strncasecmp(p, name, n))
        found = run[f] = 1;
    }
    if (!found) {
      fprintf(stderr, "bench_formats: --formats: unknown format '%.*s' (expected f32, bf16, "
                      "f16, q8_0 or q4_0)\n", (int)n, p);
      return 2;
    }
  }
  openblas_set_num_threads(1);
  char err[512];
  if (exo_bench_tinyllama(dir, err, sizeof err)) {
    fprintf(stderr, "write: %s\n", err);
    return 1;
  }
  struct exo_model *m = NULL;
  if (exo_model_load(dir, 0, -1, &m, err, sizeof err)) {
    fprintf(stderr, "load: %s\n", err);
    return 1;
  }
  const size_t bw_n = (size_t)1 << 28; /* 1 GiB */
  float *buf = aligned_alloc(64, bw_n * sizeof(float));
  struct exo_pool *bw_pool = NULL;
  if (!buf || exo_pool_new(nt, &bw_pool))
    return 1;
  for (size_t i = 0; i < bw_n; i++)
    buf[i] = (float)(i & 1023);

  double tps[2][NF], roof[2][NF], gbs[2][NF], bytes[NF];
  const int L = m->layer_end, threads[2] = {1, nt};
  printf("cpu path: %s; matmul threads 1 and %d (OpenBLAS 1: F32 decode is its sgemv); "
         "decode = median of %d steps after an 8-token prefill; every figure the median of "
         "%d rounds\n",
         exo_cpu_path_name(exo_cpu_path()), nt, steps, rounds);
  fflush(stdout);
  for (int f = 0; f < NF; f++) {
    if (!run[f])
      continue;
    struct exo_model v = *m;
    struct exo_layer_weights *layers = malloc((size_t)L * sizeof *layers);
    void **owned = calloc((size_t)(7 * L + 1), sizeof *owned);
    if (!layers || !owned)
      return 1;
    memcpy(layers, m->layers, (size_t)L * sizeof *layers);
    v.layers = layers;
    double t0 = exo_bench_now();
    for (int l = 0; l < L; l++)
      for (int k = 0; k < 7; k++)
        if (exo_bench_convert(exo_bench_slot(&v, l, k), fmts[f], &owned[7 * l + k]))
          return 1;
    if (exo_bench_convert(&v.lm_head, fmts[f], &owned[7 * L]))
      return 1;
    const double t_conv = exo_bench_now() - t0;
    bytes[f] = token_bytes(&v);
    decode_tps(&v, 2, 1); /* warm-up: fault the pages in */
    double r_tps[2][9], r_bw[2][9];
    for (int r = 0; r < rounds; r++)
      for (int ti = 0; ti < 2; ti++) {
        r_bw[ti][r] = exo_bench_read_gbs_pool(ti ? bw_pool : NULL, buf, bw_n);
        r_tps[ti][r] = decode_tps(&v, steps, threads[ti]);
        fprintf(stderr, "  %s round %d, %d threads: %.1f GB/s, %.2f tok/s\n",
                exo_dtype_name(fmts[f]), r, threads[ti], r_bw[ti][r], r_tps[ti][r]);
      }
    for (int ti = 0; ti < 2; ti++) {
      tps[ti][f] = exo_bench_median(r_tps[ti], rounds);
      gbs[ti][f] = exo_bench_median(r_bw[ti], rounds);
      roof[ti][f] = gbs[ti][f] * 1e9 / bytes[f];
    }
    fprintf(stderr, "  %s: converted in %.1f s\n", exo_dtype_name(fmts[f]), t_conv);
    for (int i = 0; i <= 7 * L; i++)
      free(owned[i]);
    free(owned);
    free(layers);
  }
  printf("| format | threads | weight GB / token | read GB/s | roofline tok/s | decode tok/s | "
         "%% of roofline | x f32 decode | x 1 thread |\n|---|---|---|---|---|---|---|---|---|\n");
  for (int f = 0; f < NF; f++)
    for (int ti = 0; run[f] && ti < 2; ti++) {
      char xf32[16] = "-"; /* "x f32" needs F32 in the same run */
      if (run[0])
        snprintf(xf32, sizeof xf32, "%.2f", tps[ti][f] / tps[ti][0]);
      printf("| %s | %d | %.2f | %.1f | %.2f | %.2f | %.0f%% | %s | %.2f |\n",
             exo_dtype_name(fmts[f]), threads[ti], bytes[f] / 1e9, gbs[ti][f], roof[ti][f],
             tps[ti][f], 100.0 * tps[ti][f] / roof[ti][f], xf32, tps[ti][f] / tps[0][f]);
    }
  exo_pool_free(bw_pool);
  free(buf);
  exo_model_free(m);
  return 0;
}
