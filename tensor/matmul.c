/* tensor/matmul.c: products with weights in their stored dtype (see matmul.h): CPU path
 * detection, the portable C kernels, and the glue to OpenBLAS.
 * One row (decode): our row kernels read W once (F32 too, except on the portable path,
 * which leaves it to OpenBLAS's sgemv); Q8_0/Q4_0 first quantize x to q8
 * (quant.c, scalar, so every path sees the same integers) and then sum in the fixed
 * order of matmul_impl.h, so all paths give the same bits. Several rows (prefill):
 * tiles of EXO_MATMUL_TILE_ROWS weight rows are widened to f32 in the workspace and
 * multiplied by sgemm. exo_matmul_rows (batch-invariant) instead runs the row kernels
 * over every input row, f32 weights included, so no row's bits depend on the others.
 * With ws->pool, a row-kernel product is split by weight (output) rows over the pool's
 * threads (exo_rows_run); activations are quantized once by the caller; a dot's
 * reduction is never split, so the bits are those of one thread.
 * Must not allocate when the caller reserved its workspace. */
#include "tensor/matmul.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/dtype.h"
#include "tensor/matmul_impl.h"
#include "tensor/pool.h"
#include "tensor/quant.h"

/* ---- portable kernels ------------------------------------------------------------- */

static inline uint16_t exo_le16(const unsigned char *p)
{
  return (uint16_t)(p[0] | (p[1] << 8));
}

static inline float exo_f32_at(const unsigned char *p)
{
  float v;
  memcpy(&v, p, 4);
  return v;
}

static inline float exo_f16_at(const unsigned char *p)
{
  return exo_f16_to_f32(exo_le16(p));
}

static inline float exo_bf16_at(const unsigned char *p)
{
  return exo_bf16_to_f32(exo_le16(p));
}

/* Portable order of one dot: 8 f32 lanes, element j of the first 8 * (cols / 8) added
 * (product rounded, then sum rounded: no fma) into lane j % 8, the rest into lane 0,
 * then ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). Rows kernel: each weight
 * row against every input in turn (the row stays in L1). */
#define EXO_HALF_ROWS_PORTABLE(name, es, at)                                                \
  static float name##_dot(const unsigned char *p, int64_t cols, const float *x)             \
  {                                                                                         \
    float a[8] = {0};                                                                       \
    int64_t j = 0;                                                                          \
    for (; j + 8 <= cols; j += 8)                                                           \
      for (int k = 0; k < 8; k++)                                                           \
        a[k] += at(p + es * (j + k)) * x[j + k];                                            \
    for (; j < cols; j++)                                                                   \
      a[0] += at(p + es * j) * x[j];                                                        \
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));               \
  }                                                                                         \
  static void name(float *y, size_t ldy, const unsigned char *w, int64_t rows, int64_t cols, \
                   const float *x, int n, int add)                                          \
  {                                                                                         \
    for (int64_t r = 0; r < rows; r++)                                                      \
      for (int i = 0; i < n; i++) {                                                         \
        const float s = name##_dot(w + (size_t)r * (size_t)cols * es, cols,                 \
                                   x + (size_t)i * cols);                                   \
        float *o = y + (size_t)i * ldy + r;                                                 \
        *o = add ? *o + s : s;                                                              \
      }                                                                                     \
  }

EXO_HALF_ROWS_PORTABLE(exo_f32_rows_portable, 4, exo_f32_at)
EXO_HALF_ROWS_PORTABLE(exo_f16_rows_portable, 2, exo_f16_at)
EXO_HALF_ROWS_PORTABLE(exo_bf16_rows_portable, 2, exo_bf16_at)

