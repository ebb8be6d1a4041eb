/* runtime/link.h: per-link sequence numbers of an unkeyed cluster (a keyed one numbers
 * frames inside its MAC trailer, runtime/node_auth.c). Owns the trailer every inter-node
 * frame carries after its envelope and the receiver's window per source node; must not
 * send, block, or read a frame's header fields before exo_envelope_open checked them.
 *
 * Wire: [envelope header][payload][u64 link seq][u32 check], little-endian. seq counts
 * frames sent by one process to one destination node, from 1; HELLOs carry 0 (they are
 * fresh by session, not by number). check = CRC32C of the 8 seq bytes continuing from
 * the envelope's checksum, so a bit flipped anywhere in the frame is caught.
 *
 * Receiver (loop 0): per source node a window of the highest seq seen and the
 * EXO_LINK_WINDOW below it; a seq seen before is a duplicate, one below the window too
 * old: both dropped and counted (frames_replayed), never delivered. A HELLO announcing a
 * new session id of its sender (it restarted and numbers from 1 again) resets the window. */
#ifndef EXO_RUNTIME_LINK_H
#define EXO_RUNTIME_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXO_LINK_TRAILER 12u  /* u64 seq + u32 check */
#define EXO_LINK_WINDOW 1024u /* frames a late frame may trail the newest and still count */

struct exo_link_window {
  uint64_t top;                          /* highest seq accepted, 0: none yet */
  uint64_t bits[EXO_LINK_WINDOW / 64];   /* bit (seq % EXO_LINK_WINDOW): seen */
};

enum exo_link_verdict {
  EXO_LINK_ACCEPT = 0,
  EXO_LINK_DUPLICATE = 1, /* seen before */
  EXO_LINK_TOO_OLD = 2,   /* at or below top - EXO_LINK_WINDOW, or seq 0 */
};

/* Accepts seq once (and records it) or says why not. */
enum exo_link_verdict exo_link_window_check(struct exo_link_window *w, uint64_t seq);
void exo_link_window_reset(struct exo_link_window *w);

/* Writes the trailer at frame + body (frame holds body + EXO_LINK_TRAILER bytes; body is
 * a sealed envelope). */
void exo_link_trailer_write(void *frame, size_t body, uint64_t seq);
/* Checks the trailer of a received frame of len bytes: 0 with *body (len minus the
 * trailer) and *seq, or -EPROTO (too short, or check mismatch). Reads only the trailer
 * and the envelope checksum field; the envelope itself is for exo_envelope_open. */
int exo_link_trailer_read(const void *frame, size_t len, size_t *body, uint64_t *seq);

#endif
