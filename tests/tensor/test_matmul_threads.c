/* tests/tensor/test_matmul_threads.c: products split over a pool (tensor/pool.h) give
 * the bits of one thread: for every dtype and every CPU path this machine has,
 * exo_matvec_path, exo_matmul_ex (n = 1) and exo_matmul_rows (n across the register
 * blocks and the 32-row groups, with bias and accumulate) with 2 and 3 threads are
 * memcmp-equal to the caller alone; the pool's default size threshold on a big product;
 * and whole exo_forward runs on the fixtures (prefill + decode, batch_invariant and
 * the default path's one-sequence decode) give memcmp-equal logits for 1, 2, 3 threads. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/dtype.h"
#include "tensor/forward.h"
#include "tensor/matmul.h"
#include "tensor/model.h"
#include "tensor/pool.h"
#include "tensor/quant.h"
#include "tests/test.h"

static const enum exo_dtype g_dtypes[] = {EXO_DTYPE_F32, EXO_DTYPE_F16, EXO_DTYPE_BF16,
                                          EXO_DTYPE_Q8_0, EXO_DTYPE_Q4_0};

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static float rndf(void) /* uniform in [-1, 1) */
{
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (float)(g_rng >> 40) / (float)(1 << 23) - 1.0f;
}

/* One row of floats stored as dt at p (block formats: cols % 32 == 0). */
static void store_row(enum exo_dtype dt, const float *row, int64_t cols, unsigned char *p)
{
  switch (dt) {
  case EXO_DTYPE_F32: memcpy(p, row, (size_t)cols * 4); break;
  case EXO_DTYPE_F16:
  case EXO_DTYPE_BF16:
    for (int64_t j = 0; j < cols; j++) {
      uint16_t h = dt == EXO_DTYPE_F16 ? exo_f32_to_f16(row[j]) : exo_f32_to_bf16(row[j]);
      memcpy(p + 2 * j, &h, 2);
    }
    break;
  case EXO_DTYPE_Q8_0: exo_q8_0_quantize(row, p, cols); break;
  case EXO_DTYPE_Q4_0: exo_q4_0_quantize(row, p, cols); break;
  }
}

/* A random rows x cols weight of dtype dt (caller frees w->data). */
static int make_weight(struct exo_weight *w, enum exo_dtype dt, int64_t rows, int64_t cols)
{
  const size_t rb = exo_dtype_row_bytes(dt, cols);
  unsigned char *buf = aligned_alloc(64, (rb * (size_t)rows + 63) & ~(size_t)63);
  float *row = malloc((size_t)cols * sizeof *row);
  if (!buf || !row) {
    free(buf);
    free(row);
    return -ENOMEM;
  }
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < cols; j++)
      row[j] = rndf() * (j % 7 == 0 ? 4.0f : 1.0f);
    store_row(dt, row, cols, buf + (size_t)r * rb);
  }
  free(row);
  *w = (struct exo_weight){.dtype = dt, .rows = rows, .cols = cols, .data = buf};
  return 0;
}

static int g_quick;
static struct exo_pool *g_pools[4]; /* [t]: t threads, min_work 0; [1] is NULL */

enum { MAXN = 40 };
static const int g_ns[] = {1, 3, 5, 17, MAXN};
#define N_NS (sizeof g_ns / sizeof *g_ns)

static size_t products_len(int64_t R)
{
  size_t n = 2; /* matvec, exo_matmul_ex */
  for (size_t k = 0; k < N_NS; k++)
    n += (size_t)g_ns[k];
  return n * (size_t)R;
}

/* Every product this file checks, one after the other into out (products_len floats):
 * matvec on path p, exo_matmul_ex n = 1 with bias, then per n exo_matmul_rows_path
 * plain and then with bias accumulating onto that. */
