/* actors/web/embed.c: build-time tool: writes a file's bytes as a C array header
 * (`embed IN OUT NAME` -> `static const unsigned char NAME[] = {...};` plus NAME_len),
 * so the page ships inside the binary with no npm or xxd step. Must not be linked into
 * exo-actors. */
#include <stdio.h>

int main(int argc, char **argv)
{
  if (argc != 4) {
    fprintf(stderr, "usage: embed IN OUT NAME\n");
    return 2;
  }
  FILE *in = fopen(argv[1], "rb"), *out = in ? fopen(argv[2], "w") : NULL;
  if (!in || !out) {
    perror(in ? argv[2] : argv[1]);
    return 1;
  }
  fprintf(out, "/* generated from %s by actors/web/embed.c; do not edit */\n", argv[1]);
  fprintf(out, "static const unsigned char %s[] = {", argv[3]);
  long n = 0;
  int c;
  while ((c = fgetc(in)) != EOF)
    fprintf(out, "%s0x%02x,", n++ % 16 ? "" : "\n  ", c);
  fprintf(out, "\n  0x00};\nstatic const unsigned long %s_len = %ldul;\n", argv[3], n);
  int bad = ferror(in) || fclose(out) != 0;
  fclose(in);
  return bad;
}
