/// Tells GnuTLS not to initialise itself when it is loaded.
///
/// Why: Debian's `libcurl4-openssl` links libldap and librtmp, which link GnuTLS, whose load-time
/// constructor initialises the library (and p11-kit) before `main` runs — about 0.9 MiB of
/// resident memory in a process that never uses GnuTLS (libcurl's TLS is OpenSSL, and spate
/// allows only HTTP and HTTPS, so LDAP and RTMP never run). GnuTLS documents this hook as the
/// `GNUTLS_SKIP_GLOBAL_INIT` macro: the library calls a weak `_gnutls_global_init_skip`, which
/// an executable may override; a later `gnutls_global_init` still works. Only the `spate`
/// executable defines it, never the library: a program that embeds Spate and uses GnuTLS
/// keeps the implicit initialisation it may rely on.
@_cdecl("_gnutls_global_init_skip")
public func gnutlsGlobalInitSkip() -> CInt { 1 }
