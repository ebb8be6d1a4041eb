/* tensor/gguf.c: GGUF reader and writer (see gguf.h).
 * The reader walks the file once with a bounds-checked cursor: every length is checked
 * against the bytes left before it is used, so a lying count or length gives an error
 * naming the entry, never a read past the mapping or a huge allocation. Keys and
 * tensor names are copied (NUL-terminated); values stay in the mapping.
 * The writer keeps metadata and tensor infos in memory and streams tensor data. */
#include "common/err.h"
#include "tensor/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/quant.h"

#define EXO_GGUF_MAGIC "GGUF"
#define EXO_GGUF_MAX_STR (1u << 30) /* longer strings are refused */

struct exo_gguf_kv {
  char *key;
  enum exo_gguf_vtype type;
  enum exo_gguf_vtype arr_type; /* ARRAY only */
  uint64_t n;                   /* ARRAY only: element count */
  const unsigned char *val;     /* value bytes (for ARRAY: the first element) */
  const unsigned char **strs;   /* ARRAY of STRING: each element's length field */
};

struct exo_gguf {
  char *name; /* base name for messages */
  unsigned char *map;
  size_t size;
  uint32_t version;
  struct exo_gguf_kv *kv;
  size_t n_kv;
  struct exo_gguf_tensor *t;
  size_t n_t;
  size_t data_off;
};

struct exo_cur {
  const unsigned char *p, *end;
};

static int exo_cur_take(struct exo_cur *c, uint64_t n, const unsigned char **out)
{
  if ((uint64_t)(c->end - c->p) < n)
    return -1;
  *out = c->p;
  c->p += n;
  return 0;
}

static uint64_t exo_rd64(const unsigned char *p)
{
  uint64_t v;
  memcpy(&v, p, 8); /* little-endian host assumed (x86-64, ARM64) */
  return v;
}

