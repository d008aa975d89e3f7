import CCrypto
import CCurl
import CLZ4

/// The versions of the libraries this process runs with (not the ones it was built against:
/// a bug report needs what is loaded), for `spate --version`.
public enum LibraryVersions {
    /// One line each, e.g. `libcurl 7.88.1 (OpenSSL/3.0.17, nghttp2/1.52.0; HTTP/2: yes)`.
    public static var lines: [String] {
        CurlGlobal.ensureInitialised()
        let info = curl_version_info(CURLversion(rawValue: spate_curlversion_now())).pointee
        var parts: [String] = []
        if let ssl = info.ssl_version { parts.append(String(cString: ssl)) }
        if let nghttp2 = info.nghttp2_version { parts.append("nghttp2/" + String(cString: nghttp2)) }
        let http2 = Int32(info.features) & CURL_VERSION_HTTP2 != 0
        let curl = "libcurl \(String(cString: info.version)) (\(parts.joined(separator: ", "))\(parts.isEmpty ? "" : "; ")HTTP/2: \(http2 ? "yes" : "no"))"
        return [
            curl,
            String(cString: OpenSSL_version(OPENSSL_VERSION)),
            "liblz4 " + String(cString: LZ4_versionString()),
            // ISA-L has no version call; what differs between its releases here is CRC-64/NVME.
            "ISA-L CRC-32, CRC-32C; CRC-64/NVME: \(DigestAlgorithm.crc64nvme.isAvailable ? "yes" : "no (needs ISA-L 2.31 or later)")",
        ]
    }
}
