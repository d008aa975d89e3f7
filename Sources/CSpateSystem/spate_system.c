#define _GNU_SOURCE
#include "spate_system.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <string.h>
#include <sys/vfs.h>
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