static uint32_t exo_rd32(const unsigned char *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static int exo_cur_u32(struct exo_cur *c, uint32_t *v)
{
  const unsigned char *p;
  if (exo_cur_take(c, 4, &p))
    return -1;
  *v = exo_rd32(p);
  return 0;
}

static int exo_cur_u64(struct exo_cur *c, uint64_t *v)
{
  const unsigned char *p;
  if (exo_cur_take(c, 8, &p))
    return -1;
  *v = exo_rd64(p);
  return 0;
}

/* A string: u64 length + bytes. -1 truncated length field, -2 length past the end. */
static int exo_cur_str(struct exo_cur *c, const unsigned char **s, uint64_t *len)
{
  if (exo_cur_u64(c, len))
    return -1;
  if (*len > EXO_GGUF_MAX_STR || exo_cur_take(c, *len, s))
    return -2;
  return 0;
}

static size_t exo_vtype_size(uint32_t t)
{
  switch (t) {
  case EXO_GGUF_UINT8: case EXO_GGUF_INT8: case EXO_GGUF_BOOL: return 1;
  case EXO_GGUF_UINT16: case EXO_GGUF_INT16: return 2;
  case EXO_GGUF_UINT32: case EXO_GGUF_INT32: case EXO_GGUF_FLOAT32: return 4;
  case EXO_GGUF_UINT64: case EXO_GGUF_INT64: case EXO_GGUF_FLOAT64: return 8;
  }
  return 0; /* STRING, ARRAY, unknown */
}

static const char *exo_ggml_type_name(uint32_t t)
{
  switch (t) {
  case 0: return "F32"; case 1: return "F16"; case 2: return "Q4_0"; case 3: return "Q4_1";
  case 6: return "Q5_0"; case 7: return "Q5_1"; case 8: return "Q8_0"; case 9: return "Q8_1";
  case 10: return "Q2_K"; case 11: return "Q3_K"; case 12: return "Q4_K"; case 13: return "Q5_K";
  case 14: return "Q6_K"; case 15: return "Q8_K"; case 24: return "I8"; case 25: return "I16";
  case 26: return "I32"; case 27: return "I64"; case 28: return "F64"; case 30: return "BF16";
  }
  return t < 40 ? "a ggml type" : NULL;
}

uint32_t exo_gguf_ggml_type(enum exo_dtype dt)
{
  switch (dt) {
  case EXO_DTYPE_F32: return EXO_GGML_F32;
  case EXO_DTYPE_F16: return EXO_GGML_F16;
  case EXO_DTYPE_BF16: return EXO_GGML_BF16;
  case EXO_DTYPE_Q8_0: return EXO_GGML_Q8_0;
  case EXO_DTYPE_Q4_0: return EXO_GGML_Q4_0;
  }
  return UINT32_MAX;
}

static int exo_dtype_of_ggml(uint32_t t, enum exo_dtype *dt)
{
  switch (t) {
  case EXO_GGML_F32: *dt = EXO_DTYPE_F32; return 0;
  case EXO_GGML_F16: *dt = EXO_DTYPE_F16; return 0;
  case EXO_GGML_BF16: *dt = EXO_DTYPE_BF16; return 0;
  case EXO_GGML_Q8_0: *dt = EXO_DTYPE_Q8_0; return 0;
  case EXO_GGML_Q4_0: *dt = EXO_DTYPE_Q4_0; return 0;
  }
  return -1;
}

static char *exo_strndup_bytes(const unsigned char *s, uint64_t n)
{
  char *p = malloc((size_t)n + 1);
  if (p) {
    memcpy(p, s, (size_t)n);
    p[n] = '\0';
  }
  return p;
}

/* One metadata value of type t at the cursor (arrays: elements, not nested arrays). */
static int exo_parse_value(struct exo_gguf *g, struct exo_cur *c, struct exo_gguf_kv *kv,
                           char *err, size_t errlen)
{
  const unsigned char *p;
  if (kv->type == EXO_GGUF_STRING) {
    uint64_t len;
    kv->val = c->p;
    int r = exo_cur_str(c, &p, &len);
    if (r) {
      exo_errf(err, errlen, "%s: metadata '%s': string %s", g->name, kv->key,
               r == -1 ? "length truncated" : "length runs past the end of the file");
      return -EINVAL;
    }
    return 0;
  }
  if (kv->type == EXO_GGUF_ARRAY) {
    uint32_t at;
    if (exo_cur_u32(c, &at) || exo_cur_u64(c, &kv->n)) {
      exo_errf(err, errlen, "%s: metadata '%s': array header truncated", g->name, kv->key);
      return -EINVAL;
    }
    kv->arr_type = (enum exo_gguf_vtype)at;
    kv->val = c->p;
    if (at == EXO_GGUF_STRING) {
      /* each string is at least its 8-byte length: bounds n before allocating */
      if (kv->n > (uint64_t)(c->end - c->p) / 8) {
        exo_errf(err, errlen, "%s: metadata '%s': array of %llu strings runs past the end "
                 "of the file", g->name, kv->key, (unsigned long long)kv->n);
        return -EINVAL;
      }
      kv->strs = malloc((size_t)(kv->n ? kv->n : 1) * sizeof *kv->strs);
      if (!kv->strs)
        return -ENOMEM;
      for (uint64_t i = 0; i < kv->n; i++) {
        uint64_t len;
        kv->strs[i] = c->p;
        int r = exo_cur_str(c, &p, &len);
        if (r) {
          exo_errf(err, errlen, "%s: metadata '%s': element %llu: string %s", g->name,
                   kv->key, (unsigned long long)i,
                   r == -1 ? "length truncated" : "length runs past the end of the file");
          return -EINVAL;
        }
      }
      return 0;
    }
    const size_t es = exo_vtype_size(at);
    if (!es) {
      exo_errf(err, errlen, "%s: metadata '%s': array element type %u is %s", g->name,
               kv->key, at, at == EXO_GGUF_ARRAY ? "an array (nested arrays are not supported)"
                                                  : "unknown");
      return -EINVAL;
    }
    if (kv->n > (uint64_t)(c->end - c->p) / es) {
      exo_errf(err, errlen, "%s: metadata '%s': array of %llu elements runs past the end of "
               "the file", g->name, kv->key, (unsigned long long)kv->n);
      return -EINVAL;
    }
    c->p += kv->n * es;
    return 0;
  }
  const size_t es = exo_vtype_size(kv->type);
  if (!es) {
    exo_errf(err, errlen, "%s: metadata '%s': unknown value type %u", g->name, kv->key,
             (unsigned)kv->type);
    return -EINVAL;
  }
  if (exo_cur_take(c, es, &kv->val)) {
    exo_errf(err, errlen, "%s: metadata '%s': value truncated", g->name, kv->key);
    return -EINVAL;
  }
  return 0;
}

static struct exo_gguf_kv *exo_gguf_kv_find(const struct exo_gguf *g, const char *key)
{
  for (size_t i = 0; i < g->n_kv; i++)
    if (!strcmp(g->kv[i].key, key))
      return &g->kv[i];
  return NULL;
}

static int exo_tensor_cmp(const void *a, const void *b)
{
  return strcmp(((const struct exo_gguf_tensor *)a)->name,
                ((const struct exo_gguf_tensor *)b)->name);
}

static int exo_gguf_parse(struct exo_gguf *g, char *err, size_t errlen)
{
  struct exo_cur c = {g->map, g->map + g->size};
  const unsigned char *p;
  uint64_t n_t, n_kv;
  if (exo_cur_take(&c, 4, &p) || memcmp(p, EXO_GGUF_MAGIC, 4)) {
    if (g->size < 4)
      exo_errf(err, errlen, "%s: file is %zu bytes, too short for the magic", g->name, g->size);
    else
      exo_errf(err, errlen, "%s: bad magic %02x %02x %02x %02x (expected 'GGUF')", g->name,
               p ? p[0] : g->map[0], g->map[1], g->map[2], g->map[3]);
    return -EINVAL;
  }
  if (exo_cur_u32(&c, &g->version) || exo_cur_u64(&c, &n_t) || exo_cur_u64(&c, &n_kv)) {
    exo_errf(err, errlen, "%s: header truncated (version, tensor_count, metadata_kv_count)",
             g->name);
    return -EINVAL;
  }
  if (g->version != 2 && g->version != 3) {
    exo_errf(err, errlen, "%s: version %u is not supported (2, 3)", g->name, g->version);
    return -EINVAL;
  }
  /* every kv takes >= 8 + 4 bytes and every tensor info >= 8 + 4 + 8 + 4 + 8 */
  const uint64_t left = (uint64_t)(c.end - c.p);
  if (n_kv > left / 12 || n_t > left / 32) {
    exo_errf(err, errlen, "%s: header claims %llu metadata entries and %llu tensors, more "
             "than the file's %zu bytes can hold", g->name, (unsigned long long)n_kv,
             (unsigned long long)n_t, g->size);
    return -EINVAL;
  }
  g->kv = calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kv);
  g->t = calloc((size_t)(n_t ? n_t : 1), sizeof *g->t);
  if (!g->kv || !g->t)
    return -ENOMEM;
  for (uint64_t i = 0; i < n_kv; i++) {
    struct exo_gguf_kv *kv = &g->kv[i];
    uint64_t klen;
    uint32_t vt;
    int r = exo_cur_str(&c, &p, &klen);
    if (r) {
      exo_errf(err, errlen, "%s: metadata entry %llu: key %s", g->name, (unsigned long long)i,
               r == -1 ? "length truncated" : "length runs past the end of the file");
      return -EINVAL;
    }
    if (!(kv->key = exo_strndup_bytes(p, klen)))
      return -ENOMEM;
    g->n_kv = i + 1;
    if (strlen(kv->key) != klen) {
      exo_errf(err, errlen, "%s: metadata entry %llu: key contains a NUL byte", g->name,
               (unsigned long long)i);
      return -EINVAL;
    }
    for (uint64_t j = 0; j < i; j++)
      if (!strcmp(g->kv[j].key, kv->key)) {
        exo_errf(err, errlen, "%s: duplicate metadata key '%s'", g->name, kv->key);
        return -EINVAL;
      }
    if (exo_cur_u32(&c, &vt)) {
      exo_errf(err, errlen, "%s: metadata '%s': value type truncated", g->name, kv->key);
      return -EINVAL;
    }
    kv->type = (enum exo_gguf_vtype)vt;
    int rc = exo_parse_value(g, &c, kv, err, errlen);
    if (rc)
      return rc;
  }
  uint64_t align = EXO_GGUF_DEFAULT_ALIGNMENT;
  const struct exo_gguf_kv *ak = exo_gguf_kv_find(g, "general.alignment");
  if (ak) {
    if (ak->type != EXO_GGUF_UINT32 || !exo_rd32(ak->val) ||
        (exo_rd32(ak->val) & (exo_rd32(ak->val) - 1))) {
      exo_errf(err, errlen, "%s: metadata 'general.alignment' must be a uint32 power of two",
               g->name);
      return -EINVAL;
    }
    align = exo_rd32(ak->val);
  }
  for (uint64_t i = 0; i < n_t; i++) {
    struct exo_gguf_tensor *t = &g->t[i];
    uint64_t nlen, off;
    uint32_t nd, type;
    int r = exo_cur_str(&c, &p, &nlen);
    if (r) {
      exo_errf(err, errlen, "%s: tensor info %llu: name %s", g->name, (unsigned long long)i,
               r == -1 ? "length truncated" : "length runs past the end of the file");
      return -EINVAL;
    }
    char *name = exo_strndup_bytes(p, nlen);
    if (!name)
      return -ENOMEM;
    t->name = name;
    g->n_t = i + 1;
    if (exo_cur_u32(&c, &nd)) {
      exo_errf(err, errlen, "%s: tensor '%s': n_dims truncated", g->name, name);
      return -EINVAL;
    }
    if (nd < 1 || nd > EXO_GGUF_MAX_DIMS) {
      exo_errf(err, errlen, "%s: tensor '%s': n_dims %u, expected 1..%d", g->name, name, nd,
               EXO_GGUF_MAX_DIMS);
      return -EINVAL;
    }
    t->n_dims = (int)nd;
    uint64_t n_elems = 1;
    for (int d = 0; d < EXO_GGUF_MAX_DIMS; d++)
      t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
      uint64_t v;
      if (exo_cur_u64(&c, &v)) {
        exo_errf(err, errlen, "%s: tensor '%s': dims truncated", g->name, name);
        return -EINVAL;
      }
      if (v == 0 || v > ((uint64_t)1 << 40) || n_elems > ((uint64_t)1 << 40) / v) {
        exo_errf(err, errlen, "%s: tensor '%s': dim %u is %llu (must be 1..2^40 with a "
                 "product below 2^40)", g->name, name, d, (unsigned long long)v);
        return -EINVAL;
      }
      t->ne[d] = (int64_t)v;
      n_elems *= v;
    }
    if (exo_cur_u32(&c, &type) || exo_cur_u64(&c, &off)) {
      exo_errf(err, errlen, "%s: tensor '%s': type or offset truncated", g->name, name);
      return -EINVAL;
    }
    if (exo_dtype_of_ggml(type, &t->dtype)) {
      const char *tn = exo_ggml_type_name(type);
      if (!tn) {
        exo_errf(err, errlen, "%s: tensor '%s': unknown ggml type %u", g->name, name, type);
        return -EINVAL;
      }
      exo_errf(err, errlen, "%s: tensor '%s': type %s (%u) is not supported (F32, F16, BF16, "
               "Q8_0, Q4_0)", g->name, name, tn, type);
      return -ENOTSUP;
    }
    const size_t rb = exo_dtype_row_bytes(t->dtype, t->ne[0]);
    if (!rb) {
      exo_errf(err, errlen, "%s: tensor '%s': ne[0] = %lld is not a multiple of the %s block "
               "size %d", g->name, name, (long long)t->ne[0], exo_ggml_type_name(type), EXO_QK);
      return -EINVAL;
    }
    t->nbytes = rb * (size_t)(n_elems / (uint64_t)t->ne[0]);
    if (off % align) {
      exo_errf(err, errlen, "%s: tensor '%s': offset %llu is not a multiple of the alignment "
               "%llu", g->name, name, (unsigned long long)off, (unsigned long long)align);
      return -EINVAL;
    }
    t->offset = off;
    for (uint64_t j = 0; j < i; j++)
      if (!strcmp(g->t[j].name, name)) {
        exo_errf(err, errlen, "%s: duplicate tensor name '%s'", g->name, name);
        return -EINVAL;
      }
  }
  const size_t pos = (size_t)(c.p - g->map);
  g->data_off = (pos + align - 1) / align * align;
  const uint64_t data_size = g->size >= g->data_off ? g->size - g->data_off : 0;
  for (size_t i = 0; i < g->n_t; i++) {
    struct exo_gguf_tensor *t = &g->t[i];
    if (t->offset > data_size || t->nbytes > data_size - t->offset) {
      exo_errf(err, errlen, "%s: tensor '%s': data [%llu, %llu) runs past the end of the "
               "file (data region is %llu bytes)", g->name, t->name,
               (unsigned long long)t->offset, (unsigned long long)(t->offset + t->nbytes),
               (unsigned long long)data_size);
      return -EINVAL;
    }
    t->data = g->map + g->data_off + t->offset;
  }
  /* sorted by name for bsearch; overlapping data is refused (a lying file could alias) */
  qsort(g->t, g->n_t, sizeof *g->t, exo_tensor_cmp);
  for (size_t i = 0; i < g->n_t; i++)
    for (size_t j = i + 1; j < g->n_t && g->n_t <= 4096; j++) {
      const struct exo_gguf_tensor *a = &g->t[i], *b = &g->t[j];
      if (a->offset < b->offset + b->nbytes && b->offset < a->offset + a->nbytes) {
        exo_errf(err, errlen, "%s: tensors '%s' and '%s' overlap in the data region",
                 g->name, a->name, b->name);
        return -EINVAL;
      }
    }
  return 0;
}

