/* runtime/envelope.c: encodes and validates the wire envelope and tensor payloads
 * (layout in envelope.h). Every field is written and read byte by byte in little-endian
 * order, so the code never depends on host endianness or struct layout; every length is
 * checked before it is trusted. Must not allocate or block: it runs on loop threads.
 *
 * Checksum: CRC32C. Measured on this machine's 2-vCPU Zen 4 over a 1 MiB buffer, -O2,
 * median of 3 runs (2026-11-23): table slice-by-8 ~1.4 GB/s (730 us), zlib crc32 (Debian
 * 1.2.13, not Castagnoli) ~4.1 GB/s (260 us), SSE4.2 crc32q one stream ~6.5 GB/s (160 us),
 * three interleaved crc32q streams folded with a GF(2) shift ~16 GB/s (65 us). Hidden
 * states are hundreds of KiB to a few MiB per hop, so the 3-stream path keeps the check
 * near memory speed; the table path only runs on CPUs without SSE4.2. */
#include "common/err.h"
#include "runtime/envelope.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* ---- little-endian byte access ------------------------------------------------- */

static void put_le16(uint8_t *p, uint16_t v)
{
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
  return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static uint64_t get_le64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}


/* ---- CRC32C ---------------------------------------------------------------------
 * Register convention: reflected (bit 31 holds x^0), polynomial 0x82F63B78. The public
 * function pre- and post-inverts so results chain (crc of A||B = crc(crc(0,A), B)). */

#define CRC32C_POLY 0x82F63B78u
/* Bytes per stream in one round of the 3-stream hardware path: 3 x 512 B rounds reach
 * 8 KiB hidden states (at 4096 they started at 12 KiB, so an 8 KiB frame ran one stream
 * at a third of the speed); the two shifts per round are table lookups (crc32c_shift). */
#define CRC32C_STRIPE 512u

static uint32_t crc32c_table[8][256];
static uint32_t crc32c_stripe_shift; /* x^(8 * CRC32C_STRIPE) mod P */
static uint32_t crc32c_shift_tab[4][256]; /* byte j of a -> (that byte of a) * shift mod P */
static int crc32c_have_hw;
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

/* a * b mod P, both in the reflected representation. */
static uint32_t crc32c_mulmod(uint32_t a, uint32_t b)
{
  uint32_t prod = 0;
  for (uint32_t m = 1u << 31; m; m >>= 1) {
    if (a & m)
      prod ^= b;
    b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1; /* b *= x */
  }
  return prod;
}

static void crc32c_init(void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
    crc32c_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc32c_table[t][i] =
          (crc32c_table[t - 1][i] >> 8) ^ crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
  /* x^(8 * stripe): start at x^0 and multiply by x^8 stripe times. */
  uint32_t x8 = 1u << (31 - 8); /* x^8 */
  uint32_t s = 1u << 31;
  for (uint32_t i = 0; i < CRC32C_STRIPE; i++)
    s = crc32c_mulmod(s, x8);
  crc32c_stripe_shift = s;
  for (uint32_t j = 0; j < 4; j++) /* a * s is linear in a: one table per byte of a */
    for (uint32_t b = 0; b < 256; b++)
      crc32c_shift_tab[j][b] = crc32c_mulmod(b << (8 * j), s);
#if defined(__x86_64__)
  __builtin_cpu_init();
  crc32c_have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

/* a * x^(8 * CRC32C_STRIPE) mod P: the register moved over one stripe of zeros. */
static inline uint32_t crc32c_shift(uint32_t a)
{
  return crc32c_shift_tab[0][a & 0xff] ^ crc32c_shift_tab[1][(a >> 8) & 0xff] ^
         crc32c_shift_tab[2][(a >> 16) & 0xff] ^ crc32c_shift_tab[3][a >> 24];
}

/* Raw register update (no inversion), slice-by-8. */
static uint32_t crc32c_sw(uint32_t c, const uint8_t *p, size_t n)
{
  while (n && ((uintptr_t)p & 7)) {
    c = (c >> 8) ^ crc32c_table[0][(c ^ *p++) & 0xff];
    n--;
  }
  while (n >= 8) {
    uint32_t lo = c ^ get_le32(p);
    uint32_t hi = get_le32(p + 4);
    c = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
        crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
        crc32c_table[3][hi & 0xff] ^ crc32c_table[2][(hi >> 8) & 0xff] ^
        crc32c_table[1][(hi >> 16) & 0xff] ^ crc32c_table[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--)
    c = (c >> 8) ^ crc32c_table[0][(c ^ *p++) & 0xff];
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t c32, const uint8_t *p,
                                                            size_t n)
{
  uint64_t c = c32;
  while (n && ((uintptr_t)p & 7)) {
    c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    n--;
  }
  /* Three independent streams hide the instruction's 3-cycle latency; the streams B and C
   * start from 0 and are folded in by shifting the earlier state over one stripe. */
  while (n >= 3 * CRC32C_STRIPE) {
    uint64_t cb = 0, cc = 0;
    const uint8_t *pb = p + CRC32C_STRIPE, *pc = p + 2 * CRC32C_STRIPE;
    for (size_t i = 0; i < CRC32C_STRIPE; i += 8) {
      uint64_t a, b, d;
      memcpy(&a, p + i, 8); /* x86 is little-endian: the instruction wants LE words */
      memcpy(&b, pb + i, 8);
      memcpy(&d, pc + i, 8);
      c = __builtin_ia32_crc32di(c, a);
      cb = __builtin_ia32_crc32di(cb, b);
      cc = __builtin_ia32_crc32di(cc, d);
    }
    uint32_t r = crc32c_shift((uint32_t)c) ^ (uint32_t)cb;
    c = crc32c_shift(r) ^ (uint32_t)cc;
    p += 3 * CRC32C_STRIPE;
    n -= 3 * CRC32C_STRIPE;
  }
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    n -= 8;
  }
  while (n--)
    c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
  return (uint32_t)c;
}
#endif

uint32_t exo_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
  pthread_once(&crc32c_once, crc32c_init);
  return ~crc32c_sw(~crc, buf, len);
}

