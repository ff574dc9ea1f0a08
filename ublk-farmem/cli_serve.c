/* cli_serve.c — placeholder until the NBD export lands. */
#include <stdio.h>
#include "cli.h"

int cmd_serve(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "farmem-blk serve: not built yet\n");
	return 1;
}
