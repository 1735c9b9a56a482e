/*
 * Private to src/io/st_*.c: what st_writer (st_write.c) and the streaming
 * writer st_plan (st_stream.c) share, so that both print the same header
 * bytes for the same tensors.
 */
#ifndef GRPO_IO_ST_INTERNAL_H
#define GRPO_IO_ST_INTERNAL_H

#include "io/st.h"

typedef struct {
    const char *name;
    tensor_dtype dt;
    int ndim;
    const int64_t *shape;
    uint64_t nbytes;
} st_hdr_tensor;

/* NULL when (name, dt, ndim, shape) can be written (its byte size in
 * *nbytes), else why not. */
const char *st_tensor_check(const char *name, tensor_dtype dt, int ndim, const int64_t *shape, uint64_t *nbytes);
/* The names are unique and none is "__metadata__" (BASE_ERR_INVALID naming path). */
base_status st_check_names(const char *const *names, int n, const char *path);
/* u64 header length, the JSON header ({"__metadata__": {...}} first when
 * nmeta > 0, then the tensors in order with back-to-back data offsets),
 * padded with spaces to a multiple of 8. */
void st_header_build(base_buf *h, int nmeta, char *const *mkey, char *const *mval, int n, const st_hdr_tensor *t);
/* write(2) all of it (EINTR retried): 0, or -1 with errno set. */
int st_write_all(int fd, const void *p, size_t n);
/* fsync a directory (some filesystems refuse: as durable as they allow). */
void st_fsync_dir(const char *dir);

#endif
