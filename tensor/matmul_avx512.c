/* tensor/matmul_avx512.c: the AVX-512 (F, BW, VL, VNNI) row kernels of matmul.c.
 * Compiled for that ISA by the pragma below and called only when cpuid reports it.
 * F32 and half formats accumulate in f32 (2 chains per dot; blocks of 3 weight rows x
 * 4 inputs sharing their loads, or 4 rows for one input, rows far apart, prefetching);
 * block formats do exact int8 dots with VNNI (vpdpbusd: offset-unsigned weights times x)
 * and follow matmul_impl.h's summation order, two blocks per 512-bit register. */
#include "tensor/matmul_impl.h"

#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#include <immintrin.h>
#include <string.h>

#include "tensor/quant.h"

/* Decode (one input) reads each weight once from memory. It runs 4 rows at once taken a
 * quarter of the matrix apart (r, r + q, r + 2q, r + 3q: four sequential streams in
 * different pages, which the hardware prefetchers follow; 4 adjacent rows of a quantized
 * matrix share pages and were read at half the rate), and every 64 bytes each stream
 * prefetches the same place in its next row into L2. Measured on Zen 4 (one thread,
 * 36 matrices of 5632 x 2048, against a one-stream read in the same run): BF16 62% ->
 * 92%, F16 64% -> 92%, Q8_0 85% -> 117%, Q4_0 58% -> 81%. Prefetches never fault. */
#define EXO_PREFETCH_NEXT_ROW(p, rb) _mm_prefetch((const char *)(p) + (rb), _MM_HINT_T1)

static inline __m512 exo_load_bf16x16(const unsigned char *p)
{
  __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

static inline __m512 exo_load_f16x16(const unsigned char *p)
{
  return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static inline __m512 exo_load_f32x16(const unsigned char *p)
{
  return _mm512_loadu_ps((const float *)p);
}

static inline __m512 exo_bf16_from_reg(__m256i h)
{
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Masked tails: the first (bits of k) elements at p, zeros after. */
static inline __m512 exo_tail_f32(const unsigned char *p, __mmask16 k)
{
  return _mm512_maskz_loadu_ps(k, (const float *)p);
}

static inline __m512 exo_tail_bf16(const unsigned char *p, __mmask16 k)
{
  return exo_bf16_from_reg(_mm256_maskz_loadu_epi16(k, p));
}

static inline __m512 exo_tail_f16(const unsigned char *p, __mmask16 k)
{
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
}

/* The end of every f32-accumulating dot (EXO_DOTS, EXO_DOTS_BF16EO): a remaining full 16
 * into chain 0, the last cols % 16 (masked) into chain 1, then s = reduce_add(c0 + c1). */
#define EXO_DOTS_FINISH(R, N, es, load, tail)                                                \
    if (j + 16 <= cols) {                                                                    \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                    \
      {                                                                                      \
        const __m512 xv = _mm512_loadu_ps(x + (size_t)i * cols + j);                         \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) a[r][i][0] =                     \
            _mm512_fmadd_ps(load(p + (size_t)r * step + es * j), xv, a[r][i][0]);            \
      }                                                                                      \
      j += 16;                                                                               \
    }                                                                                        \
    if (j < cols) {                                                                          \
      const __mmask16 k = (__mmask16)((1u << (cols - j)) - 1);                               \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                    \
      {                                                                                      \
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + (size_t)i * cols + j);                \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) a[r][i][1] =                     \
            _mm512_fmadd_ps(tail(p + (size_t)r * step + es * j, k), xv, a[r][i][1]);         \
      }                                                                                      \
    }                                                                                        \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                      \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                    \
        s[r * N + i] = _mm512_reduce_add_ps(_mm512_add_ps(a[r][i][0], a[r][i][1]));

/* The dots of R weight rows (p, rows step bytes apart, each rb bytes, es bytes per
 * element) with N inputs (x + i * cols), s[r * N + i]. Per dot, the fixed order of this path: 2 chains of 16
 * f32 lanes; element j of the first 32 * (cols / 32) goes into chain (j / 16) % 2 by
 * fma; a remaining full 16 into chain 0; the last cols % 16 (masked) into chain 1;
 * result reduce_add(c0 + c1). Each dot keeps its own chains, a weight vector is shared
 * by the N inputs and an input vector by the R rows, so every dot performs the same
 * operations whatever R and N are (2 chains are enough to hide fma latency at n = 1,
 * where the weights' bandwidth is the limit anyway, and leave registers for R x N). */
