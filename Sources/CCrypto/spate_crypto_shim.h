// OpenSSL libcrypto's EVP digest interface (SHA-256, SHA-512, SHA-1, MD5).
// Why: libcurl4-openssl-dev already brings libcrypto, and its digests use SHA-NI/AVX2 where the
// CPU has them; no extra hash library is needed.
#ifndef SPATE_CRYPTO_SHIM_H
#define SPATE_CRYPTO_SHIM_H
#include <openssl/evp.h>
#include <openssl/crypto.h>
#endif
