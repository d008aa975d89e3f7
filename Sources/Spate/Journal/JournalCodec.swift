import CLZ4
import CZlib

/// The journal's bytes, encoded and decoded without I/O. The format is documented in
/// docs/journal-format.md; every field is bounds-checked on the way in (CVE-2009-3575: aria2's
/// saved-state deserializer overflowed), and any input gives a value or an error, never a crash.
public enum JournalCodec {
    public static let magic: [UInt8] = Array("SPATEJNL".utf8)
    public static let formatVersion: UInt16 = 1
    static let fixedHeaderBytes = 56
    public static let maxValidatorBytes = 1024
    /// Most bytes one frame may decompress to (a frame is one batch of records).
    public static let maxBatchBytes = 16 << 20

    public enum RecordKind: UInt8, Sendable {
        /// Records appended since the last frame.
        case append = 1
        /// The complete state: replaces every record before it (written by compaction).
        case snapshot = 2
    }

    /// What the journal's header binds it to.
    public struct Header: Hashable, Sendable {
        public var totalSize: Int64
        /// SHA-256 of the request without secrets (see `fingerprint(of:)`).
        public var fingerprint: [UInt8]
        public var validator: Validator

        public init(totalSize: Int64, fingerprint: [UInt8], validator: Validator) {
            self.totalSize = totalSize
            self.fingerprint = fingerprint
            self.validator = validator
        }
    }

    public enum Validator: Hashable, Sendable, CustomStringConvertible {
        case none
        case strongETag(String)
        case lastModified(String)

        public var description: String {
            switch self {
            case .none: "none"
            case .strongETag(let e): "ETag \(e)"
            case .lastModified(let d): "Last-Modified \(d)"
            }
        }
    }

    public struct DecodeError: Error, Hashable, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// A decoded journal: the header, the records of every intact frame, and what was dropped.
    public struct Contents: Sendable {
        public var header: Header
        public var records: [HashedRange]
        /// Frames read intact.
        public var frames: Int
        /// Bytes after the last intact frame: a torn final frame (normal after a crash) or damage.
        public var droppedBytes: Int
        /// Why bytes were dropped, if any were.
        public var dropReason: String?
    }

