/* tensor/dtype.h: exact conversions between IEEE half (f16), bfloat16 and f32.
 * Widening (f16/bf16 -> f32) is exact for every bit pattern, subnormals, inf and NaN
 * included (NaN payloads kept, shifted). Narrowing rounds to nearest, ties to even,
 * overflows to inf and keeps NaN a NaN. Pure functions: no state, no allocation. */
#ifndef EXO_TENSOR_DTYPE_H
#define EXO_TENSOR_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/model.h"

float exo_f16_to_f32(uint16_t h);
float exo_bf16_to_f32(uint16_t b);
uint16_t exo_f32_to_f16(float f);  /* round to nearest even */
uint16_t exo_f32_to_bf16(float f); /* round to nearest even */

/* Bulk forms; src and dst must not overlap. src may be unaligned (read bytewise-safe). */
void exo_f16_to_f32_n(const void *src, float *dst, size_t n);
void exo_bf16_to_f32_n(const void *src, float *dst, size_t n);
void exo_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void exo_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);

/* Bytes per element of a model dtype (4 or 2; 0 for the block formats Q8_0/Q4_0,
 * whose sizes come from quant.h's exo_dtype_row_bytes). */
size_t exo_dtype_size(enum exo_dtype dt);
/* "F32", "F16", "BF16" as safetensors spells them; "Q8_0", "Q4_0" as ggml does. */
const char *exo_dtype_name(enum exo_dtype dt);

#endif
