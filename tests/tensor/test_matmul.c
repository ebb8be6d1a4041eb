/* tests/tensor/test_matmul.c: the weight kernels of tensor/matmul.c on every CPU path
 * this machine supports: F16/BF16 rows against an f64 reference (1e-3 relative to the
 * sum of |w x| terms, i.e. no cancellation excuse), Q8_0/Q4_0 rows bit-exact against
 * the scalar reference below (same int32 sums, same f32 order), ggml block layouts,
 * f32 <-> f16 wire conversion, and multi-row (sgemm tile) products. Runs three times
 * from meson: default path, --cpu portable, --cpu avx2 (sets EXO_CPU, which
 * exo_cpu_path must honour). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/dtype.h"
#include "tensor/matmul.h"
#include "tensor/quant.h"
#include "tests/test.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static float rndf(void) /* roughly N(0, 1) */
{
  float s = 0;
  for (int i = 0; i < 4; i++)
    s += (float)(rnd() >> 40) / (float)(1 << 24) - 0.5f;
  return s * 1.7f;
}

static const int64_t g_cols[] = {1, 7, 15, 16, 17, 31, 64, 100, 176, 2048, 5632};

/* ---- half --------------------------------------------------------------------------- */

static void check_half(enum exo_dtype dt)
{
  for (size_t ci = 0; ci < sizeof g_cols / sizeof g_cols[0]; ci++) {
    const int64_t cols = g_cols[ci], rows = 5;
    /* one byte of offset: kernels must take unaligned rows (safetensors mappings) */
    unsigned char *raw = malloc((size_t)(rows * cols * 2 + 1));
    float *x = malloc((size_t)cols * sizeof *x), y[5];
    if (!raw || !x) {
      CHECK(0);
      return;
    }
    unsigned char *wd = raw + 1;
    for (int64_t i = 0; i < rows * cols; i++) {
      float v = rndf() * (i % 13 == 0 ? 100.0f : 1.0f);
      uint16_t h = dt == EXO_DTYPE_F16 ? exo_f32_to_f16(v) : exo_f32_to_bf16(v);
      wd[2 * i] = (unsigned char)(h & 0xff);
      wd[2 * i + 1] = (unsigned char)(h >> 8);
    }
    for (int64_t i = 0; i < cols; i++)
      x[i] = rndf();
    struct exo_weight w = {.data = wd, .dtype = dt, .rows = rows, .cols = cols};
    float *wf = malloc((size_t)cols * sizeof *wf);
    for (int p = EXO_CPU_PORTABLE; p <= EXO_CPU_AVX512; p++) {
      if (!exo_cpu_path_supported((enum exo_cpu_path)p)) {
        CHECK_INT_EQ(exo_matvec_path((enum exo_cpu_path)p, NULL, y, x, &w), -ENOTSUP);
        continue;
      }
      CHECK_INT_EQ(exo_matvec_path((enum exo_cpu_path)p, NULL, y, x, &w), 0);
      for (int64_t r = 0; r < rows; r++) {
        exo_weight_row_f32(&w, r, wf);
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < cols; i++) {
          ref += (double)wf[i] * x[i];
          mag += fabs((double)wf[i] * x[i]);
        }
        if (!(fabs(y[r] - ref) <= 1e-3 * mag + 1e-30)) {
          fprintf(stderr, "  %s cols %lld row %lld path %s: %.9g vs %.9g (mag %g)\n",
                  exo_dtype_name(dt), (long long)cols, (long long)r,
                  exo_cpu_path_name((enum exo_cpu_path)p), y[r], ref, mag);
          CHECK(0);
        }
        /* much tighter than required: f32 accumulation of exact products */
        CHECK(fabs(y[r] - ref) <= 1e-5 * mag + 1e-30);
      }
    }
    free(wf);
    free(raw);
    free(x);
  }
}

static void test_half_rows(void)
{
  check_half(EXO_DTYPE_BF16);
  check_half(EXO_DTYPE_F16);
}

/* ---- blocks ------------------------------------------------------------------------- */

