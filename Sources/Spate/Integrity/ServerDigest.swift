import CCrypto

/// A whole-file digest a server published in its reply, and the header it came from.
public struct ServerDigest: Sendable, Hashable, CustomStringConvertible {
    public let checksum: Checksum
    /// The header: "Repr-Digest", "x-amz-checksum-sha256", "x-goog-hash", "X-Linked-Etag",
    /// "Content-MD5".
    public let source: String

    public var description: String { "\(source) \(checksum.algorithm.rawValue):\(checksum.hex)" }
}

/// Reads the whole-file digests servers publish, from a reply head (pure: no I/O).
///
/// - `Repr-Digest` (RFC 9530): `sha-256=:BASE64:` and `sha-512=:BASE64:`; the digest of the
///   whole representation, on ranged replies too. (`Content-Digest` covers one message's bytes
///   only: not a whole-file digest, ignored.)
/// - `x-amz-checksum-sha256|sha1|crc64nvme|crc32c|crc32` (S3), when `x-amz-checksum-type` is
///   `FULL_OBJECT` or absent and the value is not a composite `…-N` (a checksum of part
///   checksums, which no byte stream can reproduce: said once, ignored).
/// - `x-goog-hash: crc32c=…,md5=…` (GCS): whole-object values, also on ranged reads — of the
///   object as stored: an object stored gzip-compressed (`x-goog-stored-content-encoding`) and
///   served decompressed (GCS's decompressive transcoding, for a client that does not accept
///   gzip, as spate asks for identity) does not match them, so they are said once and not
///   checked there (RELIABILITY A.13).
/// - `X-Linked-Etag` (Hugging Face LFS files): the quoted hex SHA-256 of the file.
/// - `Content-MD5` (Azure): only on a reply that carries the whole file (on a ranged reply it
///   covers the range, or is absent).
/// A CRC is used only when no cryptographic digest is published (`digests` is in order of
/// preference); CRC-64/NVME only where ISA-L has it (else said once when it is all there is).
enum ServerDigests {
    struct Found: Equatable {
        /// Usable digests, in the order of preference (SHA-256, SHA-512, SHA-1, MD5, then the
        /// CRCs: CRC-64/NVME, CRC-32C, CRC-32).
        var digests: [ServerDigest] = []
        /// Values seen but not checked, one line each.
        var notices: [String] = []
    }

    static func parse(_ head: ResponseHead, wholeBody: Bool) -> Found {
        var found = Found()
        // Most replies carry none of these headers: one pass over the names says so (the ten
        // look-ups below cost about 9,000 instructions per reply, per small file of a batch).
        guard head.fields.contains(where: { isDigestHeader($0.name) }) else { return found }
        var unchecked: [String] = []
        func add(_ algorithm: DigestAlgorithm, _ bytes: [UInt8]?, _ source: String) {
            guard algorithm.isAvailable else {
                unchecked.append(source)
                return
            }
            guard let bytes, let checksum = try? Checksum(algorithm: algorithm, digest: bytes) else { return }
            found.digests.append(ServerDigest(checksum: checksum, source: source))
        }
        if let value = head["repr-digest"] {
            for member in value.split(separator: ",") {
                let parts = member.split(separator: "=", maxSplits: 1).map { $0.trimmingSpaces() }
                guard parts.count == 2, parts[1].hasPrefix(":"), parts[1].hasSuffix(":"), parts[1].count >= 2 else { continue }
                let bytes = Base64.decode(String(parts[1].dropFirst().dropLast()))
                switch parts[0].lowercased() {
                case "sha-256": add(.sha256, bytes, "Repr-Digest")
                case "sha-512": add(.sha512, bytes, "Repr-Digest")
                default: break
                }
            }
        }
        let s3Type = head["x-amz-checksum-type"]?.uppercased()
        let s3: [(String, DigestAlgorithm)] = [
            ("x-amz-checksum-sha256", .sha256), ("x-amz-checksum-sha1", .sha1), ("x-amz-checksum-crc64nvme", .crc64nvme),
            ("x-amz-checksum-crc32c", .crc32c), ("x-amz-checksum-crc32", .crc32),
        ]
        for (name, algorithm) in s3 {
            guard let value = head[name] else { continue }
            if s3Type == "COMPOSITE" || value.contains("-") {
                found.notices.append("the server's \(name) is a composite checksum of multipart parts; it cannot be checked against the bytes and is ignored")
                continue
            }
            add(algorithm, Base64.decode(value.trimmingSpaces()), name)
        }
        let stored = head["x-goog-stored-content-encoding"]?.trimmingSpaces().lowercased() ?? "identity"
        let served = head["content-encoding"]?.trimmingSpaces().lowercased() ?? "identity"
        let transcoded = stored != "identity" && stored != served
        if transcoded && head["x-goog-hash"] != nil {
            found.notices.append("the object is stored \(stored)-encoded and served decoded (GCS transcoding): its x-goog-hash describes the stored bytes and is not checked")
        }
        for value in head.values("x-goog-hash") where !transcoded {
            for member in value.split(separator: ",") {
                let parts = member.split(separator: "=", maxSplits: 1).map { $0.trimmingSpaces() }
                guard parts.count == 2 else { continue }
                switch parts[0].lowercased() {
                case "md5": add(.md5, Base64.decode(parts[1]), "x-goog-hash")
                case "crc32c": add(.crc32c, Base64.decode(parts[1]), "x-goog-hash")
                default: break
                }
            }
        }
        if let value = head["x-linked-etag"] {
            let hex = value.trimmingSpaces().trimmingCharacters(in: "\"")
            if hex.utf8.count == 64 { add(.sha256, Hex.decode(hex), "X-Linked-Etag") }
        }
        if wholeBody, let value = head["content-md5"] { add(.md5, Base64.decode(value.trimmingSpaces()), "Content-MD5") }
        let order = DigestAlgorithm.allCases
        found.digests.sort { order.firstIndex(of: $0.checksum.algorithm)! < order.firstIndex(of: $1.checksum.algorithm)! }
        if found.digests.isEmpty && !unchecked.isEmpty {
            found.notices.append("the server publishes \(unchecked.joined(separator: ", ")) (CRC-64/NVME), which needs ISA-L 2.31 or later to check; this machine has an older one: use --checksum")
        }
        return found
    }
}

extension ServerDigests {
    /// Whether a (lower-cased) header name is one `parse` reads.
    static func isDigestHeader(_ name: String) -> Bool {
        switch name {
        case "repr-digest", "x-goog-hash", "x-linked-etag", "content-md5": true
        default: name.utf8.first == UInt8(ascii: "x") && name.hasPrefix("x-amz-checksum-")
        }
    }
}

/// Base64 (RFC 4648) through OpenSSL's decoder.
enum Base64 {
    /// The bytes, or nil for anything that is not canonical padded base64.
    static func decode(_ text: String) -> [UInt8]? {
        let input = Array(text.utf8)
        guard !input.isEmpty, input.count % 4 == 0, input.count <= 1 << 16 else { return nil }
        var output = [UInt8](repeating: 0, count: input.count / 4 * 3)
        let n = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                EVP_DecodeBlock(target.baseAddress, source.baseAddress, Int32(source.count))
            }
        }
        guard n >= 0 else { return nil }
        let padding = input.reversed().prefix(2).prefix { $0 == UInt8(ascii: "=") }.count
        return Array(output[0..<(Int(n) - padding)])
    }
}

private extension StringProtocol {
    func trimmingCharacters(in character: Character) -> String {
        var s = Substring(self)
        while s.first == character { s.removeFirst() }
        while s.last == character { s.removeLast() }
        return String(s)
    }
}