#define EXO_DOTS(name, R, N, es, load, tail)                                                 \
  static inline void name(float *s, const unsigned char *p, size_t rb, int64_t cols,         \
                          const float *x, size_t step, int pf)                               \
  {                                                                                          \
    __m512 a[R][N][2];                                                                       \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                      \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                    \
        a[r][i][0] = a[r][i][1] = _mm512_setzero_ps();                                       \
    int64_t j = 0;                                                                           \
    for (; j + 32 <= cols; j += 32) {                                                        \
      _Pragma("GCC unroll 2") for (int c = 0; c < 2; c++)                                    \
      {                                                                                      \
        __m512 wv[R];                                                                        \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                  \
        {                                                                                    \
          if (pf && (es * 16 * c) % 64 == 0)                                             \
            EXO_PREFETCH_NEXT_ROW(p + (size_t)r * step + es * (j + 16 * c), rb);             \
          wv[r] = load(p + (size_t)r * step + es * (j + 16 * c));                            \
        }                                                                                    \
        _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                  \
        {                                                                                    \
          const __m512 xv = _mm512_loadu_ps(x + (size_t)i * cols + j + 16 * c);              \
          _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                \
            a[r][i][c] = _mm512_fmadd_ps(wv[r], xv, a[r][i][c]);                             \
        }                                                                                    \
      }                                                                                      \
    }                                                                                        \
    EXO_DOTS_FINISH(R, N, es, load, tail);                                                   \
  }

/* BF16 dots, even/odd form: a 512-bit load holds 32 bf16; the even elements widen with
 * one shift, the odd with one mask (no cross-lane shuffle), and meet x's even and odd
 * elements (split once per 32 inputs, shared by the R rows). Chain 0 sums the even
 * elements of each full 32, chain 1 the odd; a remaining full 16 goes into chain 0 in
 * order, the last cols % 16 (masked) into chain 1; result reduce_add(c0 + c1). */
#define EXO_DOTS_BF16EO(name, R, N)                                                          \
  static inline void name(float *s, const unsigned char *p, size_t rb, int64_t cols,         \
                          const float *x, size_t step, int pf)                               \
  {                                                                                          \
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0); \
    const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1); \
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);                                  \
    __m512 a[R][N][2];                                                                       \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                      \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                    \
        a[r][i][0] = a[r][i][1] = _mm512_setzero_ps();                                       \
    int64_t j = 0;                                                                           \
    for (; j + 32 <= cols; j += 32) {                                                        \
      __m512 wv[R][2];                                                                       \
      _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                    \
      {                                                                                      \
        if (pf)                                                                              \
          EXO_PREFETCH_NEXT_ROW(p + (size_t)r * step + 2 * j, rb);                           \
        const __m512i v = _mm512_loadu_si512(p + (size_t)r * step + 2 * j);                  \
        wv[r][0] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));                            \
        wv[r][1] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));                             \
      }                                                                                      \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                    \
      {                                                                                      \
        const __m512 x0 = _mm512_loadu_ps(x + (size_t)i * cols + j);                         \
        const __m512 x1 = _mm512_loadu_ps(x + (size_t)i * cols + j + 16);                    \
        const __m512 xe = _mm512_permutex2var_ps(x0, ev, x1);                                \
        const __m512 xo = _mm512_permutex2var_ps(x0, od, x1);                                \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                  \
        {                                                                                    \
          a[r][i][0] = _mm512_fmadd_ps(wv[r][0], xe, a[r][i][0]);                            \
          a[r][i][1] = _mm512_fmadd_ps(wv[r][1], xo, a[r][i][1]);                            \
        }                                                                                    \
      }                                                                                      \
    }                                                                                        \
    EXO_DOTS_FINISH(R, N, 2, exo_load_bf16x16, exo_tail_bf16);                              \
  }