    /// The request fingerprint: SHA-256 of scheme, host, port and path of the original URL, and
    /// the `--range` asked for. No userinfo, no query: signed query strings change on every
    /// signing and may be secret.
    public static func fingerprint(of url: RemoteURL, range: PartialByteRange? = nil) -> [UInt8] {
        // The bytes of "spate-journal-v1\nSCHEME://HOST:PORT/PATH[\nrange=R]", appended part by
        // part (an interpolated String cost more than the digest; it runs once per small file).
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32 + url.scheme.utf8.count + url.host.utf8.count + url.path.utf8.count)
        bytes.append(contentsOf: "spate-journal-v1\n".utf8)
        bytes.append(contentsOf: url.scheme.utf8)
        bytes.append(contentsOf: "://".utf8)
        bytes.append(contentsOf: url.host.utf8)
        bytes.append(UInt8(ascii: ":"))
        bytes.append(contentsOf: String(url.port).utf8)
        bytes.append(contentsOf: url.path.utf8)
        if let range { bytes.append(contentsOf: "\nrange=\(range)".utf8) }
        return bytes.withUnsafeBytes { Digest.hash(.sha256, $0) }
    }

    // MARK: Header

    public static func encodeHeader(_ header: Header) -> [UInt8] {
        precondition(header.fingerprint.count == 32 && header.totalSize >= 0)
        let (kind, text): (UInt8, String) = switch header.validator {
        case .none: (0, "")
        case .strongETag(let e): (1, e)
        case .lastModified(let d): (2, d)
        }
        let validator = Array(text.utf8.prefix(maxValidatorBytes))
        var out = magic
        out.appendLittleEndian(formatVersion)
        out.appendLittleEndian(UInt16(fixedHeaderBytes + validator.count + 4))
        out.appendLittleEndian(UInt64(header.totalSize))
        out.append(1)  // range hash: CRC-32 (zlib)
        out.append(kind)
        out.appendLittleEndian(UInt16(validator.count))
        out += header.fingerprint
        out += validator
        let crc = out.withUnsafeBytes { CRC32.checksum($0) }
        out.appendLittleEndian(crc)
        return out
    }

    /// Decodes the header at the start of `bytes`; returns it and its length.
    public static func decodeHeader(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> (Header, Int) {
        guard bytes.count >= fixedHeaderBytes + 4 else { throw DecodeError(description: "too short for a journal header") }
        guard Array(bytes[0..<8]) == magic else { throw DecodeError(description: "not a spate journal (bad magic)") }
        var reader = ByteReader(bytes)
        reader.skip(8)
        let version: UInt16 = reader.littleEndian()!
        guard version == formatVersion else { throw DecodeError(description: "unsupported journal format version \(version)") }
        let headerLength = Int(reader.littleEndian() as UInt16? ?? 0)
        let size = Int64(bitPattern: reader.littleEndian()!)
        let hashKind = reader.byte()!
        let validatorKind = reader.byte()!
        let validatorLength = Int(reader.littleEndian() as UInt16? ?? 0)
        guard validatorLength <= maxValidatorBytes, headerLength == fixedHeaderBytes + validatorLength + 4,
              headerLength <= bytes.count else { throw DecodeError(description: "journal header has bad lengths") }
        let storedCRC = UInt32(littleEndianBytes: bytes[(headerLength - 4)..<headerLength])
        let actualCRC = CRC32.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<(headerLength - 4)]))
        guard storedCRC == actualCRC else { throw DecodeError(description: "journal header checksum mismatch") }
        guard size >= 0 else { throw DecodeError(description: "journal header has a negative size") }
        guard hashKind == 1 else { throw DecodeError(description: "unknown range hash kind \(hashKind)") }
        let fingerprint = Array(bytes[24..<56])
        let validatorBytes = Array(bytes[56..<(56 + validatorLength)])
        guard let text = String(validating: validatorBytes, as: UTF8.self) else {
            throw DecodeError(description: "journal validator is not UTF-8")
        }
        let validator: Validator
        switch validatorKind {
        case 0: validator = .none
        case 1: validator = .strongETag(text)
        case 2: validator = .lastModified(text)
        default: throw DecodeError(description: "unknown validator kind \(validatorKind)")
        }
        return (Header(totalSize: size, fingerprint: fingerprint, validator: validator), headerLength)
    }

    // MARK: Batches

    /// One LZ4 frame (content checksum on) holding a batch of records.
    public static func encodeFrame(_ kind: RecordKind, _ records: [HashedRange]) -> [UInt8] {
        var batch: [UInt8] = [kind.rawValue]
        batch.appendVarint(UInt64(records.count))
        for r in records {
            batch.appendVarint(UInt64(r.range.start))
            batch.appendVarint(UInt64(r.range.count))
            batch.appendLittleEndian(r.crc)
        }
        var preferences = LZ4F_preferences_t()
        preferences.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled
        preferences.frameInfo.contentSize = UInt64(batch.count)
        let bound = LZ4F_compressFrameBound(batch.count, &preferences)
        var out = [UInt8](repeating: 0, count: bound)
        let written = out.withUnsafeMutableBytes { dst in
            batch.withUnsafeBytes { src in
                LZ4F_compressFrame(dst.baseAddress, bound, src.baseAddress, src.count, &preferences)
            }
        }
        precondition(LZ4F_isError(written) == 0, "LZ4F_compressFrame failed: \(String(cString: LZ4F_getErrorName(written)))")
        out.removeLast(bound - written)
        return out
    }

    /// Decodes a whole journal. Header problems throw; a damaged or torn frame ends the
    /// journal there (the intact frames before it still count).
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> Contents {
        let (header, headerLength) = try decodeHeader(bytes)
        var contents = Contents(header: header, records: [], frames: 0, droppedBytes: 0, dropReason: nil)
        var dctx: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&dctx, UInt32(LZ4F_VERSION))) == 0, let dctx else {
            throw DecodeError(description: "cannot create an LZ4 decompression context")
        }
        defer { LZ4F_freeDecompressionContext(dctx) }
        var position = headerLength
        var batch = [UInt8]()
        while position < bytes.count {
            LZ4F_resetDecompressionContext(dctx)
            batch.removeAll(keepingCapacity: true)
            switch decompressFrame(dctx, UnsafeRawBufferPointer(rebasing: bytes[position...]), into: &batch) {
            case .failure(let reason):
                contents.droppedBytes = bytes.count - position
                contents.dropReason = reason.reason
                return contents
            case .success(let consumed):
                guard let (kind, records) = parseBatch(batch, totalSize: header.totalSize) else {
                    contents.droppedBytes = bytes.count - position
                    contents.dropReason = "a frame holds invalid records"
                    return contents
                }
                if kind == .snapshot { contents.records.removeAll() }
                contents.records += records
                contents.frames += 1
                position += consumed
            }
        }
        return contents
    }

    private static func decompressFrame(_ dctx: OpaquePointer, _ input: UnsafeRawBufferPointer,
                                        into output: inout [UInt8]) -> Result<Int, FrameError> {
        var consumed = 0
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            var sourceSize = input.count - consumed
            var destinationSize = chunk.count
            let hint = chunk.withUnsafeMutableBytes { dst in
                LZ4F_decompress(dctx, dst.baseAddress, &destinationSize, input.baseAddress! + consumed, &sourceSize, nil)
            }
            if LZ4F_isError(hint) != 0 {
                return .failure(FrameError("damaged frame (\(String(cString: LZ4F_getErrorName(hint))))"))
            }
            consumed += sourceSize
            output += chunk[0..<destinationSize]
            if output.count > maxBatchBytes { return .failure(FrameError("a frame is larger than \(maxBatchBytes) bytes")) }
            if hint == 0 { return .success(consumed) }  // frame complete, checksum verified
            if sourceSize == 0 && destinationSize == 0 && consumed == input.count {
                return .failure(FrameError("torn final frame"))
            }
        }
    }

    struct FrameError: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    /// Parses a decompressed batch; nil when anything is out of bounds.
    static func parseBatch(_ batch: [UInt8], totalSize: Int64) -> (RecordKind, [HashedRange])? {
        batch.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            guard let kindByte = reader.byte(), let kind = RecordKind(rawValue: kindByte),
                  let count = reader.varint(), count <= UInt64(raw.count) else { return nil }
            var records: [HashedRange] = []
            records.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let start = reader.varint(), let length = reader.varint(), let crc: UInt32 = reader.littleEndian(),
                      start < UInt64(totalSize), length > 0, length <= UInt64(totalSize) - start else { return nil }
                records.append(HashedRange(range: ByteRange(Int64(start), Int64(start + length)), crc: crc))
            }
            guard reader.isAtEnd else { return nil }
            return (kind, records)
        }
    }
}