static float exo_q8_0_dot_portable(const unsigned char *b, int64_t nb, const int8_t *xq,
                                   const float *xd)
{
  float acc[16] = {0};
  for (int64_t i = 0; i < nb; i++, b += EXO_Q8_0_BLOCK_BYTES) {
    const float s = exo_f16_to_f32(exo_le16(b)) * xd[i];
    const int8_t *q = (const int8_t *)(b + 2), *xv = xq + i * EXO_QK;
    float *a = acc + (i & 1) * 8;
    for (int j = 0; j < 8; j++) {
      int32_t p = 0;
      for (int k = 4 * j; k < 4 * j + 4; k++)
        p += (int32_t)q[k] * xv[k];
      a[j] = fmaf((float)p, s, a[j]);
    }
  }
  return exo_lanes16_sum(acc);
}

static float exo_q4_0_dot_portable(const unsigned char *b, int64_t nb, const int8_t *xq,
                                   const float *xd)
{
  float acc[16] = {0};
  for (int64_t i = 0; i < nb; i++, b += EXO_Q4_0_BLOCK_BYTES) {
    const float s = exo_f16_to_f32(exo_le16(b)) * xd[i];
    const int8_t *xv = xq + i * EXO_QK;
    float *a = acc + (i & 1) * 8;
    for (int j = 0; j < 8; j++) {
      int32_t p = 0;
      for (int k = 4 * j; k < 4 * j + 4; k++) {
        const int q = k < 16 ? (b[2 + k] & 15) - 8 : (b[2 + k - 16] >> 4) - 8;
        p += q * xv[k];
      }
      a[j] = fmaf((float)p, s, a[j]);
    }
  }
  return exo_lanes16_sum(acc);
}

#define EXO_QUANT_ROWS_PORTABLE(name, dot, block_bytes)                                     \
  static void name(float *y, size_t ldy, const unsigned char *w, int64_t rows, int64_t cols, \
                   const int8_t *xq, const float *xd, int n, int add)                       \
  {                                                                                         \
    const int64_t nb = cols / EXO_QK;                                                       \
    for (int64_t r = 0; r < rows; r++)                                                      \
      for (int i = 0; i < n; i++) {                                                         \
        const float s = dot(w + (size_t)r * (size_t)nb * (block_bytes), nb,                 \
                            xq + (size_t)i * cols, xd + (size_t)i * nb);                    \
        float *o = y + (size_t)i * ldy + r;                                                 \
        *o = add ? *o + s : s;                                                              \
      }                                                                                     \
  }

EXO_QUANT_ROWS_PORTABLE(exo_q8_0_rows_portable, exo_q8_0_dot_portable, EXO_Q8_0_BLOCK_BYTES)
EXO_QUANT_ROWS_PORTABLE(exo_q4_0_rows_portable, exo_q4_0_dot_portable, EXO_Q4_0_BLOCK_BYTES)

static void exo_f16_pack_portable(const float *src, uint16_t *dst, size_t n)
{
  exo_f32_to_f16_n(src, dst, n);
}

static void exo_f16_unpack_portable(const uint16_t *src, float *dst, size_t n)
{
  for (size_t i = 0; i < n; i++)
    dst[i] = exo_f16_to_f32(src[i]);
}

static const struct exo_matmul_kernels exo_kernels_portable = {
  .f32 = exo_f32_rows_portable,
  .f16 = exo_f16_rows_portable,
  .bf16 = exo_bf16_rows_portable,
  .q8_0 = exo_q8_0_rows_portable,
  .q4_0 = exo_q4_0_rows_portable,
  .f16_pack = exo_f16_pack_portable,
  .f16_unpack = exo_f16_unpack_portable,
};

/* ---- dispatch --------------------------------------------------------------------- */

static pthread_once_t exo_cpu_once = PTHREAD_ONCE_INIT;
static enum exo_cpu_path exo_cpu_chosen; /* written once under exo_cpu_once */

#if defined(__x86_64__)
/* F16C from cpuid leaf 1 (ECX bit 29): clang's __builtin_cpu_supports has no "f16c".
 * Read once: cpuid traps to the hypervisor in a VM, and every product asks. */
static pthread_once_t f16c_once = PTHREAD_ONCE_INIT;
static int f16c_found; /* written once under f16c_once */