int exo_gguf_open(const char *path, struct exo_gguf **out, char *err, size_t errlen)
{
  *out = NULL;
  struct exo_gguf *g = calloc(1, sizeof *g);
  int rc = -ENOMEM, fd = -1;
  if (!g)
    goto fail;
  const char *base = strrchr(path, '/');
  if (!(g->name = strdup(base ? base + 1 : path)))
    goto fail;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) < 0) {
    rc = -errno;
    exo_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    goto fail;
  }
  if (!S_ISREG(sb.st_mode)) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s: not a regular file", path);
    goto fail;
  }
  g->size = (size_t)sb.st_size;
  if (g->size > 0) {
    void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      rc = -errno;
      exo_errf(err, errlen, "%s: mmap: %s", path, strerror(errno));
      goto fail;
    }
    g->map = m;
  }
  close(fd);
  fd = -1;
  if (g->size < 4) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s: file is %zu bytes, too short for the magic", g->name, g->size);
    goto fail;
  }
  if ((rc = exo_gguf_parse(g, err, errlen)))
    goto fail;
  *out = g;
  return 0;
fail:
  if (rc == -ENOMEM)
    exo_errf(err, errlen, "%s: out of memory", path);
  if (fd >= 0)
    close(fd);
  exo_gguf_close(g);
  return rc;
}

