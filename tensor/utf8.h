/* tensor/utf8.h: UTF-8 decoding by the Unicode rules (Table 3-7 well-formed sequences,
 * "maximal subpart" replacement), shared by the tokenizer's encode checks and its lossy
 * and streaming decode. Pure functions on byte buffers; allocates nothing. */
#ifndef EXO_TENSOR_UTF8_H
#define EXO_TENSOR_UTF8_H

#include <stddef.h>
#include <stdint.h>

enum exo_utf8_status {
  EXO_UTF8_OK = 0,        /* *len bytes form code point *cp */
  EXO_UTF8_ILL = 1,       /* the first *len bytes are a maximal ill-formed subpart */
  EXO_UTF8_TRUNCATED = 2, /* all n bytes are a valid but incomplete prefix (*len = n) */
};

/* Decodes the character at s[0..n), n >= 1. */
enum exo_utf8_status exo_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp, size_t *len);
/* 1 if s[0..n) is entirely well-formed UTF-8, else 0. */
int exo_utf8_valid(const char *s, size_t n);
/* Writes cp (<= 0x10FFFF, not a surrogate) as UTF-8 to out; returns 1..4. */
size_t exo_utf8_encode(uint32_t cp, char out[4]);

#endif
