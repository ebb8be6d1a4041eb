/* tests/fuzz/fuzz_model_config.c: the model config loader (config.json and
 * generation_config.json, tensor/model.h) on arbitrary bytes. The input up to its first
 * NUL byte is config.json; the rest, when there is a NUL, is generation_config.json.
 * Properties: a rejected config has a message; an accepted one has the shape invariants
 * the forward pass divides and indexes by. */
#include "fuzz.h"

#include "tensor/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const uint8_t *nul = memchr(data, 0, size);
  size_t n1 = nul ? (size_t)(nul - data) : size;
  if (fuzz_dir_file("config.json", data, n1) < 0)
    return 0;
  if (nul) {
    if (fuzz_dir_file("generation_config.json", nul + 1, size - n1 - 1) < 0)
      return 0;
  } else {
    fuzz_dir_remove("generation_config.json");
  }
  struct exo_model_config cfg;
  char err[512] = "";
  int rc = exo_model_config_load(fuzz_dir(), &cfg, err, sizeof err);
  if (rc < 0) {
    FUZZ_CHECK(err[0] != '\0');
    return 0;
  }
  FUZZ_CHECK(cfg.vocab_size > 0 && cfg.hidden_size > 0 && cfg.intermediate_size > 0);
  FUZZ_CHECK(cfg.n_layers > 0 && cfg.n_heads > 0 && cfg.n_kv_heads > 0);
  FUZZ_CHECK(cfg.n_heads % cfg.n_kv_heads == 0);
  FUZZ_CHECK(cfg.head_dim > 0 && cfg.head_dim % 2 == 0);
  FUZZ_CHECK(cfg.n_eos_ids >= 0 && cfg.n_eos_ids <= EXO_MAX_EOS_IDS);
  for (int i = 0; i < cfg.n_eos_ids; i++)
    FUZZ_CHECK(cfg.eos_token_ids[i] >= 0);
  FUZZ_CHECK(cfg.bos_token_id >= -1);
  FUZZ_CHECK(cfg.rms_norm_eps > 0 && cfg.rope_theta > 0);
  FUZZ_CHECK(memchr(cfg.architecture, 0, sizeof cfg.architecture) != NULL);
  return 0;
}
