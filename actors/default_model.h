/* actors/default_model.h: where the embedded demo model (models/demo) is, for the commands
 * and actors that fall back to it when no model is named. Reads the file system only. */
#ifndef EXO_ACTORS_DEFAULT_MODEL_H
#define EXO_ACTORS_DEFAULT_MODEL_H

#include <stddef.h>

/* models/demo in the working directory, or next to the binary (build-x/actors/exo-actors
 * -> ../../models/demo; installed bin/exo-actors -> ../models/demo). 0 or -ENOENT. */
int exo_default_model_dir(char *out, size_t outlen);

/* The id a node announces for the model at dir (NULL: the default one): the last name of
 * the path ("models/demo/" -> "demo"), so nodes that keep it in different places agree. */
void exo_model_id(const char *dir, char *out, size_t outlen);

struct exo_tokenizer;
/* The tokenizer of the model at path: DIR/tokenizer.json for a Hugging Face directory, the
 * tokenizer.ggml.* metadata for a GGUF file. 0 or -errno with err filled. */
int exo_model_tokenizer_load(const char *path, struct exo_tokenizer **out, char *err,
                             size_t errlen);

#endif
