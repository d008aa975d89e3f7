// Linux calls that Swift's Glibc module does not import (they need _GNU_SOURCE).
#ifndef SPATE_SYSTEM_H
#define SPATE_SYSTEM_H

#include <stdint.h>

/// Starts writeback of the file's dirty pages in [offset, offset + count) without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); count 0 means "to the end of the file".
/// Returns 0 or an errno value.
int spate_start_writeback(int fd, int64_t offset, int64_t count);

/// Names the calling thread (shown by top, gdb, perf); at most 15 bytes are kept.
void spate_set_thread_name(const char *name);

/// 1 when `fd` is on tmpfs (or ramfs), where preallocation means zeroing memory; else 0.
int spate_is_memory_filesystem(int fd);

/// Sets glibc's M_TRIM_THRESHOLD: freed heap memory above this size at the top of the heap is
/// returned to the system.
void spate_set_malloc_trim_threshold(int bytes);

#endif
