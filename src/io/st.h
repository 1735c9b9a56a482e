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
/* The files of one stem only: DIR/STEM.safetensors.index.json when present,
 * else DIR/STEM.safetensors (e.g. stem "ref" for a checkpoint's reference
 * model, written by st_plan_write with that stem). */
base_status st_dir_open_stem(const char *dir, const char *stem, st_dir **out);
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
/* Elements [off, off + n) (row-major) of tensor `name` converted to f32
 * into dst[n]: F32 copied, BF16 / F16 widened, F8_E4M3 times its block
 * scale as st_dir_load dequantises. Only those bytes of the mapping are
 * read. Errors: absent tensor, a range outside it, a dtype that is not a
 * float, a missing or mis-shaped scale (named). */
base_status st_dir_load_f32_range(const st_dir *d, const char *name, int64_t off, int64_t n, float *dst);
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

/* ---- streaming writing (st_plan) ----
 * The layout is computed from the tensor list first (names, dtypes, shapes,
 * each file's header and every tensor's file offset); the bytes are then
 * supplied piece by piece by a callback through one host buffer of at most
 * `buf_bytes`, so no more than that is ever held. The files are those
 * Hugging Face's save_pretrained writes: STEM.safetensors when the data fit
 * max_shard_bytes (or max_shard_bytes is 0), else the tensors in order
 * grouped into STEM-0000i-of-0000N.safetensors (a group closed when the next
 * tensor would pass the limit; a tensor alone over it is a shard of its
 * own, as huggingface_hub's split_state_dict_into_shards) plus
 * STEM.safetensors.index.json {"metadata": {"total_size": data bytes},
 * "weight_map": {name: file}} (sorted keys, indent 2, as json.dumps).
 * A one-file plan writes exactly the bytes st_writer writes for the same
 * tensors and metadata. Every file is written as DIR/NAME.tmp, fsynced and
 * renamed (the index last), then the directory is fsynced.
 *
 * The steps are public for writers in several processes (the ZeRO 3
 * checkpoint, src/train/ckpt_shard.c): one process creates the temporary
 * files (header written, size set), every process writes its pieces into
 * them at their offsets (st_part_*: pwrite; the directory must be one
 * filesystem every process sees), then one process commits. */
#define ST_BUF_DEFAULT ((size_t)64 << 20)
/* transformers' save_pretrained max_shard_size "5GB" (4.35 to 4.57; 5.0
 * raised it to "50GB"): decimal gigabytes, as huggingface_hub parses them */
#define ST_SHARD_DEFAULT ((uint64_t)5000000000)

typedef struct st_plan st_plan;

/* Bytes [off, off + n) of tensor i's data (in the order added) into dst. */
typedef base_status (*st_fill_fn)(void *ctx, int i, uint64_t off, void *dst, size_t n);

st_plan *st_plan_new(void);
void st_plan_add(st_plan *p, const char *name, tensor_dtype dt, int ndim, const int64_t *shape);
void st_plan_meta(st_plan *p, const char *key, const char *value);
/* Fix the files of stem `stem` (e.g. "model"). Errors: a bad tensor (as
 * st_writer), duplicate or reserved names, a bad stem. */
base_status st_plan_layout(st_plan *p, const char *stem, uint64_t max_shard_bytes);
int st_plan_count(const st_plan *p);
int st_plan_nfiles(const st_plan *p);                   /* after layout */
const char *st_plan_file_name(const st_plan *p, int f); /* "model-00001-of-00002.safetensors" */
int st_plan_file_of(const st_plan *p, int i);           /* the file of tensor i */
uint64_t st_plan_nbytes(const st_plan *p, int i);       /* tensor i's data bytes */
uint64_t st_plan_total_bytes(const st_plan *p);         /* all tensors' data bytes */
/* One process: every tensor through fill (peak: the largest piece, NULL
 * allowed). buf_bytes 0: ST_BUF_DEFAULT. */
base_status st_plan_write(const st_plan *p, const char *dir, size_t buf_bytes, st_fill_fn fill, void *ctx,
                          size_t *peak);
void st_plan_free(st_plan *p);

/* The steps of st_plan_write for several processes. */
base_status st_plan_create(const st_plan *p, const char *dir); /* DIR/NAME.tmp: header, size */
typedef struct st_part st_part;
st_part *st_part_open(const st_plan *p, const char *dir, size_t buf_bytes);
/* Bytes [off, off + n) of tensor i through fill, pwritten at their place. */
base_status st_part_put(st_part *w, int i, uint64_t off, uint64_t n, st_fill_fn fill, void *ctx);
/* fsync and close the files written; the peak piece in *peak (may be NULL).
 * Frees w, also after an error (which it returns). */
base_status st_part_close(st_part *w, size_t *peak);
/* Rename DIR/NAME.tmp to DIR/NAME, write the index (sharded) or remove a
 * stale one (one file), fsync the directory. */
base_status st_plan_commit(const st_plan *p, const char *dir);
/* Remove the temporary files after a failure (never fails). */
void st_plan_abandon(const st_plan *p, const char *dir);

#ifdef __cplusplus
}
#endif

#endif