uint32_t exo_crc32c(uint32_t crc, const void *buf, size_t len)
{
  pthread_once(&crc32c_once, crc32c_init);
#if defined(__x86_64__)
  if (crc32c_have_hw)
    return ~crc32c_hw(~crc, buf, len);
#endif
  return ~crc32c_sw(~crc, buf, len);
}

/* ---- envelope ------------------------------------------------------------------- */

enum {
  OFF_MAGIC = 0,
  OFF_VERSION = 2,
  OFF_KIND = 3,
  OFF_TYPE = 4,
  OFF_FLAGS = 6,
  OFF_EPOCH = 8,
  OFF_SRC_NODE = 16,
  OFF_SRC_ACTOR = 20,
  OFF_DST_NODE = 24,
  OFF_DST_ACTOR = 28,
  OFF_REQUEST = 32,
  OFF_SEQ = 40,
  OFF_PAYLOAD_LEN = 48,
  OFF_CHECKSUM = 52,
};

_Static_assert(OFF_CHECKSUM + 4 == EXO_ENVELOPE_HEADER_SIZE, "header layout");

uint32_t exo_actor_id(const char *name)
{
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
    h ^= *p;
    h *= 16777619u;
  }
  return h;
}

size_t exo_envelope_header_size(void)
{
  return EXO_ENVELOPE_HEADER_SIZE;
}

static uint32_t frame_checksum(const uint8_t *frame, const uint8_t *payload, size_t plen)
{
  uint32_t c = exo_crc32c(0, frame, OFF_CHECKSUM);
  return exo_crc32c(c, payload, plen);
}

int exo_envelope_seal(const struct exo_envelope *env, void *frame, size_t total_len)
{
  if (!env || !frame || total_len < EXO_ENVELOPE_HEADER_SIZE)
    return -EINVAL;
  size_t plen = total_len - EXO_ENVELOPE_HEADER_SIZE;
  if (plen > UINT32_MAX || (env->flags & ~EXO_ENVELOPE_FLAGS_KNOWN) ||
      (env->payload_kind != EXO_PAYLOAD_BYTES && env->payload_kind != EXO_PAYLOAD_TENSOR))
    return -EINVAL;
  uint8_t *h = frame;
  put_le16(h + OFF_MAGIC, EXO_ENVELOPE_MAGIC);
  h[OFF_VERSION] = EXO_ENVELOPE_VERSION;
  h[OFF_KIND] = env->payload_kind;
  put_le16(h + OFF_TYPE, env->type);
  put_le16(h + OFF_FLAGS, env->flags);
  put_le64(h + OFF_EPOCH, env->epoch);
  put_le32(h + OFF_SRC_NODE, env->src.node);
  put_le32(h + OFF_SRC_ACTOR, env->src.actor);
  put_le32(h + OFF_DST_NODE, env->dst.node);
  put_le32(h + OFF_DST_ACTOR, env->dst.actor);
  put_le64(h + OFF_REQUEST, env->request_id);
  put_le64(h + OFF_SEQ, env->seq);
  put_le32(h + OFF_PAYLOAD_LEN, (uint32_t)plen);
  put_le32(h + OFF_CHECKSUM, frame_checksum(h, h + EXO_ENVELOPE_HEADER_SIZE, plen));
  return 0;
}

