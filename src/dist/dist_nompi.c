/*
 * The runtime of a build without MPI (meson -Dmpi=disabled, or no MPI
 * found): always one process, world size 1. Started by a launcher with
 * several processes it says so rather than running N unrelated copies
 * that would each write the same run directory.
 */
#include <stdio.h>
#include <stdlib.h>

#include "dist_internal.h"

static dist_comm *rt_world;

base_status dist_rt_init(int *argc, char ***argv, int *rank, int *size, int *local_rank, int *local_size,
                         int *launched, dist_comm **world) {
    (void)argc, (void)argv;
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    if (!n) n = getenv("PMI_SIZE");
    if (n && atoi(n) > 1)
        return base_err_set(BASE_ERR_UNSUPPORTED,
                            "started as one of %s processes by an MPI launcher, but grpo was built without MPI "
                            "(install libopenmpi-dev and rebuild: meson setup -Dmpi=enabled)",
                            n);
    dist_comm *w = base_xcalloc(1, sizeof *w);
    w->be = &dist_self_backend;
    snprintf(w->name, sizeof w->name, "world");
    w->rank = 0, w->size = 1;
    rt_world = w;
    *rank = 0, *size = 1, *local_rank = 0, *local_size = 1, *launched = 0;
    *world = w;
    return BASE_OK;
}

void dist_rt_finalize(void) {
    free(rt_world);
    rt_world = NULL;
}

BASE_NORETURN void dist_rt_abort(int code) { exit(code); }

const char *dist_rt_name(void) { return "none"; }

base_status dist_rt_split(dist_comm *parent, int color, int key, dist_comm *out) {
    (void)color, (void)key, (void)out;
    return base_err_set(BASE_ERR_UNSUPPORTED, "dist: splitting '%s': this build has no MPI", parent->name);
}
