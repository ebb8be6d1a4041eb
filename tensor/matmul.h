/* tensor/matmul.h: y = x . W^T for weights in their stored dtype (F32, F16, BF16, Q8_0,
 * Q4_0), with the CPU path chosen at run time (cpuid: AVX-512, AVX2+FMA+F16C, or
 * portable C; EXO_CPU=portable|avx2|avx512 overrides, read once), plus vectorized
 * f32 <-> f16 row conversion for hidden states on the wire.
 * exo_matmul_ex: decode (one row) reads each weight once with our own kernels, f32
 * accumulation (F32 on the portable path: OpenBLAS sgemv); multi-row products go
 * through OpenBLAS sgemm (half/quantized weights are widened a tile of rows at a time
 * into the workspace first).
 * exo_matmul_rows is the batch-invariant product (continuous batching: a request's
 * tokens must not depend on who shares its decode step).
 * Results per path: F16/BF16 agree with an f32 reference to ~1e-6 relative on every
 * path; Q8_0/Q4_0 are bit-identical on every path (the order is fixed: see matmul.c). */
#ifndef EXO_TENSOR_MATMUL_H
#define EXO_TENSOR_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/model.h"

enum exo_cpu_path {
  EXO_CPU_PORTABLE = 0,
  EXO_CPU_AVX2 = 1,   /* x86-64 AVX2 + FMA + F16C */
  EXO_CPU_AVX512 = 2, /* x86-64 AVX-512 F/BW/VL/VNNI */
};

/* The path exo_matmul_ex uses: the best the CPU supports, or EXO_CPU's choice when it
 * names a supported path (an unsupported or unknown value falls back to the best, with
 * one line on stderr). Decided on first use; thread-safe. */
enum exo_cpu_path exo_cpu_path(void);
const char *exo_cpu_path_name(enum exo_cpu_path p); /* "portable", "avx2", "avx512" */
/* 1 if this CPU (and this build) can run path p. */
int exo_cpu_path_supported(enum exo_cpu_path p);

struct exo_pool;

/* Scratch for the products of one caller: the q8 activation of a row and a tile of
 * widened weight rows. Grows on demand; reserve up front to keep decode allocation-free.
 * pool (borrowed, NULL: the caller alone) splits our own row kernels' products, by
 * output rows, over its threads when they are big enough (tensor/pool.h): each output
 * element is still one kernel call's dot on one thread, so the bits do not depend on
 * the thread count. OpenBLAS products (sgemm) keep OpenBLAS's threads. */
struct exo_matmul_ws {
  void *buf;
  size_t cap; /* bytes */
  struct exo_pool *pool;
};
#define EXO_MATMUL_TILE_ROWS 64

/* Makes ws big enough for any product with at most max_cols input features and
 * (when multi_row) n > 1. Returns 0 or -ENOMEM. */
int exo_matmul_ws_reserve(struct exo_matmul_ws *ws, int64_t max_cols, int multi_row);
void exo_matmul_ws_fini(struct exo_matmul_ws *ws); /* frees buf (not pool); ws may be reused */

/* y[n, w->rows] = x[n, w->cols] . W^T (+ bias[w->rows]); accumulate adds to y.
 * ws may be NULL (then buffers are allocated per call). Returns 0, -ENOTSUP for a dtype
 * or shape the kernels do not take (block formats need cols % 32 == 0), -ENOMEM. */
int exo_matmul_ex(struct exo_matmul_ws *ws, float *y, const float *x, int n,
                  const struct exo_weight *w, const float *bias, int accumulate);

/* Batch-invariant y[n, w->rows] = x[n, w->cols] . W^T (+ bias; accumulate adds to y):
 * row i of y is bit-identical to what the same call gives with n = 1 and x[i], for
 * every dtype (F32 included: no BLAS) on a given CPU path; paths may differ from each
 * other in the last bits (F32/F16/BF16) but each keeps one fixed summation order per
 * dot (documented in matmul.c / matmul_avx2.c / matmul_avx512.c; Q8_0/Q4_0 give the
 * same bits on every path, as in exo_matmul_ex). Each weight row is read from memory
 * once per group of up to 32 input rows (then from L1 for each input), so decode of n
 * sequences costs about one pass over the weights while compute allows.
 * Not exo_matmul_ex's bits: there n > 1 goes through sgemm.
 * ws as for exo_matmul_ex; exo_matmul_ws_reserve(.., multi_row = 1) makes room for the
 * q8 activations of 32 rows, so a reserved workspace never allocates (a smaller one
 * means more passes over the weights, never other results).
 * Returns 0, -ENOTSUP (dtype/shape, n < 1), -ENOMEM. */
int exo_matmul_rows(struct exo_matmul_ws *ws, float *y, const float *x, int n,
                    const struct exo_weight *w, const float *bias, int accumulate);
/* The same on an explicit path (tests); -ENOTSUP if the path is not supported here. */
int exo_matmul_rows_path(enum exo_cpu_path p, struct exo_matmul_ws *ws, float *y, const float *x,
                         int n, const struct exo_weight *w, const float *bias, int accumulate);

/* One-row product on an explicit path (tests compare paths with it). y is overwritten.
 * Returns -ENOTSUP if the path is not supported here or w's dtype/shape is not. */
int exo_matvec_path(enum exo_cpu_path p, struct exo_matmul_ws *ws, float *y, const float *x,
                    const struct exo_weight *w);

/* Hidden-state rows for the wire: f32 -> IEEE half (round to nearest even, overflow to
 * inf, NaN stays NaN: the same bits as dtype.h's exo_f32_to_f16) and back (exact).
 * Vectorized with F16C/AVX-512 where the CPU has it. dst may be unaligned. */
void exo_f16_pack(const float *src, uint16_t *dst, size_t n);
void exo_f16_unpack(const uint16_t *src, float *dst, size_t n);

#endif