/* Rows kernel (matmul_impl.h): blocks of 3 rows x 4 inputs (24 accumulators: each input
 * vector loaded once per 3 fmas, each weight vector once per 4), 4-row blocks when there
 * is one input; a block's rows are a third (a quarter) of the matrix apart, so the weights
 * stream from memory in 3 (4) sequential streams, each prefetching its next row (for
 * several inputs, BF16 at 4-8 inputs read 1.3-1.4x faster than with adjacent rows); 1-row
 * and 1-input remainders; all give the same bits (see EXO_DOTS). */
#define EXO_HALF_ROWS(name, es, DOTS)                                                        \
  DOTS(name##_3x4, 3, 4)                                                                     \
  DOTS(name##_4x1, 4, 1)                                                                     \
  DOTS(name##_3x1, 3, 1)                                                                     \
  DOTS(name##_1x4, 1, 4)                                                                     \
  DOTS(name##_1x1, 1, 1)                                                                     \
  /* y rows r0, r0 + q, ..., r0 + (R - 1) q for inputs i0 .. i0 + N - 1 */              \
  static inline void name##_put(float *y, size_t ldy, int64_t r0, int64_t q, int i0, int R,  \
                                int N, const float *s, int add)                              \
  {                                                                                          \
    for (int r = 0; r < R; r++)                                                              \
      for (int i = 0; i < N; i++) {                                                          \
        float *o = y + (size_t)(i0 + i) * ldy + r0 + r * q;                                  \
        *o = add ? *o + s[r * N + i] : s[r * N + i];                                         \
      }                                                                                      \
  }                                                                                          \
  static void name(float *y, size_t ldy, const unsigned char *w, int64_t rows, int64_t cols, \
                   const float *x, int n, int add)                                           \
  {                                                                                          \
    const size_t rb = (size_t)cols * es;                                                     \
    float s[32];                                                                             \
    int64_t r = 0;                                                                           \
    if (n == 1 && rows >= 4) {                                                               \
      const int64_t q = rows / 4;                                                            \
      for (; r < q; r++) {                                                                   \
        name##_4x1(s, w + (size_t)r * rb, rb, cols, x, (size_t)q * rb, 1);                   \
        name##_put(y, ldy, r, q, 0, 4, 1, s, add);                                           \
      }                                                                                      \
      r = 4 * q;                                                                             \
    } else if (n > 1 && rows >= 3) { /* the first group of inputs prefetches */             \
      const int64_t q = rows / 3;                                                            \
      for (; r < q; r++) {                                                                   \
        const unsigned char *p = w + (size_t)r * rb;                                         \
        int i = 0;                                                                           \
        for (; i + 4 <= n; i += 4) {                                                         \
          name##_3x4(s, p, rb, cols, x + (size_t)i * cols, (size_t)q * rb, i == 0);          \
          name##_put(y, ldy, r, q, i, 3, 4, s, add);                                         \
        }                                                                                    \
        for (; i < n; i++) {                                                                 \
          name##_3x1(s, p, rb, cols, x + (size_t)i * cols, (size_t)q * rb, i == 0);          \
          name##_put(y, ldy, r, q, i, 3, 1, s, add);                                         \
        }                                                                                    \
      }                                                                                      \
      r = 3 * q;                                                                             \
    }                                                                                        \
    for (; r < rows; r++) {                                                                  \
      const unsigned char *p = w + (size_t)r * rb;                                           \
      int i = 0;                                                                             \
      for (; i + 4 <= n; i += 4) {                                                           \
        name##_1x4(s, p, rb, cols, x + (size_t)i * cols, rb, 0);                             \
        name##_put(y, ldy, r, 1, i, 1, 4, s, add);                                           \
      }                                                                                      \
      for (; i < n; i++) {                                                                   \
        name##_1x1(s, p, rb, cols, x + (size_t)i * cols, rb, 0);                             \
        name##_put(y, ldy, r, 1, i, 1, 1, s, add);                                           \
      }                                                                                      \
    }                                                                                        \
  }

#define EXO_DOTS_F32(name, R, N) EXO_DOTS(name, R, N, 4, exo_load_f32x16, exo_tail_f32)
#define EXO_DOTS_F16(name, R, N) EXO_DOTS(name, R, N, 2, exo_load_f16x16, exo_tail_f16)
EXO_HALF_ROWS(exo_f32_rows_avx512, 4, EXO_DOTS_F32)
EXO_HALF_ROWS(exo_bf16_rows_avx512, 2, EXO_DOTS_BF16EO)
EXO_HALF_ROWS(exo_f16_rows_avx512, 2, EXO_DOTS_F16)

/* Block formats. A pair of blocks (i, i + 1) fills one 512-bit register: 64 weights
 * against 64 q8 activations, one int32 lane per 4 products (vpdpbusd: unsigned weights
 * times signed activations). Weights are made unsigned by an offset, w + k (Q8_0: w xor
 * 0x80 = w + 128; Q4_0: the nibble n = (w + 8)), and the offset's share k * (sum of the 4
 * activations) starts the lane (exact in int32): that term and the activations' scales
 * depend on the input only, so R rows share them (exo_qx). Q4_0 keeps nibbles where a
 * shift and a mask put them: lanes hold (block i groups 0-3, block i+1 groups 0-3, block
 * i groups 4-7, block i+1 groups 4-7), the activations are arranged to match, and the
 * accumulator is put back in matmul_impl.h's lane order before its reduction; lanes never
 * mix before then, so every lane sees the fmas of the scalar order. */
struct exo_qx {
  __m512i x;    /* the pair's activations, in the weights' byte order */
  __m512i base; /* -k * sum of each lane's 4 activations */
  __m512 d;     /* the activations' scales, in the lanes' order */
};

/* 128-bit lanes (0, 2, 1, 3): natural order <-> Q4_0's nibble order (its own inverse). */
#define EXO_Q4_ORDER _MM_SHUFFLE(3, 1, 2, 0)

static inline struct exo_qx exo_qx_pair(const int8_t *xq, const float *xd, int k, int q4)
{
  struct exo_qx q;
  __m512i x = _mm512_loadu_si512(xq);
  uint64_t d2;
  memcpy(&d2, xd, 8);
  __m512 d = _mm512_permutexvar_ps(
      _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
      _mm512_castps128_ps512(_mm_castsi128_ps(_mm_cvtsi64_si128((long long)d2))));
  if (q4) {
    x = _mm512_shuffle_i64x2(x, x, EXO_Q4_ORDER);
    d = _mm512_shuffle_f32x4(d, d, EXO_Q4_ORDER);
  }
  q.x = x;
  q.base = _mm512_sub_epi32(_mm512_setzero_si512(),
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)k), x));
  q.d = d;
  return q;
}

/* f32 of the two blocks' f16 scales, lanes (0-7: b0, 8-15: b1), or in Q4_0's order. */
static inline __m512 exo_w_scales(const unsigned char *b0, const unsigned char *b1, int q4)
{
  uint16_t h0, h1;
  memcpy(&h0, b0, 2);
  memcpy(&h1, b1, 2);
  const __m256i v0 = _mm256_set1_epi16((short)h0), v1 = _mm256_set1_epi16((short)h1);
  /* the blend's mask must be a constant to every compiler */
  return _mm512_cvtph_ps(q4 ? _mm256_blend_epi32(v0, v1, 0xcc) : _mm256_blend_epi32(v0, v1, 0xf0));
}

/* The unsigned weights of a pair of blocks at b. */
static inline __m512i exo_q8_0_pair(const unsigned char *b)
{
  const __m256i w0 = _mm256_loadu_si256((const __m256i *)(b + 2));
  const __m256i w1 = _mm256_loadu_si256((const __m256i *)(b + EXO_Q8_0_BLOCK_BYTES + 2));
  return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1),
                          _mm512_set1_epi8((char)0x80));
}

