/* runtime/link.c: the unkeyed link trailer and the receive window (see link.h). Must not
 * know sockets or peers: node.c keeps one window per peer and calls these. */
#include "runtime/link.h"

#include <errno.h>
#include <string.h>

#include "runtime/envelope.h"

#define CHECKSUM_OFF 52u /* the envelope's CRC32C field (envelope.h layout) */

static uint64_t get_le64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint32_t get_le32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t trailer_check(const uint8_t *frame, const uint8_t *seq_bytes)
{
  return exo_crc32c(get_le32(frame + CHECKSUM_OFF), seq_bytes, 8);
}

void exo_link_trailer_write(void *frame, size_t body, uint64_t seq)
{
  uint8_t *f = frame;
  put_le(f + body, seq, 8);
  put_le(f + body + 8, trailer_check(f, f + body), 4);
}

int exo_link_trailer_read(const void *frame, size_t len, size_t *body, uint64_t *seq)
{
  const uint8_t *f = frame;
  if (len < EXO_ENVELOPE_HEADER_SIZE + EXO_LINK_TRAILER)
    return -EPROTO;
  size_t b = len - EXO_LINK_TRAILER;
  if (get_le32(f + b + 8) != trailer_check(f, f + b))
    return -EPROTO;
  *body = b;
  *seq = get_le64(f + b);
  return 0;
}

static bool bit_get(const struct exo_link_window *w, uint64_t seq)
{
  uint64_t i = seq % EXO_LINK_WINDOW;
  return (w->bits[i / 64] >> (i % 64)) & 1u;
}

static void bit_set(struct exo_link_window *w, uint64_t seq, bool on)
{
  uint64_t i = seq % EXO_LINK_WINDOW;
  uint64_t m = 1ull << (i % 64);
  w->bits[i / 64] = on ? w->bits[i / 64] | m : w->bits[i / 64] & ~m;
}

enum exo_link_verdict exo_link_window_check(struct exo_link_window *w, uint64_t seq)
{
  if (seq == 0)
    return EXO_LINK_TOO_OLD;
  if (seq > w->top) {
    /* Slots between the old top and seq now stand for numbers not seen yet. */
    if (seq - w->top >= EXO_LINK_WINDOW)
      memset(w->bits, 0, sizeof w->bits);
    else
      for (uint64_t s = w->top + 1; s < seq; s++)
        bit_set(w, s, false);
    bit_set(w, seq, true);
    w->top = seq;
    return EXO_LINK_ACCEPT;
  }
  if (w->top - seq >= EXO_LINK_WINDOW)
    return EXO_LINK_TOO_OLD;
  if (bit_get(w, seq))
    return EXO_LINK_DUPLICATE;
  bit_set(w, seq, true);
  return EXO_LINK_ACCEPT;
}

void exo_link_window_reset(struct exo_link_window *w)
{
  memset(w, 0, sizeof *w);
}
