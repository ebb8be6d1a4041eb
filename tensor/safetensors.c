/* tensor/safetensors.c: the .safetensors reader (see safetensors.h).
 * The whole file is mapped read-only; only the header pages are read at open. Every
 * number from the file is checked before it is used (lengths, shapes, offsets, with
 * overflow checks), so a damaged file gives a message, never a crash. Invariants after
 * a successful open: tensors sorted by name, names unique, each [begin, end) inside the
 * data region and disjoint from the others, end - begin == n_elems * dtype size. */
#include "common/err.h"
#include "tensor/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct exo_st_meta {
  char *key;
  char *value;
};

struct exo_safetensors {
  char *name;                     /* base name for messages */
  const unsigned char *map;       /* whole file, PROT_READ */
  size_t map_len;
  const unsigned char *data;      /* start of the data region */
  uint64_t data_len;
  struct exo_st_tensor *tensors;  /* sorted by name */
  size_t n_tensors;
  struct exo_st_meta *meta;
  size_t n_meta;
};

static const struct {
  const char *name;
  enum exo_st_dtype dt;
  size_t size;
} exo_st_dtypes[] = {
  {"BOOL", EXO_ST_BOOL, 1}, {"U8", EXO_ST_U8, 1}, {"I8", EXO_ST_I8, 1},
  {"F8_E4M3", EXO_ST_F8_E4M3, 1}, {"F8_E5M2", EXO_ST_F8_E5M2, 1},
  {"I16", EXO_ST_I16, 2}, {"U16", EXO_ST_U16, 2}, {"F16", EXO_ST_F16, 2},
  {"BF16", EXO_ST_BF16, 2}, {"I32", EXO_ST_I32, 4}, {"U32", EXO_ST_U32, 4},
  {"F32", EXO_ST_F32, 4}, {"I64", EXO_ST_I64, 8}, {"U64", EXO_ST_U64, 8},
  {"F64", EXO_ST_F64, 8},
};
#define EXO_ST_N_DTYPES (sizeof exo_st_dtypes / sizeof exo_st_dtypes[0])

size_t exo_st_dtype_size(enum exo_st_dtype dt)
{
  for (size_t i = 0; i < EXO_ST_N_DTYPES; i++)
    if (exo_st_dtypes[i].dt == dt)
      return exo_st_dtypes[i].size;
  return 0;
}

const char *exo_st_dtype_name(enum exo_st_dtype dt)
{
  for (size_t i = 0; i < EXO_ST_N_DTYPES; i++)
    if (exo_st_dtypes[i].dt == dt)
      return exo_st_dtypes[i].name;
  return "?";
}

