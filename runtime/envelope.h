/* runtime/envelope.h: the wire envelope every inter-actor frame carries, and the
 * tensor payload codec. Owns the byte layout (little-endian, fixed offsets, written
 * byte by byte) and its validation; must not allocate, block, or know any transport.
 * A frame is [header (EXO_ENVELOPE_HEADER_SIZE bytes)][payload (payload_len bytes)].
 *
 * Header layout, version 1 (all integers little-endian):
 *   off size field
 *     0   2  magic 0x4558 ("XE" on the wire: bytes 0x58 0x45)
 *     2   1  version (1)
 *     3   1  payload kind (enum exo_payload_kind)
 *     4   2  type: 0-255 runtime control, 256+ application (EXO_MSG_APP_BASE)
 *     6   2  flags (EXO_ENVELOPE_FLAG_*; unknown bits are rejected)
 *     8   8  epoch (partition-map epoch the sender acted on)
 *    16   4  src.node     20  4  src.actor
 *    24   4  dst.node     28  4  dst.actor
 *    32   8  request id (0 = none)
 *    40   8  sequence / position
 *    48   4  payload length in bytes
 *    52   4  CRC32C (Castagnoli) over bytes [0, 52) of the header then the payload
 *
 * Addresses: node id is a u32 (clusters have tens of nodes; 32 bits keeps the header
 * aligned and leaves room for ids derived from hashes). Actor id is a u32 FNV-1a hash of
 * the actor's name (exo_actor_id()), so every node computes the same id for "sampler"
 * without a registry; the config loader rejects two names of one node that collide. */
#ifndef EXO_RUNTIME_ENVELOPE_H
#define EXO_RUNTIME_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#define EXO_ENVELOPE_MAGIC 0x4558u
#define EXO_ENVELOPE_VERSION 1u
#define EXO_ENVELOPE_HEADER_SIZE 56u
/* Default upper bound on a payload a receiver accepts; callers pass their own to open. */
#define EXO_ENVELOPE_DEFAULT_MAX_PAYLOAD (64u << 20)

/* Message type ranges. */
#define EXO_MSG_CONTROL_MAX 255u /* 0..255: reserved for the runtime */
#define EXO_MSG_APP_BASE 256u    /* 256..65535: application messages */

/* Flags: v1 defines none. A frame with a bit outside EXO_ENVELOPE_FLAGS_KNOWN is
 * rejected, so a later version can give bits meaning (e.g. "a MAC follows") safely. */
#define EXO_ENVELOPE_FLAGS_KNOWN 0x0000u

enum exo_payload_kind {
  EXO_PAYLOAD_BYTES = 0,  /* control fields: opaque bytes the message type defines */
  EXO_PAYLOAD_TENSOR = 1, /* a tensor payload (see exo_tensor_payload_*) */
};

struct exo_addr {
  uint32_t node;  /* node id from the node's config */
  uint32_t actor; /* exo_actor_id(name) */
};

struct exo_envelope {
  uint16_t type;        /* EXO_MSG_* */
  uint16_t flags;       /* subset of EXO_ENVELOPE_FLAGS_KNOWN */
  uint8_t payload_kind; /* enum exo_payload_kind */
  uint64_t epoch;
  struct exo_addr src, dst;
  uint64_t request_id;
  uint64_t seq;
  uint32_t payload_len; /* filled by exo_envelope_open; ignored by seal */
};

/* FNV-1a 32-bit hash of a NUL-terminated actor name: the actor id on the wire. */
uint32_t exo_actor_id(const char *name);

/* Fixed header size (== EXO_ENVELOPE_HEADER_SIZE). */
size_t exo_envelope_header_size(void);

/* Start of the payload inside a frame buffer. */
static inline void *exo_envelope_payload(void *frame)
{
  return (uint8_t *)frame + EXO_ENVELOPE_HEADER_SIZE;
}

