/* tests/runtime/node_test_util.h: what the node transport tests share: waiting on an
 * atomic counter, and a frame built by hand ([envelope][unkeyed link trailer],
 * runtime/link.h) as a raw nanomsg sender posing as a peer would send it. Tests only. */
#ifndef EXO_TESTS_RUNTIME_NODE_TEST_UTIL_H
#define EXO_TESTS_RUNTIME_NODE_TEST_UTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "runtime/envelope.h"
#include "runtime/link.h"

/* True once *v reaches target, polling every millisecond for up to ms. */
static inline bool wait_int(atomic_int *v, int target, int ms)
{
  for (int i = 0; i < ms && atomic_load(v) < target; i++)
    usleep(1000);
  return atomic_load(v) >= target;
}

/* Writes env + payload + trailer(seq) into buf; its length, 0 when cap is too small. */
static inline size_t raw_frame(uint8_t *buf, size_t cap, const struct exo_envelope *env,
                               const void *payload, size_t len, uint64_t seq)
{
  size_t body = EXO_ENVELOPE_HEADER_SIZE + len;
  if (body + EXO_LINK_TRAILER > cap)
    return 0;
  if (len)
    memcpy(exo_envelope_payload(buf), payload, len);
  if (exo_envelope_seal(env, buf, body) < 0)
    return 0;
  exo_link_trailer_write(buf, body, seq);
  return body + EXO_LINK_TRAILER;
}

#endif