static void f16c_detect(void)
{
  unsigned a, b, c, d;
  f16c_found = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

static int has_f16c(void)
{
  pthread_once(&f16c_once, f16c_detect);
  return f16c_found;
}
#endif

int exo_cpu_path_supported(enum exo_cpu_path p)
{
  switch (p) {
  case EXO_CPU_PORTABLE: return 1;
#if defined(__x86_64__)
  case EXO_CPU_AVX2:
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
  case EXO_CPU_AVX512:
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
           exo_cpu_path_supported(EXO_CPU_AVX2);
#else
  case EXO_CPU_AVX2:
  case EXO_CPU_AVX512: return 0;
#endif
  }
  return 0;
}

const char *exo_cpu_path_name(enum exo_cpu_path p)
{
  switch (p) {
  case EXO_CPU_PORTABLE: return "portable";
  case EXO_CPU_AVX2: return "avx2";
  case EXO_CPU_AVX512: return "avx512";
  }
  return "?";
}

static void exo_cpu_detect(void)
{
  enum exo_cpu_path best = exo_cpu_path_supported(EXO_CPU_AVX512) ? EXO_CPU_AVX512
                           : exo_cpu_path_supported(EXO_CPU_AVX2) ? EXO_CPU_AVX2
                                                                   : EXO_CPU_PORTABLE;
  exo_cpu_chosen = best;
  const char *env = getenv("EXO_CPU");
  if (!env || !*env)
    return;
  for (int p = EXO_CPU_PORTABLE; p <= EXO_CPU_AVX512; p++)
    if (!strcmp(env, exo_cpu_path_name((enum exo_cpu_path)p))) {
      if (exo_cpu_path_supported((enum exo_cpu_path)p)) {
        exo_cpu_chosen = (enum exo_cpu_path)p;
        return;
      }
      break;
    }
  fprintf(stderr, "exo: EXO_CPU=%s is unknown or unsupported on this CPU; using %s\n", env,
          exo_cpu_path_name(best));
}

enum exo_cpu_path exo_cpu_path(void)
{
  pthread_once(&exo_cpu_once, exo_cpu_detect);
  return exo_cpu_chosen;
}

static const struct exo_matmul_kernels *exo_kernels_for(enum exo_cpu_path p)
{
  if (!exo_cpu_path_supported(p))
    return NULL;
  switch (p) {
  case EXO_CPU_PORTABLE: return &exo_kernels_portable;
  case EXO_CPU_AVX2: return exo_matmul_kernels_avx2();
  case EXO_CPU_AVX512: return exo_matmul_kernels_avx512();
  }
  return NULL;
}

/* ---- workspace -------------------------------------------------------------------- */

/* Layout: [q8 activation: cols int8, rounded to 64][cols / 32 scales][tile f32]. */
static size_t exo_ws_act_bytes(int64_t cols)
{
  return (((size_t)cols + 63) & ~(size_t)63) + (((size_t)cols / EXO_QK * 4 + 63) & ~(size_t)63);
}

static size_t exo_ws_bytes(int64_t cols, int multi_row)
{
  return exo_ws_act_bytes(cols) +
         (multi_row ? (size_t)EXO_MATMUL_TILE_ROWS * (size_t)cols * sizeof(float) : 0);
}

int exo_matmul_ws_reserve(struct exo_matmul_ws *ws, int64_t max_cols, int multi_row)
{
  const size_t need = exo_ws_bytes(max_cols, multi_row);
  if (need <= ws->cap)
    return 0;
  void *p = aligned_alloc(64, (need + 63) & ~(size_t)63);
  if (!p)
    return -ENOMEM;
  free(ws->buf);
  ws->buf = p;
  ws->cap = need;
  return 0;
}

void exo_matmul_ws_fini(struct exo_matmul_ws *ws)
{
  free(ws->buf);
  ws->buf = NULL;
  ws->cap = 0;
}

/* ---- products --------------------------------------------------------------------- */

static int exo_shape_ok(const struct exo_weight *w)
{
  return w->data && w->rows > 0 && w->cols > 0 && w->rows <= INT32_MAX &&
         w->cols <= INT32_MAX && exo_dtype_row_bytes(w->dtype, w->cols) > 0;
}

/* One row kernel call over n inputs, split by weight (output) rows across a pool. */
struct exo_rows_job {
  const struct exo_matmul_kernels *k;
  enum exo_dtype dtype;
  float *y;
  size_t ldy;
  const unsigned char *w;
  size_t rb; /* bytes per weight row */
  int64_t cols;
  const float *x;   /* f32 inputs (F32/F16/BF16) */
  const int8_t *xq; /* q8 activations and their scales (Q8_0/Q4_0), made by the caller */
  const float *xd;
  int n, add;
};

/* Rows [r0, r1) of the job: the same kernel on a sub-range of rows. Every kernel forms
 * each (row, input) dot with the same operations wherever the row falls in its range
 * (matmul_impl.h), so any split gives the bits of the whole call. */
static void exo_rows_part(void *arg, int64_t r0, int64_t r1)
{
  const struct exo_rows_job *j = arg;
  const unsigned char *w = j->w + (size_t)r0 * j->rb;
  float *y = j->y + r0;
  const int64_t rows = r1 - r0;
  switch (j->dtype) {
  case EXO_DTYPE_F32: j->k->f32(y, j->ldy, w, rows, j->cols, j->x, j->n, j->add); return;
  case EXO_DTYPE_F16: j->k->f16(y, j->ldy, w, rows, j->cols, j->x, j->n, j->add); return;
  case EXO_DTYPE_BF16: j->k->bf16(y, j->ldy, w, rows, j->cols, j->x, j->n, j->add); return;
  case EXO_DTYPE_Q8_0:
    j->k->q8_0(y, j->ldy, w, rows, j->cols, j->xq, j->xd, j->n, j->add);
    return;
  case EXO_DTYPE_Q4_0:
    j->k->q4_0(y, j->ldy, w, rows, j->cols, j->xq, j->xd, j->n, j->add);
    return;
  }
}

/* Rows per claimed chunk: about EXO_ROWS_CHUNK_WORK multiply-adds (a few microseconds,
 * so the threads finish close together), a multiple of 48 rows (the AVX-512 half
 * kernels' 3-row blocks; 16 floats of y per cache line), and at least 4 chunks per
 * thread so a late or preempted thread leaves little behind. */
#define EXO_ROWS_CHUNK_WORK ((int64_t)1 << 17)

static int64_t exo_rows_chunk(int64_t rows, int64_t cols, int n, int threads)
{
  int64_t c = EXO_ROWS_CHUNK_WORK / (cols * n);
  c = c < 48 ? 48 : (c + 47) / 48 * 48;
  const int64_t spread = (rows + 4 * threads - 1) / (4 * threads);
  return c < spread ? c : (spread > 0 ? spread : 1);
}

static void exo_rows_run(struct exo_pool *pool, const struct exo_rows_job *j, int64_t rows)
{
  const int threads = exo_pool_threads(pool);
  if (threads == 1 || rows * j->cols * j->n < exo_pool_min_work(pool)) {
    exo_rows_part((void *)j, 0, rows);
    return;
  }
  exo_pool_run(pool, rows, exo_rows_chunk(rows, j->cols, j->n, threads), exo_rows_part,
               (void *)j);
}

/* y = W x (+ y when add) with kernels k; ws already holds room for the activation. */
static void exo_matvec_run(const struct exo_matmul_kernels *k, struct exo_pool *pool,
                           void *wsbuf, float *y, const float *x, const struct exo_weight *w,
                           int add)
{
  /* F32: the vector kernels read W at the memory's rate (one thread: 1.0-1.1x OpenBLAS's
   * sgemv, docs/BENCHMARKS.md) and split over the pool; the portable C loop does not. */
  if (w->dtype == EXO_DTYPE_F32 && k == &exo_kernels_portable) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)w->rows, (int)w->cols, 1.0f,
                (const float *)w->data, (int)w->cols, x, 1, add ? 1.0f : 0.0f, y, 1);
    return;
  }
  struct exo_rows_job j = {.k = k, .dtype = w->dtype, .y = y, .ldy = (size_t)w->rows,
                           .w = w->data, .rb = exo_dtype_row_bytes(w->dtype, w->cols),
                           .cols = w->cols, .x = x, .n = 1, .add = add};
  if (w->dtype == EXO_DTYPE_Q8_0 || w->dtype == EXO_DTYPE_Q4_0) {
    int8_t *xq = wsbuf;
    float *xd = (float *)((char *)wsbuf + (((size_t)w->cols + 63) & ~(size_t)63));
    exo_q8_act_quantize(x, xq, xd, w->cols);
    j.xq = xq;
    j.xd = xd;
  }
  exo_rows_run(pool, &j, w->rows);
}

