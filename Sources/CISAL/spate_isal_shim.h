// Intel ISA-L's CRC-32 (crc32_gzip_refl), for the journal's per-range hashes.
// Why ISA-L: it computes exactly zlib's CRC-32 (same polynomial, same values, so journals are
// unchanged) with PCLMULQDQ folding and runtime CPU dispatch: 62 GB/s here against zlib's
// 6.6 GB/s, which took the CRC from about a fifth of spate's CPU per GiB to about 2 %.
// zlib stays for crc32_combine, which ISA-L does not provide.
// Also CRC-32C (crc32_iscsi) for the digests S3 and GCS publish; CRC-64/NVME
// (crc64_rocksoft_refl, ISA-L 2.31+) is looked up at run time (see DigestAlgorithm.swift).
#ifndef SPATE_ISAL_SHIM_H
#define SPATE_ISAL_SHIM_H
#include <isa-l/crc.h>
#endif
