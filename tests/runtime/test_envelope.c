/* tests/runtime/test_envelope.c: the envelope and tensor payload codec. Owns round trips,
 * one case per malformed-frame class, and a seeded mutation loop; every malformed frame
 * must be rejected with a message, never crash (ASan/UBSan watch the reads). */
#include "runtime/envelope.h"
#include "tests/test.h"

#include <errno.h>
#include <stdlib.h>

static uint8_t *make_frame(const struct exo_envelope *env, const void *payload, size_t plen,
                           size_t *total)
{
  *total = EXO_ENVELOPE_HEADER_SIZE + plen;
  uint8_t *f = malloc(*total);
  if (!f)
    return NULL;
  if (plen)
    memcpy(exo_envelope_payload(f), payload, plen);
  if (exo_envelope_seal(env, f, *total) != 0) {
    free(f);
    return NULL;
  }
  return f;
}

static struct exo_envelope sample_env(void)
{
  struct exo_envelope e = {0};
  e.type = EXO_MSG_APP_BASE + 7;
  e.flags = 0;
  e.payload_kind = EXO_PAYLOAD_BYTES;
  e.epoch = 0x0102030405060708ull;
  e.src.node = 1;
  e.src.actor = exo_actor_id("ping");
  e.dst.node = 0xfffffffeu;
  e.dst.actor = exo_actor_id("pong");
  e.request_id = 0xdeadbeefcafef00dull;
  e.seq = 42;
  return e;
}

static void test_crc32c_known_and_paths_agree(void)
{
  CHECK_INT_EQ(exo_crc32c(0, "123456789", 9), 0xE3069283u);
  CHECK_INT_EQ(exo_crc32c_portable(0, "123456789", 9), 0xE3069283u);
  /* Lengths and offsets around the 3-stream stripes (3 * 4096) and word alignment. */
  size_t n = 3 * 3 * 4096 + 97;
  uint8_t *buf = malloc(n);
  srand(7);
  for (size_t i = 0; i < n; i++)
    buf[i] = (uint8_t)rand();
  size_t lens[] = {0, 1, 7, 8, 9, 4095, 12288, 12289, 24576 + 5, n - 3};
  for (size_t off = 0; off < 3; off++)
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
      CHECK_INT_EQ(exo_crc32c(0, buf + off, lens[i]), exo_crc32c_portable(0, buf + off, lens[i]));
  /* Chaining: crc(A||B) == crc(crc(A), B). */
  CHECK_INT_EQ(exo_crc32c(exo_crc32c(0, buf, 1000), buf + 1000, n - 1000), exo_crc32c(0, buf, n));
  free(buf);
}

static void test_layout_is_little_endian(void)
{
  struct exo_envelope e = sample_env();
  size_t total;
  uint8_t *f = make_frame(&e, "hi", 2, &total);
  CHECK(f != NULL);
  if (!f)
    return;
  CHECK_INT_EQ(f[0], 0x58);
  CHECK_INT_EQ(f[1], 0x45);
  CHECK_INT_EQ(f[2], 1);
  CHECK_INT_EQ(f[4], (EXO_MSG_APP_BASE + 7) & 0xff);
  CHECK_INT_EQ(f[5], (EXO_MSG_APP_BASE + 7) >> 8);
  CHECK_INT_EQ(f[8], 0x08);
  CHECK_INT_EQ(f[15], 0x01);
  CHECK_INT_EQ(f[24], 0xfe);
  CHECK_INT_EQ(f[40], 42);
  CHECK_INT_EQ(f[48], 2);
  CHECK_INT_EQ(f[49], 0);
  CHECK_INT_EQ(exo_envelope_header_size(), 56);
  free(f);
}

