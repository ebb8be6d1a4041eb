/* tests/tensor/test_matmul_rows.c: exo_matmul_rows, the batch-invariant product, on every
 * CPU path this machine supports and every dtype: row i of an n-row call is bit-identical
 * to a one-row call on x[i] (n across the 4/2-input register blocks and the 32-row
 * groups, with bias and accumulate, with a workspace too small for a whole group), close
 * to an f64 reference, and for the block formats equal to the one-row kernels'. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/dtype.h"
#include "tensor/matmul.h"
#include "tensor/quant.h"
#include "tests/test.h"

static uint64_t g_rng = 0x2545f4914f6cdd1dull;

static float rndf(void) /* uniform in [-1, 1) */
{
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (float)(g_rng >> 40) / (float)(1 << 23) - 1.0f;
}

/* rows x cols of dtype dt from random floats; malloc'd with one byte of offset so the
 * kernels see unaligned rows (safetensors mappings); *raw is what to free. */
static unsigned char *make_weight(enum exo_dtype dt, int64_t rows, int64_t cols, void **raw)
{
  const size_t rb = exo_dtype_row_bytes(dt, cols);
  unsigned char *base = malloc(rb * (size_t)rows + 1), *w = base + 1;
  float *row = malloc((size_t)cols * sizeof *row);
  *raw = base;
  if (!base || !row) {
    free(row);
    return NULL;
  }
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < cols; j++)
      row[j] = rndf() * (j % 11 == 0 ? 8.0f : 1.0f);
    unsigned char *p = w + (size_t)r * rb;
    switch (dt) {
    case EXO_DTYPE_F32: memcpy(p, row, (size_t)cols * 4); break;
    case EXO_DTYPE_F16:
    case EXO_DTYPE_BF16:
      for (int64_t j = 0; j < cols; j++) {
        uint16_t h = dt == EXO_DTYPE_F16 ? exo_f32_to_f16(row[j]) : exo_f32_to_bf16(row[j]);
        memcpy(p + 2 * j, &h, 2);
      }
      break;
    case EXO_DTYPE_Q8_0: {
      void *tmp = malloc(rb); /* the quantizer writes aligned blocks */
      if (tmp) {
        exo_q8_0_quantize(row, tmp, cols);
        memcpy(p, tmp, rb);
      }
      free(tmp);
      break;
    }
    case EXO_DTYPE_Q4_0: {
      void *tmp = malloc(rb);
      if (tmp) {
        exo_q4_0_quantize(row, tmp, cols);
        memcpy(p, tmp, rb);
      }
      free(tmp);
      break;
    }
    }
  }
  free(row);
  return w;
}

static int bits_equal(const float *a, const float *b, size_t n)
{
  return memcmp(a, b, n * sizeof(float)) == 0;
}

static const int g_ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 70};

