/* actors/api_stop.c: stop strings matched on the detokenized stream, across token
 * boundaries. Invariant: the emitted text never contains any part of a matched stop
 * string, and at most max_len - 1 bytes are ever held back (a tail that is a proper prefix
 * of some stop string). Held tails start at a stop string's first byte, so they never
 * split a UTF-8 character of valid input. Must not know tokens, HTTP or JSON. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/api.h"

void exo_api_stop_init(struct exo_api_stop *s, const char *const *stop, size_t n_stop)
{
  memset(s, 0, sizeof *s);
  s->stop = stop;
  s->n_stop = n_stop;
  for (size_t i = 0; i < n_stop; i++) {
    size_t l = strlen(stop[i]);
    if (l > s->max_len)
      s->max_len = l;
  }
}

static int append(char **out, size_t *out_len, const char *p, size_t n)
{
  if (!n)
    return 0;
  char *q = realloc(*out, *out_len + n + 1);
  if (!q)
    return -ENOMEM;
  memcpy(q + *out_len, p, n);
  *out_len += n;
  q[*out_len] = '\0';
  *out = q;
  return 0;
}

/* Longest k < max_len such that buf's last k bytes are a proper prefix of a stop string. */
static size_t partial_tail(const struct exo_api_stop *s, const char *buf, size_t n)
{
  size_t kmax = s->max_len ? s->max_len - 1 : 0;
  if (kmax > n)
    kmax = n;
  for (size_t k = kmax; k > 0; k--)
    for (size_t i = 0; i < s->n_stop; i++) {
      size_t l = strlen(s->stop[i]);
      if (k < l && memcmp(buf + n - k, s->stop[i], k) == 0)
        return k;
    }
  return 0;
}

int exo_api_stop_feed(struct exo_api_stop *s, const char *text, size_t len, char **out,
                      size_t *out_len)
{
  if (s->matched)
    return 1;
  if (!s->n_stop)
    return append(out, out_len, text, len);
  size_t n = s->n_held + len;
  char *buf = malloc(n + 1);
  if (!buf)
    return -ENOMEM;
  memcpy(buf, s->held, s->n_held);
  memcpy(buf + s->n_held, text, len);
  buf[n] = '\0';
  /* earliest occurrence of any stop string (memmem: text may hold NULs) */
  const char *first = NULL;
  for (size_t i = 0; i < s->n_stop; i++) {
    const char *p = memmem(buf, n, s->stop[i], strlen(s->stop[i]));
    if (p && (!first || p < first))
      first = p;
  }
  int rc;
  if (first) {
    s->matched = true;
    s->n_held = 0;
    rc = append(out, out_len, buf, (size_t)(first - buf));
    free(buf);
    return rc ? rc : 1;
  }
  size_t k = partial_tail(s, buf, n);
  rc = append(out, out_len, buf, n - k);
  if (!rc) {
    memcpy(s->held, buf + n - k, k);
    s->n_held = k;
  }
  free(buf);
  return rc;
}

int exo_api_stop_flush(struct exo_api_stop *s, char **out, size_t *out_len)
{
  if (s->matched)
    return 0;
  int rc = append(out, out_len, s->held, s->n_held);
  if (!rc)
    s->n_held = 0;
  return rc;
}