void exo_gguf_close(struct exo_gguf *g)
{
  if (!g)
    return;
  for (size_t i = 0; i < g->n_kv; i++) {
    free(g->kv[i].key);
    free(g->kv[i].strs);
  }
  free(g->kv);
  for (size_t i = 0; i < g->n_t; i++)
    free((char *)g->t[i].name);
  free(g->t);
  if (g->map)
    munmap(g->map, g->size);
  free(g->name);
  free(g);
}

uint32_t exo_gguf_version(const struct exo_gguf *g)
{
  return g->version;
}

size_t exo_gguf_tensor_count(const struct exo_gguf *g)
{
  return g->n_t;
}

const struct exo_gguf_tensor *exo_gguf_tensor_at(const struct exo_gguf *g, size_t i)
{
  return i < g->n_t ? &g->t[i] : NULL;
}

const struct exo_gguf_tensor *exo_gguf_find(const struct exo_gguf *g, const char *name)
{
  struct exo_gguf_tensor key = {.name = name};
  return bsearch(&key, g->t, g->n_t, sizeof *g->t, exo_tensor_cmp);
}

void exo_gguf_willneed(const struct exo_gguf *g, const struct exo_gguf_tensor *t)
{
  const long pg = sysconf(_SC_PAGESIZE);
  uintptr_t a = (uintptr_t)t->data & ~(uintptr_t)(pg - 1);
  size_t n = (size_t)((uintptr_t)t->data + t->nbytes - a);
  (void)g;
  if (t->nbytes)
    madvise((void *)a, n, MADV_WILLNEED);
}