static inline __m512i exo_q4_0_pair(const unsigned char *b)
{
  const __m256i q = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b + 2))),
      _mm_loadu_si128((const __m128i *)(b + EXO_Q4_0_BLOCK_BYTES + 2)), 1);
  const __m512i n = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
  return _mm512_and_si512(n, _mm512_set1_epi8(15));
}

/* The unsigned weights of one block at b, in natural order (an odd last block). */
static inline __m256i exo_q8_0_one(const unsigned char *b)
{
  return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(b + 2)), _mm256_set1_epi8((char)0x80));
}

static inline __m256i exo_q4_0_one(const unsigned char *b)
{
  const __m128i q = _mm_loadu_si128((const __m128i *)(b + 2));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(15));
}

static inline float exo_scale_of(const unsigned char *b)
{
  uint16_t h;
  memcpy(&h, b, 2);
  return _cvtsh_ss(h);
}

static inline float exo_lanes_reduce512(__m512 acc)
{
  /* matmul_impl.h's order: t = lo + hi, u = t0..3 + t4..7, v = u0,1 + u2,3, v0 + v1 */
  __m256 t = _mm256_add_ps(_mm512_castps512_ps256(acc),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
  __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));
}

/* One odd last block (index i, even: lanes 0-7) in natural lane order. */
static inline __m512 exo_q_last(__m512 acc, __m512i w, const int8_t *xq, float sd, int k)
{
  const __m512i x = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)xq));
  const __m512i base = _mm512_sub_epi32(
      _mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)k), x));
  const __m512i p = _mm512_dpbusd_epi32(base, w, x);
  return _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(sd), acc, (__mmask16)0x00ff);
}

