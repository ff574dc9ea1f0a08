/* cli_add.c — placeholder until the ublk frontend lands. */
#include <stdio.h>
#include "cli.h"

int cmd_add(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "farmem-blk add: not built yet\n");
	return 1;
}

int cmd_recover(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "farmem-blk recover: not built yet\n");
	return 1;
}
