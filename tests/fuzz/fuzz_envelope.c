/* tests/fuzz/fuzz_envelope.c: the wire envelope decoder (exo_envelope_open) and the
 * tensor payload reader on arbitrary bytes. The first input byte picks the mode:
 * raw frame; frame with its CRC recomputed (so the fuzzer gets past the checksum to the
 * field checks); bare tensor payload. Properties: an accepted frame re-seals to the same
 * bytes; an accepted tensor view lies inside the payload and matches its shape. */
#include "fuzz.h"

#include "runtime/envelope.h"

static void check_tensor(const uint8_t *p, size_t len)
{
  struct exo_tensor_view v;
  char err[160];
  if (exo_tensor_payload_read(p, len, &v, err, sizeof err) < 0) {
    FUZZ_CHECK(err[0] != '\0');
    return;
  }
  size_t n = exo_wire_dtype_size(v.dtype);
  FUZZ_CHECK(n != 0 && v.ndim >= 1 && v.ndim <= EXO_TENSOR_MAX_DIMS);
  for (uint32_t i = 0; i < v.ndim; i++)
    n *= v.shape[i];
  FUZZ_CHECK(n == v.nbytes);
  FUZZ_CHECK((const uint8_t *)v.data >= p && (const uint8_t *)v.data + v.nbytes <= p + len);
  volatile uint8_t sink = 0;
  if (v.nbytes) /* ASan checks both ends really are inside the input */
    sink = ((const uint8_t *)v.data)[0] ^ ((const uint8_t *)v.data)[v.nbytes - 1];
  (void)sink;
}

static void check_frame(const uint8_t *f, size_t len, size_t max_payload)
{
  struct exo_envelope env;
  const void *payload = NULL;
  char err[160] = "";
  int rc = exo_envelope_open(f, len, max_payload, &env, &payload, err, sizeof err);
  if (rc < 0) {
    FUZZ_CHECK(rc == -EPROTO || rc == -EMSGSIZE);
    FUZZ_CHECK(err[0] != '\0');
    return;
  }
  FUZZ_CHECK(env.payload_len <= max_payload);
  FUZZ_CHECK(len == EXO_ENVELOPE_HEADER_SIZE + (size_t)env.payload_len);
  FUZZ_CHECK(payload == f + EXO_ENVELOPE_HEADER_SIZE);
  if (env.payload_kind == EXO_PAYLOAD_TENSOR)
    check_tensor(payload, env.payload_len);
  uint8_t *copy = malloc(len);
  FUZZ_CHECK(copy);
  memcpy(copy + EXO_ENVELOPE_HEADER_SIZE, payload, env.payload_len);
  FUZZ_CHECK(exo_envelope_seal(&env, copy, len) == 0);
  FUZZ_CHECK(memcmp(copy, f, len) == 0);
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 3;
  const uint8_t *in = data + 1;
  size_t n = size - 1;
  /* A small limit sometimes, so the -EMSGSIZE path is reachable with small inputs. */
  size_t max_payload = (data[0] & 0x80) ? 64 : EXO_ENVELOPE_DEFAULT_MAX_PAYLOAD;
  switch (mode) {
  case 0:
    check_frame(in, n, max_payload);
    break;
  case 1: {
    uint8_t *f = malloc(n ? n : 1);
    FUZZ_CHECK(f);
    memcpy(f, in, n);
    if (n >= EXO_ENVELOPE_HEADER_SIZE) {
      /* CRC over header[0, 52) then the payload the header claims, clamped to the input */
      size_t plen = (size_t)f[48] | (size_t)f[49] << 8 | (size_t)f[50] << 16 |
                    (size_t)f[51] << 24;
      size_t have = n - EXO_ENVELOPE_HEADER_SIZE;
      uint32_t c = exo_crc32c(0, f, 52);
      c = exo_crc32c(c, f + EXO_ENVELOPE_HEADER_SIZE, plen < have ? plen : have);
      for (int i = 0; i < 4; i++)
        f[52 + i] = (uint8_t)(c >> (8 * i));
    }
    check_frame(f, n, max_payload);
    free(f);
    break;
  }
  default:
    FUZZ_CHECK(exo_crc32c(0, in, n) == exo_crc32c_portable(0, in, n));
    check_tensor(in, n);
  }
  return 0;
}
