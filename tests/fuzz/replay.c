/* replay: main() for the build of a harness without libFuzzer. Feeds each
 * file named on the command line (a directory: each file in it) to
 * LLVMFuzzerTestOneInput once; a finding aborts the process. `make test`
 * runs it over tests/fuzz/corpus/NAME/, the seeds and every crash found. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "fuzz.h"

static int passed;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) { printf("FAIL - cannot open %s\n", path); exit(1); }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) { printf("FAIL - out of memory\n"); exit(1); }
    /* copy to an exact-size block so a read past the end is caught by ASan/valgrind */
    uint8_t *in = malloc(n ? n : 1);
    memcpy(in, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(in, n);
    free(in);
    printf("ok   - %s: %s\n", FUZZ_NAME, path);
    passed++;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            struct dirent **ents;
            int n = scandir(argv[i], &ents, NULL, by_name);
            for (int j = 0; j < n; j++) {
                if (ents[j]->d_name[0] != '.') {
                    char path[4096];
                    snprintf(path, sizeof path, "%s/%s", argv[i], ents[j]->d_name);
                    run_file(path);
                }
                free(ents[j]);
            }
            free(ents);
        } else {
            run_file(argv[i]);
        }
    }
    printf("%d passed, 0 failed\n", passed);
    return 0;
}
