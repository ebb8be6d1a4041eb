/* runtime/log.h: leveled log lines "TIME LEVEL node/actor: message" on stderr.
 * Thread-safe: each line is formatted into a local buffer and written with one fwrite,
 * so lines from different threads never interleave. The only global mutable state is
 * the atomic level (set from EXO_LOG or the config's `log:` key); there is no sink
 * registry and no lock of our own. Must not allocate: it runs on loop threads. */
#ifndef EXO_RUNTIME_LOG_H
#define EXO_RUNTIME_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum exo_log_level {
  EXO_LOG_ERROR = 0,
  EXO_LOG_WARN = 1,
  EXO_LOG_INFO = 2,
  EXO_LOG_DEBUG = 3,
};

/* "error", "warn", "info", "debug" -> level; returns 0 or -EINVAL. */
int exo_log_level_parse(const char *name, enum exo_log_level *out);
const char *exo_log_level_name(enum exo_log_level level);

/* The process-wide threshold (default info). Relaxed atomics: a racing reader sees the
 * old or the new level, both fine. */
void exo_log_set_level(enum exo_log_level level);
enum exo_log_level exo_log_get_level(void);
static inline bool exo_log_enabled(enum exo_log_level level);

/* Sets the level from $EXO_LOG if present. Returns 0 (also when unset) or -EINVAL for an
 * unknown name, leaving the level unchanged. */
int exo_log_init_from_env(void);

/* Formats one line (with a trailing newline) into buf, truncating long messages with
 * "..."; node or actor may be NULL ("-"). Returns the line's length. Pure: tests use it. */
size_t exo_log_format(char *buf, size_t size, double unix_time, enum exo_log_level level,
                      const char *node, const char *actor, const char *fmt, va_list ap);

/* Writes one line to stderr if level is enabled. */
void exo_log_write(enum exo_log_level level, const char *node, const char *actor, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

#define exo_log(level, node, actor, ...)                                                           \
  do {                                                                                             \
    if (exo_log_enabled(level))                                                                    \
      exo_log_write((level), (node), (actor), __VA_ARGS__);                                        \
  } while (0)

static inline bool exo_log_enabled(enum exo_log_level level)
{
  return level <= exo_log_get_level();
}

#endif
