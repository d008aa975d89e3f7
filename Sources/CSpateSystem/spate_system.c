#define _GNU_SOURCE
#include "spate_system.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <stdio.h>
#include <unistd.h>
#include <linux/magic.h>

int spate_start_writeback(int fd, int64_t offset, int64_t count) {
    if (sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE) != 0) {
        return errno;
    }
    return 0;
}

void spate_set_thread_name(const char *name) {
    char truncated[16];
    strncpy(truncated, name, sizeof truncated - 1);
    truncated[sizeof truncated - 1] = 0;
    pthread_setname_np(pthread_self(), truncated);
}

int spate_is_memory_filesystem(int fd) {
    struct statfs fs;
    if (fstatfs(fd, &fs) != 0) {
        return 0;
    }
    return fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC;
}

void spate_set_malloc_trim_threshold(int bytes) {
    mallopt(M_TRIM_THRESHOLD, bytes);
}

int spate_sync_file_system(int fd) {
    return syncfs(fd) == 0 ? 0 : errno;
}

int spate_set_attribute(int fd, const char *name, const void *value, int length) {
    return fsetxattr(fd, name, value, (size_t)length, 0) == 0 ? 0 : errno;
}

int spate_get_attribute(const char *path, const char *name, void *buffer, int capacity) {
    return (int)lgetxattr(path, name, buffer, (size_t)capacity);
}

int spate_rename_noreplace(const char *from, const char *to) {
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0 ? 0 : errno;
}

int spate_open_unnamed(const char *directory, unsigned int mode) {
    int fd = open(directory, O_TMPFILE | O_RDWR | O_CLOEXEC, (mode_t)mode);
    return fd >= 0 ? fd : -errno;
}

int spate_link_unnamed(int fd, const char *path) {
    /* Set once linking by descriptor has failed for want of the capability (ENOENT, as
       linkat(2) reports it): from then on, through /proc. A race only costs a retry. */
    static atomic_int through_proc = 0;
    if (!atomic_load_explicit(&through_proc, memory_order_relaxed)) {
        if (linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH) == 0) return 0;
        if (errno != ENOENT && errno != EPERM) return errno;
        atomic_store_explicit(&through_proc, 1, memory_order_relaxed);
    }
    char source[48];
    snprintf(source, sizeof source, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, source, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0 ? 0 : errno;
}

int spate_memory_file(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}

int spate_punch_hole(int fd, int64_t offset, int64_t count) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, count) == 0 ? 0 : errno;
}

int spate_pipe_capacity(int fd) {
    return fcntl(fd, F_GETPIPE_SZ);
}

int spate_pipe_queued(int fd) {
    int queued = 0;
    return ioctl(fd, FIONREAD, &queued) == 0 ? queued : -1;
}
