@testable import Spate
import Testing

/// The CRC digests S3 and GCS publish, computed by ISA-L: checked against the catalogue's
/// check values ("123456789") and against a bit-at-a-time oracle on seeded data fed in
/// random pieces (the streaming digest sees the file in arbitrary receive sizes).
@Suite("CRC digests")
struct DigestCRCTests {
    /// Reflected CRC, one bit at a time: slow and obviously the definition.
    static func reference(_ bytes: [UInt8], width: Int, poly: UInt64) -> UInt64 {
        let mask: UInt64 = width == 64 ? .max : (1 << UInt64(width)) - 1
        var crc = mask
        for byte in bytes {
            crc ^= UInt64(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ poly : crc >> 1 }
        }
        return crc ^ mask
    }

    static let cases: [(DigestAlgorithm, Int, UInt64, UInt64)] = [
        (.crc32c, 32, 0x82F6_3B78, 0xE306_9283),
        (.crc32, 32, 0xEDB8_8320, 0xCBF4_3926),
        (.crc64nvme, 64, 0x9A6C_9329_AC4B_C9B5, 0xAE8B_1486_0A79_9888),
    ]

    static func value(_ digest: [UInt8]) -> UInt64 { digest.reduce(0) { $0 << 8 | UInt64($1) } }

    @Test func checkValuesAndPiecewiseFeedingMatchTheDefinition() {
        var rng = SeededGenerator(label: "crc digests")
        for (algorithm, width, poly, check) in Self.cases where algorithm.isAvailable {
            #expect(Self.value(Array("123456789".utf8).withUnsafeBytes { Digest.hash(algorithm, $0) }) == check, "\(algorithm)")
            #expect(Self.reference(Array("123456789".utf8), width: width, poly: poly) == check, "the oracle, \(algorithm)")
            for _ in 0..<20 {
                let bytes = (0..<Int.random(in: 0...20_000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let digest = Digest(algorithm)
                var at = 0
                bytes.withUnsafeBytes { raw in
                    while at < raw.count {
                        let n = Int.random(in: 1...4096, using: &rng)
                        digest.update(UnsafeRawBufferPointer(rebasing: raw[at..<min(raw.count, at + n)]))
                        at += n
                    }
                }
                let got = digest.finalize()
                #expect(got.count == algorithm.byteCount)
                #expect(Self.value(got) == Self.reference(bytes, width: width, poly: poly), "\(algorithm), \(bytes.count) bytes")
            }
        }
    }

    @Test func aChecksumNamesTheCRCs() throws {
        let c = try Checksum(parsing: "CRC32C:e3069283")
        #expect(c.algorithm == .crc32c && c.digest == [0xE3, 0x06, 0x92, 0x83])
        #expect(throws: SpateError.self) { try Checksum(parsing: "crc32c:e30692") }
    }

    @Test func aChecksumNameMayHaveDashes() throws {
        let hex = String(repeating: "ab", count: 32)
        #expect(try Checksum(parsing: "SHA-256:\(hex)") == (try Checksum(parsing: "sha256:\(hex)")))
        #expect(throws: SpateError.self) { try Checksum(parsing: "sha-255:\(hex)") }
    }
}
