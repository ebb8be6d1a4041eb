/* tests/fuzz/fuzz_safetensors.c: the safetensors reader (tensor/safetensors.h) on
 * arbitrary file contents (a memfd, since it mmaps a path). Properties: every tensor it
 * accepts lies inside the mapping with nbytes = elements * dtype size, tensors are in
 * name order and found by name. */
#include "fuzz.h"

#include "tensor/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char path[64];
  if (fuzz_memfd_file(data, size, path, sizeof path) < 0)
    return 0;
  struct exo_safetensors *st = NULL;
  char err[512] = "";
  int rc = exo_safetensors_open(path, &st, err, sizeof err);
  if (rc < 0) {
    FUZZ_CHECK(st == NULL && err[0] != '\0');
    return 0;
  }
  size_t n = exo_safetensors_count(st);
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < n; i++) {
    const struct exo_st_tensor *t = exo_safetensors_at(st, i);
    FUZZ_CHECK(t && t->name);
    FUZZ_CHECK(t->n_dims >= 0 && t->n_dims <= EXO_ST_MAX_DIMS);
    FUZZ_CHECK(t->end >= t->begin && t->nbytes == t->end - t->begin);
    FUZZ_CHECK((uint64_t)t->n_elems * exo_st_dtype_size(t->dtype) == t->nbytes);
    FUZZ_CHECK(exo_safetensors_find(st, t->name) == t);
    if (i)
      FUZZ_CHECK(strcmp(exo_safetensors_at(st, i - 1)->name, t->name) < 0);
    /* The data region starts after the u64 length and the JSON header. */
    FUZZ_CHECK(size >= 8);
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--)
      hlen = hlen << 8 | data[b];
    FUZZ_CHECK(hlen <= size - 8 && t->end <= size - 8 - hlen);
    if (t->nbytes) {
      const uint8_t *d = t->data;
      sink ^= d[0];
      sink ^= d[t->nbytes - 1];
    }
  }
  (void)exo_safetensors_metadata(st, "format");
  (void)sink;
  exo_safetensors_close(st);
  return 0;
}