/* Borrows ws when it is big enough, else allocates a temporary (callers that care
 * about allocation reserve first). */
static void *exo_ws_get(struct exo_matmul_ws *ws, size_t need, void **tmp)
{
  *tmp = NULL;
  if (ws && ws->cap >= need)
    return ws->buf;
  *tmp = aligned_alloc(64, (need + 63) & ~(size_t)63);
  return *tmp;
}

int exo_matvec_path(enum exo_cpu_path p, struct exo_matmul_ws *ws, float *y, const float *x,
                    const struct exo_weight *w)
{
  const struct exo_matmul_kernels *k = exo_kernels_for(p);
  if (!k || !exo_shape_ok(w))
    return -ENOTSUP;
  void *tmp, *buf = exo_ws_get(ws, exo_ws_bytes(w->cols, 0), &tmp);
  if (!buf)
    return -ENOMEM;
  exo_matvec_run(k, ws ? ws->pool : NULL, buf, y, x, w, 0);
  free(tmp);
  return 0;
}

/* Widens rows [r0, r0 + n) of w into tile (f32, row-major, w->cols wide). */
static void exo_widen_rows(const struct exo_matmul_kernels *k, const struct exo_weight *w,
                           int64_t r0, int64_t n, float *tile)
{
  const size_t rb = exo_dtype_row_bytes(w->dtype, w->cols);
  const unsigned char *p = (const unsigned char *)w->data + (size_t)r0 * rb;
  if (w->dtype == EXO_DTYPE_F16 && ((uintptr_t)p % 2) == 0) {
    k->f16_unpack((const uint16_t *)p, tile, (size_t)(n * w->cols));
    return;
  }
  for (int64_t r = 0; r < n; r++)
    exo_weight_row_f32(w, r0 + r, tile + (size_t)r * w->cols);
}