static const char *exo_st_basename(const char *path)
{
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

static int exo_st_cmp_name(const void *a, const void *b)
{
  const struct exo_st_tensor *x = a, *y = b;
  return strcmp(x->name, y->name);
}

static int exo_st_cmp_begin(const void *a, const void *b)
{
  const struct exo_st_tensor *x = *(const struct exo_st_tensor *const *)a;
  const struct exo_st_tensor *y = *(const struct exo_st_tensor *const *)b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

/* Reads a JSON integer that must be >= 0. */
static int exo_st_get_u64(json_t *v, uint64_t *out)
{
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return -1;
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

static int exo_st_parse_tensor(struct exo_safetensors *st, const char *key, json_t *v,
                               struct exo_st_tensor *t, char *err, size_t errlen)
{
  const char *fn = st->name;
  if (!json_is_object(v)) {
    exo_errf(err, errlen, "%s: tensor '%s': header entry is not an object", fn, key);
    return -EINVAL;
  }
  json_t *jd = json_object_get(v, "dtype");
  json_t *js = json_object_get(v, "shape");
  json_t *jo = json_object_get(v, "data_offsets");
  if (!json_is_string(jd)) {
    exo_errf(err, errlen, "%s: tensor '%s': missing or non-string 'dtype'", fn, key);
    return -EINVAL;
  }
  size_t esize = 0;
  for (size_t i = 0; i < EXO_ST_N_DTYPES; i++)
    if (!strcmp(json_string_value(jd), exo_st_dtypes[i].name)) {
      t->dtype = exo_st_dtypes[i].dt;
      esize = exo_st_dtypes[i].size;
    }
  if (!esize) {
    exo_errf(err, errlen, "%s: tensor '%s': unknown dtype '%s'", fn, key,
               json_string_value(jd));
    return -EINVAL;
  }
  if (!json_is_array(js) || json_array_size(js) > EXO_ST_MAX_DIMS) {
    exo_errf(err, errlen, "%s: tensor '%s': 'shape' must be an array of at most %d integers",
               fn, key, EXO_ST_MAX_DIMS);
    return -EINVAL;
  }
  t->n_dims = (int)json_array_size(js);
  int64_t n = 1;
  for (int d = 0; d < t->n_dims; d++) {
    uint64_t dim;
    if (exo_st_get_u64(json_array_get(js, (size_t)d), &dim) || dim > INT64_MAX) {
      exo_errf(err, errlen, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                 fn, key, d);
      return -EINVAL;
    }
    t->shape[d] = (int64_t)dim;
    if (__builtin_mul_overflow(n, (int64_t)dim, &n)) {
      exo_errf(err, errlen, "%s: tensor '%s': shape overflows 64 bits", fn, key);
      return -EINVAL;
    }
  }
  t->n_elems = n;
  uint64_t begin, end, bytes;
  if (!json_is_array(jo) || json_array_size(jo) != 2 ||
      exo_st_get_u64(json_array_get(jo, 0), &begin) ||
      exo_st_get_u64(json_array_get(jo, 1), &end)) {
    exo_errf(err, errlen, "%s: tensor '%s': 'data_offsets' must be [begin, end] "
               "non-negative integers", fn, key);
    return -EINVAL;
  }
  if (end < begin) {
    exo_errf(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] end before begin",
               fn, key, (unsigned long long)begin, (unsigned long long)end);
    return -EINVAL;
  }
  if (end > st->data_len) {
    exo_errf(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] past end of data "
               "(%llu bytes)", fn, key, (unsigned long long)begin, (unsigned long long)end,
               (unsigned long long)st->data_len);
    return -EINVAL;
  }
  if (__builtin_mul_overflow((uint64_t)n, (uint64_t)esize, &bytes) || bytes != end - begin) {
    exo_errf(err, errlen, "%s: tensor '%s': %lld elements of %s need %llu bytes but "
               "data_offsets [%llu, %llu] hold %llu", fn, key, (long long)n,
               json_string_value(jd), (unsigned long long)((uint64_t)n * esize),
               (unsigned long long)begin, (unsigned long long)end,
               (unsigned long long)(end - begin));
    return -EINVAL;
  }
  t->begin = begin;
  t->end = end;
  t->nbytes = (size_t)(end - begin);
  t->data = st->data + begin;
  return 0;
}

static int exo_st_parse_metadata(struct exo_safetensors *st, json_t *v, char *err,
                                 size_t errlen)
{
  if (json_is_null(v))
    return 0;
  if (!json_is_object(v)) {
    exo_errf(err, errlen, "%s: '__metadata__' is not an object", st->name);
    return -EINVAL;
  }
  st->meta = calloc(json_object_size(v) + 1, sizeof *st->meta);
  if (!st->meta)
    return -ENOMEM;
  const char *k;
  json_t *val;
  json_object_foreach(v, k, val) {
    if (!json_is_string(val)) /* only string values are defined; others are skipped */
      continue;
    struct exo_st_meta *m = &st->meta[st->n_meta];
    m->key = strdup(k);
    m->value = strdup(json_string_value(val));
    st->n_meta++;
    if (!m->key || !m->value)
      return -ENOMEM;
  }
  return 0;
}

int exo_safetensors_open(const char *path, struct exo_safetensors **out, char *err,
                         size_t errlen)
{
  int rc, fd = -1;
  json_t *root = NULL;
  const struct exo_st_tensor **by_begin = NULL;
  struct exo_safetensors *st = calloc(1, sizeof *st);
  *out = NULL;
  if (!st)
    return -ENOMEM;
  st->name = strdup(exo_st_basename(path));
  if (!st->name) {
    rc = -ENOMEM;
    goto fail;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rc = -errno;
    exo_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    goto fail;
  }
  struct stat sb;
  if (fstat(fd, &sb) < 0) {
    rc = -errno;
    exo_errf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    goto fail;
  }
  if (!S_ISREG(sb.st_mode)) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s: not a regular file", path);
    goto fail;
  }
  if (sb.st_size < 8) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s: file is %lld bytes, too short for the 8-byte header length",
               st->name, (long long)sb.st_size);
    goto fail;
  }
  st->map_len = (size_t)sb.st_size;
  void *m = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) {
    rc = -errno;
    st->map_len = 0;
    exo_errf(err, errlen, "%s: mmap: %s", path, strerror(errno));
    goto fail;
  }
  st->map = m;
  close(fd);
  fd = -1;

  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | st->map[i];
  if (hlen > st->map_len - 8) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s: header length %llu past end of file (%zu bytes)", st->name,
               (unsigned long long)hlen, st->map_len);
    goto fail;
  }
  if (hlen > EXO_ST_MAX_HEADER) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s: header length %llu exceeds the %u-byte limit", st->name,
               (unsigned long long)hlen, EXO_ST_MAX_HEADER);
    goto fail;
  }
  st->data = st->map + 8 + hlen;
  st->data_len = st->map_len - 8 - hlen;

  json_error_t jerr;
  root = json_loadb((const char *)st->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s: header JSON: %s (line %d, column %d)", st->name, jerr.text,
               jerr.line, jerr.column);
    goto fail;
  }
  if (!json_is_object(root)) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s: header JSON is not an object", st->name);
    goto fail;
  }
  st->tensors = calloc(json_object_size(root) + 1, sizeof *st->tensors);
  if (!st->tensors) {
    rc = -ENOMEM;
    goto fail;
  }
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (!strcmp(key, "__metadata__")) {
      if ((rc = exo_st_parse_metadata(st, val, err, errlen)) < 0)
        goto fail;
      continue;
    }
    struct exo_st_tensor *t = &st->tensors[st->n_tensors];
    if ((rc = exo_st_parse_tensor(st, key, val, t, err, errlen)) < 0)
      goto fail;
    t->name = strdup(key);
    st->n_tensors++;
    if (!t->name) {
      rc = -ENOMEM;
      goto fail;
    }
  }
  json_decref(root);
  root = NULL;
  qsort(st->tensors, st->n_tensors, sizeof *st->tensors, exo_st_cmp_name);

  /* Overlap check: sort by begin; each non-empty range must start at or after the
   * furthest end seen so far. */
  by_begin = calloc(st->n_tensors + 1, sizeof *by_begin);
  if (!by_begin) {
    rc = -ENOMEM;
    goto fail;
  }
  for (size_t i = 0; i < st->n_tensors; i++)
    by_begin[i] = &st->tensors[i];
  qsort(by_begin, st->n_tensors, sizeof *by_begin, exo_st_cmp_begin);
  const struct exo_st_tensor *furthest = NULL;
  for (size_t i = 0; i < st->n_tensors; i++) {
    const struct exo_st_tensor *t = by_begin[i];
    if (t->begin == t->end)
      continue;
    if (furthest && t->begin < furthest->end) {
      rc = -EINVAL;
      exo_errf(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor "
                 "'%s' [%llu, %llu]", st->name, t->name, (unsigned long long)t->begin,
                 (unsigned long long)t->end, furthest->name,
                 (unsigned long long)furthest->begin, (unsigned long long)furthest->end);
      goto fail;
    }
    if (!furthest || t->end > furthest->end)
      furthest = t;
  }
  free(by_begin);
  *out = st;
  return 0;

