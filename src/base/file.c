/*
 * Whole-file reads, atomic writes (temporary file, fsync, rename, fsync of
 * the directory: a crash leaves either the old file or the new one), mkdir -p,
 * removal of a directory tree without a shell and without following links.
 */
#include "base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

base_status base_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
    struct stat st;
    if (fstat(fd, &st) < 0) {
        base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
        close(fd);
        return BASE_ERR_IO;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return base_err_set(BASE_ERR_IO, "%s: is a directory", path);
    }
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536, n = 0;
    char *buf = base_xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = base_xrealloc(buf, cap);
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
            free(buf);
            close(fd);
            return BASE_ERR_IO;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return BASE_OK;
}

static base_status fsync_dir_of(const char *path) {
    char *tmp = base_xstrdup(path);
    const char *dir = dirname(tmp);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd); /* best effort: some filesystems refuse fsync on dirs */
        close(fd);
    }
    free(tmp);
    return BASE_OK;
}

base_status base_write_file_atomic(const char *path, const void *data, size_t len) {
    size_t n = strlen(path) + 32;
    char *tmp = base_xmalloc(n);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        base_err_set(BASE_ERR_IO, "%s: %s", tmp, base_strerror_now());
        free(tmp);
        return BASE_ERR_IO;
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            base_err_set(BASE_ERR_IO, "%s: write: %s", tmp, base_strerror_now());
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) < 0) {
        base_err_set(BASE_ERR_IO, "%s: fsync: %s", tmp, base_strerror_now());
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        base_err_set(BASE_ERR_IO, "%s: close: %s", tmp, base_strerror_now());
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        base_err_set(BASE_ERR_IO, "%s: rename to %s: %s", tmp, path, base_strerror_now());
        goto fail;
    }
    free(tmp);
    return fsync_dir_of(path);
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return BASE_ERR_IO;
}

base_status base_mkdir_p(const char *path) {
    char *p = base_xstrdup(path);
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] == '/' || p[i] == 0) {
            char c = p[i];
            p[i] = 0;
            if (mkdir(p, 0755) < 0 && errno != EEXIST) {
                base_err_set(BASE_ERR_IO, "mkdir %s: %s", p, base_strerror_now());
                free(p);
                return BASE_ERR_IO;
            }
            p[i] = c;
        }
    }
    free(p);
    return BASE_OK;
}

char *base_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = base_xmalloc(a + b + 2);
    memcpy(s, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') s[k++] = '/';
    memcpy(s + k, name, b + 1);
    return s;
}

int base_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Remove `name` in the directory dirfd (path: its full name, for messages).
 * Directories are opened with O_NOFOLLOW relative to their parent's fd, so
 * a symbolic link is removed as a link and never followed, even if one is
 * swapped in during the walk; a directory on another filesystem (a mount
 * point) is not entered. */
static base_status rm_at(int dirfd, const char *name, const char *path, dev_t dev, int depth) {
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT) return BASE_OK;
    if (errno != EISDIR && errno != EPERM)
        return base_err_set(BASE_ERR_IO, "%s: cannot remove: %s", path, base_strerror_now());
    if (depth > 64) return base_err_set(BASE_ERR_IO, "%s: cannot remove: directories nested too deeply", path);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return base_err_set(BASE_ERR_IO, "%s: cannot remove: %s", path, base_strerror_now());
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_dev != dev) {
        close(fd);
        return base_err_set(BASE_ERR_IO, "%s: cannot remove: another filesystem is mounted there", path);
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        base_err_set(BASE_ERR_IO, "%s: cannot remove: %s", path, base_strerror_now());
        close(fd);
        return BASE_ERR_IO;
    }
    base_status s = BASE_OK;
    struct dirent *e;
    while (!s && (errno = 0, e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *sub = base_path_join(path, e->d_name);
        s = rm_at(fd, e->d_name, sub, dev, depth + 1);
        free(sub);
    }
    if (!s && errno) s = base_err_set(BASE_ERR_IO, "%s: cannot list: %s", path, base_strerror_now());
    closedir(d);
    if (!s && unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        s = base_err_set(BASE_ERR_IO, "%s: cannot remove: %s", path, base_strerror_now());
    return s;
}

base_status base_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) return BASE_OK;
        return base_err_set(BASE_ERR_IO, "%s: %s", path, base_strerror_now());
    }
    return rm_at(AT_FDCWD, path, path, st.st_dev, 0);
}
