// liblz4's frame API, for the resume journal.
// Why a shim: a system-library target needs one umbrella header; the frame API lives in lz4frame.h.
// lz4.h only for LZ4_versionString (`spate --version`).
#ifndef SPATE_LZ4_SHIM_H
#define SPATE_LZ4_SHIM_H
#include <lz4.h>
#include <lz4frame.h>
#endif
