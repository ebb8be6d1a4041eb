/* runtime/log.c: leveled log lines (see log.h). The level is the only global mutable
 * state, an atomic int; a line is built in a stack buffer and written with one fwrite,
 * which glibc's stdio locks per call, so concurrent lines never interleave. Must not
 * allocate or take locks of its own. */
#include "runtime/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_LINE_MAX 1024

static _Atomic int exo_log_level_current = EXO_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int exo_log_level_parse(const char *name, enum exo_log_level *out)
{
  for (int i = 0; i < 4; i++)
    if (name && !strcmp(name, level_names[i])) {
      *out = (enum exo_log_level)i;
      return 0;
    }
  return -EINVAL;
}

const char *exo_log_level_name(enum exo_log_level level)
{
  return (unsigned)level < 4 ? level_names[level] : "?";
}

void exo_log_set_level(enum exo_log_level level)
{
  atomic_store_explicit(&exo_log_level_current, (int)level, memory_order_relaxed);
}

enum exo_log_level exo_log_get_level(void)
{
  return (enum exo_log_level)atomic_load_explicit(&exo_log_level_current, memory_order_relaxed);
}

int exo_log_init_from_env(void)
{
  const char *v = getenv("EXO_LOG");
  if (!v || !*v)
    return 0;
  enum exo_log_level lvl;
  if (exo_log_level_parse(v, &lvl) < 0)
    return -EINVAL;
  exo_log_set_level(lvl);
  return 0;
}

size_t exo_log_format(char *buf, size_t size, double unix_time, enum exo_log_level level,
                      const char *node, const char *actor, const char *fmt, va_list ap)
{
  if (size < 8) {
    if (size)
      buf[0] = 0;
    return 0;
  }
  time_t secs = (time_t)unix_time;
  long ms = (long)((unix_time - (double)secs) * 1000.0);
  if (ms < 0)
    ms = 0;
  if (ms > 999)
    ms = 999;
  struct tm tm;
  gmtime_r(&secs, &tm);
  int n =
      snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s/%s: ", tm.tm_year + 1900,
               tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms,
               exo_log_level_name(level), node ? node : "-", actor ? actor : "-");
  if (n < 0)
    n = 0;
  size_t used = (size_t)n < size ? (size_t)n : size - 1;
  int m = vsnprintf(buf + used, size - used, fmt, ap);
  if (m < 0)
    m = 0;
  if ((size_t)m >= size - used) {
    /* Truncated: mark it so a reader knows the line was cut. */
    used = size - 5;
    memcpy(buf + used, "...", 3);
    used += 3;
  } else {
    used += (size_t)m;
    if (used > size - 2)
      used = size - 2;
  }
  buf[used++] = '\n';
  buf[used] = 0;
  return used;
}

void exo_log_write(enum exo_log_level level, const char *node, const char *actor, const char *fmt,
                   ...)
{
  if (!exo_log_enabled(level))
    return;
  char line[LOG_LINE_MAX];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  va_list ap;
  va_start(ap, fmt);
  size_t n = exo_log_format(line, sizeof line, (double)ts.tv_sec + ts.tv_nsec * 1e-9, level, node,
                            actor, fmt, ap);
  va_end(ap);
  fwrite(line, 1, n, stderr);
}
