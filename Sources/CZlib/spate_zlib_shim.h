// zlib's CRC-32 (crc32, crc32_combine), for the journal's per-range hashes.
// Why zlib: libcurl already links it; its CRC-32 ran at 6.4 GB/s here (SHA-256 with SHA-NI:
// 1.9 GB/s), and crc32_combine lets adjacent ranges merge their hashes without re-reading data.
#ifndef SPATE_ZLIB_SHIM_H
#define SPATE_ZLIB_SHIM_H
#include <zlib.h>
#endif