/* ---- metadata getters -------------------------------------------------------------- */

static const char *exo_vtype_name(enum exo_gguf_vtype t)
{
  static const char *const names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32",
                                      "float32", "bool", "string", "array", "uint64", "int64",
                                      "float64"};
  return (unsigned)t < 13 ? names[t] : "unknown";
}

static int exo_int_at(enum exo_gguf_vtype t, const unsigned char *p, int64_t *v)
{
  switch (t) {
  case EXO_GGUF_UINT8: *v = p[0]; return 0;
  case EXO_GGUF_INT8: *v = (int8_t)p[0]; return 0;
  case EXO_GGUF_UINT16: *v = (uint16_t)(p[0] | p[1] << 8); return 0;
  case EXO_GGUF_INT16: *v = (int16_t)(uint16_t)(p[0] | p[1] << 8); return 0;
  case EXO_GGUF_UINT32: *v = exo_rd32(p); return 0;
  case EXO_GGUF_INT32: *v = (int32_t)exo_rd32(p); return 0;
  case EXO_GGUF_INT64: *v = (int64_t)exo_rd64(p); return 0;
  case EXO_GGUF_UINT64:
    if (exo_rd64(p) > INT64_MAX)
      return -1;
    *v = (int64_t)exo_rd64(p);
    return 0;
  default: return -1;
  }
}

static int exo_wrong_type(const struct exo_gguf *g, const struct exo_gguf_kv *kv,
                          const char *want, char *err, size_t errlen)
{
  exo_errf(err, errlen, "%s: metadata '%s' is %s, expected %s", g->name, kv->key,
           exo_vtype_name(kv->type), want);
  return -EINVAL;
}

int exo_gguf_get_int(const struct exo_gguf *g, const char *key, int64_t *v, char *err,
                     size_t errlen)
{
  const struct exo_gguf_kv *kv = exo_gguf_kv_find(g, key);
  if (!kv)
    return -ENOENT;
  if (exo_int_at(kv->type, kv->val, v))
    return exo_wrong_type(g, kv, "an integer", err, errlen);
  return 0;
}

