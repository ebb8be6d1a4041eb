/* actors/announce.h: the discovery announcement a node broadcasts on the LAN, and the
 * node id a node keeps across restarts. Encoding and validation only: no sockets, no
 * timers (the discovery actor owns those), so a hostile datagram is handled here first.
 * Wire form: one UTF-8 JSON object per UDP datagram, at most EXO_ANNOUNCE_MAX bytes. */
#ifndef EXO_ACTORS_ANNOUNCE_H
#define EXO_ACTORS_ANNOUNCE_H

#include <stddef.h>
#include <stdint.h>

#define EXO_ANNOUNCE_MAX 1200 /* fits one unfragmented datagram on any LAN */
#define EXO_ANNOUNCE_PROTOCOL 1

struct exo_announce {
  int protocol;         /* EXO_ANNOUNCE_PROTOCOL of the sender */
  char cluster[64];
  uint64_t node_id;
  uint64_t instance;    /* random per process start: tells a restart from a duplicate id */
  char address[128];    /* nanomsg address of the sender's inter-node socket */
  uint64_t memory_bytes;
  double compute;       /* measured GFLOP/s estimate */
  char model_id[128];
  uint64_t seq;         /* increases with every announcement of this instance */
};

/* Writes the JSON form into buf (NUL-terminated). Returns its length or -ENOSPC. */
int exo_announce_encode(const struct exo_announce *a, char *buf, size_t cap);

/* Parses and validates a datagram. Unknown fields are ignored (newer peers may add some);
 * missing or mistyped fields are errors naming the field. Returns 0 or -EPROTO. */
int exo_announce_decode(const void *buf, size_t len, struct exo_announce *a, char *err,
                        size_t errlen);

/* Reads the node id stored at path, or creates it with a fresh random id in 1..2^31-1
 * (written atomically: temp file + rename). Returns 0 or a negative errno, with err
 * filled. */
int exo_node_id_load_or_create(const char *path, uint64_t *id, char *err, size_t errlen);

#endif