static void check_dtype(enum exo_dtype dt)
{
  const int block = dt == EXO_DTYPE_Q8_0 || dt == EXO_DTYPE_Q4_0;
  static const int64_t cols_half[] = {1, 7, 16, 17, 63, 64, 100, 131, 2048};
  static const int64_t cols_block[] = {32, 64, 96, 160, 2048};
  const int64_t *cl = block ? cols_block : cols_half;
  const size_t ncl = block ? sizeof cols_block / sizeof *cols_block
                           : sizeof cols_half / sizeof *cols_half;
  const int nmax = 70, rows = 13;
  for (size_t ci = 0; ci < ncl; ci++) {
    const int64_t cols = cl[ci];
    void *raw;
    unsigned char *wd = make_weight(dt, rows, cols, &raw);
    float *x = malloc((size_t)nmax * cols * sizeof *x);
    float *yb = malloc((size_t)nmax * rows * sizeof *yb), *y1 = malloc(rows * sizeof *y1);
    float *bias = malloc(rows * sizeof *bias), *wf = malloc((size_t)cols * sizeof *wf);
    CHECK(wd && x && yb && y1 && bias && wf);
    if (!wd || !x || !yb || !y1 || !bias || !wf)
      goto next;
    for (int64_t i = 0; i < nmax * cols; i++)
      x[i] = rndf();
    for (int r = 0; r < rows; r++)
      bias[r] = rndf();
    struct exo_weight w = {.data = wd, .dtype = dt, .rows = rows, .cols = cols};
    for (int p = EXO_CPU_PORTABLE; p <= EXO_CPU_AVX512; p++) {
      const enum exo_cpu_path path = (enum exo_cpu_path)p;
      if (!exo_cpu_path_supported(path)) {
        CHECK_INT_EQ(exo_matmul_rows_path(path, NULL, yb, x, 1, &w, NULL, 0), -ENOTSUP);
        continue;
      }
      /* A workspace for one row forces several groups for the block formats. */
      struct exo_matmul_ws small = {0};
      CHECK_INT_EQ(exo_matmul_ws_reserve(&small, cols, 0), 0);
      for (size_t ni = 0; ni < sizeof g_ns / sizeof *g_ns; ni++) {
        const int n = g_ns[ni];
        for (int mode = 0; mode < 3; mode++) { /* plain, bias, accumulate */
          const float *bp = mode == 1 ? bias : NULL;
          const int acc = mode == 2;
          for (int i = 0; i < n * rows; i++)
            yb[i] = (float)i * 0.25f; /* what accumulate adds to */
          CHECK_INT_EQ(exo_matmul_rows_path(path, mode == 2 ? &small : NULL, yb, x, n, &w, bp,
                                            acc),
                       0);
          for (int i = 0; i < n; i++) {
            for (int r = 0; r < rows; r++)
              y1[r] = (float)(i * rows + r) * 0.25f;
            CHECK_INT_EQ(exo_matmul_rows_path(path, NULL, y1, x + (size_t)i * cols, 1, &w, bp,
                                              acc),
                         0);
            if (!bits_equal(yb + (size_t)i * rows, y1, rows)) {
              fprintf(stderr, "  %s cols %lld n %d row %d mode %d path %s: batch != alone\n",
                      exo_dtype_name(dt), (long long)cols, n, i, mode,
                      exo_cpu_path_name(path));
              CHECK(0);
            }
          }
        }
      }
      /* Values: against f64 of the stored weights (block formats: against the one-row
       * kernel, itself checked bit-exact against a scalar reference by test_matmul). */
      CHECK_INT_EQ(exo_matmul_rows_path(path, NULL, yb, x, 3, &w, NULL, 0), 0);
      for (int i = 0; i < 3; i++) {
        if (block) {
          CHECK_INT_EQ(exo_matvec_path(path, NULL, y1, x + (size_t)i * cols, &w), 0);
          CHECK(bits_equal(yb + (size_t)i * rows, y1, rows));
          continue;
        }
        for (int r = 0; r < rows; r++) {
          exo_weight_row_f32(&w, r, wf);
          double ref = 0, mag = 0;
          for (int64_t j = 0; j < cols; j++) {
            ref += (double)wf[j] * x[(size_t)i * cols + j];
            mag += fabs((double)wf[j] * x[(size_t)i * cols + j]);
          }
          if (!(fabs(yb[(size_t)i * rows + r] - ref) <= 1e-5 * mag + 1e-30)) {
            fprintf(stderr, "  %s cols %lld row %d path %s: %.9g vs %.9g\n",
                    exo_dtype_name(dt), (long long)cols, r, exo_cpu_path_name(path),
                    yb[(size_t)i * rows + r], ref);
            CHECK(0);
          }
        }
      }
      exo_matmul_ws_fini(&small);
    }
  next:
    free(raw);
    free(x);
    free(yb);
    free(y1);
    free(bias);
    free(wf);
  }
}

static void test_rows_f32(void) { check_dtype(EXO_DTYPE_F32); }
static void test_rows_f16(void) { check_dtype(EXO_DTYPE_F16); }
static void test_rows_bf16(void) { check_dtype(EXO_DTYPE_BF16); }
static void test_rows_q8_0(void) { check_dtype(EXO_DTYPE_Q8_0); }
static void test_rows_q4_0(void) { check_dtype(EXO_DTYPE_Q4_0); }

/* exo_matmul_rows follows the run-time path, and refuses what it cannot do. */
static void test_rows_dispatch(void)
{
  const int64_t rows = 5, cols = 48;
  void *raw;
  unsigned char *wd = make_weight(EXO_DTYPE_BF16, rows, cols, &raw);
  float x[2 * 48], a[10], b[10];
  for (int i = 0; i < 2 * 48; i++)
    x[i] = rndf();
  struct exo_weight w = {.data = wd, .dtype = EXO_DTYPE_BF16, .rows = rows, .cols = cols};
  CHECK_INT_EQ(exo_matmul_rows(NULL, a, x, 2, &w, NULL, 0), 0);
  CHECK_INT_EQ(exo_matmul_rows_path(exo_cpu_path(), NULL, b, x, 2, &w, NULL, 0), 0);
  CHECK(bits_equal(a, b, 10));
  CHECK_INT_EQ(exo_matmul_rows(NULL, a, x, 0, &w, NULL, 0), -ENOTSUP);
  struct exo_weight q = {.data = wd, .dtype = EXO_DTYPE_Q8_0, .rows = 1, .cols = 48};
  CHECK_INT_EQ(exo_matmul_rows(NULL, a, x, 1, &q, NULL, 0), -ENOTSUP); /* 48 % 32 */
  free(raw);
}

int main(int argc, char **argv)
{
  if (argc == 3 && !strcmp(argv[1], "--cpu")) /* before the first exo_cpu_path() */
    setenv("EXO_CPU", argv[2], 1);
  fprintf(stderr, "  path: %s\n", exo_cpu_path_name(exo_cpu_path()));
  EXO_RUN(test_rows_f32);
  EXO_RUN(test_rows_f16);
  EXO_RUN(test_rows_bf16);
  EXO_RUN(test_rows_q8_0);
  EXO_RUN(test_rows_q4_0);
  EXO_RUN(test_rows_dispatch);
  return exo_test_result();
}