int exo_gguf_get_float(const struct exo_gguf *g, const char *key, double *v, char *err,
                       size_t errlen)
{
  const struct exo_gguf_kv *kv = exo_gguf_kv_find(g, key);
  if (!kv)
    return -ENOENT;
  if (kv->type == EXO_GGUF_FLOAT32) {
    float f;
    memcpy(&f, kv->val, 4);
    *v = f;
  } else if (kv->type == EXO_GGUF_FLOAT64) {
    memcpy(v, kv->val, 8);
  } else {
    return exo_wrong_type(g, kv, "a float", err, errlen);
  }
  return 0;
}

int exo_gguf_get_bool(const struct exo_gguf *g, const char *key, int *v, char *err,
                      size_t errlen)
{
  const struct exo_gguf_kv *kv = exo_gguf_kv_find(g, key);
  if (!kv)
    return -ENOENT;
  if (kv->type != EXO_GGUF_BOOL)
    return exo_wrong_type(g, kv, "a bool", err, errlen);
  *v = kv->val[0] != 0;
  return 0;
}

int exo_gguf_get_str(const struct exo_gguf *g, const char *key, const char **s, size_t *len,
                     char *err, size_t errlen)
{
  const struct exo_gguf_kv *kv = exo_gguf_kv_find(g, key);
  if (!kv)
    return -ENOENT;
  if (kv->type != EXO_GGUF_STRING)
    return exo_wrong_type(g, kv, "a string", err, errlen);
  *len = (size_t)exo_rd64(kv->val);
  *s = (const char *)kv->val + 8;
  return 0;
}

int exo_gguf_get_arr(const struct exo_gguf *g, const char *key, enum exo_gguf_vtype *type,
                     uint64_t *n, char *err, size_t errlen)
{
  const struct exo_gguf_kv *kv = exo_gguf_kv_find(g, key);
  if (!kv)
    return -ENOENT;
  if (kv->type != EXO_GGUF_ARRAY)
    return exo_wrong_type(g, kv, "an array", err, errlen);
  *type = kv->arr_type;
  *n = kv->n;
  return 0;
}

int exo_gguf_arr_str(const struct exo_gguf *g, const char *key, uint64_t i, const char **s,
                     size_t *len)
{
  const struct exo_gguf_kv *kv = exo_gguf_kv_find(g, key);
  if (!kv || kv->type != EXO_GGUF_ARRAY || kv->arr_type != EXO_GGUF_STRING || i >= kv->n)
    return -EINVAL;
  *len = (size_t)exo_rd64(kv->strs[i]);
  *s = (const char *)kv->strs[i] + 8;
  return 0;
}

int exo_gguf_arr_int(const struct exo_gguf *g, const char *key, uint64_t i, int64_t *v)
{
  const struct exo_gguf_kv *kv = exo_gguf_kv_find(g, key);
  if (!kv || kv->type != EXO_GGUF_ARRAY || i >= kv->n || !exo_vtype_size(kv->arr_type))
    return -EINVAL;
  return exo_int_at(kv->arr_type, kv->val + i * exo_vtype_size(kv->arr_type), v) ? -EINVAL : 0;
}

/* ---- writer ------------------------------------------------------------------------ */

struct exo_gguf_wtensor {
  char *name;
  int n_dims;
  int64_t ne[EXO_GGUF_MAX_DIMS];
  enum exo_dtype dtype;
  uint64_t offset, nbytes;
};

struct exo_gguf_writer {
  unsigned char *kv; /* serialized metadata entries */
  size_t kv_len, kv_cap;
  uint64_t n_kv;
  char **keys;
  struct exo_gguf_wtensor *t;
  size_t n_t, cap_t;
  uint64_t data_size; /* running, aligned */
  FILE *fp;
  char *path;
  size_t next; /* next tensor whose data is due */
  int failed;
};

int exo_gguf_writer_new(struct exo_gguf_writer **out)
{
  *out = calloc(1, sizeof **out);
  return *out ? 0 : -ENOMEM;
}

void exo_gguf_writer_free(struct exo_gguf_writer *w)
{
  if (!w)
    return;
  if (w->fp)
    fclose(w->fp);
  for (uint64_t i = 0; i < w->n_kv; i++)
    free(w->keys[i]);
  free(w->keys);
  for (size_t i = 0; i < w->n_t; i++)
    free(w->t[i].name);
  free(w->t);
  free(w->kv);
  free(w->path);
  free(w);
}