int exo_matmul_ex(struct exo_matmul_ws *ws, float *y, const float *x, int n,
                  const struct exo_weight *w, const float *bias, int accumulate)
{
  if (!exo_shape_ok(w) || n < 1)
    return -ENOTSUP;
  const int out = (int)w->rows, in = (int)w->cols;
  if (bias) {
    /* Seed y with the bias so the products add on top. */
    for (int r = 0; r < n; r++)
      for (int o = 0; o < out; o++)
        y[(size_t)r * out + o] = accumulate ? y[(size_t)r * out + o] + bias[o] : bias[o];
  }
  const int add = bias || accumulate;
  if (w->dtype == EXO_DTYPE_F32 && n > 1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in,
                (const float *)w->data, in, add ? 1.0f : 0.0f, y, out);
    return 0;
  }
  const struct exo_matmul_kernels *k = exo_kernels_for(exo_cpu_path());
  void *tmp, *buf = exo_ws_get(ws, exo_ws_bytes(in, n > 1), &tmp);
  if (!buf)
    return -ENOMEM;
  if (n == 1) {
    exo_matvec_run(k, ws ? ws->pool : NULL, buf, y, x, w, add);
  } else {
    float *tile = (float *)((char *)buf + exo_ws_act_bytes(in));
    for (int r0 = 0; r0 < out; r0 += EXO_MATMUL_TILE_ROWS) {
      const int rows = out - r0 < EXO_MATMUL_TILE_ROWS ? out - r0 : EXO_MATMUL_TILE_ROWS;
      exo_widen_rows(k, w, r0, rows, tile);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, in, 1.0f, x, in, tile, in,
                  add ? 1.0f : 0.0f, y + r0, out);
    }
  }
  free(tmp);
  return 0;
}

