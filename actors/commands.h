/* actors/commands.h: the subcommands of the exo-actors binary.
 * Each takes the argv after the subcommand name (argv[0] is the subcommand) and
 * returns a process exit status; each prints its own usage and errors. */
#ifndef EXO_ACTORS_COMMANDS_H
#define EXO_ACTORS_COMMANDS_H

int exo_cmd_make_model(int argc, char **argv); /* cmd_make_model.c */
int exo_cmd_check(int argc, char **argv);      /* cmd_check.c */
int exo_cmd_generate(int argc, char **argv);   /* cmd_generate.c */
int exo_cmd_run(int argc, char **argv);        /* cmd_run.c */
int exo_cmd_keygen(int argc, char **argv);     /* cmd_keygen.c */
int exo_cmd_convert(int argc, char **argv);    /* cmd_convert.c */

#endif
