/*
 * libFuzzer target for the safetensors header parser and loader:
 * st_open_memory on arbitrary bytes must return a status (never crash,
 * hang, leak or read out of bounds under ASan/UBSan); when it accepts, every
 * tensor it reports must lie inside the image and load without faults.
 *
 * Fuzz with `make fuzz FUZZ_TARGET=st_header` (docs/fuzzing.md); `make test`
 * replays tests/fuzz/corpus/st_header/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/st.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    if (st_open_memory(data, size, "fuzz", &f) != BASE_OK) {
        if (f || !base_err_msg()[0]) abort(); /* a failure always says why */
        return 0;
    }
    const uint8_t *lo = data + 8, *hi = data + size;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const uint8_t *p = t->data;
        if (p < lo || p + t->nbytes > hi || p + t->nbytes < p) abort();
        if (st_find(f, t->name) != t) abort();
        if ((size_t)st_numel(t) * tensor_dtype_size(t->dtype) != t->nbytes) abort();
        /* load small tensors as F32 (FP8 through its scale, if any) */
        int64_t n = st_numel(t);
        if (n <= 1 << 16) {
            float *dst = malloc((size_t)(n ? n : 1) * sizeof(float));
            (void)st_file_load(f, t->name, TENSOR_F32, dst, n);
            free(dst);
        }
    }
    st_close(f);
    return 0;
}
