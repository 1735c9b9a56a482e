/*
 * st: safetensors read (mmap, whole-header validation, sharded checkpoints
 * through model.safetensors.index.json, conversion to F32/BF16 on load, FP8
 * e4m3 block dequantisation with `weight_scale_inv`) and write (atomic).
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {name: {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, ...,
 *    "__metadata__": {str: str}}
 * then the raw row-major little-endian data; offsets are relative to the end
 * of the header. Validation rejects: a header length past the end of the
 * file, malformed JSON, an unknown dtype, shape x dtype size != byte range,
 * ranges outside the data section, overlapping ranges, more than
 * ST_MAX_DIMS dims, duplicate names, a header that is not UTF-8, and a data
 * section the ranges do not tile exactly (a gap, or bytes after the last
 * tensor: the reference implementation refuses both). Every error names the
 * file and, where there is one, the tensor. docs/safetensors.md lists every
 * check.
 *
 * Ownership: an st_file owns its mapping; the `data` pointers of its
 * st_tensor entries point into it and live until st_close.
 */
#ifndef GRPO_IO_ST_H
#define GRPO_IO_ST_H

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_DIMS 4

typedef struct {
    const char *name;
    tensor_dtype dtype;
    int ndim; /* 0..ST_MAX_DIMS (0 = scalar) */
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* into the mapping */
    size_t nbytes;
    int shard; /* index of the file in an st_dir (0 for a single file) */
} st_tensor;

/* ---- one file ---- */
typedef struct st_file st_file;

base_status st_open(const char *path, st_file **out);
/* Parse and validate a safetensors image already in memory (not copied:
 * buf must outlive the st_file). `name` stands for the path in messages. */
base_status st_open_memory(const void *buf, size_t len, const char *name, st_file **out);
int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i); /* in file order (by data offset) */
const st_tensor *st_find(const st_file *f, const char *name); /* NULL if absent */
const cJSON *st_metadata(const st_file *f); /* "__metadata__" or NULL */
const char *st_path(const st_file *f);
size_t st_data_bytes(const st_file *f); /* size of the data section */
void st_close(st_file *f);
int64_t st_numel(const st_tensor *t); /* product of the shape (1 for a scalar) */

/* ---- a checkpoint directory ----
 * Opens DIR/model.safetensors.index.json when present (resolving every name
 * through its weight_map and checking that each listed tensor exists in its
 * shard), else DIR/model.safetensors, else every DIR/NAME.safetensors in name
 * order. A tensor name present in two files is an error. */
typedef struct st_dir st_dir;

base_status st_dir_open(const char *dir, st_dir **out);
int st_dir_count(const st_dir *d);
const st_tensor *st_dir_at(const st_dir *d, int i); /* sorted by name */
const st_tensor *st_dir_find(const st_dir *d, const char *name);
const char *st_dir_file_of(const st_dir *d, const st_tensor *t); /* shard path */
int st_dir_nfiles(const st_dir *d);
const st_file *st_dir_file(const st_dir *d, int i); /* i < nfiles, sorted by name; NULL if out of range */
const char *st_dir_index_path(const st_dir *d); /* the index.json path, NULL when not sharded */
const char *st_dir_path(const st_dir *d);
size_t st_dir_total_bytes(const st_dir *d); /* data bytes of all tensors */
void st_dir_close(st_dir *d);

/* Load tensor `name` converted to `dt` (TENSOR_F32 or TENSOR_BF16) into
 * dst, which holds `numel` elements (overwritten). `dt` equal to the stored
 * dtype copies the bytes unchanged (e.g. I64 token ids, raw F8). An F8_E4M3 tensor is dequantised with
 * its companion `name_scale_inv` (F32 [ceil(rows/128), ceil(cols/128)],
 * edge blocks included): W[i,j] = q[i,j] * s[i/128][j/128]. Errors (absent
 * tensor, numel mismatch, missing or mis-shaped scale) name the tensor and
 * file. */
base_status st_dir_load(const st_dir *d, const char *name, tensor_dtype dt, void *dst, int64_t numel);
/* Same for one tensor of one file (scale looked up in the same file). */
base_status st_file_load(const st_file *f, const char *name, tensor_dtype dt, void *dst, int64_t numel);

/* ---- writing ----
 * Collect tensors (the writer keeps the pointers, not copies: data must stay
 * valid until st_writer_write), then write atomically: PATH.tmp.PID, fsync,
 * rename. Tensors are written in the order added; 8-byte aligned data. */
typedef struct st_writer st_writer;

st_writer *st_writer_new(void);
void st_writer_add(st_writer *w, const char *name, tensor_dtype dt, int ndim, const int64_t *shape,
                   const void *data);
void st_writer_meta(st_writer *w, const char *key, const char *value);
base_status st_writer_write(st_writer *w, const char *path);
void st_writer_free(st_writer *w);

#ifdef __cplusplus
}
#endif

#endif