static int products(enum exo_cpu_path p, struct exo_pool *pool, const struct exo_weight *w,
                    const float *x, const float *bias, float *out)
{
  const int64_t R = w->rows;
  struct exo_matmul_ws ws = {.pool = pool};
  int rc = exo_matmul_ws_reserve(&ws, w->cols, 1);
  rc = rc ? rc : exo_matvec_path(p, &ws, out, x, w);
  out += R;
  rc = rc ? rc : exo_matmul_ex(&ws, out, x + w->cols, 1, w, bias, 0);
  out += R;
  for (size_t k = 0; k < N_NS && !rc; k++) {
    rc = exo_matmul_rows_path(p, &ws, out, x, g_ns[k], w, NULL, 0);
    rc = rc ? rc : exo_matmul_rows_path(p, &ws, out, x, g_ns[k], w, bias, 1);
    out += (size_t)g_ns[k] * R;
  }
  exo_matmul_ws_fini(&ws);
  return rc;
}

/* All products of w on every path with 2 and 3 threads, memcmp against the caller alone. */
static void check_weight(const struct exo_weight *w, struct exo_pool *const *pools)
{
  const int64_t R = w->rows, C = w->cols;
  const size_t len = products_len(R);
  float *x = malloc((size_t)MAXN * C * sizeof *x), *bias = malloc((size_t)R * sizeof *bias);
  float *ref = malloc(len * sizeof *ref), *y = malloc(len * sizeof *y);
  if (!x || !bias || !ref || !y) {
    CHECK(!"out of memory");
    goto done;
  }
  for (int64_t i = 0; i < MAXN * C; i++)
    x[i] = rndf();
  for (int64_t i = 0; i < R; i++)
    bias[i] = rndf();
  for (int p = EXO_CPU_PORTABLE; p <= EXO_CPU_AVX512; p++) {
    if (!exo_cpu_path_supported((enum exo_cpu_path)p) || (g_quick && p != (int)exo_cpu_path()))
      continue;
    CHECK_INT_EQ(products((enum exo_cpu_path)p, NULL, w, x, bias, ref), 0);
    for (int t = 2; t <= 3; t++) {
      memset(y, 0xff, len * sizeof *y); /* NaN everywhere: a missed row cannot match */
      CHECK_INT_EQ(products((enum exo_cpu_path)p, pools[t], w, x, bias, y), 0);
      if (memcmp(ref, y, len * sizeof *y)) {
        size_t i = 0;
        while (!memcmp(ref + i, y + i, sizeof *y))
          i++;
        fprintf(stderr, "  %s [%lld x %lld] path %s, %d threads: first differing float %zu\n",
                exo_dtype_name(w->dtype), (long long)R, (long long)C,
                exo_cpu_path_name((enum exo_cpu_path)p), t, i);
        CHECK(0);
      }
    }
  }
done:
  free(x);
  free(bias);
  free(ref);
  free(y);
}

/* Small shapes with odd row counts (chunks end inside the kernels' 3-row blocks), the
 * pools' threshold at 0 so even these split. */
static void test_products_split(void)
{
  static const int64_t shapes[][2] = {{203, 96}, {7, 64}, {130, 320}};
  for (size_t d = 0; d < sizeof g_dtypes / sizeof *g_dtypes; d++)
    for (size_t s = 0; s < (g_quick ? 1 : sizeof shapes / sizeof *shapes); s++) {
      if (g_quick && g_dtypes[d] != EXO_DTYPE_F32 && g_dtypes[d] != EXO_DTYPE_Q4_0)
        continue;
      struct exo_weight w;
      if (make_weight(&w, g_dtypes[d], shapes[s][0], shapes[s][1])) {
        CHECK(!"out of memory");
        return;
      }
      check_weight(&w, g_pools);
      free((void *)w.data);
    }
}

/* A product above the default threshold (EXO_POOL_MIN_WORK) with default pools. */
static void test_products_default_threshold(void)
{
  struct exo_pool *pools[4] = {NULL, NULL, NULL, NULL};
  CHECK_INT_EQ(exo_pool_new(2, &pools[2]), 0);
  CHECK_INT_EQ(exo_pool_new(3, &pools[3]), 0);
  struct exo_weight w;
  if (make_weight(&w, EXO_DTYPE_Q4_0, 1100, 1024) == 0) {
    CHECK(w.rows * w.cols >= exo_pool_min_work(pools[2]));
    check_weight(&w, pools);
    free((void *)w.data);
  }
  exo_pool_free(pools[2]);
  exo_pool_free(pools[3]);
}