int exo_envelope_open(const void *frame, size_t len, size_t max_payload, struct exo_envelope *env,
                      const void **payload, char *err, size_t errlen)
{
  const uint8_t *h = frame;
  if (!h || len < EXO_ENVELOPE_HEADER_SIZE) {
    exo_errf(err, errlen, "frame: truncated header (%zu bytes, need %u)", h ? len : 0,
            EXO_ENVELOPE_HEADER_SIZE);
    return -EPROTO;
  }
  uint16_t magic = get_le16(h + OFF_MAGIC);
  if (magic != EXO_ENVELOPE_MAGIC) {
    exo_errf(err, errlen, "frame: bad magic 0x%04x (expected 0x%04x)", magic, EXO_ENVELOPE_MAGIC);
    return -EPROTO;
  }
  if (h[OFF_VERSION] != EXO_ENVELOPE_VERSION) {
    exo_errf(err, errlen, "frame: unsupported version %u (expected %u)", h[OFF_VERSION],
            EXO_ENVELOPE_VERSION);
    return -EPROTO;
  }
  uint32_t plen = get_le32(h + OFF_PAYLOAD_LEN);
  size_t have = len - EXO_ENVELOPE_HEADER_SIZE;
  if (plen > max_payload) {
    exo_errf(err, errlen, "frame: payload %u bytes exceeds limit %zu", plen, max_payload);
    return -EMSGSIZE;
  }
  if (plen > have) {
    exo_errf(err, errlen, "frame: payload length %u past end of frame (have %zu)", plen, have);
    return -EPROTO;
  }
  if (plen < have) {
    exo_errf(err, errlen, "frame: %zu trailing bytes after payload of %u", have - plen, plen);
    return -EPROTO;
  }
  uint16_t flags = get_le16(h + OFF_FLAGS);
  if (flags & ~EXO_ENVELOPE_FLAGS_KNOWN) {
    exo_errf(err, errlen, "frame: unknown flags 0x%04x", flags);
    return -EPROTO;
  }
  uint8_t kind = h[OFF_KIND];
  if (kind != EXO_PAYLOAD_BYTES && kind != EXO_PAYLOAD_TENSOR) {
    exo_errf(err, errlen, "frame: unknown payload kind %u", kind);
    return -EPROTO;
  }
  const uint8_t *p = h + EXO_ENVELOPE_HEADER_SIZE;
  uint32_t want = get_le32(h + OFF_CHECKSUM);
  uint32_t got = frame_checksum(h, p, plen);
  if (want != got) {
    exo_errf(err, errlen, "frame: checksum mismatch (header 0x%08x, computed 0x%08x)", want, got);
    return -EPROTO;
  }
  if (kind == EXO_PAYLOAD_TENSOR) {
    struct exo_tensor_view v;
    char terr[160];
    if (exo_tensor_payload_read(p, plen, &v, terr, sizeof terr) < 0) {
      exo_errf(err, errlen, "frame: %s", terr);
      return -EPROTO;
    }
  }
  if (env) {
    env->type = get_le16(h + OFF_TYPE);
    env->flags = flags;
    env->payload_kind = kind;
    env->epoch = get_le64(h + OFF_EPOCH);
    env->src.node = get_le32(h + OFF_SRC_NODE);
    env->src.actor = get_le32(h + OFF_SRC_ACTOR);
    env->dst.node = get_le32(h + OFF_DST_NODE);
    env->dst.actor = get_le32(h + OFF_DST_ACTOR);
    env->request_id = get_le64(h + OFF_REQUEST);
    env->seq = get_le64(h + OFF_SEQ);
    env->payload_len = plen;
  }
  if (payload)
    *payload = p;
  return 0;
}

/* ---- tensor payload ------------------------------------------------------------- */

size_t exo_wire_dtype_size(enum exo_wire_dtype dtype)
{
  switch (dtype) {
  case EXO_WIRE_DTYPE_F32:
  case EXO_WIRE_DTYPE_I32:
    return 4;
  case EXO_WIRE_DTYPE_F16:
  case EXO_WIRE_DTYPE_BF16:
    return 2;
  }
  return 0;
}

const char *exo_wire_dtype_name(enum exo_wire_dtype dtype)
{
  switch (dtype) {
  case EXO_WIRE_DTYPE_F32:
    return "f32";
  case EXO_WIRE_DTYPE_F16:
    return "f16";
  case EXO_WIRE_DTYPE_BF16:
    return "bf16";
  case EXO_WIRE_DTYPE_I32:
    return "i32";
  }
  return "?";
}

