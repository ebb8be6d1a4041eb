/* bench/bench_common.c: the benchmarks' shared helpers (bench_common.h). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench/bench_common.h"
#include "tensor/matmul.h"
#include "tensor/model_writer.h"
#include "tensor/pool.h"
#include "tensor/quant.h"

static double clock_s(clockid_t id)
{
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double exo_bench_now(void)
{
  return clock_s(CLOCK_MONOTONIC);
}

/* On a host shared with other jobs the wall clock also counts the time they take the core
 * away; CPU time only ours (memory stalls included). */
double exo_bench_cpu_now(void)
{
  return clock_s(CLOCK_THREAD_CPUTIME_ID);
}

static int cmp_double(const void *a, const void *b)
{
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double exo_bench_median(double *v, size_t n)
{
  if (n == 0)
    return 0;
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Streaming read of one thread: 4 chains of 64-byte loads. */
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

/* The same bytes as four sequential streams a quarter of the buffer apart, the way the
 * decode kernels read 4 weight rows (tensor/matmul_avx512.c): on Zen 4 this reads up to
 * ~1.2x faster than one stream, so the roofline takes the better of the two. */
__attribute__((target("avx512f"))) static float bw_read4(const float *p, size_t n)
{
  exo_v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
  const size_t q = n / 64; /* vectors per stream */
  const exo_v16 *a = (const exo_v16 *)p, *b = a + q, *c = b + q, *d = c + q;
  for (size_t i = 0; i < q; i++) {
    s0 += a[i];
    s1 += b[i];
    s2 += c[i];
    s3 += d[i];
  }
  exo_v16 s = s0 + s1 + s2 + s3;
  return s[0] + s[5] + s[15];
}

static float bw_read_pattern(const float *p, size_t n, int streams)
{
  return streams == 4 ? bw_read4(p, n) : bw_read(p, n);
}

double exo_bench_read_gbs(const float *buf, size_t n)
{
  double best = 0;
  volatile float sink = 0;
  for (int r = 0; r < 6; r++) {
    double t0 = exo_bench_now();
    sink += bw_read_pattern(buf, n, r % 2 ? 4 : 1);
    double g = (double)n * 4 / (exo_bench_now() - t0) / 1e9;
    if (g > best)
      best = g;
  }
  (void)sink;
  return best;
}

struct bw_job {
  const float *buf;
  int streams;
};

static void bw_part(void *arg, int64_t b, int64_t e)
{
  const struct bw_job *j = arg;
  const size_t chunk = (size_t)1 << 18; /* floats: 1 MiB */
  volatile float sink =
      bw_read_pattern(j->buf + (size_t)b * chunk, (size_t)(e - b) * chunk, j->streams);
  (void)sink; /* keeps the reads */
}

double exo_bench_read_gbs_pool(struct exo_pool *pool, const float *buf, size_t n)
{
  const int64_t chunks = (int64_t)(n >> 18);
  double best = 0;
  for (int r = 0; r < 6; r++) {
    struct bw_job j = {buf, r % 2 ? 4 : 1};
    double t0 = exo_bench_now();
    exo_pool_run(pool, chunks, 1, bw_part, &j);
    double g = (double)chunks * (1 << 18) * 4 / (exo_bench_now() - t0) / 1e9;
    if (g > best)
      best = g;
  }
  return best;
}

int exo_bench_tinyllama(const char *dir, char *err, size_t errlen)
{
  char path[4200];
  struct stat sb;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (stat(path, &sb) == 0)
    return 0;
  struct exo_model_spec spec = {.arch = EXO_MODEL_ARCH_LLAMA, .vocab_size = 32000,
                                .hidden_size = 2048, .intermediate_size = 5632, .n_layers = 22,
                                .n_heads = 32, .n_kv_heads = 4, .dtype = EXO_DTYPE_F32,
                                .seed = 1, .max_position_embeddings = 2048};
  printf("writing TinyLlama-shaped f32 model to %s ...\n", dir);
  fflush(stdout);
  return exo_model_write_random(dir, &spec, NULL, err, errlen);
}

struct exo_weight *exo_bench_slot(struct exo_model *m, int l, int k)
{
  struct exo_layer_weights *w = &m->layers[l];
  struct exo_weight *s[7] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
  return s[k];
}

/* One format of a matrix: the benchmarks compare them on the same weights. */
int exo_bench_convert(struct exo_weight *w, enum exo_dtype dt, void **owned)
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

