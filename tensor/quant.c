/* tensor/quant.c: Q8_0 / Q4_0 block codecs and the q8 activation quantizer (quant.h).
 * Block bytes are read and written bytewise (blocks are 34 or 18 bytes, so never
 * aligned); the f16 scale is little-endian as in GGUF files. Must stay scalar and
 * deterministic: the SIMD dot kernels rely on this file's integers being the same
 * on every path. */
#include "tensor/quant.h"

#include <math.h>
#include <string.h>

#include "tensor/dtype.h"

size_t exo_dtype_row_bytes(enum exo_dtype dt, int64_t cols)
{
  if (cols < 0)
    return 0;
  switch (dt) {
  case EXO_DTYPE_F32: return (size_t)cols * 4;
  case EXO_DTYPE_F16:
  case EXO_DTYPE_BF16: return (size_t)cols * 2;
  case EXO_DTYPE_Q8_0:
    return cols % EXO_QK ? 0 : (size_t)(cols / EXO_QK) * EXO_Q8_0_BLOCK_BYTES;
  case EXO_DTYPE_Q4_0:
    return cols % EXO_QK ? 0 : (size_t)(cols / EXO_QK) * EXO_Q4_0_BLOCK_BYTES;
  }
  return 0;
}

static float exo_block_scale(const unsigned char *b)
{
  return exo_f16_to_f32((uint16_t)(b[0] | (b[1] << 8)));
}

static void exo_block_set_scale(unsigned char *b, float d)
{
  uint16_t h = exo_f32_to_f16(d);
  b[0] = (unsigned char)(h & 0xff);
  b[1] = (unsigned char)(h >> 8);
}

void exo_q8_0_quantize(const float *x, void *blocks, int64_t n)
{
  unsigned char *b = blocks;
  for (int64_t i = 0; i < n; i += EXO_QK, b += EXO_Q8_0_BLOCK_BYTES) {
    float amax = 0.0f;
    for (int j = 0; j < EXO_QK; j++)
      if (fabsf(x[i + j]) > amax)
        amax = fabsf(x[i + j]);
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    exo_block_set_scale(b, d);
    for (int j = 0; j < EXO_QK; j++) {
      float v = roundf(x[i + j] * id);
      /* NaN and anything rounding past the range (inf scale) clamp instead of UB. */
      int8_t q = v >= 127.0f ? 127 : v <= -127.0f ? -127 : v == v ? (int8_t)v : 0;
      b[2 + j] = (unsigned char)q;
    }
  }
}

void exo_q4_0_quantize(const float *x, void *blocks, int64_t n)
{
  unsigned char *b = blocks;
  for (int64_t i = 0; i < n; i += EXO_QK, b += EXO_Q4_0_BLOCK_BYTES) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < EXO_QK; j++)
      if (fabsf(x[i + j]) > amax) {
        amax = fabsf(x[i + j]);
        max = x[i + j];
      }
    /* The largest magnitude maps to -8 exactly: the signed value keeps the side
     * that has one more level. */
    const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    exo_block_set_scale(b, d);
    uint8_t q[EXO_QK];
    for (int j = 0; j < EXO_QK; j++) {
      float v = x[i + j] * id + 8.5f;
      q[j] = v >= 15.0f ? 15 : v >= 0.0f ? (uint8_t)v : 0;
    }
    for (int j = 0; j < EXO_QK / 2; j++)
      b[2 + j] = (unsigned char)(q[j] | (q[j + EXO_QK / 2] << 4));
  }
}

void exo_q8_0_dequantize(const void *blocks, float *y, int64_t n)
{
  const unsigned char *b = blocks;
  for (int64_t i = 0; i < n; i += EXO_QK, b += EXO_Q8_0_BLOCK_BYTES) {
    const float d = exo_block_scale(b);
    for (int j = 0; j < EXO_QK; j++)
      y[i + j] = d * (float)(int8_t)b[2 + j];
  }
}

void exo_q4_0_dequantize(const void *blocks, float *y, int64_t n)
{
  const unsigned char *b = blocks;
  for (int64_t i = 0; i < n; i += EXO_QK, b += EXO_Q4_0_BLOCK_BYTES) {
    const float d = exo_block_scale(b);
    for (int j = 0; j < EXO_QK / 2; j++) {
      y[i + j] = d * (float)((b[2 + j] & 15) - 8);
      y[i + j + EXO_QK / 2] = d * (float)((b[2 + j] >> 4) - 8);
    }
  }
}

void exo_q8_act_quantize(const float *x, int8_t *q, float *d, int64_t n)
{
  for (int64_t i = 0; i < n; i += EXO_QK) {
    float amax = 0.0f;
    for (int j = 0; j < EXO_QK; j++)
      if (fabsf(x[i + j]) > amax)
        amax = fabsf(x[i + j]);
    const float s = amax / 127.0f, id = s != 0.0f ? 127.0f / amax : 0.0f;
    d[i / EXO_QK] = s;
    for (int j = 0; j < EXO_QK; j++) {
      /* Adding and removing 1.5 * 2^23 rounds to nearest even for |v| < 2^22 (here
       * |v| <= 127), as nearbyintf does in the default mode, without a libm call. */
      float v = x[i + j] * id;
      v = (v + 12582912.0f) - 12582912.0f;
      q[i + j] = v >= 127.0f ? 127 : v <= -127.0f ? -127 : v == v ? (int8_t)v : 0;
    }
  }
}

void exo_weight_row_f32(const struct exo_weight *w, int64_t row, float *out)
{
  const size_t rb = exo_dtype_row_bytes(w->dtype, w->cols);
  const unsigned char *p = (const unsigned char *)w->data + (size_t)row * rb;
  switch (w->dtype) {
  case EXO_DTYPE_F32: memcpy(out, p, rb); return;
  case EXO_DTYPE_F16: exo_f16_to_f32_n(p, out, (size_t)w->cols); return;
  case EXO_DTYPE_BF16: exo_bf16_to_f32_n(p, out, (size_t)w->cols); return;
  case EXO_DTYPE_Q8_0: exo_q8_0_dequantize(p, out, w->cols); return;
  case EXO_DTYPE_Q4_0: exo_q4_0_dequantize(p, out, w->cols); return;
  }
}
