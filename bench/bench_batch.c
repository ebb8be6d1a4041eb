/* bench/bench_batch.c: batched decode with exo_forward_batch.batch_invariant at
 * TinyLlama-1.1B shapes: aggregate tokens/s for 1, 4, 8, 16 sequences decoding together
 * (each at its own KV length), per format, next to the single-stream bandwidth roofline
 * (read bandwidth measured in the same round / weight bytes of one token) and to today's
 * default path at batch 1; each for 1 thread and for --threads N (tensor/pool.h: the
 * products split by output rows), interleaved in every round so both see the same load.
 * OpenBLAS keeps 1 thread. The untimed prefill runs on the default path (sgemm: the
 * bench times decode only). Not a test: results in docs/BENCHMARKS.md.
 * Uses bench_formats' random f32 model directory (bench_formats writes it). */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_common.h"
#include "tensor/dtype.h"
#include "tensor/forward.h"
#include "tensor/matmul.h"
#include "tensor/model.h"
#include "tensor/pool.h"
#include "tensor/quant.h"

#define MAX_BATCH 16

static double token_bytes(struct exo_model *m)
{
  double b = 0;
  for (int l = 0; l < m->layer_end; l++)
    for (int k = 0; k < 7; k++) {
      const struct exo_weight *w = exo_bench_slot(m, l, k);
      b += (double)exo_dtype_row_bytes(w->dtype, w->cols) * w->rows;
    }
  return b + (double)exo_dtype_row_bytes(m->lm_head.dtype, m->lm_head.cols) * m->lm_head.rows;
}

/* Median decode step of n sequences decoding together (sequence i prefilled with
 * 8 + 3 * i tokens first, so KV lengths differ) with `threads` matmul threads; returns
 * aggregate tokens/s of wall time. */