static void test_control_round_trip(void)
{
  struct exo_envelope e = sample_env();
  const char msg[] = "{\"peer\":\"pong\"}";
  size_t total;
  uint8_t *f = make_frame(&e, msg, sizeof msg, &total);
  CHECK(f != NULL);
  if (!f)
    return;
  struct exo_envelope d;
  const void *p = NULL;
  char err[200] = "";
  CHECK_INT_EQ(exo_envelope_open(f, total, 1024, &d, &p, err, sizeof err), 0);
  CHECK_INT_EQ(d.type, e.type);
  CHECK_INT_EQ(d.flags, 0);
  CHECK_INT_EQ(d.payload_kind, EXO_PAYLOAD_BYTES);
  CHECK(d.epoch == e.epoch);
  CHECK_INT_EQ(d.src.node, 1);
  CHECK_INT_EQ(d.src.actor, exo_actor_id("ping"));
  CHECK_INT_EQ(d.dst.node, 0xfffffffeu);
  CHECK_INT_EQ(d.dst.actor, exo_actor_id("pong"));
  CHECK(d.request_id == e.request_id);
  CHECK(d.seq == 42);
  CHECK_INT_EQ(d.payload_len, sizeof msg);
  CHECK(p == f + EXO_ENVELOPE_HEADER_SIZE);
  CHECK(p && memcmp(p, msg, sizeof msg) == 0);
  free(f);

  /* Empty payload. */
  f = make_frame(&e, NULL, 0, &total);
  CHECK(f && exo_envelope_open(f, total, 0, &d, &p, err, sizeof err) == 0);
  CHECK_INT_EQ(d.payload_len, 0);
  free(f);
  CHECK(exo_actor_id("ping") != exo_actor_id("pong"));
  CHECK_INT_EQ(exo_actor_id(""), 2166136261u);
}

static void test_tensor_round_trip(void)
{
  uint32_t shape[3] = {2, 3, 5};
  size_t psize = 0;
  CHECK_INT_EQ(exo_tensor_payload_size(EXO_WIRE_DTYPE_F32, 3, shape, &psize), 0);
  CHECK_INT_EQ(psize, EXO_TENSOR_META_SIZE + 2 * 3 * 5 * 4);
  size_t total = EXO_ENVELOPE_HEADER_SIZE + psize;
  uint8_t *f = malloc(total);
  void *data = NULL;
  char err[200] = "";
  CHECK_INT_EQ(exo_tensor_payload_write(exo_envelope_payload(f), psize, EXO_WIRE_DTYPE_F32, 3,
                                        shape, &data, err, sizeof err),
               0);
  CHECK(data == f + 80);
  float *x = data;
  for (int i = 0; i < 30; i++)
    x[i] = (float)i * 0.5f;
  struct exo_envelope e = sample_env();
  e.payload_kind = EXO_PAYLOAD_TENSOR;
  CHECK_INT_EQ(exo_envelope_seal(&e, f, total), 0);
  struct exo_envelope d;
  const void *p;
  CHECK_INT_EQ(exo_envelope_open(f, total, 1 << 20, &d, &p, err, sizeof err), 0);
  CHECK_INT_EQ(d.payload_kind, EXO_PAYLOAD_TENSOR);
  struct exo_tensor_view v;
  CHECK_INT_EQ(exo_tensor_payload_read(p, d.payload_len, &v, err, sizeof err), 0);
  CHECK_INT_EQ(v.dtype, EXO_WIRE_DTYPE_F32);
  CHECK_INT_EQ(v.ndim, 3);
  CHECK_INT_EQ(v.shape[0], 2);
  CHECK_INT_EQ(v.shape[1], 3);
  CHECK_INT_EQ(v.shape[2], 5);
  CHECK_INT_EQ(v.shape[3], 0);
  CHECK_INT_EQ(v.nbytes, 120);
  CHECK(v.data && memcmp(v.data, x, 120) == 0);
  free(f);

  /* Every dtype's size. */
  CHECK_INT_EQ(exo_wire_dtype_size(EXO_WIRE_DTYPE_F16), 2);
  CHECK_INT_EQ(exo_wire_dtype_size(EXO_WIRE_DTYPE_BF16), 2);
  CHECK_INT_EQ(exo_wire_dtype_size(EXO_WIRE_DTYPE_I32), 4);
  CHECK_INT_EQ(exo_wire_dtype_size((enum exo_wire_dtype)9), 0);
}

