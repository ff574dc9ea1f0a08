/* main.c — placeholder until the memserver lands. */
#include <stdio.h>

int main(void)
{
	fprintf(stderr, "farmem-memserver: not built yet\n");
	return 1;
}