fail:
  free(by_begin);
  json_decref(root);
  if (fd >= 0)
    close(fd);
  exo_safetensors_close(st);
  if (rc == -ENOMEM && err && errlen && !err[0])
    exo_errf(err, errlen, "%s: out of memory", path);
  return rc;
}

const struct exo_st_tensor *exo_safetensors_find(const struct exo_safetensors *st,
                                                 const char *name)
{
  struct exo_st_tensor key = {.name = name};
  return bsearch(&key, st->tensors, st->n_tensors, sizeof *st->tensors, exo_st_cmp_name);
}

size_t exo_safetensors_count(const struct exo_safetensors *st)
{
  return st->n_tensors;
}

const struct exo_st_tensor *exo_safetensors_at(const struct exo_safetensors *st, size_t i)
{
  return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const char *exo_safetensors_name(const struct exo_safetensors *st)
{
  return st->name;
}

const char *exo_safetensors_metadata(const struct exo_safetensors *st, const char *key)
{
  for (size_t i = 0; i < st->n_meta; i++)
    if (!strcmp(st->meta[i].key, key))
      return st->meta[i].value;
  return NULL;
}

void exo_safetensors_willneed(const struct exo_safetensors *st, const struct exo_st_tensor *t)
{
  if (!t->nbytes)
    return;
  uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = (uintptr_t)t->data & ~(pg - 1);
  uintptr_t hi = (uintptr_t)t->data + t->nbytes;
  (void)st;
  /* Advisory only: a failure changes timing, never results. */
  (void)madvise((void *)lo, hi - lo, MADV_WILLNEED);
}

void exo_safetensors_close(struct exo_safetensors *st)
{
  if (!st)
    return;
  if (st->map)
    munmap((void *)st->map, st->map_len);
  for (size_t i = 0; i < st->n_tensors; i++)
    free((char *)st->tensors[i].name);
  free(st->tensors);
  for (size_t i = 0; i < st->n_meta; i++) {
    free(st->meta[i].key);
    free(st->meta[i].value);
  }
  free(st->meta);
  free(st->name);
  free(st);
}
