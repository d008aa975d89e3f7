import CCrypto
import CISAL
#if canImport(Glibc)
import Glibc
#endif

/// A whole-file digest algorithm that `--checksum` accepts.
///
/// The cryptographic ones run on OpenSSL; the CRCs (what S3 and GCS publish: `crc32c`,
/// `crc64nvme`, `crc32`) on ISA-L. A CRC catches corruption, not an attacker: a server digest
/// that is only a CRC is checked when nothing better is published.
public enum DigestAlgorithm: String, Sendable, CaseIterable, Hashable {
    case sha256, sha512, sha1, md5, crc32c, crc64nvme, crc32

    /// Digest length in bytes.
    public var byteCount: Int {
        switch self {
        case .sha256: 32
        case .sha512: 64
        case .sha1: 20
        case .md5: 16
        case .crc32c, .crc32: 4
        case .crc64nvme: 8
        }
    }

    /// Whether this machine can compute it: CRC-64/NVME needs ISA-L 2.31 or later
    /// (`crc64_rocksoft_refl`), found when the program starts, not at build time, so one binary
    /// uses it wherever the library has it.
    public var isAvailable: Bool { self != .crc64nvme || CRC64NVME.function != nil }

    /// Whether it is a cryptographic hash (OpenSSL's; else a CRC, weaker: preferred last).
    var isCryptographic: Bool { evp != nil }

    var evp: OpaquePointer? {
        switch self {
        case .sha256: FetchedDigests.sha256
        case .sha512: FetchedDigests.sha512
        case .sha1: FetchedDigests.sha1
        case .md5: FetchedDigests.md5
        case .crc32c, .crc64nvme, .crc32: nil
        }
    }
}

/// OpenSSL 3's digest implementations, fetched once for the process. Why: `EVP_sha256()`
/// passed to `EVP_DigestInit_ex` is fetched again from the provider at every init, about 10,000
/// instructions (measured with callgrind): a batch of small files hashes each file's URL for
/// its mark, and a download starts a hasher per range. Kept for the process's life, as
/// OpenSSL's own implicit fetches are.
///
/// `nonisolated(unsafe)`: a fetched `EVP_MD` is immutable and may be shared by threads
/// (OpenSSL's threading notes), which Swift cannot see through an opaque pointer.
private enum FetchedDigests {
    nonisolated(unsafe) static let sha256 = fetch("SHA2-256", fallback: EVP_sha256())
    nonisolated(unsafe) static let sha512 = fetch("SHA2-512", fallback: EVP_sha512())
    nonisolated(unsafe) static let sha1 = fetch("SHA1", fallback: EVP_sha1())
    nonisolated(unsafe) static let md5 = fetch("MD5", fallback: EVP_md5())

    private static func fetch(_ name: String, fallback: OpaquePointer?) -> OpaquePointer? {
        EVP_MD_fetch(nil, name, nil) ?? fallback
    }
}

/// ISA-L's CRC-64 of the Rocksoft polynomial in reflected form: CRC-64/NVME (S3's
/// `crc64nvme`; check value ae8b14860a799888). ISA-L added it in 2.31; Debian bookworm ships
/// 2.30, so the symbol is looked up in the loaded library instead of linked: a missing one
/// means "not checkable here", said once, never a failed start.
enum CRC64NVME {
    typealias Function = @convention(c) (UInt64, UnsafePointer<UInt8>?, UInt64) -> UInt64

    static let function: Function? = {
        // libisal is loaded (the journal's CRC-32 links it): a null handle searches it too.
        guard let symbol = dlsym(nil, "crc64_rocksoft_refl") else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
    }()
}

/// An incremental digest: OpenSSL's EVP interface for the hashes, ISA-L for the CRCs.
///
/// Not thread-safe: one owner feeds it, in order.
public final class Digest {
    public let algorithm: DigestAlgorithm
    private enum State {
        case evp(OpaquePointer)
        case crc32c(UInt32)
        case crc32(UInt32)
        case crc64(UInt64, CRC64NVME.Function)
    }
    private var state: State

    /// Precondition: `algorithm.isAvailable`.
    public init(_ algorithm: DigestAlgorithm) {
        self.algorithm = algorithm
        if let evp = algorithm.evp {
            guard let context = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed: out of memory") }
            precondition(EVP_DigestInit_ex(context, evp, nil) == 1, "EVP_DigestInit_ex failed")
            state = .evp(context)
            return
        }
        switch algorithm {
        case .crc32c: state = .crc32c(0xFFFF_FFFF)
        case .crc32: state = .crc32(0)
        default:
            guard let function = CRC64NVME.function else { preconditionFailure("crc64nvme needs ISA-L 2.31 or later") }
            state = .crc64(0, function)
        }
    }

    deinit {
        if case .evp(let context) = state { EVP_MD_CTX_free(context) }
    }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        switch state {
        case .evp(let context):
            precondition(EVP_DigestUpdate(context, base, bytes.count) == 1, "EVP_DigestUpdate failed")
        case .crc32c(var crc):
            // ISA-L takes an `int` length, and leaves the CRC's pre- and post-inversion to the
            // caller (the state holds the inverted value between calls).
            var offset = 0
            while offset < bytes.count {
                let n = min(bytes.count - offset, 1 << 30)
                crc = crc32_iscsi(UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: UInt8.self) + offset), Int32(n), crc)
                offset += n
            }
            state = .crc32c(crc)
        case .crc32(let crc):
            state = .crc32(CRC32.checksum(bytes, continuing: crc))
        case .crc64(let crc, let function):
            state = .crc64(function(crc, base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count)), function)
        }
    }

    /// The digest (a CRC as its big-endian bytes, the form S3 and GCS publish in base64); the
    /// object cannot be fed afterwards.
    public func finalize() -> [UInt8] {
        switch state {
        case .evp(let context):
            var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
            var length: UInt32 = 0
            precondition(EVP_DigestFinal_ex(context, &out, &length) == 1, "EVP_DigestFinal_ex failed")
            return Array(out.prefix(Int(length)))
        case .crc32c(let crc):
            return Self.bigEndian(UInt64(~crc), bytes: 4)
        case .crc32(let crc):
            return Self.bigEndian(UInt64(crc), bytes: 4)
        case .crc64(let crc, _):
            return Self.bigEndian(crc, bytes: 8)
        }
    }

    private static func bigEndian(_ value: UInt64, bytes: Int) -> [UInt8] {
        (0..<bytes).reversed().map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    /// The digest of a whole buffer.
    public static func hash(_ algorithm: DigestAlgorithm, _ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        let d = Digest(algorithm)
        d.update(bytes)
        return d.finalize()
    }
}

/// Lower-case hexadecimal, the form digests are written in.
public enum Hex {
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let bytes = Array(bytes)
        return String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            for (i, b) in bytes.enumerated() {
                out[2 * i] = digit(b >> 4)
                out[2 * i + 1] = digit(b & 0xF)
            }
            return bytes.count * 2
        }
    }

    @inline(__always)
    private static func digit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }

    /// Decodes hexadecimal (either case); nil on odd length or a non-hex character.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = PercentEncoding.hexValue(utf8[i]), let lo = PercentEncoding.hexValue(utf8[i + 1]) else {
                return nil
            }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