/* The reference: matmul.c's documented order written out plainly. */
static float ref_block_dot(enum exo_dtype dt, const unsigned char *b, int64_t nb,
                           const int8_t *xq, const float *xd)
{
  const size_t bb = dt == EXO_DTYPE_Q8_0 ? 34 : 18;
  float lane[16] = {0};
  for (int64_t i = 0; i < nb; i++, b += bb) {
    int e[32];
    for (int k = 0; k < 32; k++)
      e[k] = dt == EXO_DTYPE_Q8_0 ? (int8_t)b[2 + k]
                                   : (k < 16 ? (b[2 + k] & 15) : (b[2 + k - 16] >> 4)) - 8;
    const float s = exo_f16_to_f32((uint16_t)(b[0] | b[1] << 8)) * xd[i];
    for (int j = 0; j < 8; j++) {
      int32_t p = 0;
      for (int k = 0; k < 4; k++)
        p += e[4 * j + k] * xq[32 * i + 4 * j + k];
      lane[(i % 2) * 8 + j] = fmaf((float)p, s, lane[(i % 2) * 8 + j]);
    }
  }
  float t[8], u[4];
  for (int i = 0; i < 8; i++)
    t[i] = lane[i] + lane[i + 8];
  for (int i = 0; i < 4; i++)
    u[i] = t[i] + t[i + 4];
  return (u[0] + u[2]) + (u[1] + u[3]);
}

static void check_blocks(enum exo_dtype dt)
{
  const int64_t nbs[] = {1, 2, 3, 7, 64, 176};
  for (size_t ni = 0; ni < sizeof nbs / sizeof nbs[0]; ni++) {
    const int64_t cols = nbs[ni] * 32, rows = 6;
    const size_t rb = exo_dtype_row_bytes(dt, cols);
    unsigned char *raw = malloc(rb * rows + 1);
    float *x = malloc((size_t)cols * 4), *xd = malloc((size_t)cols / 32 * 4), y[6];
    int8_t *xq = malloc((size_t)cols);
    float *wrow = malloc((size_t)cols * 4);
    if (!raw || !x || !xd || !xq || !wrow) {
      CHECK(0);
      return;
    }
    unsigned char *wd = raw + 1;
    for (int64_t r = 0; r < rows; r++) {
      for (int64_t i = 0; i < cols; i++)
        wrow[i] = rndf() * (float)(1 + (i / 32) % 5);
      if (r == 1)
        memset(wrow, 0, 32 * sizeof(float)); /* an all-zero block: scale 0 */
      if (dt == EXO_DTYPE_Q8_0)
        exo_q8_0_quantize(wrow, wd + r * rb, cols);
      else
        exo_q4_0_quantize(wrow, wd + r * rb, cols);
    }
    /* Raw bytes ggml's quantizer never makes but a file may hold: q8 -128 everywhere
     * in row 2, extreme scale in row 3 (f16 65504), random nibbles in row 4. */
    if (dt == EXO_DTYPE_Q8_0)
      for (int64_t i = 0; i < cols / 32; i++)
        memset(wd + 2 * rb + i * 34 + 2, 0x80, 32);
    wd[3 * rb] = 0xff;
    wd[3 * rb + 1] = 0x7b;
    if (dt == EXO_DTYPE_Q4_0)
      for (int64_t i = 0; i < cols / 32; i++)
        for (int k = 0; k < 16; k++)
          wd[4 * rb + i * 18 + 2 + k] = (unsigned char)rnd();
    for (int64_t i = 0; i < cols; i++)
      x[i] = rndf();
    x[cols / 2] = 40.0f; /* one large activation */
    exo_q8_act_quantize(x, xq, xd, cols);
    struct exo_weight w = {.data = wd, .dtype = dt, .rows = rows, .cols = cols};
    for (int p = EXO_CPU_PORTABLE; p <= EXO_CPU_AVX512; p++) {
      if (!exo_cpu_path_supported((enum exo_cpu_path)p))
        continue;
      CHECK_INT_EQ(exo_matvec_path((enum exo_cpu_path)p, NULL, y, x, &w), 0);
      for (int64_t r = 0; r < rows; r++) {
        float want = ref_block_dot(dt, wd + r * rb, cols / 32, xq, xd);
        if (memcmp(&want, &y[r], 4)) {
          fprintf(stderr, "  %s nb %lld row %lld path %s: %.9g vs reference %.9g\n",
                  exo_dtype_name(dt), (long long)(cols / 32), (long long)r,
                  exo_cpu_path_name((enum exo_cpu_path)p), y[r], want);
          CHECK(0);
        }
        if (r == 0) { /* and it approximates the f32 product of the dequantized row */
          exo_weight_row_f32(&w, r, wrow);
          double ref = 0, mag = 0;
          for (int64_t i = 0; i < cols; i++) {
            ref += (double)wrow[i] * x[i];
            mag += fabs((double)wrow[i] * x[i]);
          }
          CHECK(fabs(y[r] - ref) <= 0.02 * mag);
        }
      }
    }
    free(raw);
    free(x);
    free(xd);
    free(xq);
    free(wrow);
  }
}

