/* common/err.c: exo_errf (see err.h). Must stay free of any other project header. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>

void exo_errf(char *err, size_t errlen, const char *fmt, ...)
{
  if (!err || !errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}