/* Data bytes of a shape, or -EINVAL with err filled. */
static int tensor_data_size(enum exo_wire_dtype dtype, uint32_t ndim, const uint32_t *shape,
                            size_t *out, char *err, size_t errlen)
{
  size_t esz = exo_wire_dtype_size(dtype);
  if (!esz) {
    exo_errf(err, errlen, "tensor payload: unknown dtype %u", (unsigned)dtype);
    return -EINVAL;
  }
  if (ndim < 1 || ndim > EXO_TENSOR_MAX_DIMS) {
    exo_errf(err, errlen, "tensor payload: ndim %u out of range 1..%d", ndim, EXO_TENSOR_MAX_DIMS);
    return -EINVAL;
  }
  size_t n = esz;
  for (uint32_t i = 0; i < ndim; i++) {
    if (shape[i] == 0) {
      exo_errf(err, errlen, "tensor payload: dim %u is 0", i);
      return -EINVAL;
    }
    if (__builtin_mul_overflow(n, (size_t)shape[i], &n)) {
      exo_errf(err, errlen, "tensor payload: shape size overflows");
      return -EINVAL;
    }
  }
  *out = n;
  return 0;
}

int exo_tensor_payload_size(enum exo_wire_dtype dtype, uint32_t ndim, const uint32_t *shape,
                            size_t *size)
{
  size_t n;
  if (!shape || !size || tensor_data_size(dtype, ndim, shape, &n, NULL, 0) < 0 ||
      n > SIZE_MAX - EXO_TENSOR_META_SIZE)
    return -EINVAL;
  *size = n + EXO_TENSOR_META_SIZE;
  return 0;
}

int exo_tensor_payload_write(void *payload, size_t cap, enum exo_wire_dtype dtype, uint32_t ndim,
                             const uint32_t *shape, void **data, char *err, size_t errlen)
{
  size_t n;
  if (!payload || !shape) {
    exo_errf(err, errlen, "tensor payload: NULL buffer or shape");
    return -EINVAL;
  }
  if (tensor_data_size(dtype, ndim, shape, &n, err, errlen) < 0)
    return -EINVAL;
  if (cap < EXO_TENSOR_META_SIZE || cap - EXO_TENSOR_META_SIZE != n) {
    exo_errf(err, errlen, "tensor payload: buffer of %zu bytes, need exactly %zu", cap,
            n + EXO_TENSOR_META_SIZE);
    return -EINVAL;
  }
  uint8_t *p = payload;
  memset(p, 0, EXO_TENSOR_META_SIZE);
  p[0] = (uint8_t)dtype;
  p[1] = (uint8_t)ndim;
  for (uint32_t i = 0; i < ndim; i++)
    put_le32(p + 4 + 4 * i, shape[i]);
  if (data)
    *data = p + EXO_TENSOR_META_SIZE;
  return 0;
}

int exo_tensor_payload_read(const void *payload, size_t len, struct exo_tensor_view *view,
                            char *err, size_t errlen)
{
  const uint8_t *p = payload;
  if (!p || len < EXO_TENSOR_META_SIZE) {
    exo_errf(err, errlen, "tensor payload: %zu bytes, shorter than its %u-byte header", p ? len : 0,
            EXO_TENSOR_META_SIZE);
    return -EPROTO;
  }
  enum exo_wire_dtype dtype = (enum exo_wire_dtype)p[0];
  uint32_t ndim = p[1];
  if (get_le16(p + 2) || get_le32(p + 20)) {
    exo_errf(err, errlen, "tensor payload: reserved bytes are not zero");
    return -EPROTO;
  }
  uint32_t shape[EXO_TENSOR_MAX_DIMS];
  for (int i = 0; i < EXO_TENSOR_MAX_DIMS; i++)
    shape[i] = get_le32(p + 4 + 4 * i);
  size_t n;
  if (tensor_data_size(dtype, ndim, shape, &n, err, errlen) < 0)
    return -EPROTO;
  for (uint32_t i = ndim; i < EXO_TENSOR_MAX_DIMS; i++) {
    if (shape[i]) {
      exo_errf(err, errlen, "tensor payload: dim %u is %u past ndim %u (must be 0)", i, shape[i],
              ndim);
      return -EPROTO;
    }
  }
  size_t have = len - EXO_TENSOR_META_SIZE;
  if (n != have) {
    exo_errf(err, errlen, "tensor payload: shape of %s needs %zu data bytes, have %zu",
            exo_wire_dtype_name(dtype), n, have);
    return -EPROTO;
  }
  if (view) {
    view->dtype = dtype;
    view->ndim = ndim;
    memcpy(view->shape, shape, sizeof shape);
    view->data = p + EXO_TENSOR_META_SIZE;
    view->nbytes = n;
  }
  return 0;
}