static void test_block_dots_exact(void)
{
  check_blocks(EXO_DTYPE_Q8_0);
  check_blocks(EXO_DTYPE_Q4_0);
}

/* Block layouts as ggml writes them, checked byte by byte on known input. */
static void test_block_layout(void)
{
  float x[32], y[32];
  for (int i = 0; i < 32; i++)
    x[i] = (float)(i - 16) * 0.5f; /* -8 .. 7.5 */
  unsigned char q8[34], q4[18];
  exo_q8_0_quantize(x, q8, 32);
  /* d = 8 / 127 as f16 (0x2C08 = 0.063476...), q[0] = -127, q[16] = 0, q[31] = round(7.5*127/8) = 119 */
  CHECK_INT_EQ(q8[0] | q8[1] << 8, exo_f32_to_f16(8.0f / 127.0f));
  CHECK_INT_EQ((int8_t)q8[2], -127);
  CHECK_INT_EQ((int8_t)q8[2 + 16], 0);
  CHECK_INT_EQ((int8_t)q8[2 + 31], 119);
  exo_q8_0_dequantize(q8, y, 32);
  for (int i = 0; i < 32; i++)
    CHECK_NEAR(y[i], x[i], 8.0 / 127.0 / 2 + 1e-3);
  exo_q4_0_quantize(x, q4, 32);
  /* max magnitude is -8 (x[0]): d = -8 / -8 = 1; q = x + 8.5 truncated, so x[0] -> 0 */
  CHECK_INT_EQ(q4[0] | q4[1] << 8, 0x3c00); /* 1.0 */
  CHECK_INT_EQ(q4[2] & 15, 0);              /* element 0 */
  CHECK_INT_EQ(q4[2] >> 4, 8);              /* element 16: x = 0 -> 8 */
  CHECK_INT_EQ(q4[2 + 15] >> 4, 15);        /* element 31: 7.5 + 8.5 = 16 -> clamped 15 */
  exo_q4_0_dequantize(q4, y, 32);
  for (int i = 0; i < 32; i++)
    CHECK_NEAR(y[i], x[i], 0.5 + 1e-6);
  CHECK_INT_EQ(exo_dtype_row_bytes(EXO_DTYPE_Q8_0, 64), 68);
  CHECK_INT_EQ(exo_dtype_row_bytes(EXO_DTYPE_Q4_0, 64), 36);
  CHECK_INT_EQ(exo_dtype_row_bytes(EXO_DTYPE_Q4_0, 48), 0);
  CHECK_INT_EQ(exo_dtype_row_bytes(EXO_DTYPE_BF16, 3), 6);
  struct exo_weight bad = {.data = q8, .dtype = EXO_DTYPE_Q8_0, .rows = 1, .cols = 48};
  CHECK_INT_EQ(exo_matvec_path(EXO_CPU_PORTABLE, NULL, y, x, &bad), -ENOTSUP);
}

/* ---- wire conversion and multi-row products ----------------------------------------- */

static void test_f16_wire(void)
{
  const char *env = getenv("EXO_CPU");
  if (env && *env) /* the env var picks the path this process tests */
    CHECK(!strcmp(exo_cpu_path_name(exo_cpu_path()), env) ||
          !exo_cpu_path_supported(!strcmp(env, "avx2") ? EXO_CPU_AVX2 : EXO_CPU_AVX512));
  fprintf(stderr, "  path: %s\n", exo_cpu_path_name(exo_cpu_path()));
  enum { N = 4099 };
  float *src = malloc(N * sizeof *src), *back = malloc(N * sizeof *back);
  uint16_t *h = malloc((N + 1) * sizeof *h);
  if (!src || !back || !h) {
    CHECK(0);
    return;
  }
  for (int i = 0; i < N; i++) {
    uint32_t u = (uint32_t)rnd();
    if (i % 3) /* mostly the hidden-state range, plus arbitrary bit patterns */
      src[i] = rndf() * 10.0f;
    else
      memcpy(&src[i], &u, 4);
  }
  const float special[] = {0.0f, -0.0f, 65504.0f, 65520.0f, -65519.0f, 1e-8f, 5.96e-8f,
                           2.98e-8f, 6.1e-5f, INFINITY, -INFINITY, NAN};
  memcpy(src, special, sizeof special);
  int bad = 0;
  for (size_t n = 0; n <= N; n += n < 40 ? 1 : 1000) { /* every tail length */
    exo_f16_pack(src, h, n);
    for (size_t i = 0; i < n; i++)
      bad += h[i] != exo_f32_to_f16(src[i]);
  }
  CHECK_INT_EQ(bad, 0);
  exo_f16_pack(src, h, N);
  exo_f16_unpack(h, back, N);
  double worst = 0;
  for (int i = 0; i < N; i++) {
    float want = exo_f16_to_f32(h[i]);
    bad += memcmp(&want, &back[i], 4) != 0 && !(isnan(want) && isnan(back[i]));
    if (i % 3 && fabsf(src[i]) > 6.2e-5f && fabsf(src[i]) < 65504.0f)
      worst = fmax(worst, fabs((double)back[i] - src[i]) / fabs((double)src[i]));
  }
  CHECK_INT_EQ(bad, 0);
  CHECK(worst <= 1.0 / 2048); /* half an ulp of an 11-bit significand */
  fprintf(stderr, "  f16 round trip: worst relative error %.3g\n", worst);
  free(src);
  free(back);
  free(h);
}