/* Writes env's header into frame[0, header) and the checksum over header + payload.
 * frame holds total_len bytes: the header then the payload, which the caller has
 * already written (allocate once, e.g. nn_allocmsg(total_len), fill the payload at
 * exo_envelope_payload(frame), then seal). payload_len = total_len - header size.
 * Returns 0, or -EINVAL when total_len < header size, the payload exceeds UINT32_MAX,
 * flags has unknown bits or payload_kind is unknown. Does not take ownership. */
int exo_envelope_seal(const struct exo_envelope *env, void *frame, size_t total_len);

/* Validates frame (len bytes, exactly one frame) and parses its header into *env;
 * *payload points into frame (zero copy, valid while frame is). A tensor payload is
 * validated too (exo_tensor_payload_read). Returns 0, or -EPROTO (malformed or corrupt),
 * -EMSGSIZE (payload over max_payload), with a message in err such as
 * "frame: bad magic 0x1234 (expected 0x4558)". payload may be NULL. */
int exo_envelope_open(const void *frame, size_t len, size_t max_payload, struct exo_envelope *env,
                      const void **payload, char *err, size_t errlen);

/* CRC32C (Castagnoli) of buf continuing from crc (start with 0). Uses the SSE4.2
 * instruction when the CPU has it, a table otherwise. Exposed for tests and benches. */
uint32_t exo_crc32c(uint32_t crc, const void *buf, size_t len);
/* The portable path alone, to check the hardware path against it. */
uint32_t exo_crc32c_portable(uint32_t crc, const void *buf, size_t len);

/* ---- tensor payload ----------------------------------------------------------------
 * Layout (EXO_TENSOR_META_SIZE bytes, then the raw data, little-endian elements):
 *   off size  0 1 dtype   1 1 ndim (1..4)   2 2 reserved (0)
 *             4 16 shape: 4 x u32, dims past ndim are 0; each used dim >= 1
 *            20 4 reserved (0)
 * The data starts 80 bytes into the frame, so it is 16-byte aligned whenever the frame
 * is. shape product * dtype size must equal the bytes left exactly. */
#define EXO_TENSOR_MAX_DIMS 4
#define EXO_TENSOR_META_SIZE 24u

/* Element types on the wire. Separate from tensor/'s enum exo_dtype (runtime/ never
 * includes tensor/); the values here are the wire bytes and never change. */

enum exo_wire_dtype {
  EXO_WIRE_DTYPE_F32 = 1,
  EXO_WIRE_DTYPE_F16 = 2,
  EXO_WIRE_DTYPE_BF16 = 3,
  EXO_WIRE_DTYPE_I32 = 4,
};

struct exo_tensor_view {
  enum exo_wire_dtype dtype;
  uint32_t ndim;
  uint32_t shape[EXO_TENSOR_MAX_DIMS]; /* unused dims are 0 */
  const void *data;                    /* points into the payload; not owned */
  size_t nbytes;                       /* data size in bytes */
};

/* Element size in bytes, 0 for an unknown dtype. */
size_t exo_wire_dtype_size(enum exo_wire_dtype dtype);
/* "f32", "f16", "bf16", "i32" or "?" */
const char *exo_wire_dtype_name(enum exo_wire_dtype dtype);

/* Bytes of the whole tensor payload (meta + data) into *size. Returns 0 or -EINVAL
 * (unknown dtype, ndim outside 1..4, a zero dim, size overflow). */
int exo_tensor_payload_size(enum exo_wire_dtype dtype, uint32_t ndim, const uint32_t *shape,
                            size_t *size);

/* Writes the tensor meta at the start of payload (cap bytes) and sets *data to where the
 * caller writes the elements (exactly the size of exo_tensor_payload_size minus
 * the meta). Returns 0 or -EINVAL with err filled (bad dtype/ndim/shape, cap too small). */
int exo_tensor_payload_write(void *payload, size_t cap, enum exo_wire_dtype dtype, uint32_t ndim,
                             const uint32_t *shape, void **data, char *err, size_t errlen);

/* Parses and validates a tensor payload of len bytes; view->data points into payload.
 * Returns 0 or -EPROTO with err filled. */
int exo_tensor_payload_read(const void *payload, size_t len, struct exo_tensor_view *view,
                            char *err, size_t errlen);

#endif
