/* tensor/quant.h: ggml's Q8_0 and Q4_0 block formats (as GGUF stores them), their
 * quantizers and dequantizers, and the q8 activation format the integer dot kernels
 * read. Pure functions over caller buffers: no allocation, no state.
 * Q8_0 block (34 bytes): f16 scale d, then 32 int8 q; value i = d * q[i].
 * Q4_0 block (18 bytes): f16 scale d, then 16 bytes; value i = d * ((qs[i] & 15) - 8)
 * and value i + 16 = d * ((qs[i] >> 4) - 8), i < 16. Blocks never straddle rows. */
#ifndef EXO_TENSOR_QUANT_H
#define EXO_TENSOR_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/model.h"

#define EXO_QK 32 /* elements per block, both formats */
#define EXO_Q8_0_BLOCK_BYTES 34
#define EXO_Q4_0_BLOCK_BYTES 18

/* Bytes of one row of cols elements of dt; 0 if cols does not fit dt (a block format
 * needs cols % 32 == 0) or dt is unknown. */
size_t exo_dtype_row_bytes(enum exo_dtype dt, int64_t cols);

/* Quantize n floats (n % 32 == 0) the way ggml's reference quantizers do (Q8_0:
 * d = amax / 127, q = round(x / d); Q4_0: d = (signed max-magnitude value) / -8,
 * q = min(15, trunc(x / d + 8.5))), so files we write read the same in llama.cpp. */
void exo_q8_0_quantize(const float *x, void *blocks, int64_t n);
void exo_q4_0_quantize(const float *x, void *blocks, int64_t n);
/* Block data back to n floats (exact: d * q in f32). */
void exo_q8_0_dequantize(const void *blocks, float *y, int64_t n);
void exo_q4_0_dequantize(const void *blocks, float *y, int64_t n);

/* The activation side of the integer dots: x[n] (n % 32 == 0) as int8 q[n] plus one
 * f32 scale per 32 (d = amax / 127, q = nearest-even(x * (127 / amax))). Scalar on every
 * path, so every kernel sees the same integers. */
void exo_q8_act_quantize(const float *x, int8_t *q, float *d, int64_t n);

/* Any row of w (every dtype) widened to f32 out[w->cols]. */
void exo_weight_row_f32(const struct exo_weight *w, int64_t row, float *out);

#endif
