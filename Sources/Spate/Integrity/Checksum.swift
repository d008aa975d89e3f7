/// An expected whole-file digest, as given by `--checksum ALG:HEX`.
public struct Checksum: Sendable, Hashable, CustomStringConvertible {
    public let algorithm: DigestAlgorithm
    public let digest: [UInt8]

    public init(algorithm: DigestAlgorithm, digest: [UInt8]) throws(SpateError) {
        guard algorithm.isAvailable else {
            throw .usage("\(algorithm.rawValue) needs ISA-L 2.31 or later (crc64_rocksoft_refl); this machine has an older one")
        }
        guard digest.count == algorithm.byteCount else {
            throw .usage("a \(algorithm.rawValue) checksum has \(algorithm.byteCount * 2) hex digits, not \(digest.count * 2)")
        }
        self.algorithm = algorithm
        self.digest = digest
    }

    /// Parses `ALG:HEX`, e.g. `sha256:9f86d0…`. The algorithm name is case-insensitive, with
    /// or without dashes (`SHA-256`).
    public init(parsing text: String) throws(SpateError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw .usage("invalid checksum \"\(text)\": expected ALG:HEX, e.g. sha256:<64 hex digits>")
        }
        let name = text[..<colon].lowercased()
        let hex = text[text.index(after: colon)...]
        // `sha-256` as aria2 and RFC 9530 spell it, as well as `sha256`.
        guard let algorithm = DigestAlgorithm(rawValue: String(name.filter { $0 != "-" })) else {
            let known = DigestAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")
            throw .usage("unknown checksum algorithm \"\(name)\": use one of \(known)")
        }
        guard algorithm.isAvailable else {
            throw .usage("\(name) needs ISA-L 2.31 or later (crc64_rocksoft_refl); this machine has an older one")
        }
        // The length first: "abc" is hexadecimal, just not a digest (an odd count would
        // otherwise read as "not hexadecimal").
        let digits = hex.utf8.count
        guard hex.utf8.allSatisfy({ PercentEncoding.hexValue($0) != nil }) else {
            throw .usage("invalid checksum: \"\(hex.prefix(140))\" is not hexadecimal")
        }
        guard digits == algorithm.byteCount * 2, let digest = Hex.decode(hex) else {
            throw .usage("invalid checksum: a \(algorithm.rawValue) checksum has \(algorithm.byteCount * 2) hex digits, not \(digits)")
        }
        try self.init(algorithm: algorithm, digest: digest)
    }

    public var hex: String { Hex.encode(digest) }
    public var description: String { "\(algorithm.rawValue):\(hex)" }

    /// Checks a whole file's bytes, in memory; throws `.checksumMismatch` (with `suffix` added
    /// to the message) when they do not match.
    func verify(_ body: [UInt8], suffix: String = "") throws(SpateError) {
        let actual = body.withUnsafeBytes { Digest.hash(algorithm, $0) }
        guard actual == digest else {
            throw SpateError(.checksumMismatch, "checksum mismatch: expected \(algorithm.rawValue):\(hex), got \(algorithm.rawValue):\(Hex.encode(actual))" + suffix)
        }
    }
}