static int exo_wbuf(struct exo_gguf_writer *w, const void *p, size_t n)
{
  if (w->kv_len + n > w->kv_cap) {
    size_t cap = w->kv_cap ? w->kv_cap : 4096;
    while (cap < w->kv_len + n)
      cap *= 2;
    unsigned char *b = realloc(w->kv, cap);
    if (!b)
      return -ENOMEM;
    w->kv = b;
    w->kv_cap = cap;
  }
  memcpy(w->kv + w->kv_len, p, n);
  w->kv_len += n;
  return 0;
}

static int exo_wstr(struct exo_gguf_writer *w, const char *s)
{
  uint64_t n = strlen(s);
  return exo_wbuf(w, &n, 8) || exo_wbuf(w, s, (size_t)n) ? -ENOMEM : 0;
}

/* Key + value type; refuses a repeated key. */
static int exo_wkey(struct exo_gguf_writer *w, const char *key, uint32_t type)
{
  for (uint64_t i = 0; i < w->n_kv; i++)
    if (!strcmp(w->keys[i], key))
      return -EEXIST;
  char **k = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *k);
  if (!k)
    return -ENOMEM;
  w->keys = k;
  if (!(k[w->n_kv] = strdup(key)))
    return -ENOMEM;
  w->n_kv++;
  return exo_wstr(w, key) || exo_wbuf(w, &type, 4) ? -ENOMEM : 0;
}

int exo_gguf_writer_add_str(struct exo_gguf_writer *w, const char *key, const char *v)
{
  int rc = exo_wkey(w, key, EXO_GGUF_STRING);
  return rc ? rc : exo_wstr(w, v);
}

int exo_gguf_writer_add_u32(struct exo_gguf_writer *w, const char *key, uint32_t v)
{
  int rc = exo_wkey(w, key, EXO_GGUF_UINT32);
  return rc ? rc : exo_wbuf(w, &v, 4);
}

int exo_gguf_writer_add_f32(struct exo_gguf_writer *w, const char *key, float v)
{
  int rc = exo_wkey(w, key, EXO_GGUF_FLOAT32);
  return rc ? rc : exo_wbuf(w, &v, 4);
}

int exo_gguf_writer_add_bool(struct exo_gguf_writer *w, const char *key, int v)
{
  uint8_t b = v ? 1 : 0;
  int rc = exo_wkey(w, key, EXO_GGUF_BOOL);
  return rc ? rc : exo_wbuf(w, &b, 1);
}

int exo_gguf_writer_add_arr_str(struct exo_gguf_writer *w, const char *key,
                                const char *const *v, uint64_t n)
{
  uint32_t at = EXO_GGUF_STRING;
  int rc = exo_wkey(w, key, EXO_GGUF_ARRAY);
  if (rc || (rc = exo_wbuf(w, &at, 4)) || (rc = exo_wbuf(w, &n, 8)))
    return rc;
  for (uint64_t i = 0; i < n; i++)
    if ((rc = exo_wstr(w, v[i])))
      return rc;
  return 0;
}

int exo_gguf_writer_add_arr_i32(struct exo_gguf_writer *w, const char *key, const int32_t *v,
                                uint64_t n)
{
  uint32_t at = EXO_GGUF_INT32;
  int rc = exo_wkey(w, key, EXO_GGUF_ARRAY);
  if (rc || (rc = exo_wbuf(w, &at, 4)) || (rc = exo_wbuf(w, &n, 8)))
    return rc;
  return exo_wbuf(w, v, (size_t)n * 4);
}

int exo_gguf_writer_add_tensor(struct exo_gguf_writer *w, const char *name, int n_dims,
                               const int64_t *ne, enum exo_dtype dtype)
{
  if (n_dims < 1 || n_dims > EXO_GGUF_MAX_DIMS || exo_gguf_ggml_type(dtype) == UINT32_MAX)
    return -EINVAL;
  uint64_t rows = 1;
  for (int d = 1; d < n_dims; d++)
    rows *= (uint64_t)ne[d];
  const size_t rb = exo_dtype_row_bytes(dtype, ne[0]);
  if (!rb)
    return -EINVAL;
  for (size_t i = 0; i < w->n_t; i++)
    if (!strcmp(w->t[i].name, name))
      return -EEXIST;
  if (w->n_t == w->cap_t) {
    size_t cap = w->cap_t ? 2 * w->cap_t : 64;
    struct exo_gguf_wtensor *t = realloc(w->t, cap * sizeof *t);
    if (!t)
      return -ENOMEM;
    w->t = t;
    w->cap_t = cap;
  }
  struct exo_gguf_wtensor *t = &w->t[w->n_t];
  memset(t, 0, sizeof *t);
  if (!(t->name = strdup(name)))
    return -ENOMEM;
  t->n_dims = n_dims;
  for (int d = 0; d < n_dims; d++)
    t->ne[d] = ne[d];
  t->dtype = dtype;
  t->nbytes = rb * rows;
  t->offset = w->data_size;
  w->data_size += (t->nbytes + EXO_GGUF_DEFAULT_ALIGNMENT - 1) / EXO_GGUF_DEFAULT_ALIGNMENT *
                  EXO_GGUF_DEFAULT_ALIGNMENT;
  w->n_t++;
  return 0;
}

