/* tensor/utf8.c: UTF-8 decoding by Unicode Table 3-7. The second byte's allowed range
 * depends on the lead byte (that is what excludes overlongs, surrogates and > U+10FFFF);
 * later bytes are plain continuations. Allocates nothing. */
#include "tensor/utf8.h"

enum exo_utf8_status exo_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp, size_t *len)
{
  uint8_t b0 = s[0];
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  uint32_t c;

  if (b0 < 0x80) {
    *cp = b0;
    *len = 1;
    return EXO_UTF8_OK;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
    c = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    c = b0 & 0x0F;
    if (b0 == 0xE0)
      lo = 0xA0;
    else if (b0 == 0xED)
      hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    c = b0 & 0x07;
    if (b0 == 0xF0)
      lo = 0x90;
    else if (b0 == 0xF4)
      hi = 0x8F;
  } else {
    *len = 1; /* 80..C1, F5..FF never start a character */
    return EXO_UTF8_ILL;
  }
  for (size_t i = 1; i < need; i++) {
    if (i >= n) {
      *len = n;
      return EXO_UTF8_TRUNCATED;
    }
    uint8_t b = s[i];
    uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) {
      *len = i;
      return EXO_UTF8_ILL;
    }
    c = (c << 6) | (b & 0x3F);
  }
  *cp = c;
  *len = need;
  return EXO_UTF8_OK;
}

int exo_utf8_valid(const char *s, size_t n)
{
  const uint8_t *p = (const uint8_t *)s;
  size_t i = 0;
  while (i < n) {
    uint32_t cp;
    size_t len;
    if (p[i] < 0x80) {
      i++;
      continue;
    }
    if (exo_utf8_decode(p + i, n - i, &cp, &len) != EXO_UTF8_OK)
      return 0;
    i += len;
  }
  return 1;
}

size_t exo_utf8_encode(uint32_t cp, char out[4])
{
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}
