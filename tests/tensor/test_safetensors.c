/* tests/tensor/test_safetensors.c: the safetensors reader on the reference fixture and on
 * damaged files generated here (each error must name the file and the tensor), plus
 * exhaustive f16/bf16 conversion checks against independently computed references.
 * Writes only inside its own mkdtemp directory and removes it. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/dtype.h"
#include "tensor/safetensors.h"
#include "tests/test.h"

static char tmpdir[256];

static const char *fixtures(void)
{
  const char *f = getenv("EXO_FIXTURES");
  return f ? f : "tests/fixtures";
}

static uint32_t f32_bits(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* Writes tmpdir/name: u64 LE hlen (or hlen_override when nonzero), header, data_len bytes. */
static char *write_st(const char *name, const char *header, uint64_t hlen_override,
                      size_t data_len)
{
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *fp = fopen(path, "wb");
  if (!fp)
    return NULL;
  uint64_t hlen = hlen_override ? hlen_override : strlen(header);
  unsigned char b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)(hlen >> (8 * i));
  fwrite(b, 1, 8, fp);
  fwrite(header, 1, strlen(header), fp);
  for (size_t i = 0; i < data_len; i++)
    fputc((int)(i & 0xff), fp);
  fclose(fp);
  return path;
}

/* Opens a damaged file and checks it fails with a message containing each needle. */
static void expect_fail(const char *path, const char *n1, const char *n2)
{
  struct exo_safetensors *st = (void *)1;
  char err[512] = "";
  int rc = exo_safetensors_open(path, &st, err, sizeof err);
  CHECK(rc < 0);
  CHECK(st == NULL);
  CHECK_STR_CONTAINS(err, n1);
  if (n2)
    CHECK_STR_CONTAINS(err, n2);
  if (rc == 0)
    exo_safetensors_close(st);
}

static void test_reference_fixture(void)
{
  char path[512], err[512] = "";
  snprintf(path, sizeof path, "%s/tiny-llama/reference.safetensors", fixtures());
  struct exo_safetensors *st = NULL;
  CHECK_INT_EQ(exo_safetensors_open(path, &st, err, sizeof err), 0);
  if (!st) {
    fprintf(stderr, "%s\n", err);
    return;
  }
  CHECK(exo_safetensors_count(st) > 10);
  const struct exo_st_tensor *t = exo_safetensors_find(st, "rope.inv_freq");
  CHECK(t != NULL);
  if (t) {
    CHECK_INT_EQ(t->dtype, EXO_ST_F32);
    CHECK_INT_EQ(t->n_dims, 1);
    CHECK_INT_EQ(t->shape[0], 8);
    const float *v = t->data;
    /* reference.json -> rope.inv_freq_hf */
    CHECK_NEAR(v[0], 1.0, 0);
    CHECK_NEAR(v[1], 0.3162277638912201, 1e-9);
    CHECK_NEAR(v[7], 0.0003162277862429619, 1e-12);
  }
  t = exo_safetensors_find(st, "s1.input_ids");
  CHECK(t != NULL);
  if (t) {
    static const int32_t ids[7] = {508, 51, 258, 275, 64, 79, 289};
    CHECK_INT_EQ(t->dtype, EXO_ST_I32);
    CHECK_INT_EQ(t->shape[0], 7);
    CHECK(memcmp(t->data, ids, sizeof ids) == 0);
  }
  t = exo_safetensors_find(st, "s2.logits");
  CHECK(t && t->n_dims == 2 && t->shape[0] == 33 && t->shape[1] == 512 &&
        t->nbytes == 33 * 512 * 4);
  CHECK(exo_safetensors_find(st, "no.such.tensor") == NULL);
  /* name order, unique */
  for (size_t i = 1; i < exo_safetensors_count(st); i++)
    CHECK(strcmp(exo_safetensors_at(st, i - 1)->name, exo_safetensors_at(st, i)->name) < 0);
  CHECK(exo_safetensors_at(st, exo_safetensors_count(st)) == NULL);
  CHECK(!strcmp(exo_safetensors_name(st), "reference.safetensors"));
  exo_safetensors_close(st);
  exo_safetensors_close(NULL);
}

