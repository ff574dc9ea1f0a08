/* cli.h — farmem-blk subcommands; each lives in its own cli_*.c file and
 * is listed once in main.c's table.  Each returns a process exit status. */
#ifndef FARMEM_CLI_H
#define FARMEM_CLI_H

int cmd_serve(int argc, char **argv);    /* cli_serve.c */
int cmd_add(int argc, char **argv);      /* cli_add.c */
int cmd_del(int argc, char **argv);      /* cli_manage.c */
int cmd_list(int argc, char **argv);     /* cli_manage.c */
int cmd_status(int argc, char **argv);   /* cli_manage.c */
int cmd_recover(int argc, char **argv);  /* cli_add.c */
int cmd_offload(int argc, char **argv);  /* cli_offload.c */

#endif
