/* tests/fuzz/fuzz_keyfile.c: the cluster key file parser (exo_auth_load, runtime/auth.h)
 * on arbitrary file contents (a 0600 memfd). Properties: the only outcomes are a key or
 * -EINVAL with a message; an accepted file has exactly one key line, and the same bytes
 * always give the same key (fingerprint). */
#include "fuzz.h"

#include "runtime/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char path[64];
  if (fuzz_memfd_file(data, size, path, sizeof path) < 0)
    return 0;
  struct exo_auth *a = NULL, *b = NULL;
  char err[512] = "";
  int rc = exo_auth_load(path, &a, err, sizeof err);
  if (rc < 0) {
    FUZZ_CHECK(rc == -EINVAL && a == NULL && err[0] != '\0');
    return 0;
  }
  FUZZ_CHECK(memmem(data, size, EXO_AUTH_KEY_TAG, strlen(EXO_AUTH_KEY_TAG)) != NULL);
  FUZZ_CHECK(exo_auth_load(path, &b, err, sizeof err) == 0);
  char fa[17], fb[17];
  exo_auth_fingerprint(a, fa);
  exo_auth_fingerprint(b, fb);
  FUZZ_CHECK(strcmp(fa, fb) == 0);
  exo_auth_free(a);
  exo_auth_free(b);
  return 0;
}
