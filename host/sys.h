/* sys: the few libc calls Lua makes directly (lib/thorp/sys.lua).
 *
 * There is no sys.c: these are libc's own functions, declared here once so
 * that the FFI sees them through thorp.cdef like every other C function.
 * tests/c/test_cdef.c includes this header after libc's, so a prototype
 * that disagrees with libc fails the build instead of drifting.
 */
#ifndef THORP_SYS_H
#define THORP_SYS_H

/* ffi:begin */
int getpid(void);
int mkdir(const char *path, unsigned int mode);
char *strerror(int errnum);
enum { SYS_EEXIST = 17 };
/* ffi:end */

#endif
