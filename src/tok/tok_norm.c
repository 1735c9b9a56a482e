/*
 * Unicode normalizers (NFC, NFKC, NFD, NFKD) through ICU's unorm2, which
 * works on UTF-16: UTF-8 -> UTF-16 -> normalize -> UTF-8. ASCII text is
 * already in every normal form and is copied as is. Built only when meson
 * finds ICU (libicu-dev); without it tokenizers that need a normalizer are
 * refused at load with a message saying so.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

#ifdef TOK_HAVE_ICU
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

int tok_norm_available(void) { return 1; }

static const UNormalizer2 *instance(tok_norm_form f, UErrorCode *e) {
    switch (f) {
    case TOK_NORM_NFC: return unorm2_getNFCInstance(e);
    case TOK_NORM_NFKC: return unorm2_getNFKCInstance(e);
    case TOK_NORM_NFD: return unorm2_getNFDInstance(e);
    case TOK_NORM_NFKD: return unorm2_getNFKDInstance(e);
    default: return NULL;
    }
}

base_status tok_normalize(tok_norm_form form, const char *src, size_t n, base_buf *dst) {
    size_t i = 0;
    while (i < n && (uint8_t)src[i] < 0x80) i++;
    if (i == n || form == TOK_NORM_NONE) {
        base_buf_append(dst, src, n);
        return BASE_OK;
    }
    if (n > (size_t)INT32_MAX / 4)
        return base_err_set(BASE_ERR_LIMIT, "text of %zu bytes is too long to normalize", n);
    UErrorCode e = U_ZERO_ERROR;
    const UNormalizer2 *nz = instance(form, &e);
    int32_t cap16 = (int32_t)n + 1, len16 = 0;
    UChar *u16 = base_xmalloc((size_t)cap16 * sizeof *u16);
    u_strFromUTF8(u16, cap16, &len16, src, (int32_t)n, &e);
    /* decompositions can grow text up to 18x (NFKD of U+FDFA): retry on overflow */
    int32_t capn = len16 * 2 + 16, lenn = 0;
    UChar *un = NULL;
    for (int tries = 0; U_SUCCESS(e) && tries < 4; tries++) {
        un = base_xrealloc(un, (size_t)capn * sizeof *un);
        lenn = unorm2_normalize(nz, u16, len16, un, capn, &e);
        if (e != U_BUFFER_OVERFLOW_ERROR) break;
        e = U_ZERO_ERROR;
        capn = lenn + 16;
    }
    if (U_SUCCESS(e)) {
        int32_t len8 = 0;
        u_strToUTF8(NULL, 0, &len8, un, lenn, &e);
        if (e == U_BUFFER_OVERFLOW_ERROR) e = U_ZERO_ERROR;
        char *u8 = base_xmalloc((size_t)len8 + 1);
        u_strToUTF8(u8, len8 + 1, &len8, un, lenn, &e);
        if (U_SUCCESS(e)) base_buf_append(dst, u8, (size_t)len8);
        free(u8);
    }
    free(u16);
    free(un);
    if (U_FAILURE(e))
        return base_err_set(BASE_ERR_INVALID, "Unicode normalization failed: %s", u_errorName(e));
    return BASE_OK;
}
#else
int tok_norm_available(void) { return 0; }

base_status tok_normalize(tok_norm_form form, const char *src, size_t n, base_buf *dst) {
    if (form != TOK_NORM_NONE)
        return base_err_set(BASE_ERR_UNSUPPORTED, "Unicode normalization needs ICU");
    base_buf_append(dst, src, n);
    return BASE_OK;
}
#endif
