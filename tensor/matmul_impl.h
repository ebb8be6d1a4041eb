/* tensor/matmul_impl.h: private to tensor/matmul*.c: the per-path kernel table.
 * Each x86 file (matmul_avx2.c, matmul_avx512.c) compiles its functions for its own
 * instruction set with a target pragma, so the rest of the library stays baseline
 * x86-64 and runs anywhere; matmul.c calls them only after cpuid says they may run. */
#ifndef EXO_TENSOR_MATMUL_IMPL_H
#define EXO_TENSOR_MATMUL_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* Every row kernel: for r < rows and i < n, y[i * ldy + r] = dot(row r of w, input i)
 * (+ the old y[i * ldy + r] when add). w points at row 0; rows are row_bytes apart (cols
 * elements; blocks for Q8_0/Q4_0). Input i is x + i * cols (f32), or for the block
 * formats the q8 activation xq + i * cols with its scales xd + i * (cols / 32).
 * Batch invariance: the value of dot(row r, input i) must not depend on n, i or the
 * other inputs; each path reads a weight row once (from memory; then from L1) for all
 * n inputs, and forms each dot with the same operations as for n == 1. */
typedef void (*exo_half_rows_fn)(float *y, size_t ldy, const unsigned char *w, int64_t rows,
                                 int64_t cols, const float *x, int n, int add);
typedef void (*exo_quant_rows_fn)(float *y, size_t ldy, const unsigned char *w, int64_t rows,
                                  int64_t cols, const int8_t *xq, const float *xd, int n,
                                  int add);

struct exo_matmul_kernels {
  exo_half_rows_fn f32, f16, bf16; /* f32: w holds floats (possibly unaligned) */
  exo_quant_rows_fn q8_0, q4_0;
  void (*f16_pack)(const float *src, uint16_t *dst, size_t n);
  void (*f16_unpack)(const uint16_t *src, float *dst, size_t n);
};

/* NULL when the build has no such path (not x86-64). */
const struct exo_matmul_kernels *exo_matmul_kernels_avx2(void);
const struct exo_matmul_kernels *exo_matmul_kernels_avx512(void);

/* The fixed summation order of the block-format dots, shared by every path:
 * 16 f32 lanes; block i adds into lanes (i & 1) * 8 + j, j < 8, the value
 * fma((float)p_j, s_i, lane) where p_j is the exact int32 sum of elements 4j..4j+3 of
 * the block times the activation and s_i = f32(d_w) * d_x. Then t[i] = a[i] + a[i+8],
 * u[i] = t[i] + t[i+4], v[i] = u[i] + u[i+2], result v[0] + v[1]. */
static inline float exo_lanes16_sum(const float *a)
{
  float t[8], u[4], v[2];
  for (int i = 0; i < 8; i++)
    t[i] = a[i] + a[i + 8];
  for (int i = 0; i < 4; i++)
    u[i] = t[i] + t[i + 4];
  for (int i = 0; i < 2; i++)
    v[i] = u[i] + u[i + 2];
  return v[0] + v[1];
}

#endif
