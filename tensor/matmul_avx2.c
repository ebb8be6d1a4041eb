/* tensor/matmul_avx2.c: the AVX2 + FMA + F16C row kernels of matmul.c. Compiled for
 * that ISA by the pragma below and called only when cpuid reports it. Block formats
 * use maddubs/madd for the exact int32 sums of 4 products and keep matmul_impl.h's
 * 16-lane order as two 8-lane accumulators (even blocks, odd blocks). */
#include "tensor/matmul_impl.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "tensor/dtype.h"
#include "tensor/quant.h"

static inline float exo_hsum256(__m256 a)
{
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

static inline __m256 exo_load_bf16x8(const unsigned char *p)
{
  __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static inline __m256 exo_load_f16x8(const unsigned char *p)
{
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 exo_load_f32x8(const unsigned char *p)
{
  return _mm256_loadu_ps((const float *)p);
}

static inline float exo_scalar_f32(const unsigned char *p)
{
  float v;
  memcpy(&v, p, 4);
  return v;
}

static inline float exo_scalar_bf16(const unsigned char *p)
{
  uint16_t h;
  memcpy(&h, p, 2);
  return exo_bf16_to_f32(h);
}

static inline float exo_scalar_f16(const unsigned char *p)
{
  uint16_t h;
  memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

/* The dots of one weight row p (es bytes per element) with N inputs x + i * cols.
 * Per dot, the fixed order of this path: 4 chains of 8 f32 lanes; element j of the
 * first 32 * (cols / 32) goes into chain (j / 8) % 4 by fma; then 8 at a time into
 * chain 0; s = hsum((c0 + c1) + (c2 + c3)); the last cols % 8 elements follow one by
 * one, s = fmaf(w, x, s). A weight vector is shared by the N inputs, each with its own
 * chains, so every dot performs the same operations whatever N is. */
#define EXO_DOTS(name, N, es, load, scalar)                                                  \
  static inline void name(float *s, const unsigned char *p, int64_t cols, const float *x)   \
  {                                                                                          \
    __m256 a[N][4];                                                                          \
    _Pragma("GCC unroll 4") for (int i = 0; i < N; i++) a[i][0] = a[i][1] = a[i][2] =        \
        a[i][3] = _mm256_setzero_ps();                                                       \
    int64_t j = 0;                                                                           \
    for (; j + 32 <= cols; j += 32) {                                                        \
      const __m256 w0 = load(p + es * j), w1 = load(p + es * (j + 8)),                       \
                   w2 = load(p + es * (j + 16)), w3 = load(p + es * (j + 24));               \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                    \
      {                                                                                      \
        const float *xi = x + (size_t)i * cols + j;                                          \
        a[i][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xi), a[i][0]);                         \
        a[i][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xi + 8), a[i][1]);                     \
        a[i][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xi + 16), a[i][2]);                    \
        a[i][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xi + 24), a[i][3]);                    \
      }                                                                                      \
    }                                                                                        \
    for (; j + 8 <= cols; j += 8) {                                                          \
      const __m256 w0 = load(p + es * j);                                                    \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++) a[i][0] =                          \
          _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + (size_t)i * cols + j), a[i][0]);           \
    }                                                                                        \
    _Pragma("GCC unroll 4") for (int i = 0; i < N; i++) s[i] = exo_hsum256(                  \
        _mm256_add_ps(_mm256_add_ps(a[i][0], a[i][1]), _mm256_add_ps(a[i][2], a[i][3])));   \
    for (; j < cols; j++) {                                                                  \
      const float wj = scalar(p + es * j);                                                   \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++) s[i] =                             \
          fmaf(wj, x[(size_t)i * cols + j], s[i]);                                           \
    }                                                                                        \
  }

/* Rows kernel (matmul_impl.h): inputs in pairs, then one; both give the same bits. */
#define EXO_HALF_ROWS(name, es, load, scalar)                                                \
  EXO_DOTS(name##_dot1, 1, es, load, scalar)                                                 \
  EXO_DOTS(name##_dot2, 2, es, load, scalar)                                                 \
  static void name(float *y, size_t ldy, const unsigned char *w, int64_t rows, int64_t cols, \
                   const float *x, int n, int add)                                           \
  {                                                                                          \
    const size_t rb = (size_t)cols * es;                                                     \
    for (int64_t r = 0; r < rows; r++) {                                                     \
      const unsigned char *p = w + (size_t)r * rb;                                           \
      float s[2];                                                                            \
      int i = 0;                                                                             \
      for (; i + 2 <= n; i += 2) {                                                           \
        name##_dot2(s, p, cols, x + (size_t)i * cols);                                       \
        for (int t = 0; t < 2; t++) {                                                        \
          float *o = y + (size_t)(i + t) * ldy + r;                                          \
          *o = add ? *o + s[t] : s[t];                                                       \
        }                                                                                    \
      }                                                                                      \
      for (; i < n; i++) {                                                                   \
        name##_dot1(s, p, cols, x + (size_t)i * cols);                                       \
        float *o = y + (size_t)i * ldy + r;                                                  \
        *o = add ? *o + s[0] : s[0];                                                         \
      }                                                                                      \
    }                                                                                        \
  }

EXO_HALF_ROWS(exo_f32_rows_avx2, 4, exo_load_f32x8, exo_scalar_f32)
EXO_HALF_ROWS(exo_bf16_rows_avx2, 2, exo_load_bf16x8, exo_scalar_bf16)
EXO_HALF_ROWS(exo_f16_rows_avx2, 2, exo_load_f16x8, exo_scalar_f16)

static inline float exo_scale_of(const unsigned char *b)
{
  uint16_t h;
  memcpy(&h, b, 2);
  return _cvtsh_ss(h);
}

/* matmul_impl.h's reduction of lanes a[0..7] (even) and a[8..15] (odd). */
static inline float exo_lanes_reduce(__m256 even, __m256 odd)
{
  __m256 t = _mm256_add_ps(even, odd);
  __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));
}

