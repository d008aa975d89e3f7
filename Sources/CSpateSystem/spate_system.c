#define _GNU_SOURCE
#include "spate_system.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>

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