/* The dots of R weight rows (step bytes apart, each rb bytes) with N inputs, s[r * N + i]. */
#define EXO_QDOTS(name, R, N, bb, k, q4, pair, one)                                          \
  static inline void name(float *s, const unsigned char *w, size_t step, size_t rb,          \
                          int64_t nb, const int8_t *xq, const float *xd, int64_t cols)       \
  {                                                                                          \
    __m512 a[R][N];                                                                          \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                      \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++) a[r][i] = _mm512_setzero_ps();     \
    int64_t b = 0;                                                                           \
    for (; b + 1 < nb; b += 2) {                                                             \
      struct exo_qx qx[N];                                                                   \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++) qx[i] =                            \
          exo_qx_pair(xq + (size_t)i * cols + b * EXO_QK, xd + (size_t)i * (cols / EXO_QK) + b, k, q4); \
      _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                    \
      {                                                                                      \
        const unsigned char *p = w + (size_t)r * step + (size_t)b * (bb);                    \
        if (N == 1)                                                                          \
          EXO_PREFETCH_NEXT_ROW(p, rb);                                                      \
        const __m512i wv = pair(p);                                                          \
        const __m512 sw = exo_w_scales(p, p + (bb), q4);                                     \
        _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                  \
        {                                                                                    \
          const __m512i pi = _mm512_dpbusd_epi32(qx[i].base, wv, qx[i].x);                   \
          a[r][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pi), _mm512_mul_ps(sw, qx[i].d),      \
                                    a[r][i]);                                                \
        }                                                                                    \
      }                                                                                      \
    }                                                                                        \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                      \
      _Pragma("GCC unroll 4") for (int i = 0; i < N; i++)                                    \
      {                                                                                      \
        __m512 acc = q4 ? _mm512_shuffle_f32x4(a[r][i], a[r][i], EXO_Q4_ORDER) : a[r][i];    \
        if (b < nb) {                                                                        \
          const unsigned char *p = w + (size_t)r * step + (size_t)b * (bb);                  \
          acc = exo_q_last(acc, _mm512_zextsi256_si512(one(p)),                              \
                           xq + (size_t)i * cols + b * EXO_QK,                               \
                           exo_scale_of(p) * xd[(size_t)i * (cols / EXO_QK) + b], k);        \
        }                                                                                    \
        s[r * N + i] = exo_lanes_reduce512(acc);                                             \
      }                                                                                      \
  }

/* Rows kernel: 4-row blocks for one input (decode), 2 rows x 4 inputs otherwise, with
 * 1-row and 1-input remainders; every block shape forms each dot identically. */