/// Reads little-endian integers and LEB128 varints from bytes, never past the end.
struct ByteReader {
    private let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var isAtEnd: Bool { offset == bytes.count }

    mutating func skip(_ n: Int) { offset = min(bytes.count, offset + n) }

    mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func littleEndian<T: FixedWidthInteger>() -> T? {
        let size = MemoryLayout<T>.size
        guard offset + size <= bytes.count else { return nil }
        var value: T = 0
        for i in 0..<size { value |= T(bytes[offset + i]) << (8 * i) }
        offset += size
        return value
    }

    /// An unsigned LEB128 varint of at most 10 bytes that fits in 64 bits.
    mutating func varint() -> UInt64? {
        var value: UInt64 = 0
        for i in 0..<10 {
            guard let b = byte() else { return nil }
            let payload = UInt64(b & 0x7F)
            if i == 9 && payload > 1 { return nil }  // overflow
            value |= payload << (7 * UInt64(i))
            if b & 0x80 == 0 { return value }
        }
        return nil
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        for i in 0..<MemoryLayout<T>.size { append(UInt8(truncatingIfNeeded: value >> (8 * i))) }
    }

    mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        append(UInt8(v))
    }
}

extension UInt32 {
    init(littleEndianBytes bytes: Slice<UnsafeRawBufferPointer>) {
        var value: UInt32 = 0
        for (i, b) in bytes.enumerated() { value |= UInt32(b) << (8 * i) }
        self = value
    }
}