/* Inputs per pass over the weights in exo_matmul_rows: 32 f32 rows of TinyLlama's widest
 * input (5632) are 704 KiB and stay in a Zen 4 core's 1 MiB L2 while the weights stream. */
#define EXO_ROWS_GROUP 32

/* q8 activations of g input rows: [g * cols int8, rounded to 64][g * cols / 32 scales]. */
static size_t exo_rows_act_bytes(int64_t cols, int g)
{
  return (((size_t)g * (size_t)cols + 63) & ~(size_t)63) +
         (((size_t)g * ((size_t)cols / EXO_QK) * 4 + 63) & ~(size_t)63);
}

int exo_matmul_rows_path(enum exo_cpu_path p, struct exo_matmul_ws *ws, float *y, const float *x,
                         int n, const struct exo_weight *w, const float *bias, int accumulate)
{
  const struct exo_matmul_kernels *k = exo_kernels_for(p);
  if (!k || !exo_shape_ok(w) || n < 1)
    return -ENOTSUP;
  const int64_t out = w->rows, in = w->cols, nb = in / EXO_QK;
  const int quant = w->dtype == EXO_DTYPE_Q8_0 || w->dtype == EXO_DTYPE_Q4_0;
  int g = n < EXO_ROWS_GROUP ? n : EXO_ROWS_GROUP;
  /* A smaller group only costs another pass over the weights; it changes no result. */
  while (quant && ws && g > 1 && exo_rows_act_bytes(in, g) > ws->cap)
    g = (g + 1) / 2;
  void *tmp = NULL, *buf = NULL;
  if (quant && !(buf = exo_ws_get(ws, exo_rows_act_bytes(in, g), &tmp)))
    return -ENOMEM;
  if (bias) /* same per-element order as exo_matmul_ex: bias first, then the dot */
    for (int r = 0; r < n; r++)
      for (int64_t o = 0; o < out; o++)
        y[(size_t)r * out + o] = accumulate ? y[(size_t)r * out + o] + bias[o] : bias[o];
  const int add = bias || accumulate;
  struct exo_rows_job j = {.k = k, .dtype = w->dtype, .ldy = (size_t)out, .w = w->data,
                           .rb = exo_dtype_row_bytes(w->dtype, in), .cols = in, .add = add};
  for (int i0 = 0; i0 < n; i0 += g) {
    const int m = n - i0 < g ? n - i0 : g;
    const float *xi = x + (size_t)i0 * in;
    j.y = y + (size_t)i0 * out;
    j.n = m;
    j.x = xi;
    if (quant) {
      int8_t *xq = buf;
      float *xd = (float *)((char *)buf + (((size_t)g * (size_t)in + 63) & ~(size_t)63));
      for (int t = 0; t < m; t++) /* per row, scalar: the same integers on every path */
        exo_q8_act_quantize(xi + (size_t)t * in, xq + (size_t)t * in, xd + (size_t)t * nb, in);
      j.xq = xq;
      j.xd = xd;
    }
    exo_rows_run(ws ? ws->pool : NULL, &j, out);
  }
  free(tmp);
  return 0;
}

int exo_matmul_rows(struct exo_matmul_ws *ws, float *y, const float *x, int n,
                    const struct exo_weight *w, const float *bias, int accumulate)
{
  return exo_matmul_rows_path(exo_cpu_path(), ws, y, x, n, w, bias, accumulate);
}

void exo_f16_pack(const float *src, uint16_t *dst, size_t n)
{
  exo_kernels_for(exo_cpu_path())->f16_pack(src, dst, n);
}

void exo_f16_unpack(const uint16_t *src, float *dst, size_t n)
{
  exo_kernels_for(exo_cpu_path())->f16_unpack(src, dst, n);
}
