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

/// Flushes every file system buffer of the file system holding `fd` (`syncfs`): one call makes
/// many just-written files durable at once. Returns 0 or an errno value.
int spate_sync_file_system(int fd);
/// Sets the extended attribute `name` of `fd` to `length` bytes of `value`.
/// Returns 0 or an errno value (ENOTSUP where the file system has none).
int spate_set_attribute(int fd, const char *name, const void *value, int length);
/// Reads the extended attribute `name` of the file at `path` (not following a final symlink)
/// into `buffer`. Returns its length, or -1 with errno set.
int spate_get_attribute(const char *path, const char *name, void *buffer, int capacity);
/// Renames `from` to `to` only if `to` does not exist (`renameat2(RENAME_NOREPLACE)`), in one
/// atomic step. Returns 0 or an errno value (EEXIST; EINVAL or ENOSYS where unsupported).
int spate_rename_noreplace(const char *from, const char *to);

/// Opens a new regular file with no name in `directory` (O_TMPFILE), read-write, with `mode`
/// (minus the umask). Returns the descriptor, or -errno (-EOPNOTSUPP, -EISDIR: the file system
/// or kernel has none).
int spate_open_unnamed(const char *directory, unsigned int mode);

/// Gives a file opened by `spate_open_unnamed` the name `path`, never replacing anything there
/// (EEXIST). By descriptor (AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH), else through
/// /proc/self/fd. Returns 0 or an errno.
int spate_link_unnamed(int fd, const char *path);
/// An anonymous memory file (`memfd_create`, close-on-exec): the reorder window of an ordered
/// stream. Returns the descriptor or -1 with errno set.
int spate_memory_file(const char *name);
/// The capacity of the pipe or FIFO `fd` (`F_GETPIPE_SZ`); -1 when `fd` is not a pipe.
int spate_pipe_capacity(int fd);
/// The bytes waiting in the pipe `fd` (`FIONREAD`); -1 when unknown.
int spate_pipe_queued(int fd);
/// Frees the pages of [offset, offset + count) (`fallocate(PUNCH_HOLE | KEEP_SIZE)`).
/// Returns 0 or an errno value.
int spate_punch_hole(int fd, int64_t offset, int64_t count);
#endif