/* ---- whole forward passes on the fixtures ---- */

static char g_dir[1024];

/* Re-stores every matrix of m whose width dt can hold as dt; bufs[] keeps the new data
 * (freed by unrequant, which also puts the originals back). */
struct restore {
  struct exo_weight *w[64];
  struct exo_weight orig[64];
  int n;
};

static int requant(struct restore *rs, struct exo_weight *w, enum exo_dtype dt)
{
  if (dt == EXO_DTYPE_F32 || exo_dtype_row_bytes(dt, w->cols) == 0)
    return 0;
  if (rs->n == 64)
    return -ENOSPC;
  const size_t rb = exo_dtype_row_bytes(dt, w->cols);
  unsigned char *buf = malloc(rb * (size_t)w->rows);
  float *row = malloc((size_t)w->cols * sizeof *row);
  if (!buf || !row) {
    free(buf);
    free(row);
    return -ENOMEM;
  }
  for (int64_t r = 0; r < w->rows; r++) {
    exo_weight_row_f32(w, r, row);
    store_row(dt, row, w->cols, buf + (size_t)r * rb);
  }
  free(row);
  rs->w[rs->n] = w;
  rs->orig[rs->n++] = *w;
  w->data = buf;
  w->dtype = dt;
  return 0;
}

static int requant_model(struct restore *rs, struct exo_model *m, enum exo_dtype dt)
{
  int rc = 0;
  for (int l = 0; l < m->layer_end - m->layer_begin && !rc; l++) {
    struct exo_layer_weights *w = &m->layers[l];
    struct exo_weight *mats[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up,
                                 &w->w_down};
    for (size_t i = 0; i < sizeof mats / sizeof *mats && !rc; i++)
      rc = requant(rs, mats[i], dt);
  }
  return rc ? rc : requant(rs, &m->lm_head, dt);
}

static void unrequant(struct restore *rs)
{
  for (int i = 0; i < rs->n; i++) {
    free((void *)rs->w[i]->data);
    *rs->w[i] = rs->orig[i];
  }
  rs->n = 0;
}

#define SEQS 4
#define STEPS 3

/* Logits of SEQS sequences (prompts of 1 + 4i tokens) through one prefill call and
 * STEPS decode calls, all rows' logits, [(prefill rows) + STEPS * SEQS][V]; then one
 * sequence alone with the flag off (decode products through exo_matmul_ex n = 1).
 * Returns the float count written, or -1. */
static long run_forward(struct exo_model *m, int threads, int invariant, float *out)
{
  const int V = m->cfg.vocab_size;
  struct exo_kv_cache *kv[SEQS] = {0};
  struct exo_forward_seq seqs[SEQS];
  struct exo_forward_scratch *s = NULL;
  int32_t tok[SEQS * 16];
  char err[256] = "";
  long written = -1;
  int total = 0;
  if (exo_forward_scratch_new(m, 64, 64, &s, err, sizeof err) ||
      exo_forward_scratch_set_threads(s, threads))
    goto done;
  if (threads > 1)
    exo_pool_set_min_work(exo_forward_scratch_pool(s), 0);
  for (int i = 0; i < SEQS; i++) {
    if (exo_forward_kv_new(m, 8, 64, &kv[i]))
      goto done;
    seqs[i] = (struct exo_forward_seq){.kv = kv[i], .n_tokens = 1 + 4 * i, .start_pos = 0};
    for (int t = 0; t < 1 + 4 * i; t++, total++)
      tok[total] = (int32_t)((i * 131 + t * 17 + 3) % V);
  }
  struct exo_forward_batch b = {.n_seqs = SEQS, .seqs = seqs, .tokens = tok,
                                .batch_invariant = invariant};
  long at = 0;
  for (int step = 0; step <= STEPS; step++) {
    if (exo_forward(m, &b, out + at, s, err, sizeof err)) {
      fprintf(stderr, "  forward: %s\n", err);
      goto done;
    }
    at += (long)exo_forward_out_rows(m, &b) * V;
    for (int i = 0; i < SEQS; i++) {
      seqs[i].start_pos += seqs[i].n_tokens;
      seqs[i].n_tokens = 1;
      tok[i] = (int32_t)((seqs[i].start_pos * 31 + i) % V);
    }
  }
  /* one sequence on the default path: its decode is exo_matmul_ex with n = 1 */
  b.n_seqs = 1;
  b.batch_invariant = 0;
  for (int step = 0; step < STEPS; step++) {
    if (exo_forward(m, &b, out + at, s, err, sizeof err)) {
      fprintf(stderr, "  forward: %s\n", err);
      goto done;
    }
    at += V;
    seqs[0].start_pos++;
    tok[0] = (int32_t)((seqs[0].start_pos * 7) % V);
  }
  written = at;
done:
  if (written < 0 && err[0])
    fprintf(stderr, "  run_forward: %s\n", err);
  exo_forward_scratch_free(s);
  for (int i = 0; i < SEQS; i++)
    exo_kv_cache_free(kv[i]);
  return written;
}