static double decode_tps(const struct exo_model *m, int n, int steps, int invariant,
                         int threads)
{
  struct exo_kv_cache *kv[MAX_BATCH] = {0};
  struct exo_forward_seq seqs[MAX_BATCH];
  struct exo_forward_scratch *s = NULL;
  char err[256] = "";
  const int V = m->cfg.vocab_size;
  float *logits = malloc((size_t)n * V * sizeof(float));
  int32_t tok[MAX_BATCH * (8 + 3 * MAX_BATCH)];
  double t[64];
  int total = 0;
  for (int i = 0; i < n; i++) {
    if (exo_forward_kv_new(m, 128, 128, &kv[i]))
      exit(1);
    seqs[i] = (struct exo_forward_seq){.kv = kv[i], .n_tokens = 8 + 3 * i, .start_pos = 0};
    for (int j = 0; j < 8 + 3 * i; j++, total++)
      tok[total] = (int32_t)(((unsigned)total * 7919u + 13u) % (unsigned)V);
  }
  if (!logits || exo_forward_scratch_new(m, total, 128, &s, err, sizeof err) ||
      exo_forward_scratch_set_threads(s, threads))
    exit(1);
  struct exo_forward_batch b = {.n_seqs = n, .seqs = seqs, .tokens = tok,
                                .logits_last_only = 1, .batch_invariant = 0};
  for (int step = -1; step < steps; step++) { /* step -1: the prefill, not timed */
    double t0 = exo_bench_now();
    if (exo_forward(m, &b, logits, s, err, sizeof err)) {
      fprintf(stderr, "forward: %s\n", err);
      exit(1);
    }
    if (step >= 0)
      t[step] = exo_bench_now() - t0;
    b.batch_invariant = invariant;
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
  return n / exo_bench_median(t, steps);
}

int main(int argc, char **argv)
{
  const char *dir = EXO_BENCH_TINYLLAMA_DIR;
  int steps = 5, rounds = 3, nf = 2, nt = 2;
  enum exo_dtype fmts[5] = {EXO_DTYPE_F32, EXO_DTYPE_BF16};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--decode-steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      nt = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--all-formats")) {
      const enum exo_dtype all[5] = {EXO_DTYPE_F32, EXO_DTYPE_BF16, EXO_DTYPE_F16,
                                     EXO_DTYPE_Q8_0, EXO_DTYPE_Q4_0};
      memcpy(fmts, all, sizeof all);
      nf = 5;
    } else if (!strcmp(argv[i], "--formats-q")) { /* the block formats only */
      fmts[0] = EXO_DTYPE_Q8_0;
      fmts[1] = EXO_DTYPE_Q4_0;
    } else
      steps = 0;
  }
  if (steps < 1 || steps > 64 || rounds < 1 || rounds > 9 || nt < 2 ||
      nt > EXO_POOL_MAX_THREADS) {
    fprintf(stderr, "usage: bench_batch [--dir DIR] [--decode-steps 1..64] [--rounds 1..9] "
                    "[--threads 2..%d] [--all-formats | --formats-q]\n", EXO_POOL_MAX_THREADS);
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
  struct exo_pool *bw_pool = NULL;
  if (!buf || exo_pool_new(nt, &bw_pool))
    return 1;
  for (size_t i = 0; i < bw_n; i++)
    buf[i] = (float)(i & 1023);
  static const int batches[] = {1, 4, 8, 16};
  enum { NB = 4 };
  const int L = m->layer_end, threads[2] = {1, nt};
  printf("cpu path: %s; matmul threads 1 and %d (OpenBLAS 1); decode step = median of %d "
         "steps after a prefill (sequence i: 8 + 3i tokens); each figure the median of %d "
         "rounds\n",
         exo_cpu_path_name(exo_cpu_path()), nt, steps, rounds);
  printf("tok/s aggregate over the batch (wall clock); 'bK/b1': to b1 at the same thread "
         "count; 'bK/1t': to 1-thread b1; read GB/s with that many threads\n");
  printf("| format | threads | GB / token | read GB/s | roofline tok/s | default b1 | inv b1 | "
         "inv b4 | inv b8 | inv b16 | b4/b1 | b8/b1 | b16/b1 | b1/1t | b8/1t | b16/1t |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
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
        if (exo_bench_convert(exo_bench_slot(&v, l, k), fmts[f], &owned[7 * l + k]))
          return 1;
    if (exo_bench_convert(&v.lm_head, fmts[f], &owned[7 * L]))
      return 1;
    const double bytes = token_bytes(&v);
    decode_tps(&v, 1, 1, 1, 1); /* warm-up: fault the pages in */
    double r_bw[2][9], r_def[2][9], r_inv[2][NB][9];
    for (int r = 0; r < rounds; r++)
      for (int ti = 0; ti < 2; ti++) {
        r_bw[ti][r] = exo_bench_read_gbs_pool(ti ? bw_pool : NULL, buf, bw_n);
        r_def[ti][r] = decode_tps(&v, 1, steps, 0, threads[ti]);
        for (int bi = 0; bi < NB; bi++)
          r_inv[ti][bi][r] = decode_tps(&v, batches[bi], steps, 1, threads[ti]);
        fprintf(stderr,
                "  %s round %d, %d threads: %.1f GB/s, default %.2f, inv %.2f %.2f %.2f %.2f "
                "tok/s\n",
                exo_dtype_name(fmts[f]), r, threads[ti], r_bw[ti][r], r_def[ti][r],
                r_inv[ti][0][r], r_inv[ti][1][r], r_inv[ti][2][r], r_inv[ti][3][r]);
      }
    double inv[2][NB];
    for (int ti = 0; ti < 2; ti++)
      for (int bi = 0; bi < NB; bi++)
        inv[ti][bi] = exo_bench_median(r_inv[ti][bi], rounds);
    for (int ti = 0; ti < 2; ti++) {
      const double gbs = exo_bench_median(r_bw[ti], rounds);
      const double def = exo_bench_median(r_def[ti], rounds), *iv = inv[ti];
      printf("| %s | %d | %.2f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2fx | "
             "%.2fx | %.2fx | %.2fx | %.2fx | %.2fx |\n",
             exo_dtype_name(fmts[f]), threads[ti], bytes / 1e9, gbs, gbs * 1e9 / bytes, def,
             iv[0], iv[1], iv[2], iv[3], iv[1] / iv[0], iv[2] / iv[0], iv[3] / iv[0],
             iv[0] / inv[0][0], iv[2] / inv[0][0], iv[3] / inv[0][0]);
    }
    fflush(stdout);
    for (int i = 0; i <= 7 * L; i++)
      free(owned[i]);
    free(owned);
    free(layers);
  }
  exo_pool_free(bw_pool);
  free(buf);
  exo_model_free(m);
  return 0;
}
