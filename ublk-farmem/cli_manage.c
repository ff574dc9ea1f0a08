/* cli_manage.c — placeholder until the ublk frontend lands. */
#include <stdio.h>
#include "cli.h"

static int not_yet(const char *what)
{
	fprintf(stderr, "farmem-blk %s: not built yet\n", what);
	return 1;
}

int cmd_del(int argc, char **argv) { (void)argc; (void)argv; return not_yet("del"); }
int cmd_list(int argc, char **argv) { (void)argc; (void)argv; return not_yet("list"); }
int cmd_status(int argc, char **argv) { (void)argc; (void)argv; return not_yet("status"); }