#define EXO_QUANT_ROWS(name, bb, k, q4, pair, one)                                           \
  EXO_QDOTS(name##_4x1, 4, 1, bb, k, q4, pair, one)                                          \
  EXO_QDOTS(name##_2x4, 2, 4, bb, k, q4, pair, one)                                          \
  EXO_QDOTS(name##_2x1, 2, 1, bb, k, q4, pair, one)                                          \
  EXO_QDOTS(name##_1x4, 1, 4, bb, k, q4, pair, one)                                          \
  EXO_QDOTS(name##_1x1, 1, 1, bb, k, q4, pair, one)                                          \
  static void name(float *y, size_t ldy, const unsigned char *w, int64_t rows, int64_t cols, \
                   const int8_t *xq, const float *xd, int n, int add)                        \
  {                                                                                          \
    const int64_t nb = cols / EXO_QK;                                                        \
    const size_t rb = (size_t)nb * (bb);                                                     \
    float s[8];                                                                              \
    int64_t r = 0;                                                                           \
    if (n == 1 && rows >= 4) {                                                               \
      const int64_t q = rows / 4;                                                            \
      for (; r < q; r++) {                                                                   \
        name##_4x1(s, w + (size_t)r * rb, (size_t)q * rb, rb, nb, xq, xd, cols);             \
        for (int k4 = 0; k4 < 4; k4++)                                                       \
          y[r + k4 * q] = add ? y[r + k4 * q] + s[k4] : s[k4];                               \
      }                                                                                      \
      r = 4 * q;                                                                             \
    }                                                                                        \
    for (; r + 2 <= rows; r += 2) {                                                          \
      int i = 0;                                                                             \
      for (; i + 4 <= n; i += 4) {                                                           \
        name##_2x4(s, w + (size_t)r * rb, rb, rb, nb, xq + (size_t)i * cols, xd + (size_t)i * nb, cols); \
        exo_f32_rows_avx512_put(y, ldy, r, 1, i, 2, 4, s, add);                                 \
      }                                                                                      \
      for (; i < n; i++) {                                                                   \
        name##_2x1(s, w + (size_t)r * rb, rb, rb, nb, xq + (size_t)i * cols, xd + (size_t)i * nb, cols); \
        exo_f32_rows_avx512_put(y, ldy, r, 1, i, 2, 1, s, add);                                 \
      }                                                                                      \
    }                                                                                        \
    for (; r < rows; r++) {                                                                  \
      int i = 0;                                                                             \
      for (; i + 4 <= n; i += 4) {                                                           \
        name##_1x4(s, w + (size_t)r * rb, rb, rb, nb, xq + (size_t)i * cols, xd + (size_t)i * nb, cols); \
        exo_f32_rows_avx512_put(y, ldy, r, 1, i, 1, 4, s, add);                                 \
      }                                                                                      \
      for (; i < n; i++) {                                                                   \
        name##_1x1(s, w + (size_t)r * rb, rb, rb, nb, xq + (size_t)i * cols, xd + (size_t)i * nb, cols); \
        exo_f32_rows_avx512_put(y, ldy, r, 1, i, 1, 1, s, add);                                 \
      }                                                                                      \
    }                                                                                        \
  }

EXO_QUANT_ROWS(exo_q8_0_rows_avx512, EXO_Q8_0_BLOCK_BYTES, 128, 0, exo_q8_0_pair, exo_q8_0_one)
EXO_QUANT_ROWS(exo_q4_0_rows_avx512, EXO_Q4_0_BLOCK_BYTES, 8, 1, exo_q4_0_pair, exo_q4_0_one)

static void exo_f16_pack_avx512(const float *src, uint16_t *dst, size_t n)
{
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i *)(dst + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  if (i < n) {
    const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
    __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_mask_storeu_epi16(dst + i, k, h);
  }
}

static void exo_f16_unpack_avx512(const uint16_t *src, float *dst, size_t n)
{
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
  if (i < n) {
    const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(dst + i, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, src + i)));
  }
}

static const struct exo_matmul_kernels exo_kernels_avx512 = {
  .f32 = exo_f32_rows_avx512,
  .f16 = exo_f16_rows_avx512,
  .bf16 = exo_bf16_rows_avx512,
  .q8_0 = exo_q8_0_rows_avx512,
  .q4_0 = exo_q4_0_rows_avx512,
  .f16_pack = exo_f16_pack_avx512,
  .f16_unpack = exo_f16_unpack_avx512,
};

const struct exo_matmul_kernels *exo_matmul_kernels_avx512(void)
{
  return &exo_kernels_avx512;
}
#else
const struct exo_matmul_kernels *exo_matmul_kernels_avx512(void)
{
  return NULL;
}
#endif
