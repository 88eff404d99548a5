/* main: process entry. Sets up logging, the loop and the Lua state, then
 * lets thorp.cli (lib/thorp/cli.lua) interpret the command line. */
#include <stdio.h>
#include <stdlib.h>
#include "log.h"
#include "loop.h"
#include "script.h"

int main(int argc, char **argv)
{
    log_init();
    if (loop_init() != 0) {
        fprintf(stderr, "thorp: cannot create the event loop\n");
        return 1;
    }
    lua_State *L = script_new(argv[0]);
    if (!L) {
        fprintf(stderr, "thorp: cannot create the Lua state\n");
        return 1;
    }
    int rc = script_main(L, argc, argv);
    fflush(stdout);
    script_free(L);
    loop_free();
    log_free();
    return rc;
}