static inline float exo_q8_0_dot_avx2(const unsigned char *b, int64_t nb, const int8_t *xq,
                                     const float *xd)
{
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t i = 0; i < nb; i++, b += EXO_Q8_0_BLOCK_BYTES) {
    __m256i wv = _mm256_loadu_si256((const __m256i *)(b + 2));
    __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + i * EXO_QK));
    /* |w| (unsigned; -128 reads as 128) times x with w's sign: no int16 overflow */
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
    __m256i p = _mm256_madd_epi16(p16, ones);
    acc[i & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                 _mm256_set1_ps(exo_scale_of(b) * xd[i]), acc[i & 1]);
  }
  return exo_lanes_reduce(acc[0], acc[1]);
}

static inline float exo_q4_0_dot_avx2(const unsigned char *b, int64_t nb, const int8_t *xq,
                                     const float *xd)
{
  const __m256i ones = _mm256_set1_epi16(1), eights = _mm256_set1_epi8(8),
                low = _mm256_set1_epi8(15);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t i = 0; i < nb; i++, b += EXO_Q4_0_BLOCK_BYTES) {
    __m128i q = _mm_loadu_si128((const __m128i *)(b + 2));
    __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
    __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + i * EXO_QK));
    __m256i p = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(nib, xv), ones),
                                 _mm256_madd_epi16(_mm256_maddubs_epi16(eights, xv), ones));
    acc[i & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                 _mm256_set1_ps(exo_scale_of(b) * xd[i]), acc[i & 1]);
  }
  return exo_lanes_reduce(acc[0], acc[1]);
}

/* Block formats: one dot per (row, input), the row's blocks staying in L1 across the
 * inputs; the dot never looks at n, so batching cannot change it. */
#define EXO_QUANT_ROWS(name, dot, block_bytes)                                               \
  static void name(float *y, size_t ldy, const unsigned char *w, int64_t rows, int64_t cols, \
                   const int8_t *xq, const float *xd, int n, int add)                        \
  {                                                                                          \
    const int64_t nb = cols / EXO_QK;                                                        \
    const size_t rb = (size_t)nb * (block_bytes);                                            \
    for (int64_t r = 0; r < rows; r++)                                                       \
      for (int i = 0; i < n; i++) {                                                          \
        const float s = dot(w + (size_t)r * rb, nb, xq + (size_t)i * cols, xd + (size_t)i * nb); \
        float *o = y + (size_t)i * ldy + r;                                                  \
        *o = add ? *o + s : s;                                                               \
      }                                                                                      \
  }

EXO_QUANT_ROWS(exo_q8_0_rows_avx2, exo_q8_0_dot_avx2, EXO_Q8_0_BLOCK_BYTES)
EXO_QUANT_ROWS(exo_q4_0_rows_avx2, exo_q4_0_dot_avx2, EXO_Q4_0_BLOCK_BYTES)

static void exo_f16_pack_avx2(const float *src, uint16_t *dst, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++)
    dst[i] = exo_f32_to_f16(src[i]);
}

static void exo_f16_unpack_avx2(const uint16_t *src, float *dst, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  for (; i < n; i++)
    dst[i] = exo_f16_to_f32(src[i]);
}

static const struct exo_matmul_kernels exo_kernels_avx2 = {
  .f32 = exo_f32_rows_avx2,
  .f16 = exo_f16_rows_avx2,
  .bf16 = exo_bf16_rows_avx2,
  .q8_0 = exo_q8_0_rows_avx2,
  .q4_0 = exo_q4_0_rows_avx2,
  .f16_pack = exo_f16_pack_avx2,
  .f16_unpack = exo_f16_unpack_avx2,
};

const struct exo_matmul_kernels *exo_matmul_kernels_avx2(void)
{
  return &exo_kernels_avx2;
}
#else
const struct exo_matmul_kernels *exo_matmul_kernels_avx2(void)
{
  return NULL;
}
#endif