static void test_valid_small(void)
{
  const char *h = "{\"__metadata__\":{\"format\":\"pt\",\"n\":\"1\"},"
                  "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[16,24]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                  "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[8,8]},"
                  "\"scalar\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]}}";
  char *path = write_st("ok.safetensors", h, 0, 32);
  struct exo_safetensors *st = NULL;
  char err[512] = "";
  CHECK_INT_EQ(exo_safetensors_open(path, &st, err, sizeof err), 0);
  if (!st) {
    fprintf(stderr, "%s\n", err);
    return;
  }
  CHECK_INT_EQ(exo_safetensors_count(st), 4); /* __metadata__ is not a tensor */
  CHECK(!strcmp(exo_safetensors_metadata(st, "format"), "pt"));
  CHECK(exo_safetensors_metadata(st, "nope") == NULL);
  const struct exo_st_tensor *a = exo_safetensors_find(st, "a");
  const struct exo_st_tensor *s = exo_safetensors_find(st, "scalar");
  const struct exo_st_tensor *e = exo_safetensors_find(st, "empty");
  CHECK(a && a->nbytes == 16 && ((const unsigned char *)a->data)[3] == 3);
  CHECK(s && s->n_dims == 0 && s->n_elems == 1 && ((const unsigned char *)s->data)[0] == 24);
  CHECK(e && e->n_elems == 0 && e->nbytes == 0);
  if (a)
    exo_safetensors_willneed(st, a);
  exo_safetensors_close(st);

  path = write_st("empty.safetensors", "{}", 0, 0);
  CHECK_INT_EQ(exo_safetensors_open(path, &st, err, sizeof err), 0);
  if (st)
    CHECK_INT_EQ(exo_safetensors_count(st), 0);
  exo_safetensors_close(st);
}

