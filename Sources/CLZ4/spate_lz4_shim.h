// liblz4's frame API, for the resume journal.
// Why a shim: a system-library target needs one umbrella header; the frame API lives in lz4frame.h.
#ifndef SPATE_LZ4_SHIM_H
#define SPATE_LZ4_SHIM_H
#include <lz4frame.h>
#endif
