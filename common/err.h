/* common/err.h: the one way to fill a caller's error buffer. Sits below runtime/ and
 * tensor/ (both use it; it knows neither). Formats into err only when the caller gave
 * one (err NULL or errlen 0: no words wanted), always NUL-terminated, truncated to fit. */
#ifndef EXO_COMMON_ERR_H
#define EXO_COMMON_ERR_H

#include <stddef.h>

void exo_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
