/* tensor/dtype.c: bit-level f16/bf16 <-> f32 conversion (see dtype.h).
 * Works on the integer representation so the result never depends on the FPU's
 * rounding mode or on compiler support for _Float16. Must not allocate. */
#include "tensor/dtype.h"

#include <string.h>

static inline uint32_t exo_f32_bits(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float exo_bits_f32(uint32_t u)
{
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

float exo_f16_to_f32(uint16_t h)
{
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) /* inf / NaN: keep the payload in the top mantissa bits */
    return exo_bits_f32(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0)
      return exo_bits_f32(sign);
    /* Subnormal: value = mant * 2^-24; normalise into an f32 normal. */
    int e = -1;
    do {
      mant <<= 1;
      e++;
    } while (!(mant & 0x400u));
    mant &= 0x3ffu;
    return exo_bits_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13));
  }
  return exo_bits_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

float exo_bf16_to_f32(uint16_t b)
{
  return exo_bits_f32((uint32_t)b << 16);
}

uint16_t exo_f32_to_bf16(float f)
{
  uint32_t u = exo_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncation could make it inf */
    return (uint16_t)((u >> 16) | 0x40u);
  uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb; /* ties to even; overflow carries into inf correctly */
  return (uint16_t)(u >> 16);
}

uint16_t exo_f32_to_f16(float f)
{
  uint32_t u = exo_f32_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) /* NaN: keep top payload bits, force quiet */
    return (uint16_t)(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) /* >= 65520 rounds to inf (max finite is 65504) */
    return (uint16_t)(sign | 0x7c00u);
  int32_t exp = (int32_t)(abs >> 23) - 127;
  if (exp >= -14) { /* normal half */
    uint32_t mant = abs & 0x7fffffu;
    uint32_t h = ((uint32_t)(exp + 15) << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
      h++; /* a carry into the exponent is the correct rounding */
    return (uint16_t)(sign | h);
  }
  if (exp < -25) /* below half the smallest subnormal: rounds to zero */
    return sign;
  /* Subnormal half: value = m * 2^-24 with m = full_mant * 2^(exp + 1) */
  uint32_t full = (abs & 0x7fffffu) | 0x800000u;
  /* value = full * 2^(exp - 23) = full * 2^(exp + 1) units of 2^-24; shift is 14..24 */
  int shift = -(exp + 1);
  uint32_t m = full >> shift;
  uint32_t rem = full & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (m & 1u)))
    m++;
  return (uint16_t)(sign | m);
}

void exo_f16_to_f32_n(const void *src, float *dst, size_t n)
{
  const unsigned char *p = src;
  for (size_t i = 0; i < n; i++) {
    uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)); /* files are little-endian */
    dst[i] = exo_f16_to_f32(h);
  }
}

void exo_bf16_to_f32_n(const void *src, float *dst, size_t n)
{
  const unsigned char *p = src;
  for (size_t i = 0; i < n; i++) {
    uint16_t b = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
    dst[i] = exo_bf16_to_f32(b);
  }
}

void exo_f32_to_f16_n(const float *src, uint16_t *dst, size_t n)
{
  for (size_t i = 0; i < n; i++)
    dst[i] = exo_f32_to_f16(src[i]);
}

void exo_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n)
{
  for (size_t i = 0; i < n; i++)
    dst[i] = exo_f32_to_bf16(src[i]);
}

size_t exo_dtype_size(enum exo_dtype dt)
{
  return dt == EXO_DTYPE_F32 ? 4 : dt == EXO_DTYPE_F16 || dt == EXO_DTYPE_BF16 ? 2 : 0;
}

const char *exo_dtype_name(enum exo_dtype dt)
{
  switch (dt) {
  case EXO_DTYPE_F32: return "F32";
  case EXO_DTYPE_F16: return "F16";
  case EXO_DTYPE_BF16: return "BF16";
  case EXO_DTYPE_Q8_0: return "Q8_0";
  case EXO_DTYPE_Q4_0: return "Q4_0";
  }
  return "?";
}