static void check_forward(const char *model)
{
  const char *fx = getenv("EXO_FIXTURES");
  snprintf(g_dir, sizeof g_dir, "%s/%s", fx ? fx : "tests/fixtures", model);
  struct exo_model *m = NULL;
  char err[512] = "";
  if (exo_model_load(g_dir, 0, -1, &m, err, sizeof err)) {
    fprintf(stderr, "  load %s: %s\n", g_dir, err);
    CHECK(0);
    return;
  }
  const size_t cap = (size_t)(SEQS * 16 + STEPS * SEQS + STEPS) * m->cfg.vocab_size;
  float *ref = malloc(cap * sizeof *ref), *got = malloc(cap * sizeof *got);
  for (size_t d = 0; ref && got && d < sizeof g_dtypes / sizeof *g_dtypes; d++) {
    if (g_quick && g_dtypes[d] != EXO_DTYPE_Q4_0)
      continue;
    struct restore rs = {.n = 0};
    CHECK_INT_EQ(requant_model(&rs, m, g_dtypes[d]), 0);
    for (int inv = 0; inv <= 1; inv++) {
      const long n = run_forward(m, 1, inv, ref);
      CHECK(n > 0);
      for (int t = 2; t <= 3 && n > 0; t++) {
        memset(got, 0xff, cap * sizeof *got);
        CHECK(run_forward(m, t, inv, got) == n);
        if (memcmp(ref, got, (size_t)n * sizeof *got)) {
          fprintf(stderr, "  %s %s batch_invariant %d, %d threads: logits differ\n", model,
                  exo_dtype_name(g_dtypes[d]), inv, t);
          CHECK(0);
        }
      }
    }
    unrequant(&rs);
  }
  CHECK(ref && got);
  free(ref);
  free(got);
  exo_model_free(m);
}

static void test_forward_llama(void)
{
  check_forward("tiny-llama");
}

static void test_forward_qwen2(void)
{
  check_forward("tiny-qwen2");
}

int main(int argc, char **argv)
{
  /* --quick (the concurrency suite, under TSan): the default CPU path, F32 and Q4_0 */
  g_quick = argc == 2 && !strcmp(argv[1], "--quick");
  for (int t = 2; t <= 3; t++) {
    if (exo_pool_new(t, &g_pools[t])) {
      fprintf(stderr, "cannot start a pool of %d threads\n", t);
      return 1;
    }
    exo_pool_set_min_work(g_pools[t], 0);
  }
  EXO_RUN(test_products_split);
  EXO_RUN(test_products_default_threshold);
  EXO_RUN(test_forward_llama);
  if (!g_quick)
    EXO_RUN(test_forward_qwen2);
  exo_pool_free(g_pools[2]);
  exo_pool_free(g_pools[3]);
  return exo_test_result();
}