/* n > 1 goes through widened tiles and sgemm; each row must match the n == 1 path. */
static void test_multi_row(void)
{
  const enum exo_dtype dts[] = {EXO_DTYPE_F32, EXO_DTYPE_F16, EXO_DTYPE_BF16, EXO_DTYPE_Q8_0,
                                EXO_DTYPE_Q4_0};
  const int64_t rows = 130, cols = 96; /* three tiles, the last partial */
  float *wf = malloc((size_t)(rows * cols) * 4), *x = malloc(3 * (size_t)cols * 4);
  unsigned char *wd = malloc((size_t)(rows * cols) * 4);
  float y[3 * 130], y1[130], bias[130];
  struct exo_matmul_ws ws = {0};
  CHECK_INT_EQ(exo_matmul_ws_reserve(&ws, cols, 1), 0);
  for (int64_t i = 0; i < rows * cols; i++)
    wf[i] = rndf();
  for (int64_t i = 0; i < 3 * cols; i++)
    x[i] = rndf();
  for (int i = 0; i < rows; i++)
    bias[i] = (float)i;
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
    enum exo_dtype dt = dts[d];
    const size_t rb = exo_dtype_row_bytes(dt, cols);
    for (int64_t r = 0; r < rows; r++) {
      const float *src = wf + r * cols;
      unsigned char *dst = wd + r * rb;
      if (dt == EXO_DTYPE_F32)
        memcpy(dst, src, rb);
      else if (dt == EXO_DTYPE_F16)
        exo_f32_to_f16_n(src, (uint16_t *)dst, (size_t)cols);
      else if (dt == EXO_DTYPE_BF16)
        exo_f32_to_bf16_n(src, (uint16_t *)dst, (size_t)cols);
      else if (dt == EXO_DTYPE_Q8_0)
        exo_q8_0_quantize(src, dst, cols);
      else
        exo_q4_0_quantize(src, dst, cols);
    }
    struct exo_weight w = {.data = wd, .dtype = dt, .rows = rows, .cols = cols};
    for (int i = 0; i < 3 * rows; i++)
      y[i] = 1.0f;
    CHECK_INT_EQ(exo_matmul_ex(&ws, y, x, 3, &w, bias, 1), 0);
    float *tmp = malloc((size_t)cols * 4);
    for (int n = 0; n < 3; n++) {
      CHECK_INT_EQ(exo_matmul_ex(&ws, y1, x + n * cols, 1, &w, NULL, 0), 0);
      for (int64_t r = 0; r < rows; r++) {
        exo_weight_row_f32(&w, r, tmp);
        double mag = 0;
        for (int64_t i = 0; i < cols; i++)
          mag += fabs((double)tmp[i] * x[n * cols + i]);
        /* block formats: the single row quantizes x to q8, the tile path does not */
        double tol = dt >= EXO_DTYPE_Q8_0 ? 0.02 * mag : 1e-5 * mag + 1e-4;
        CHECK(fabs(y[n * rows + r] - (1.0f + bias[r] + y1[r])) <= tol);
      }
    }
    free(tmp);
  }
  exo_matmul_ws_fini(&ws);
  free(wf);
  free(x);
  free(wd);
}

int main(int argc, char **argv)
{
  if (argc == 3 && !strcmp(argv[1], "--cpu")) /* before the first exo_cpu_path() */
    setenv("EXO_CPU", argv[2], 1);
  EXO_RUN(test_half_rows);
  EXO_RUN(test_block_dots_exact);
  EXO_RUN(test_block_layout);
  EXO_RUN(test_f16_wire);
  EXO_RUN(test_multi_row);
  return exo_test_result();
}