/* Opens f and expects rejection with a message containing want. */
static void expect_reject(const uint8_t *f, size_t len, size_t max, const char *want, int code)
{
  char err[200] = "";
  struct exo_envelope d;
  const void *p;
  int rc = exo_envelope_open(f, len, max, &d, &p, err, sizeof err);
  CHECK_INT_EQ(rc, code);
  CHECK_STR_CONTAINS(err, want);
}

static void test_malformed_frames(void)
{
  struct exo_envelope e = sample_env();
  uint8_t payload[100];
  for (int i = 0; i < 100; i++)
    payload[i] = (uint8_t)i;
  size_t total;
  uint8_t *f = make_frame(&e, payload, sizeof payload, &total);
  CHECK(f != NULL);
  if (!f)
    return;
  uint8_t *g = malloc(total);

  expect_reject(f, 10, 1024, "truncated header (10 bytes, need 56)", -EPROTO);
  expect_reject(NULL, 0, 1024, "truncated header", -EPROTO);
  expect_reject(f, total - 1, 1024, "payload length 100 past end of frame (have 99)", -EPROTO);
  expect_reject(f, EXO_ENVELOPE_HEADER_SIZE, 1024, "past end of frame (have 0)", -EPROTO);
  expect_reject(f, total, 99, "payload 100 bytes exceeds limit 99", -EMSGSIZE);

  memcpy(g, f, total);
  g[0] = 0x34;
  g[1] = 0x12;
  expect_reject(g, total, 1024, "bad magic 0x1234 (expected 0x4558)", -EPROTO);

  memcpy(g, f, total);
  g[2] = 2;
  expect_reject(g, total, 1024, "unsupported version 2 (expected 1)", -EPROTO);

  memcpy(g, f, total);
  g[48] = 0x00;
  g[49] = 0x10; /* 4096 */
  expect_reject(g, total, 1 << 20, "payload length 4096 past end of frame (have 100)", -EPROTO);

  memcpy(g, f, total);
  g[48] = 50;
  expect_reject(g, total, 1024, "50 trailing bytes after payload of 50", -EPROTO);

  memcpy(g, f, total);
  g[6] = 0x01;
  expect_reject(g, total, 1024, "unknown flags 0x0001", -EPROTO);

  memcpy(g, f, total);
  g[3] = 9;
  expect_reject(g, total, 1024, "unknown payload kind 9", -EPROTO);

  memcpy(g, f, total);
  g[EXO_ENVELOPE_HEADER_SIZE + 50] ^= 0x10;
  expect_reject(g, total, 1024, "checksum mismatch", -EPROTO);

  /* A single flipped bit anywhere is rejected (CRC32C catches all 1-bit errors; the fields
   * checked before the checksum catch the rest with their own message). */
  int rejected = 0;
  for (size_t bit = 0; bit < total * 8; bit++) {
    memcpy(g, f, total);
    g[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    char err[200] = "";
    if (exo_envelope_open(g, total, 1 << 20, NULL, NULL, err, sizeof err) < 0 && err[0])
      rejected++;
  }
  CHECK_INT_EQ(rejected, (int)(total * 8));

  /* seal refuses what it cannot encode. */
  struct exo_envelope bad = e;
  bad.flags = 0x8000;
  CHECK_INT_EQ(exo_envelope_seal(&bad, g, total), -EINVAL);
  bad = e;
  bad.payload_kind = 7;
  CHECK_INT_EQ(exo_envelope_seal(&bad, g, total), -EINVAL);
  CHECK_INT_EQ(exo_envelope_seal(&e, g, 10), -EINVAL);
  free(g);
  free(f);
}

/* Builds a sealed tensor frame whose meta bytes the caller then corrupts and reseals. */
static uint8_t *tensor_frame(uint32_t d0, uint32_t d1, size_t *total)
{
  uint32_t shape[2] = {d0, d1};
  size_t psize;
  if (exo_tensor_payload_size(EXO_WIRE_DTYPE_BF16, 2, shape, &psize) < 0)
    return NULL;
  *total = EXO_ENVELOPE_HEADER_SIZE + psize;
  uint8_t *f = calloc(1, *total);
  void *data;
  if (exo_tensor_payload_write(exo_envelope_payload(f), psize, EXO_WIRE_DTYPE_BF16, 2, shape, &data,
                               NULL, 0) < 0) {
    free(f);
    return NULL;
  }
  return f;
}

static void reseal_tensor(uint8_t *f, size_t total)
{
  struct exo_envelope e = sample_env();
  e.payload_kind = EXO_PAYLOAD_TENSOR;
  exo_envelope_seal(&e, f, total);
}

static void test_malformed_tensors(void)
{
  size_t total;
  uint8_t *f = tensor_frame(4, 8, &total);
  CHECK(f != NULL);
  if (!f)
    return;
  uint8_t *t = f + EXO_ENVELOPE_HEADER_SIZE;
  reseal_tensor(f, total);
  char err[200];
  CHECK_INT_EQ(exo_envelope_open(f, total, 1 << 20, NULL, NULL, err, sizeof err), 0);

  t[4] = 5; /* shape [5, 8] bf16 needs 80 bytes, payload has 64 */
  reseal_tensor(f, total);
  expect_reject(f, total, 1 << 20, "shape of bf16 needs 80 data bytes, have 64", -EPROTO);
  t[4] = 4;

  t[1] = 5;
  reseal_tensor(f, total);
  expect_reject(f, total, 1 << 20, "ndim 5 out of range 1..4", -EPROTO);
  t[1] = 0;
  reseal_tensor(f, total);
  expect_reject(f, total, 1 << 20, "ndim 0 out of range", -EPROTO);
  t[1] = 2;

  t[0] = 77;
  reseal_tensor(f, total);
  expect_reject(f, total, 1 << 20, "unknown dtype 77", -EPROTO);
  t[0] = EXO_WIRE_DTYPE_BF16;

  t[12] = 3; /* dim 2 set although ndim is 2 */
  reseal_tensor(f, total);
  expect_reject(f, total, 1 << 20, "dim 2 is 3 past ndim 2", -EPROTO);
  t[12] = 0;

  t[8] = 0; /* dim 1 = 0 */
  reseal_tensor(f, total);
  expect_reject(f, total, 1 << 20, "dim 1 is 0", -EPROTO);
  t[8] = 8;

  t[21] = 1;
  reseal_tensor(f, total);
  expect_reject(f, total, 1 << 20, "reserved bytes", -EPROTO);
  t[21] = 0;

  /* Payload shorter than the tensor meta. */
  reseal_tensor(f, EXO_ENVELOPE_HEADER_SIZE + 10);
  expect_reject(f, EXO_ENVELOPE_HEADER_SIZE + 10, 1 << 20, "shorter than its 24-byte header",
                -EPROTO);

  /* Huge dims must not overflow into a small size. */
  t[4] = 0xff;
  t[5] = 0xff;
  t[6] = 0xff;
  t[7] = 0xff;
  t[8] = 0xff;
  t[9] = 0xff;
  t[10] = 0xff;
  t[11] = 0xff;
  reseal_tensor(f, total);
  char e2[200] = "";
  CHECK(exo_envelope_open(f, total, 1 << 20, NULL, NULL, e2, sizeof e2) == -EPROTO);
  CHECK_STR_CONTAINS(e2, "tensor payload");

  /* The writer validates too. */
  uint32_t shape5[5] = {1, 1, 1, 1, 1};
  void *data;
  CHECK_INT_EQ(
      exo_tensor_payload_write(t, 100, EXO_WIRE_DTYPE_F32, 5, shape5, &data, err, sizeof err),
      -EINVAL);
  CHECK_STR_CONTAINS(err, "ndim 5");
  uint32_t shape2[2] = {2, 2};
  CHECK_INT_EQ(
      exo_tensor_payload_write(t, 100, EXO_WIRE_DTYPE_F32, 2, shape2, &data, err, sizeof err),
      -EINVAL);
  CHECK_STR_CONTAINS(err, "need exactly 40");
  free(f);
}

static uint64_t xorshift64(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Seeded mutations of valid frames: each must be rejected with a message, or decode to a
 * frame whose payload lies inside the buffer and whose tensor (if any) is consistent. */
static void test_random_mutations(void)
{
  uint64_t s = 0x9e3779b97f4a7c15ull;
#define NEXT() xorshift64(&s)
  size_t ctotal, ttotal;
  const char msg[] = "control payload of a few bytes";
  struct exo_envelope e = sample_env();
  uint8_t *cf = make_frame(&e, msg, sizeof msg, &ctotal);
  uint8_t *tf = tensor_frame(3, 5, &ttotal);
  CHECK(cf && tf);
  if (!cf || !tf) {
    free(cf);
    free(tf);
    return;
  }
  reseal_tensor(tf, ttotal);
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 20000; iter++) {
    int tensor = (int)(NEXT() & 1);
    const uint8_t *src = tensor ? tf : cf;
    size_t len = tensor ? ttotal : ctotal;
    uint8_t *g = malloc(len + 16);
    memcpy(g, src, len);
    int nmut = 1 + (int)(NEXT() % 4);
    for (int m = 0; m < nmut; m++) {
      size_t at = NEXT() % len;
      g[at] = (uint8_t)NEXT();
    }
    size_t glen = len;
    if ((NEXT() & 7) == 0)
      glen = NEXT() % (len + 1);    /* truncate */
    int reseal = (NEXT() & 3) == 0; /* sometimes fix the checksum to reach deeper checks */
    if (reseal && glen >= EXO_ENVELOPE_HEADER_SIZE) {
      struct exo_envelope r = sample_env();
      r.payload_kind = g[3] == EXO_PAYLOAD_TENSOR ? EXO_PAYLOAD_TENSOR : EXO_PAYLOAD_BYTES;
      exo_envelope_seal(&r, g, glen);
    }
    char err[200] = "";
    struct exo_envelope d;
    const void *p = NULL;
    int rc = exo_envelope_open(g, glen, 1 << 16, &d, &p, err, sizeof err);
    if (rc == 0) {
      accepted++;
      CHECK((const uint8_t *)p + d.payload_len == g + glen);
      if (d.payload_kind == EXO_PAYLOAD_TENSOR) {
        struct exo_tensor_view v;
        CHECK_INT_EQ(exo_tensor_payload_read(p, d.payload_len, &v, err, sizeof err), 0);
        CHECK(v.nbytes + EXO_TENSOR_META_SIZE == d.payload_len);
      }
    } else {
      rejected++;
      CHECK(rc == -EPROTO || rc == -EMSGSIZE);
      CHECK(err[0] != 0);
    }
    free(g);
  }
#undef NEXT
  CHECK(rejected > 0);
  CHECK(accepted > 0); /* resealed frames with benign mutations decode */
  fprintf(stderr, "  mutations: %d accepted, %d rejected\n", accepted, rejected);
  free(cf);
  free(tf);
}

int main(void)
{
  EXO_RUN(test_crc32c_known_and_paths_agree);
  EXO_RUN(test_layout_is_little_endian);
  EXO_RUN(test_control_round_trip);
  EXO_RUN(test_tensor_round_trip);
  EXO_RUN(test_malformed_frames);
  EXO_RUN(test_malformed_tensors);
  EXO_RUN(test_random_mutations);
  return exo_test_result();
}