static int exo_wfile(struct exo_gguf_writer *w, const void *p, size_t n, char *err,
                     size_t errlen)
{
  if (n && fwrite(p, 1, n, w->fp) != n) {
    exo_errf(err, errlen, "%s: write failed: %s", w->path, strerror(errno));
    w->failed = 1;
    return -EIO;
  }
  return 0;
}

static int exo_wpad(struct exo_gguf_writer *w, uint64_t pos, char *err, size_t errlen)
{
  static const unsigned char zeros[EXO_GGUF_DEFAULT_ALIGNMENT];
  const size_t pad = (size_t)((EXO_GGUF_DEFAULT_ALIGNMENT - pos % EXO_GGUF_DEFAULT_ALIGNMENT) %
                              EXO_GGUF_DEFAULT_ALIGNMENT);
  return exo_wfile(w, zeros, pad, err, errlen);
}

int exo_gguf_writer_begin(struct exo_gguf_writer *w, const char *path, char *err,
                          size_t errlen)
{
  if (w->fp || !(w->path = strdup(path)))
    return w->fp ? -EINVAL : -ENOMEM;
  w->fp = fopen(path, "wb");
  if (!w->fp) {
    int rc = -errno;
    exo_errf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    return rc;
  }
  uint32_t version = 3;
  uint64_t n_t = w->n_t, pos;
  int rc;
  if ((rc = exo_wfile(w, EXO_GGUF_MAGIC, 4, err, errlen)) ||
      (rc = exo_wfile(w, &version, 4, err, errlen)) ||
      (rc = exo_wfile(w, &n_t, 8, err, errlen)) ||
      (rc = exo_wfile(w, &w->n_kv, 8, err, errlen)) ||
      (rc = exo_wfile(w, w->kv, w->kv_len, err, errlen)))
    return rc;
  pos = 24 + w->kv_len;
  for (size_t i = 0; i < w->n_t; i++) {
    const struct exo_gguf_wtensor *t = &w->t[i];
    uint64_t nl = strlen(t->name);
    uint32_t nd = (uint32_t)t->n_dims, type = exo_gguf_ggml_type(t->dtype);
    if ((rc = exo_wfile(w, &nl, 8, err, errlen)) ||
        (rc = exo_wfile(w, t->name, (size_t)nl, err, errlen)) ||
        (rc = exo_wfile(w, &nd, 4, err, errlen)) ||
        (rc = exo_wfile(w, t->ne, 8 * (size_t)nd, err, errlen)) ||
        (rc = exo_wfile(w, &type, 4, err, errlen)) ||
        (rc = exo_wfile(w, &t->offset, 8, err, errlen)))
      return rc;
    pos += 8 + nl + 4 + 8 * nd + 4 + 8;
  }
  return exo_wpad(w, pos, err, errlen);
}

int exo_gguf_writer_write_data(struct exo_gguf_writer *w, const void *data, size_t nbytes,
                               char *err, size_t errlen)
{
  if (!w->fp || w->failed || w->next >= w->n_t || w->t[w->next].nbytes != nbytes) {
    exo_errf(err, errlen, "gguf writer: tensor data out of order or of the wrong size "
             "(tensor %zu of %zu, %zu bytes)", w->next, w->n_t, nbytes);
    return -EINVAL;
  }
  int rc = exo_wfile(w, data, nbytes, err, errlen);
  if (!rc)
    rc = exo_wpad(w, nbytes, err, errlen);
  w->next++;
  return rc;
}

int exo_gguf_writer_finish(struct exo_gguf_writer *w, char *err, size_t errlen)
{
  if (!w->fp || w->next != w->n_t) {
    exo_errf(err, errlen, "gguf writer: %zu of %zu tensors written", w->next, w->n_t);
    return -EINVAL;
  }
  FILE *fp = w->fp;
  w->fp = NULL;
  if (fclose(fp) != 0 || w->failed) {
    exo_errf(err, errlen, "%s: write failed", w->path);
    return -EIO;
  }
  return 0;
}
