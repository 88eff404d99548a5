/* lua_target: a harness that is all Lua (tests/fuzz/FUZZ_NAME.lua): each
 * input is passed to its function `one(input)`. */
#include "fuzz.h"

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    L = fuzz_lua_init((*argv)[0]);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_call(L, "one", data, size);
    return 0;
}
