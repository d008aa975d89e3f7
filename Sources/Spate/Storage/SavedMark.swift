import CSpateSystem
import Glibc

/// A note spate leaves on every file it saves, in the extended attribute `user.spate.saved`:
/// the size and the fingerprint of the URL (scheme, host, port and path; no query, no
/// credentials; see `JournalCodec.fingerprint`).
///
/// Why: rerunning a batch must skip the files that are complete without asking the server
/// anything, and tell them from a file of the same name that spate did not write. The mark is
/// set on the partial file before it gets its final name, so the name and the mark appear
/// together (a hard link or rename carries the inode's attributes); a file edited afterwards
/// keeps the mark, so a size check (and the checksum, when the manifest has one) comes too.
/// Where the file system keeps no extended attributes, nothing is marked and a rerun treats the
/// file as not spate's.
public struct SavedMark: Sendable, Hashable {
    public static let attribute = "user.spate.saved"
    public var size: Int64
    /// Hex of the URL fingerprint's first 16 bytes.
    public var url: String

    public init(size: Int64, url: RemoteURL) {
        self.size = size
        self.url = Hex.encode(JournalCodec.fingerprint(of: url).prefix(16))
    }

    init(size: Int64, urlHex: String) {
        self.size = size
        self.url = urlHex
    }

    var encoded: String { "v1 size=\(size) url=\(url)" }

    /// Parses `encoded`; nil for anything else.
    static func parse(_ text: String) -> SavedMark? {
        let fields = text.split(separator: " ")
        guard fields.count == 3, fields[0] == "v1", fields[1].hasPrefix("size="), fields[2].hasPrefix("url="),
              let size = Int64(fields[1].dropFirst(5)), size >= 0 else { return nil }
        return SavedMark(size: size, urlHex: String(fields[2].dropFirst(4)))
    }

    /// Marks the open file; best effort (a file system without user attributes is not an error).
    func write(to fd: Int32) {
        let text = encoded
        _ = text.withCString { spate_set_attribute(fd, Self.attribute, $0, Int32(strlen($0))) }
    }

    /// The mark of the file at `path`, if it has one.
    public static func read(path: String) -> SavedMark? {
        if case .marked(let mark) = lookup(path: path) { return mark }
        return nil
    }

    /// What the file at `path` says about itself.
    public enum Lookup: Sendable, Equatable {
        case marked(SavedMark)
        /// No mark (or one spate cannot read): not saved by spate.
        case unmarked
        /// The file system keeps no user extended attributes: nothing can be known.
        case unsupported
    }

    public static func lookup(path: String) -> Lookup {
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = buffer.withUnsafeMutableBytes { spate_get_attribute(path, attribute, $0.baseAddress, Int32($0.count)) }
        if n < 0 { return errno == ENOTSUP || errno == EOPNOTSUPP ? .unsupported : .unmarked }
        return parse(String(decoding: buffer[0..<Int(n)], as: UTF8.self)).map { .marked($0) } ?? .unmarked
    }

    /// Marks a partial file as spate's while it is written (`user.spate.partial`), so a later
    /// run can tell its own leftovers from someone else's file of the same name.
    static let partialAttribute = "user.spate.partial"

    static func markPartial(_ fd: Int32) {
        _ = spate_set_attribute(fd, partialAttribute, "1", 1)
    }

    /// Whether the partial file at `path` is spate's: marked partial, or already carrying its
    /// final mark (a small file is marked once, when created).
    static func isPartialMarked(path: String) -> Bool {
        var byte: UInt8 = 0
        if spate_get_attribute(path, partialAttribute, &byte, 1) == 1 { return true }
        return read(path: path) != nil
    }
}