static void test_damaged(void)
{
  char *p;
  p = write_st("badjson.safetensors", "{\"a\": {\"dtype\": \"F32\",", 0, 0);
  expect_fail(p, "badjson.safetensors: header JSON", "line 1");

  p = write_st("notobj.safetensors", "[1, 2]", 0, 0);
  expect_fail(p, "notobj.safetensors", "not an object");

  p = write_st("hlen.safetensors", "{}", 1000, 10);
  expect_fail(p, "hlen.safetensors: header length 1000 past end of file (20 bytes)", NULL);

  p = write_st("short.safetensors", "", 0, 0);
  CHECK_INT_EQ(truncate(p, 5), 0);
  expect_fail(p, "short.safetensors", "too short");

  p = write_st("trunc.safetensors",
               "{\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F32\",\"shape\":[250],"
               "\"data_offsets\":[0,1000]}}", 0, 800);
  expect_fail(p, "trunc.safetensors: tensor 'model.layers.0.mlp.up_proj.weight': "
                 "data_offsets [0, 1000] past end of data (800 bytes)", NULL);

  p = write_st("overlap.safetensors",
               "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 0, 24);
  expect_fail(p, "overlap.safetensors: tensor 'y'", "overlap tensor 'x'");

  p = write_st("dtype.safetensors",
               "{\"w\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 0, 16);
  expect_fail(p, "dtype.safetensors: tensor 'w'", "unknown dtype 'F128'");

  p = write_st("size.safetensors",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 0, 16);
  expect_fail(p, "size.safetensors: tensor 'w'", "need 12 bytes");

  p = write_st("neg.safetensors",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4);
  expect_fail(p, "neg.safetensors: tensor 'w'", "shape[0]");

  p = write_st("ovf.safetensors",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
               "\"data_offsets\":[0,4]}}", 0, 4);
  expect_fail(p, "ovf.safetensors: tensor 'w'", "overflow");

  p = write_st("mul.safetensors",
               "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
               "\"data_offsets\":[0,0]}}", 0, 4);
  expect_fail(p, "mul.safetensors: tensor 'w'", "need");

  p = write_st("rev.safetensors",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 0, 4);
  expect_fail(p, "rev.safetensors: tensor 'w'", "end before begin");

  p = write_st("offs.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 0, 4);
  expect_fail(p, "offs.safetensors: tensor 'w'", "data_offsets");

  p = write_st("dup.safetensors",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
               "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 0, 2);
  expect_fail(p, "dup.safetensors: header JSON", "duplicate");

  p = write_st("meta.safetensors", "{\"__metadata__\": 5}", 0, 0);
  expect_fail(p, "meta.safetensors", "__metadata__");

  /* A header length over the cap, inside a (sparse) file big enough to hold it. */
  p = write_st("cap.safetensors", "{}", (uint64_t)EXO_ST_MAX_HEADER + 8, 0);
  CHECK_INT_EQ(truncate(p, (off_t)EXO_ST_MAX_HEADER + 64), 0);
  expect_fail(p, "cap.safetensors: header length", "limit");

  char missing[512];
  snprintf(missing, sizeof missing, "%s/missing.safetensors", tmpdir);
  expect_fail(missing, "missing.safetensors", "cannot open");
}

/* f16 reference from the definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormal
 * 2^-14 * m/1024; computed with ldexp in double, independent of dtype.c's bit moves. */
static double f16_ref(uint16_t h)
{
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

static double bf16_ref(uint16_t b)
{
  int s = b >> 15, e = (b >> 7) & 255, m = b & 127;
  double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
  return s ? -v : v;
}

static void test_widen_exhaustive(void)
{
  int bad_f16 = 0, bad_bf16 = 0, bad_hw = 0;
  for (uint32_t i = 0; i < 65536; i++) {
    uint16_t h = (uint16_t)i;
    float got = exo_f16_to_f32(h);
    double ref = f16_ref(h);
    if (isnan(ref) ? !isnan(got) || !!signbit(got) != (h >> 15) : (double)got != ref ||
                                                               !!signbit(got) != (h >> 15))
      bad_f16++;
#ifdef __FLT16_MAX__
    _Float16 hw;
    memcpy(&hw, &h, 2);
    float hf = (float)hw;
    if (isnan(hf) ? !isnan(got) : f32_bits(hf) != f32_bits(got))
      bad_hw++;
#endif
    got = exo_bf16_to_f32(h);
    ref = bf16_ref(h);
    if (isnan(ref) ? !isnan(got) : (double)got != ref || !!signbit(got) != (h >> 15))
      bad_bf16++;
  }
  CHECK_INT_EQ(bad_f16, 0);
  CHECK_INT_EQ(bad_bf16, 0);
  CHECK_INT_EQ(bad_hw, 0);
  /* bulk forms read little-endian bytes from unaligned memory */
  unsigned char raw[7] = {0xff, 0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f};
  float out[3];
  exo_f16_to_f32_n(raw + 1, out, 3);
  CHECK(out[0] == 1.0f && out[1] == -2.0f);
  exo_bf16_to_f32_n(raw + 5, out, 1);
  CHECK(out[0] == 1.0f);
}

/* Nearest-even rounding of x to the grid of representable values, by brute comparison
 * of the two neighbours in double (exact: every candidate is a double). */
static uint16_t narrow_ref(float x, int bf16)
{
  double (*val)(uint16_t) = bf16 ? bf16_ref : f16_ref;
  if (isnan(x))
    return 0xffff; /* only NaN-ness is checked */
  uint16_t sign = signbit(x) ? 0x8000 : 0;
  double a = fabs((double)x);
  uint16_t inf = bf16 ? 0x7f80 : 0x7c00;
  /* Binary search the largest magnitude pattern <= a (patterns are monotonic). */
  uint32_t lo = 0, hi = inf;
  while (lo < hi) {
    uint32_t mid = (lo + hi + 1) / 2;
    if (val((uint16_t)mid) <= a)
      lo = mid;
    else
      hi = mid - 1;
  }
  if (lo == inf || val((uint16_t)lo) == a)
    return (uint16_t)(sign | lo);
  double below = val((uint16_t)lo);
  double above = lo + 1 == inf ? 2 * val((uint16_t)lo) - val((uint16_t)(lo - 1)) : val((uint16_t)(lo + 1));
  /* Past the largest finite value the "next" step is inf (IEEE overflow threshold). */
  double d1 = a - below, d2 = above - a;
  uint32_t r = d1 < d2 ? lo : d1 > d2 ? lo + 1 : (lo & 1 ? lo + 1 : lo);
  return (uint16_t)(sign | r);
}

static void test_narrow(void)
{
  int bad_rt = 0, bad_ref = 0, bad_hw = 0;
  /* every representable value round-trips */
  for (uint32_t i = 0; i < 65536; i++) {
    uint16_t h = (uint16_t)i;
    if (!isnan(exo_f16_to_f32(h)) && exo_f32_to_f16(exo_f16_to_f32(h)) != h)
      bad_rt++;
    if (!isnan(exo_bf16_to_f32(h)) && exo_f32_to_bf16(exo_bf16_to_f32(h)) != h)
      bad_rt++;
    if (isnan(exo_f16_to_f32(h)) && !isnan(exo_f16_to_f32(exo_f32_to_f16(exo_f16_to_f32(h)))))
      bad_rt++;
    if (isnan(exo_bf16_to_f32(h)) &&
        !isnan(exo_bf16_to_f32(exo_f32_to_bf16(exo_bf16_to_f32(h)))))
      bad_rt++;
  }
  CHECK_INT_EQ(bad_rt, 0);
  /* exact halfway points and their neighbours, then pseudo-random f32 bit patterns */
  uint64_t x = 12345;
  for (uint32_t i = 0; i < 200000; i++) {
    float f;
    if (i < 65536) {
      uint16_t h = (uint16_t)i;
      double mid = (f16_ref(h) + f16_ref((uint16_t)(h + 1))) / 2;
      f = (float)mid; /* exact: midpoints of adjacent halves fit in f32 */
      if (i & 1) {
        uint32_t u = f32_bits(f) + ((i >> 1) & 1 ? 1 : (uint32_t)-1);
        memcpy(&f, &u, 4);
      }
    } else {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      uint32_t u = (uint32_t)(x >> 32);
      memcpy(&f, &u, 4);
    }
    uint16_t h = exo_f32_to_f16(f), b = exo_f32_to_bf16(f);
    if (isnan(f)) {
      if (!isnan(exo_f16_to_f32(h)) || !isnan(exo_bf16_to_f32(b)))
        bad_ref++;
      continue;
    }
    if (h != narrow_ref(f, 0) || b != narrow_ref(f, 1))
      bad_ref++;
#ifdef __FLT16_MAX__
    _Float16 hw = (_Float16)f;
    uint16_t hb;
    memcpy(&hb, &hw, 2);
    if (hb != h)
      bad_hw++;
#endif
  }
  CHECK_INT_EQ(bad_ref, 0);
  CHECK_INT_EQ(bad_hw, 0);
  CHECK_INT_EQ(exo_f32_to_f16(65520.0f), 0x7c00);
  CHECK_INT_EQ(exo_f32_to_f16(65519.99f), 0x7bff);
  CHECK_INT_EQ(exo_f32_to_bf16(3.4028235e38f), 0x7f80);
}

int main(void)
{
  const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(tmpdir, sizeof tmpdir, "%s/exo-st-XXXXXX", base);
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  EXO_RUN(test_reference_fixture);
  EXO_RUN(test_valid_small);
  EXO_RUN(test_damaged);
  EXO_RUN(test_widen_exhaustive);
  EXO_RUN(test_narrow);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "warning: could not remove %s\n", tmpdir);
  return exo_test_result();
}
